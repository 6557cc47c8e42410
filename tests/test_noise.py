"""Noise distribution, EDM preconditioning and loss weighting (docs/method.md §2, §7.1)."""

import math

import pytest
import torch

from diffusionblocks.diffusion import (
    NoiseSchedule,
    edm_loss_weight,
    edm_preconditioning,
    max_edm_weight,
    weighted_loss,
)

S = NoiseSchedule()


def test_cdf_matches_closed_form_and_icdf_inverts():
    sigma = torch.tensor([0.002, 0.05, math.exp(-1.2), 1.0, 80.0], dtype=torch.float64)
    z = (torch.log(sigma) + 1.2) / 1.2
    expect = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    assert torch.allclose(S.cdf(sigma), expect, rtol=1e-12)
    assert S.cdf(math.exp(-1.2)).item() == pytest.approx(0.5)
    assert torch.allclose(S.icdf(S.cdf(sigma)), sigma, rtol=1e-9)


def test_samples_follow_truncated_lognormal():
    gen = torch.Generator().manual_seed(0)
    sigma = S.sample(200_000, gen).double()
    assert sigma.min() >= S.sigma_min and sigma.max() <= S.sigma_max
    # Fraction below each quartile of the truncated distribution is 1/4, 2/4, 3/4.
    q0, q1 = S.cdf(torch.tensor([S.sigma_min, S.sigma_max], dtype=torch.float64))
    for frac in (0.25, 0.5, 0.75):
        cut = S.icdf(q0 + frac * (q1 - q0))
        assert (sigma < cut).double().mean().item() == pytest.approx(frac, abs=0.005)


def test_sampling_inside_an_interval_and_determinism():
    a = S.sample(1000, torch.Generator().manual_seed(3), lo=0.1, hi=0.5)
    b = S.sample(1000, torch.Generator().manual_seed(3), lo=0.1, hi=0.5)
    assert torch.equal(a, b)
    assert a.min() >= 0.1 - 1e-7 and a.max() <= 0.5 + 1e-7
    with pytest.raises(ValueError, match="not inside"):
        S.sample(3, lo=0.001, hi=0.5)


def test_bad_schedule_values():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        NoiseSchedule(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="p_std"):
        NoiseSchedule(p_std=0.0)


def test_preconditioning_identities():
    sd = 0.5
    sigma = torch.logspace(math.log10(0.002), math.log10(80), 50, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sd)
    # Unit-variance network input: Var(c_in * (y + sigma eps)) = c_in^2 (sd^2 + sigma^2) = 1.
    assert torch.allclose(c_in**2 * (sd**2 + sigma**2), torch.ones_like(sigma))
    # Unit-variance training target for F: ((1 - c_skip)^2 sd^2 + c_skip^2 sigma^2) / c_out^2 = 1.
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
    assert torch.allclose(target_var, torch.ones_like(sigma))
    # Balanced L2 loss: w * c_out^2 = 1.
    assert torch.allclose(edm_loss_weight(sigma, sd) * c_out**2, torch.ones_like(sigma))
    assert torch.allclose(c_noise, 0.25 * torch.log(sigma))
    assert torch.allclose(c_skip, sd**2 / (sigma**2 + sd**2))


def test_weight_at_sigma_min_is_about_250000():
    assert max_edm_weight(0.002, 0.5) == pytest.approx(250_004, rel=1e-6)
    assert edm_loss_weight(torch.tensor(0.002), 0.5).item() == pytest.approx(250_004, rel=1e-5)


@pytest.mark.parametrize("mode", ["edm", "batch", "clamped", "none"])
def test_weighted_loss_matches_inline_formula(mode):
    gen = torch.Generator().manual_seed(1)
    loss = torch.rand(64, generator=gen)
    sigma = S.sample(64, gen)
    w = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    expect = {
        "edm": (loss * w).mean(),
        "batch": loss.mean() * w.mean(),
        "clamped": (loss * torch.clamp(w, max=10.0)).mean(),
        "none": loss.mean(),
    }[mode]
    got = weighted_loss(loss, sigma, mode, 0.5, clamp=10.0)
    assert torch.allclose(got, expect, rtol=1e-6)


def test_weighted_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown weighting"):
        weighted_loss(torch.ones(3), torch.ones(3), "sqrt", 0.5)
    with pytest.raises(ValueError, match="differ"):
        weighted_loss(torch.ones(3), torch.ones(4), "edm", 0.5)


def test_the_denoiser_is_written_once():
    """D = c_skip z + c_out F(c_in z, c_noise) (docs/method.md §2) from edm_denoise, and no task
    writes it again: every task's denoiser goes through the math layer."""
    from pathlib import Path

    import diffusionblocks
    from diffusionblocks.diffusion import edm_denoise, edm_preconditioning

    z = torch.randn(4, 3)
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0])[:, None]
    seen = {}

    def network(scaled, c_noise):
        seen["scaled"], seen["c_noise"] = scaled, c_noise
        return torch.tanh(scaled)

    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, 0.5)
    assert torch.equal(
        edm_denoise(network, z, sigma, 0.5), c_skip * z + c_out * torch.tanh(c_in * z)
    )
    assert torch.equal(seen["c_noise"], 0.25 * torch.log(sigma))
    tasks = Path(diffusionblocks.__file__).parent / "tasks"
    for path in tasks.glob("*.py"):
        assert "edm_preconditioning" not in path.read_text(), path.name
