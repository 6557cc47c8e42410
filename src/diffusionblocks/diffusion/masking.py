"""Masked (absorbing-state) diffusion over tokens, MD4-style, with the linear schedule
alpha(t) = 1 - t (docs/method.md §6.3).

A token survives to time t with probability alpha(t) and is replaced by the mask token otherwise.
The continuous-time ELBO (negative, in nats) is
    E_t [ w(t) * sum_{i masked} -log p(x_i | x_t) ],   w(t) = -alpha'(t) / (1 - alpha(t)) = 1 / t.
With the linear schedule the ELBO's mass is uniform in t, so B blocks split t into equal intervals:
block b owns t in [1 - (b+1)/B, 1 - b/B] (block 0 = most masked). Overlap gamma widens each
interval by gamma x its width on both sides, clamped to [t_min, 1].
"""

from __future__ import annotations

import torch

T_MIN = 1e-3  # smallest masking time used for training and estimation (w(t) = 1/t is finite)


def alpha(t: torch.Tensor) -> torch.Tensor:
    """alpha(t) = 1 - t: the probability that a token is still unmasked at time t."""
    return 1 - t


def elbo_weight(t: torch.Tensor) -> torch.Tensor:
    """w(t) = -alpha'(t) / (1 - alpha(t)) = 1 / t for the linear schedule."""
    return 1.0 / t


def mask_tokens(
    ids: torch.Tensor, t: torch.Tensor, mask_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each token of ids (N, T) independently with probability 1 - alpha(t) = t, t (N,).
    Returns (x_t, masked) with masked a bool (N, T). Randomness is drawn on the CPU."""
    u = torch.rand(ids.shape, generator=generator).to(ids.device)
    masked = u < (1 - alpha(t))[:, None].to(ids.device)
    return torch.where(masked, torch.full_like(ids, mask_id), ids), masked


class TimePartition:
    """Equal intervals of masking time t for B blocks; block 0 owns the most masked end."""

    def __init__(self, num_blocks: int, overlap: float = 0.0, t_min: float = T_MIN):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if not 0 <= overlap <= 1:
            raise ValueError(f"overlap must be in [0, 1], got {overlap}")
        self.num_blocks, self.overlap, self.t_min = num_blocks, overlap, t_min

    def interval(self, block: int) -> tuple[float, float]:
        """(lo, hi) in t owned by ``block``: [1 - (b+1)/B, 1 - b/B]."""
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} out of range for {self.num_blocks} blocks")
        B = self.num_blocks
        return 1 - (block + 1) / B, 1 - block / B

    def train_interval(self, block: int) -> tuple[float, float]:
        lo, hi = self.interval(block)
        pad = self.overlap * (hi - lo)
        return max(self.t_min, lo - pad), min(1.0, hi + pad)

    def block_of(self, t: torch.Tensor | float) -> torch.Tensor:
        """Owning block of each t (t = 1 -> block 0; a boundary belongs to the less masked
        block, the one that runs next when sampling walks t down)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        k = torch.ceil(t * self.num_blocks - 1e-9).long() - 1  # ascending interval index
        k = k.clamp(0, self.num_blocks - 1)
        return self.num_blocks - 1 - k

    def sample_t(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        lo, hi = self.train_interval(block)
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def sample_t_full(n: int, generator: torch.Generator, t_min: float = T_MIN) -> torch.Tensor:
    """t ~ U(t_min, 1) for a denoiser over the whole range."""
    return t_min + (1 - t_min) * torch.rand(n, generator=generator, dtype=torch.float64)
