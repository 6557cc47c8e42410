"""What the trainer reads of a config: the ``training`` and ``run`` groups and what they resolve
to. The trainer and its components get this, never the whole config; a checkpoint's identity
(the config hash) comes from the task's config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingSettings:
    """The keys that drive training (see ``RunConfig`` for each one's meaning)."""

    method: str
    seed: int
    epochs: float
    batch_size: int
    lr: float
    weight_decay: float
    warmup: float
    min_lr_ratio: float
    grad_clip: float
    block_order: str  # the ``schedule`` key
    cycle_steps: int
    nan_policy: str
    nan_max_skips: int
    shared_init: str | None
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    precision: str  # fp32 | bf16 (autocast around each block's loss)
    compile: bool  # torch.compile each block before it trains
    # resolved from the config
    trained_blocks: tuple[int, ...]
    shared_policy: str
    block_resident: bool
