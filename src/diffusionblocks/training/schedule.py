"""The pure functions a run is scheduled by: which block trains at each step
(``block_sequence``), the learning rate of a step (``learning_rate``), the optimizer of a block
(``make_optimizer``), which examples a step reads (``batch_indices``), and the config hash that
checkpoints carry (``resume_hash``). No state: each is a function of the config, seed and step.
"""

from __future__ import annotations

import math

import torch

from ..config import SAFE_RESUME_KEYS, RunConfig
from .runfolder import DATA_KEYS

RESUME_HASH_IGNORE = (*SAFE_RESUME_KEYS, *DATA_KEYS)


def resume_hash(config: RunConfig) -> str:
    """The config hash that checkpoints carry: keys that may change on resume are left out, and
    where the data lives (a moved file is checked by its bytes, ``runs._check_moved_data``)."""
    return config.config_hash(ignore=RESUME_HASH_IGNORE)


def block_sequence(
    schedule: str, units: tuple[int, ...], steps_per_unit: int, seed: int, chunk: int = 1
) -> torch.Tensor:
    """The unit trained at each global step (LongTensor of length len(units) * steps_per_unit).

    - ``random``: a random order in which every unit appears exactly ``steps_per_unit`` times
      (the paper draws a block uniformly per step; drawing without replacement keeps that
      marginal and gives each block exactly its budget, so its cosine schedule ends where it
      should);
    - ``cycle``: round robin, ``chunk`` consecutive steps per visit (fewer block swaps in
      block-resident training);
    - ``sequential``: the first unit to completion, then the next, ...
    """
    k = len(units)
    total = k * steps_per_unit
    table = torch.tensor(units, dtype=torch.long)
    if schedule == "random":
        gen = torch.Generator().manual_seed(seed * 7919 + 2)
        return table.repeat_interleave(steps_per_unit)[torch.randperm(total, generator=gen)]
    if schedule == "cycle":
        rounds = math.ceil(steps_per_unit / chunk)  # the last round may be short
        lengths = [min(chunk, steps_per_unit - r * chunk) for r in range(rounds)]
        return torch.tensor([u for n in lengths for u in units for _ in range(n)], dtype=torch.long)
    if schedule == "sequential":
        return table[torch.arange(total) // steps_per_unit]
    if schedule == "synchronous":  # every step trains every unit; the sequence is not used
        return table[torch.zeros(total, dtype=torch.long)]
    raise ValueError(f"unknown schedule {schedule!r}")


def learning_rate(step: int, total: int, peak: float, warmup: float, min_ratio: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to ``peak * min_ratio``."""
    warm = int(warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(params: list[torch.nn.Parameter], config: RunConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, or vectors)."""
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.999))


def batch_indices(
    step: int, steps_per_epoch: int, n: int, batch: int, seed: int, shard: int = 0, shards: int = 1
) -> torch.Tensor:
    """Indices of the examples of global step ``step``: epoch e = step // steps_per_epoch uses its
    own seeded permutation, so the data order is a pure function of (seed, step).

    Data parallelism: with ``shards`` ranks, each step of an epoch takes ``shards`` consecutive
    batches of the permutation and rank ``shard`` the shard-th of them, so the ranks' batches are
    disjoint and together they cover what one rank with a ``shards`` times larger batch sees.
    """
    epoch, pos = divmod(step, steps_per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    start = (pos * shards + shard) * batch
    return torch.randperm(n, generator=gen)[start : start + batch]
