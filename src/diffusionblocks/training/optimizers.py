"""The optimizers of a run: one AdamW per block, created when the block first trains (so a block
that does not train cannot move: no momentum or weight-decay drift), the optimizer states loaded
from a checkpoint or a swapped-out block's file that wait for their block, and the optimizer of
the shared modules, which the ``shared`` policy (``shared.py``) decides the parameters of.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import torch

from .schedule import make_optimizer
from .shared import SharedModules

if TYPE_CHECKING:
    from ..config import TrainingSettings
    from ..tasks.base import Task


class Optimizers:
    """Per-block optimizers, their pending states, and the shared modules' optimizer."""

    def __init__(self, task: Task, settings: TrainingSettings, shared: SharedModules) -> None:
        self.task = task
        self.settings = settings
        self.shared = shared
        self.by_block: Final[dict[int, torch.optim.AdamW]] = {}
        self.pending: Final[dict[int, dict[str, Any]]] = {}  # loaded states of unbuilt optimizers
        self.shared_optimizer: torch.optim.AdamW | None = None

    def for_block(self, block: int) -> torch.optim.AdamW:
        """The optimizer of ``block``, built (with its pending state, if any) on first use."""
        if block not in self.by_block:
            opt = make_optimizer(self.task.block_parameters(block), self.settings)
            if block in self.pending:
                opt.load_state_dict(self.pending.pop(block))
            self.by_block[block] = opt
        return self.by_block[block]

    def prepare_shared(self, block: int) -> list[torch.nn.Parameter]:
        """Apply the shared policy before a step of ``block``; a changed set of trainable shared
        parameters gets a fresh optimizer (a frozen module's optimizer state is freed)."""
        if self.shared.prepare(block):
            params = self.shared.current
            self.shared_optimizer = make_optimizer(params, self.settings) if params else None
        return self.shared.current

    def restart_shared(self, block: int) -> None:
        """After loading a checkpoint: the policy applied afresh for ``block`` (the block of the
        last saved step), with a fresh shared optimizer."""
        self.shared.forget()
        params = self.prepare_shared(block)
        self.shared_optimizer = make_optimizer(params, self.settings) if params else None

    def drop_finished(self, block: int, finished: Callable[[int], bool]) -> None:
        """In sequential mode a finished block's optimizer state is freed for good."""
        if self.settings.block_order != "sequential":
            return
        for u in list(self.by_block):
            if u != block and finished(u):
                del self.by_block[u]

    def state_bytes(self) -> int:
        """Bytes of optimizer state held: the built optimizers' and the pending states'."""
        total = 0
        for opt in [self.shared_optimizer, *self.by_block.values()]:
            if opt is None:
                continue
            for state in opt.state.values():
                total += _tensor_bytes(state)
        for saved in self.pending.values():  # loaded, not yet handed to an optimizer
            for state in saved.get("state", {}).values():
                total += _tensor_bytes(state)
        return total


def step_at(opt: torch.optim.Optimizer, lr: float) -> None:
    """An optimizer step at learning rate ``lr``."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()


def _tensor_bytes(state: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
