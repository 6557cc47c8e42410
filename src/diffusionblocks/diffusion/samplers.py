"""Sampling: noise-level grids and the block-routed Euler sampler (SPEC §5).

A denoiser is any callable ``denoise(z, sigma, block) -> D`` that returns the estimate of the clean
target. The sampler walks a descending grid of noise levels and asks ``route`` which block owns the
level of each step, so the same code samples from one end-to-end denoiser (route to 0) or from B
blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .noise import NoiseSchedule

GRIDS = ("cdf", "karras")

Denoiser = Callable[[torch.Tensor, float, int], torch.Tensor]
Router = Callable[[float], int]


def sigma_grid(
    steps: int, schedule: NoiseSchedule, kind: str = "cdf", rho: float = 7.0
) -> torch.Tensor:
    """Descending noise levels sigma_0 = sigma_max > ... > sigma_steps = sigma_min (float64).

    - ``cdf``: equally spaced in q(sigma) between q(sigma_max) and q(sigma_min), so that with the
      equi-probability partition each block gets an equal share of the steps (SPEC §5).
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


def euler_step(z: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float):
    """One Euler step of the probability-flow ODE (SPEC §5, with the paper's sign error fixed):
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
