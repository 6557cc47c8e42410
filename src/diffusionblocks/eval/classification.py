"""Per-block diagnostics of a DiffusionBlocks classifier: what each block does on its own,
beside the chain's accuracy (``dblocks eval`` prints them per block)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..diffusion import BlockPartition, NoiseSchedule


class BlockClassifier(Protocol):
    """What the diagnostics need of a block-wise classification task."""

    partition: BlockPartition
    schedule: NoiseSchedule
    device: torch.device

    def label_table(self) -> torch.Tensor: ...

    def block_features(self, block: int, inputs: torch.Tensor) -> Any: ...

    def block_output(
        self, block: int, z: torch.Tensor, sigma: torch.Tensor, features: Any
    ) -> torch.Tensor: ...


@torch.no_grad()
def block_diagnostics(
    task: BlockClassifier,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_blocks: int,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """Per block, mean cross-entropy (nats) of its logits over the examples of ``batches``:

    - ``ce_at_sigma_max``: called once on pure noise at sigma_max (the chain's first call, as if
      this block owned it);
    - ``denoise_ce``: given the label embedding noised at a sigma drawn from the block's own
      training interval (how well it does the job it was trained for).
    """
    ce_sigma_max = [0.0] * num_blocks
    denoise_ce = [0.0] * num_blocks
    total = 0
    for images, labels in batches:
        n = len(labels)
        total += n
        target = task.label_table()[labels]
        for b in range(num_blocks):
            features = task.block_features(b, images)
            s_max = torch.full((n,), task.schedule.sigma_max, device=task.device)
            z = s_max[:, None] * torch.randn(target.shape, generator=generator).to(task.device)
            logits = task.block_output(b, z, s_max, features)
            ce_sigma_max[b] += float(F.cross_entropy(logits, labels, reduction="sum"))
            sigma = task.partition.sample_sigma(b, n, generator, task.device)
            noise = torch.randn(target.shape, generator=generator).to(task.device)
            logits = task.block_output(b, target + sigma[:, None] * noise, sigma, features)
            denoise_ce[b] += float(F.cross_entropy(logits, labels, reduction="sum"))
    return [
        {"ce_at_sigma_max": ce_sigma_max[b] / total, "denoise_ce": denoise_ce[b] / total}
        for b in range(num_blocks)
    ]
