"""Grids, the Euler step and the block-routed sampler against an exact denoiser
(docs/method.md §5)."""

import math

import pytest
import torch

from diffusionblocks.diffusion import (
    BlockPartition,
    NoiseSchedule,
    euler_sample,
    euler_step,
    sigma_grid,
)

S = NoiseSchedule()


def test_one_exact_euler_step():
    """With D = y and z = y + sigma * eps, one step lands on y + sigma_next * eps."""
    gen = torch.Generator().manual_seed(0)
    y, eps = torch.randn(100, generator=gen), torch.randn(100, generator=gen)
    sigma, sigma_next = 2.5, 0.7
    z = y + sigma * eps
    assert torch.allclose(euler_step(z, y, sigma, sigma_next), y + sigma_next * eps, atol=1e-6)


@pytest.mark.parametrize("kind", ["cdf", "karras"])
def test_grids_descend_from_sigma_max_to_sigma_min(kind):
    g = sigma_grid(50, S, kind)
    assert len(g) == 51 and g[0] == 80.0 and g[-1] == 0.002
    assert torch.all(g[:-1] > g[1:])
    with pytest.raises(ValueError, match="steps"):
        sigma_grid(0, S, kind)


def test_cdf_grid_gives_each_block_an_equal_share():
    for blocks in (2, 3, 4):
        p = BlockPartition.create(blocks)
        steps = 6 * blocks
        owners = p.block_of(sigma_grid(steps, S, "cdf")[:-1])
        assert owners.tolist() == [b for b in range(blocks) for _ in range(6)]


def test_b_steps_visit_every_block_once_in_order():
    p = BlockPartition.create(3)
    visited = []
    euler_sample(
        lambda z, s, b: torch.zeros_like(z),
        torch.zeros(2),
        sigma_grid(3, S),
        route=lambda s: int(p.block_of(s)),
        on_step=lambda i, s, b, d: visited.append(b),
    )
    assert visited == [0, 1, 2]


@pytest.mark.parametrize("blocks", [1, 3, 4])
def test_oracle_gaussian_denoiser_reproduces_the_data_variance(blocks):
    """Data y ~ N(0, s^2): the exact denoiser is D(z, sigma) = s^2 / (s^2 + sigma^2) z. Routed
    over B fake blocks (each the exact denoiser), the sampler ends with variance
    s^2 + sigma_min^2."""
    s = 0.5
    p = BlockPartition.create(blocks)
    calls = [0] * blocks

    def denoise(z, sigma, block):
        calls[block] += 1
        return s**2 / (s**2 + sigma**2) * z

    gen = torch.Generator().manual_seed(0)
    z0 = S.sigma_max * torch.randn(200_000, generator=gen, dtype=torch.float64)
    z = euler_sample(denoise, z0, sigma_grid(300, S), route=lambda x: int(p.block_of(x)))
    # Starting at N(0, sigma_max^2) instead of N(0, sigma_max^2 + s^2) scales the std by
    # sigma_max / sqrt(sigma_max^2 + s^2), which is within 2e-5 of 1 here.
    assert z.std().item() == pytest.approx(math.sqrt(s**2 + 0.002**2), rel=0.01)
    assert calls == [300 // blocks] * blocks


def test_karras_grid_oracle():
    s = 1.0
    gen = torch.Generator().manual_seed(1)
    z0 = S.sigma_max * torch.randn(100_000, generator=gen, dtype=torch.float64)
    z = euler_sample(
        lambda z, sigma, b: s**2 / (s**2 + sigma**2) * z, z0, sigma_grid(1000, S, "karras")
    )
    assert z.std().item() == pytest.approx(1.0, rel=0.01)


def test_wrong_sign_update_would_fail():
    """Guard against the paper's printed sign: the corrected update must shrink the noise."""
    z = torch.tensor([10.0])
    out = euler_step(z, torch.tensor([0.0]), sigma=10.0, sigma_next=1.0)
    assert out.item() == pytest.approx(1.0)
