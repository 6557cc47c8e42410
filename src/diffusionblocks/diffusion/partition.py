"""Partition of the noise range into blocks (docs/method.md §3).

Boundaries are kept in ascending sigma. **Block 0 (the first layers) owns the noisiest interval**;
the last block owns the cleanest. :meth:`BlockPartition.block_of` is the one function that maps a
noise level to its block; training, evaluation and sampling all go through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .noise import NoiseSchedule

PARTITIONS = ("equi-probability", "uniform-log", "uniform")

# A noise level within this relative distance above a boundary counts as on the boundary. Grids
# and boundaries are computed along different float paths; without it a sampler step that starts
# exactly on a boundary could be routed to the neighbouring block.
_BOUNDARY_RTOL = 1e-6


def partition_boundaries(
    num_blocks: int, schedule: NoiseSchedule, kind: str = "equi-probability"
) -> torch.Tensor:
    """Ascending boundaries sigma_0 = sigma_min < ... < sigma_B = sigma_max (float64, length B+1).

    - ``equi-probability``: q_b = q(sigma_min) + (b/B)(q(sigma_max) - q(sigma_min)),
      sigma_b = q^-1(q_b): each interval holds 1/B of the truncated log-normal mass
      (docs/method.md §3).
    - ``uniform-log``: equal widths in ln sigma.
    - ``uniform``: equal widths in sigma.
    """
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be an integer >= 1, got {num_blocks!r}")
    frac = torch.arange(num_blocks + 1, dtype=torch.float64) / num_blocks
    lo, hi = schedule.sigma_min, schedule.sigma_max
    if kind == "equi-probability":
        q_lo, q_hi = schedule.cdf(torch.tensor([lo, hi], dtype=torch.float64))
        sigma = schedule.icdf(q_lo + frac * (q_hi - q_lo))
    elif kind == "uniform-log":
        sigma = torch.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo)))
    elif kind == "uniform":
        sigma = lo + frac * (hi - lo)
    else:
        raise ValueError(f"unknown partition {kind!r}; choose one of {', '.join(PARTITIONS)}")
    sigma[0], sigma[-1] = lo, hi  # exact end points, whatever the float path
    return sigma


def widen_interval(
    lo: float, hi: float, overlap: float, sigma_min: float, sigma_max: float
) -> tuple[float, float]:
    """Widen [lo, hi] in ln sigma by ``overlap`` x its ln-width on each side, clamped to
    [sigma_min, sigma_max] (docs/method.md §3, overlap gamma)."""
    pad = overlap * (math.log(hi) - math.log(lo))
    return max(sigma_min, lo * math.exp(-pad)), min(sigma_max, hi * math.exp(pad))


@dataclass(frozen=True)
class BlockPartition:
    """How B blocks share the noise range.

    Build with :meth:`create`. ``boundaries`` are ascending; block ``b`` owns
    ``[boundaries[B-1-b], boundaries[B-b]]`` and trains on that interval widened by ``overlap``.
    """

    schedule: NoiseSchedule
    boundaries: tuple[float, ...]  # ascending, length B+1
    overlap: float = 0.0  # gamma: widening in ln sigma, as a fraction of each interval's ln-width
    kind: str = "equi-probability"  # how the boundaries were made
    _inner: torch.Tensor = field(init=False, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        num_blocks: int,
        schedule: NoiseSchedule | None = None,
        kind: str = "equi-probability",
        overlap: float = 0.0,
    ) -> BlockPartition:
        schedule = schedule or NoiseSchedule()
        bounds = partition_boundaries(num_blocks, schedule, kind)
        return cls(schedule, tuple(float(b) for b in bounds), overlap, kind)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.overlap) and 0.0 <= self.overlap <= 1.0):
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap}")
        if len(self.boundaries) < 2 or any(
            a >= b for a, b in zip(self.boundaries, self.boundaries[1:], strict=False)
        ):
            raise ValueError(f"boundaries must be strictly ascending, got {self.boundaries}")
        object.__setattr__(self, "_inner", torch.tensor(self.boundaries[1:-1], dtype=torch.float64))

    @property
    def num_blocks(self) -> int:
        return len(self.boundaries) - 1

    def interval(self, block: int) -> tuple[float, float]:
        """The (lo, hi) noise interval block ``block`` owns. Block 0 is the noisiest."""
        self._check_block(block)
        k = self.num_blocks - 1 - block  # ascending interval index
        return self.boundaries[k], self.boundaries[k + 1]

    def train_interval(self, block: int) -> tuple[float, float]:
        """The interval block ``block`` trains on: its own, widened by ``overlap``."""
        lo, hi = self.interval(block)
        return widen_interval(
            lo, hi, self.overlap, self.schedule.sigma_min, self.schedule.sigma_max
        )

    def mass(self, block: int) -> float:
        """Probability of the block's own interval under the truncated training distribution."""
        return self.schedule.truncated_mass(*self.interval(block))

    def block_of(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The block that owns each noise level (LongTensor, shape of ``sigma``).

        Intervals are closed at the top: a level on the boundary between two blocks belongs to the
        cleaner one (the block that runs next when sampling walks down). sigma_min belongs to the
        last block, sigma_max to block 0; levels outside the range are clamped to those blocks.
        """
        s = torch.as_tensor(sigma, dtype=torch.float64).cpu()
        k = torch.searchsorted(self._inner * (1 + _BOUNDARY_RTOL), s.contiguous(), right=False)
        return (self.num_blocks - 1 - k).to(torch.long)

    def sample_sigma(
        self,
        block: int,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """n noise levels for training block ``block``: the log-normal restricted to its
        widened interval, one per example (docs/method.md §3)."""
        lo, hi = self.train_interval(block)
        return self.schedule.sample(n, generator=generator, lo=lo, hi=hi, device=device)

    def describe(self) -> dict:
        """Plain-data summary: ascending ``boundaries`` and, per block, its owned interval,
        training interval and probability mass."""
        blocks = []
        for b in range(self.num_blocks):
            lo, hi = self.interval(b)
            tlo, thi = self.train_interval(b)
            blocks.append(
                {
                    "block": b,
                    "sigma_lo": lo,
                    "sigma_hi": hi,
                    "train_lo": tlo,
                    "train_hi": thi,
                    "mass": self.mass(b),
                }
            )
        return {
            "partition": self.kind,
            "overlap": self.overlap,
            "boundaries": list(self.boundaries),
            "blocks": blocks,
        }

    def _check_block(self, block: int) -> None:
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} out of range for {self.num_blocks} blocks")
