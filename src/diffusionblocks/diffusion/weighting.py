"""Per-example loss weighting over noise levels (docs/method.md §2, §7.1).

With an L2 loss the EDM weight cancels c_out^2 exactly. With a cross-entropy loss there is no
cancellation and the weight reaches about 250,000 at sigma_min, so this module offers four ways to
combine a per-example loss with the weight:

- ``edm``: mean(loss_i * w(sigma_i)), the literal per-example weighting.
- ``batch``: mean(loss) * mean(w), what the official code computes (a batch scalar).
- ``clamped``: mean(loss_i * min(w(sigma_i), clamp)).
- ``none``: mean(loss), no weighting.
"""

from __future__ import annotations

import torch

from .noise import edm_loss_weight

WEIGHTINGS = ("edm", "batch", "clamped", "none")


def weighted_loss(
    per_example: torch.Tensor,
    sigma: torch.Tensor,
    mode: str,
    sigma_data: float,
    clamp: float = 100.0,
) -> torch.Tensor:
    """Reduce a per-example loss (shape (N,)) over the batch with the noise-level weighting
    ``mode`` (one of :data:`WEIGHTINGS`). ``sigma`` has shape (N,)."""
    if per_example.shape != sigma.shape:
        raise ValueError(
            f"per-example loss {tuple(per_example.shape)} and sigma {tuple(sigma.shape)} differ"
        )
    if mode == "none":
        return per_example.mean()
    w = edm_loss_weight(sigma.to(per_example.dtype), sigma_data)
    if mode == "edm":
        return (w * per_example).mean()
    if mode == "batch":
        return per_example.mean() * w.mean()
    if mode == "clamped":
        return (w.clamp(max=clamp) * per_example).mean()
    raise ValueError(f"unknown weighting {mode!r}; choose one of {', '.join(WEIGHTINGS)}")
