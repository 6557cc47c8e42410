"""Noise levels and EDM preconditioning (docs/method.md §2; Karras et al. 2022).

Everything here is a function of the noise level sigma and a handful of scalars. Nothing in this
module knows about images, tokens or networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "NoiseSchedule",
    "lognormal_cdf",
    "lognormal_icdf",
    "edm_preconditioning",
    "edm_loss_weight",
]


def lognormal_cdf(sigma: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """q(sigma) = Phi((ln sigma - P_mean) / P_std), the untruncated log-normal CDF
    (docs/method.md §3)."""
    return torch.special.ndtr((torch.log(sigma) - p_mean) / p_std)


def lognormal_icdf(q: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """Inverse of :func:`lognormal_cdf`: sigma = exp(P_mean + P_std * Phi^-1(q))."""
    return torch.exp(p_mean + p_std * torch.special.ndtri(q))


@dataclass(frozen=True)
class NoiseSchedule:
    """The EDM training noise distribution: ln sigma ~ N(P_mean, P_std^2) truncated to
    [sigma_min, sigma_max] (docs/method.md §2). All computations run in float64."""

    p_mean: float = -1.2  # mean of ln sigma
    p_std: float = 1.2  # standard deviation of ln sigma
    sigma_min: float = 0.002  # smallest noise level (end of sampling)
    sigma_max: float = 80.0  # largest noise level (start of sampling)
    sigma_data: float = 0.5  # assumed standard deviation of the clean target

    def __post_init__(self) -> None:
        if not self.p_std > 0:
            raise ValueError(f"p_std must be > 0, got {self.p_std}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")

    def cdf(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """q(sigma) of the untruncated log-normal, float64."""
        return lognormal_cdf(torch.as_tensor(sigma, dtype=torch.float64), self.p_mean, self.p_std)

    def icdf(self, q: torch.Tensor | float) -> torch.Tensor:
        """sigma with q(sigma) = q, float64."""
        return lognormal_icdf(torch.as_tensor(q, dtype=torch.float64), self.p_mean, self.p_std)

    def truncated_mass(self, lo: float, hi: float) -> float:
        """Probability that sigma falls in [lo, hi] under the truncated distribution."""
        q = self.cdf(torch.tensor([self.sigma_min, self.sigma_max, lo, hi], dtype=torch.float64))
        return float((q[3] - q[2]) / (q[1] - q[0]))

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        lo: float | None = None,
        hi: float | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Draw n noise levels from the log-normal truncated to [lo, hi] (default the full range).

        Inverse-CDF sampling: u ~ U(q(lo), q(hi)), sigma = exp(P_mean + P_std * Phi^-1(u))
        (docs/method.md §3). The uniform draw uses ``generator`` on the CPU, so results do not
        depend on the device. Returns float32 on ``device``.
        """
        lo = self.sigma_min if lo is None else lo
        hi = self.sigma_max if hi is None else hi
        if not self.sigma_min <= lo <= hi <= self.sigma_max:
            raise ValueError(
                f"interval [{lo}, {hi}] is not inside [{self.sigma_min}, {self.sigma_max}]"
            )
        q_lo, q_hi = self.cdf(torch.tensor([lo, hi], dtype=torch.float64))
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        sigma = self.icdf(q_lo + (q_hi - q_lo) * u).clamp(lo, hi)
        return sigma.to(device=device, dtype=torch.float32)


def edm_preconditioning(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM preconditioning (Karras et al. 2022, Table 1; docs/method.md §2).

    D(z, sigma) = c_skip * z + c_out * F(c_in * z, c_noise).
    Returns ``(c_skip, c_out, c_in, c_noise)`` with the shape of ``sigma``.
    """
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sd2)
    c_in = 1.0 / torch.sqrt(sigma**2 + sd2)
    c_noise = 0.25 * torch.log(sigma)
    return c_skip, c_out, c_in, c_noise


def edm_denoise(
    network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    sigma: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    """The paper's denoiser, the one place it is written (docs/method.md §2):
    ``D(z, sigma) = c_skip * z + c_out * F(c_in * z, c_noise)``.

    ``sigma`` broadcasts against ``z`` (e.g. (N, 1) for z (N, C), (N, 1, 1, 1) for images);
    ``network(c_in * z, c_noise)`` is F, called with c_noise = ln(sigma) / 4 of ``sigma``'s shape,
    and returns a tensor shaped like ``z``. Every task's loss and sampler call this.
    """
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
    return c_skip * z + c_out * network(c_in * z, c_noise)


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2, so that
    lambda * c_out^2 = 1 (docs/method.md §2)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def max_edm_weight(sigma_min: float, sigma_data: float) -> float:
    """The largest EDM weight on [sigma_min, inf): it is reached at sigma_min (about 250,000 for
    the defaults)."""
    return (sigma_min**2 + sigma_data**2) / (sigma_min * sigma_data) ** 2
