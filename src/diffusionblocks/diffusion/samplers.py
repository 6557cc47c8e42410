"""Sampling: noise-level grids, the block-routed chain of denoiser calls, the Euler step.

Every task's inference is one :func:`chain`: ``calls`` denoiser calls at descending noise levels
from sigma_max to sigma_min, an Euler step of the probability-flow ODE between consecutive calls,
and the last call's output as the prediction. "Steps" means denoiser calls everywhere in this
library, the last call included: with the CDF grid and the equi-probability partition, ``calls =
B`` calls every block exactly once, which costs one forward pass of the whole network, as the
paper's procedure (B - 1 Euler steps, then a final call at sigma_min). ``route`` says which block
owns each level, so the same code samples from one end-to-end denoiser (route to 0) or from B
blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .noise import NoiseSchedule

GRIDS = ("cdf", "karras")

# ``call(z, sigma, block)``: a denoiser call; returns D, or logits that a bridge turns into D
Denoiser = Callable[[torch.Tensor, float, int], torch.Tensor]
Router = Callable[[float], int]


def sigma_grid(
    steps: int, schedule: NoiseSchedule, kind: str = "cdf", rho: float = 7.0
) -> torch.Tensor:
    """Descending noise levels sigma_0 = sigma_max > ... > sigma_steps = sigma_min (float64).

    - ``cdf``: equally spaced in q(sigma) between q(sigma_max) and q(sigma_min), so that with the
      equi-probability partition each block gets an equal share of the steps
      (docs/method.md §5).
    - ``karras``: the EDM grid, equally spaced in sigma^(1/rho).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    frac = torch.arange(steps + 1, dtype=torch.float64) / steps
    lo, hi = schedule.sigma_min, schedule.sigma_max
    if kind == "cdf":
        q_hi, q_lo = schedule.cdf(torch.tensor([hi, lo], dtype=torch.float64))
        grid = schedule.icdf(q_hi + frac * (q_lo - q_hi))
    elif kind == "karras":
        grid = (hi ** (1 / rho) + frac * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    else:
        raise ValueError(f"unknown grid {kind!r}; choose one of {', '.join(GRIDS)}")
    grid[0], grid[-1] = hi, lo
    return grid


def euler_step(
    z: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float
) -> torch.Tensor:
    """One Euler step of the probability-flow ODE, the paper's Eqs. 3-5 (sign corrected;
    docs/method.md §5):
    d = (z - D) / sigma,  z <- z + (sigma_next - sigma) * d."""
    d = (z - denoised) / sigma
    return z + (sigma_next - sigma) * d


@torch.no_grad()
def euler_sample(
    denoise: Denoiser,
    z: torch.Tensor,
    sigmas: torch.Tensor,
    route: Router | None = None,
    on_step: Callable[[int, float, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate from ``sigmas[0]`` down to ``sigmas[-1]`` with len(sigmas)-1 Euler steps.

    Step i evaluates ``denoise(z, sigmas[i], route(sigmas[i]))``; ``route`` defaults to a single
    block 0. ``on_step(i, sigma, block, denoised)`` is called after each denoiser call.
    Returns z at the last level; the caller decides what to read out of it.
    """
    route = route or (lambda sigma: 0)
    levels = [float(s) for s in sigmas]
    for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
        block = int(route(sigma))
        denoised = denoise(z, sigma, block)
        if on_step is not None:
            on_step(i, sigma, block, denoised)
        z = euler_step(z, denoised, sigma, sigma_next)
    return z


def chain_levels(
    calls: int, schedule: NoiseSchedule, kind: str = "cdf", rho: float = 7.0
) -> list[float]:
    """Noise levels of a chain of ``calls`` denoiser calls, descending: ``[sigma_max]`` for one
    call (a single prediction from pure noise), otherwise ``calls`` levels from sigma_max to
    sigma_min inclusive on the ``kind`` grid (:func:`sigma_grid` with ``calls - 1`` steps)."""
    if not isinstance(calls, int) or isinstance(calls, bool) or calls < 1:
        raise ValueError(f"steps (denoiser calls) must be an integer >= 1, got {calls!r}")
    if calls == 1:
        return [float(schedule.sigma_max)]
    return [float(s) for s in sigma_grid(calls - 1, schedule, kind, rho)]


@torch.no_grad()
def chain(
    call: Denoiser,
    z: torch.Tensor,
    levels: list[float],
    route: Router | None = None,
    bridge: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the inference chain; returns the output of the last call.

    Call i evaluates ``out = call(z, levels[i], route(levels[i]))``; ``bridge(out)`` turns it
    into the denoised estimate D (identity when ``out`` already is D; the soft bridge when it is
    logits over a table of targets), and the Euler step ``z <- z + (sigma_next - sigma) (z - D) /
    sigma`` (the paper's Eqs. 3-5, sign corrected) moves z to the next level. No step follows the
    last call: its output is the prediction (logits, or the clean estimate D).
    """
    route = route or (lambda sigma: 0)
    bridge = bridge or (lambda out: out)
    out = z
    for i, sigma in enumerate(levels):
        out = call(z, sigma, int(route(sigma)))
        if i + 1 < len(levels):
            z = euler_step(z, bridge(out), sigma, levels[i + 1])
    return out


def mean_log_probs(logits: list[torch.Tensor]) -> torch.Tensor:
    """The ensemble readout's pooling: the mean of the calls' log-probabilities over the last
    axis (not renormalised; a softmax or cross-entropy of it renormalises)."""
    return torch.stack([x.log_softmax(-1) for x in logits]).mean(0)
