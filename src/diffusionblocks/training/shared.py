"""What happens to the shared modules while blocks train: the ``shared`` policy.

Every block uses some modules besides its own layers: the input stem, the sigma embedder, the
output head and, for discrete targets, the embedding table whose normalised rows *are* the
denoising targets. When all blocks train together (the paper's random schedule) the shared
modules simply train with whichever block is drawn. When blocks train one after another
(block-resident training), a shared module that keeps training after block b has finished moves
block b's inputs, conditioning, read-out and targets away from what block b learned against.
The policies:

- ``sync``: trained by every block at every step (random/cycle schedules; averaged over blocks
  in synchronous and block-parallel runs). In sequential training this drifts: measured.
- ``frozen``: never trained (initial weights, or ``shared_init``).
- ``first-block``: trained with the first block, then frozen.
- ``block-copies``: every block trains its own copy of the shared modules, started from the
  previous block's final copy; the target table trains with the first block only, then stays
  frozen (all blocks must denoise towards the same targets). A finished block's copy is kept, so
  nothing a finished block depends on ever changes again; at inference each block runs with its
  own copy.
- ``per-block``: block-parallel runs; each process trains its own copy (tasks without a learned
  target table only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..tasks.base import Task
    from .checkpoint import Checkpoint


class SharedModules:
    """Applies a ``shared`` policy to a task's shared parameters, block by block."""

    def __init__(self, task: Task, policy: str, first_block: int):
        # The task's network, duck-typed: ``blocks`` and (block-copies) ``set_shared_variants``.
        self.model: Any = task.model
        self.policy = policy
        self.first_block = first_block
        self.params: list[nn.Parameter] = task.shared_parameters()
        names = {id(p): n for n, p in self.model.named_parameters()}
        prefixes = tuple(task.target_prefixes())
        self.target_ids = {id(p) for p in self.params if names[id(p)].startswith(prefixes)}
        self.owner: int | None = None  # block-copies: the block whose copy is live
        self.copies: dict[int, dict[str, torch.Tensor]] = {}  # finished blocks' copies
        self._trainable: tuple[int, ...] | None = None
        self.current: list[nn.Parameter] = []  # what trains now (set by prepare)

    # -- which parameters train --------------------------------------------------------------
    def trainable(self, block: int) -> list[nn.Parameter]:
        """The shared parameters that take a step when ``block`` trains."""
        if self.policy == "frozen":
            return []
        if self.policy == "first-block":
            return self.params if block == self.first_block else []
        if self.policy == "block-copies":
            return [
                p for p in self.params if block == self.first_block or id(p) not in self.target_ids
            ]
        return self.params  # sync, per-block

    def prepare(self, block: int) -> bool:
        """Before a step of ``block``: hand the live copy over (block-copies) and switch gradients
        on exactly for :meth:`trainable`. True when the trainable set changed or a new block took
        the copy over (the caller then gives it a fresh optimizer: a block's copy never inherits
        another block's optimizer state)."""
        if self.policy == "block-copies" and self.owner == block and self._trainable is not None:
            return False  # the same block as the step before: nothing changes
        handed_over = False
        if self.policy == "block-copies" and self.owner != block:
            if self.owner is not None:
                self.copies[self.owner] = self.live_copy()
                handed_over = True  # the next block's copy starts with a fresh optimizer
            self.owner = block
        train = self.trainable(block)
        key = tuple(id(p) for p in train)
        if key == self._trainable and not handed_over:
            return False
        on = set(key)
        for p in self.params:
            p.requires_grad_(id(p) in on)
            p.grad = None
        self._trainable, self.current = key, train
        return True

    def forget(self) -> None:
        """Make the next :meth:`prepare` apply its policy afresh (after loading a checkpoint)."""
        self._trainable = None

    # -- per-block copies ----------------------------------------------------------------------
    def live_copy(self) -> dict[str, torch.Tensor]:
        """A detached copy of the live shared state that blocks own a copy of (no targets)."""
        return {k: v.detach().clone() for k, v in self._copy_state().items()}

    def _copy_state(self) -> dict[str, torch.Tensor]:
        target_names = {n for n, p in self.model.named_parameters() if id(p) in self.target_ids}
        return {
            k: v
            for k, v in self.model.state_dict().items()
            if not k.startswith("blocks.") and k not in target_names
        }

    def all_copies(self) -> dict[int, dict[str, torch.Tensor]]:
        """Every block's copy: finished blocks their own, the others the live one."""
        live = self.live_copy()
        return {u: self.copies.get(u, live) for u in range(len(self.model.blocks))}

    def install(self) -> Callable[[], None]:
        """Make each block run with its own copy (for evaluation); returns a function that
        restores the live training state."""
        if self.policy != "block-copies":
            return lambda: None
        live = self.live_copy()
        self.model.set_shared_variants(self.all_copies())

        def restore() -> None:
            self.model.set_shared_variants({})
            self.model.load_state_dict(live, strict=False)

        return restore

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """Tensors and plain data a checkpoint needs to resume this policy."""
        if self.policy != "block-copies":
            return {}, {}
        tensors = {f"shared-copy-{u}": s for u, s in self.all_copies().items()}
        return tensors, {"owner": self.owner, "finished": sorted(self.copies)}

    def load(self, ckpt: Checkpoint, info: dict[str, Any]) -> None:
        if self.policy != "block-copies" or not info:
            return
        self.owner = info.get("owner")
        self.copies = {int(u): ckpt.tensors(f"shared-copy-{u}") for u in info.get("finished", [])}
        self.forget()
