"""The pure functions a run is scheduled by: which block trains at each step
(``block_sequence``), the learning rate of a step (``learning_rate``), the optimizer of a block
(``make_optimizer``), which examples a step reads (``batch_indices``), and the config hash that
checkpoints carry (``resume_hash``). Each is a function of the config, seed and step; ``Plan``
computes them for a run once (its budget: steps per epoch, per block and in all; the blocks, the
examples and the learning rates of each step). ``Position`` is where along its plan a run is (the
global step, each block's steps, the noise generators): the only state, advanced by the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import SAFE_RESUME_KEYS, RunConfig, TrainingSettings
from .runfolder import DATA_KEYS

RESUME_HASH_IGNORE = (*SAFE_RESUME_KEYS, *DATA_KEYS)


def resume_hash(config: RunConfig) -> str:
    """The config hash that checkpoints carry: keys that may change on resume are left out, and
    where the data lives (a moved file is checked by its bytes, ``loading.check_moved_data``)."""
    return config.config_hash(ignore=RESUME_HASH_IGNORE)


def block_sequence(
    schedule: str, blocks: tuple[int, ...], steps_per_block: int, seed: int, chunk: int = 1
) -> torch.Tensor:
    """The block trained at each global step (LongTensor of length len(blocks) * steps_per_block).

    - ``random``: a random order in which every block appears exactly ``steps_per_block`` times
      (the paper draws a block uniformly per step; drawing without replacement keeps that
      marginal and gives each block exactly its budget, so its cosine schedule ends where it
      should);
    - ``cycle``: round robin, ``chunk`` consecutive steps per visit (fewer block swaps in
      block-resident training);
    - ``sequential``: the first block to completion, then the next, ...
    """
    k = len(blocks)
    total = k * steps_per_block
    table = torch.tensor(blocks, dtype=torch.long)
    if schedule == "random":
        gen = torch.Generator().manual_seed(seed * 7919 + 2)
        return table.repeat_interleave(steps_per_block)[torch.randperm(total, generator=gen)]
    if schedule == "cycle":
        rounds = math.ceil(steps_per_block / chunk)  # the last round may be short
        lengths = [min(chunk, steps_per_block - r * chunk) for r in range(rounds)]
        return torch.tensor(
            [u for n in lengths for u in blocks for _ in range(n)], dtype=torch.long
        )
    if schedule == "sequential":
        return table[torch.arange(total) // steps_per_block]
    if schedule == "synchronous":  # every step trains every block; the sequence is not used
        return table[torch.zeros(total, dtype=torch.long)]
    raise ValueError(f"unknown schedule {schedule!r}")


def learning_rate(step: int, total: int, peak: float, warmup: float, min_ratio: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to ``peak * min_ratio``."""
    warm = int(warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(
    params: list[torch.nn.Parameter], settings: TrainingSettings
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, or vectors)."""
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr, betas=(0.9, 0.999))


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


@dataclass(frozen=True, eq=False)
class Plan:
    """A run's budget and order (docs/method.md §4): every trained block gets ``steps_per_block =
    ceil(epochs * steps_per_epoch)`` updates; ``blocks_at`` and ``batch_indices`` say what each
    global step trains and reads."""

    blocks: tuple[int, ...]  # the trained blocks (config ``blocks``)
    local_blocks: tuple[int, ...]  # the blocks this process trains (block-parallel: one)
    synchronous: bool  # each global step trains every local block on the same batch
    sequence: torch.Tensor  # the block of each global step (not synchronous)
    steps_per_epoch: int
    steps_per_block: int
    total_steps: int
    batch_size: int
    seed: int
    train_size: int
    lr: float  # peak learning rate, reached after ``warmup`` of the steps, then cosine decay
    warmup: float
    min_lr_ratio: float
    data_shard: int = 0  # data parallelism: this rank reads part ``data_shard`` of every step
    data_shards: int = 1

    @classmethod
    def of(
        cls,
        settings: TrainingSettings,
        num_blocks: int,
        train_size: int,
        data_shard: tuple[int, int] = (0, 1),
        local_blocks: tuple[int, ...] | None = None,
    ) -> Plan:
        """The plan of ``settings`` for a model of ``num_blocks`` blocks and ``train_size``
        training examples; ``local_blocks`` (block-parallel) makes every step a synchronous step
        of them."""
        c = settings
        blocks = c.trained_blocks
        if any(u >= num_blocks for u in blocks):
            raise ValueError(f"blocks {blocks} out of range for {num_blocks} blocks")
        shard, shards = data_shard
        steps_per_epoch = train_size // (c.batch_size * shards)
        if steps_per_epoch < 1:
            raise ValueError(
                f"batch_size {c.batch_size} x {shards} data-parallel rank(s) is larger "
                f"than the {train_size} training examples"
            )
        steps_per_block = max(1, math.ceil(c.epochs * steps_per_epoch))
        synchronous = local_blocks is not None or c.block_order == "synchronous"
        return cls(
            blocks=blocks,
            local_blocks=tuple(blocks) if local_blocks is None else local_blocks,
            synchronous=synchronous,
            sequence=block_sequence(c.block_order, blocks, steps_per_block, c.seed, c.cycle_steps),
            steps_per_epoch=steps_per_epoch,
            steps_per_block=steps_per_block,
            # Synchronous: each global step trains every block on the same batch.
            total_steps=steps_per_block * (1 if synchronous else len(blocks)),
            batch_size=c.batch_size,
            seed=c.seed,
            train_size=train_size,
            lr=c.lr,
            warmup=c.warmup,
            min_lr_ratio=c.min_lr_ratio,
            data_shard=shard,
            data_shards=shards,
        )

    def blocks_at(self, step: int) -> list[int]:
        """The blocks trained at global step ``step``."""
        return list(self.local_blocks) if self.synchronous else [int(self.sequence[step])]

    def block_lr(self, block_step: int) -> float:
        """The learning rate of a block's ``block_step``-th step (a schedule over its budget)."""
        return learning_rate(block_step, self.steps_per_block, self.lr, self.warmup,
                             self.min_lr_ratio)  # fmt: skip

    def global_lr(self, step: int) -> float:
        """The learning rate of global step ``step`` (modules shared by all blocks)."""
        return learning_rate(step, self.total_steps, self.lr, self.warmup, self.min_lr_ratio)

    def batch_indices(self, step: int) -> torch.Tensor:
        """The examples this process reads at global step ``step``."""
        return batch_indices(step, self.steps_per_epoch, self.train_size, self.batch_size,
                             self.seed, self.data_shard, self.data_shards)  # fmt: skip


@dataclass
class Position:
    """Where training is: the global step, each block's steps, and the noise generators (one for
    the block schedules, one per block for synchronous steps)."""

    step: int
    block_steps: list[int]
    generator: torch.Generator
    block_generators: dict[int, torch.Generator]

    @classmethod
    def start(cls, seed: int, num_blocks: int, blocks: tuple[int, ...]) -> Position:
        """Step 0 of a run with ``seed``. Synchronous training draws each block's noise from its
        own generator, so that a block-parallel run (one process per block) makes exactly the
        same draws."""
        return cls(
            step=0,
            block_steps=[0] * num_blocks,
            generator=torch.Generator().manual_seed(seed + 1),
            block_generators={
                u: torch.Generator().manual_seed((seed + 1) * 1_000_003 + u) for u in blocks
            },
        )

    def advance(self, blocks: list[int]) -> None:
        """One global step that counts as a step of each of ``blocks``."""
        for u in blocks:
            self.block_steps[u] += 1
        self.step += 1
