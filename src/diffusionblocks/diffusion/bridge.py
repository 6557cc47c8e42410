"""The soft bridge between a denoiser that outputs logits over a table of targets and the
sampler, which needs the denoised estimate D in the target space.

For discrete targets (class labels, tokens) the clean target of class k is row k of the
L2-normalised embedding table. A block outputs logits; the sampler's Euler step needs D, the
expected clean target under the block's posterior: ``D = softmax(logits / T) @ normalize(E)``.
The table must be the same normalised one the loss used as targets (the authors' code uses the
raw table here, an inconsistency we do not copy). T = 0 takes the argmax row (a hard bridge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unit_table(weight: torch.Tensor) -> torch.Tensor:
    """The clean targets: the rows of an embedding table scaled to unit L2 norm (K, C)."""
    return F.normalize(weight, dim=-1)


def soft_bridge(
    logits: torch.Tensor, table: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """D = softmax(logits / T) @ table over the last axis of ``logits`` (..., K) -> (..., C);
    T = 0 picks the argmax row."""
    if temperature == 0:
        return table[logits.argmax(-1)]
    return (logits / temperature).softmax(-1) @ table
