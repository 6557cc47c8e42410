"""Block residency: which blocks, gradients and optimizer states are in memory.

Where a network's blocks live is decided here, not in the networks: ``is_materialized``,
``materialize`` and ``release`` work on any network with a
``blocks`` ``nn.ModuleList`` and a ``build_block(b)`` that builds block b's initial weights (the
same every time). A block without storage lives on the ``meta`` device (a network built with
``materialize_blocks=False`` starts with every block there).

Block-resident mode (``config.block_resident``) keeps only the active block's weights, gradients
and optimizer state in memory. The other blocks live in files (``run_dir/blocks/block-{b}.
safetensors``, atomically replaced; a block swapped out before it finished takes its optimizer
state to ``optimizer-{b}.pt``) and go into checkpoints as hard links, so the full B-fold saving of
the paper's memory formula is realised, not only the activation part. A trainer without a run
folder swaps to a temporary folder, removed when the trainer is deleted or Python exits: bring
the blocks back first (``Trainer.prepare_evaluation``).

``BlockResidency`` (a component of :class:`Trainer`) owns the offload folder, swapping blocks in
and out, materialising every block for evaluation, and the accounting of the bytes held (params,
gradients, optimizer state).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from ..networks.placement import device_of, has_storage
from .blockmodel import BlockModel
from .checkpoint import atomic_write_bytes, encode_object, encode_tensors
from .optimizers import Optimizers

_CHECKPOINTING = "checkpointing"  # the flag of a block's layer groups (``LayerGroup``)


def is_materialized(model: BlockModel, block: int) -> bool:
    """Whether block ``block`` has storage (no parameter of it on the meta device)."""
    return has_storage(model.blocks[block])


def materialize(
    model: BlockModel,
    block: int,
    device: torch.device | str,
    state: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Give block ``block`` storage on ``device``: its initial weights (``model.build_block``),
    or ``state`` loaded strictly into an empty skeleton (built on the meta device; built for real
    when the block has buffers that are not saved, which only its construction computes). The
    block's checkpointing flags are kept."""
    flags = {
        name: getattr(m, _CHECKPOINTING)
        for name, m in model.blocks[block].named_modules()
        if hasattr(m, _CHECKPOINTING)
    }
    if state is None:
        new = model.build_block(block).to(device)
    else:
        with torch.device("meta"):
            new = model.build_block(block)
        if set(dict(new.named_buffers())) <= set(new.state_dict()):
            new = new.to_empty(device=device)
        else:  # buffers the state does not hold (e.g. rotary frequencies): built for real
            new = model.build_block(block).to(device)
        new.load_state_dict(state, strict=True)
    for name, flag in flags.items():
        setattr(new.get_submodule(name), _CHECKPOINTING, flag)
    model.blocks[block] = new
    return new


def release(model: BlockModel, block: int) -> None:
    """Drop the storage of block ``block``: its parameters move to the meta device (in place,
    so the block keeps its checkpointing flags)."""
    model.blocks[block] = model.blocks[block].to("meta")


class BlockResidency:
    """Moves blocks of ``model`` between memory and their files; a block's optimizer (in
    ``optimizers``) goes to disk and back with it."""

    def __init__(
        self,
        model: BlockModel,
        resident: bool,
        run_dir: Path | None,
        optimizers: Optimizers,
    ) -> None:
        self.model = model
        self.num_blocks = len(model.blocks)
        self.resident = resident
        self.run_dir = run_dir
        self.optimizers = optimizers
        self.block_files: Final[dict[int, Path]] = {}  # where blocks not in memory live
        self.optimizer_files: Final[dict[int, Path]] = {}  # optimizer states of swapped-out blocks
        self.swaps = 0  # blocks loaded into memory (block-resident I/O)
        self.swap_seconds = 0.0  # time spent writing and reading swapped blocks
        self._offload_dir: Path | None = None
        self.peak_state_bytes = 0  # max parameters + gradients + optimizer state at a step
        self._state_noted_for: int | None = None  # the block trained when it was last counted
        self._states_counted: set[tuple[Any, ...]] = set()  # what was held when counted

    @property
    def offload_dir(self) -> Path:
        if self._offload_dir is None:
            if self.run_dir is not None:
                self._offload_dir = self.run_dir / "blocks"
                self._offload_dir.mkdir(parents=True, exist_ok=True)
            else:  # no run folder: a temporary one, removed with this object (or at exit)
                self._offload_dir = Path(tempfile.mkdtemp(prefix="dblocks-blocks-"))
                weakref.finalize(self, shutil.rmtree, self._offload_dir, ignore_errors=True)
        return self._offload_dir

    def block_path(self, block: int) -> Path:
        return self.offload_dir / f"block-{block}.safetensors"

    def optimizer_path(self, block: int) -> Path:
        return self.offload_dir / f"optimizer-{block}.pt"

    def _write_block_file(self, block: int, state: dict[str, torch.Tensor]) -> None:
        path = self.block_path(block)
        atomic_write_bytes(path, encode_tensors(state))
        self.block_files[block] = path

    def prepare(self) -> None:
        """Give every block that is neither in memory nor on disk a file with its initial
        weights, one block at a time (so checkpoints always hold every block)."""
        for u in range(self.num_blocks):
            if u not in self.block_files and not is_materialized(self.model, u):
                self._write_block_file(u, self.model.build_block(u).state_dict())

    def activate(self, block: int, finished: Callable[[int], bool]) -> None:
        """Make ``block`` the only block in memory (others go to their files; ``finished(u)``:
        whether block u has its whole budget, so its optimizer state can go)."""
        if is_materialized(self.model, block):
            return
        start = time.perf_counter()
        try:
            self._swap_in(block, finished)
        finally:
            self.swap_seconds += time.perf_counter() - start

    def _swap_in(self, block: int, finished: Callable[[int], bool]) -> None:
        for u in range(self.num_blocks):
            if u != block and is_materialized(self.model, u):
                self.offload(u, finished(u))
        state = None
        if block in self.block_files:
            from safetensors.torch import load_file

            state = load_file(self.block_files[block])
        materialize(self.model, block, device_of(self.model), state)
        path = self.optimizer_files.pop(block, None)
        if path is not None:  # a block swapped out mid-training: its optimizer comes back too
            self.optimizers.pending[block] = torch.load(path, weights_only=True, map_location="cpu")
        self.swaps += 1

    def offload(self, block: int, finished: bool) -> None:
        """Write ``block`` to its file and free its weights and optimizer state. A block
        that has not ``finished`` (schedules that come back to it) keeps its optimizer state in
        a file beside it; a finished block's is dropped."""
        self._write_block_file(block, self.model.blocks[block].state_dict())
        opt = self.optimizers.by_block.pop(block, None)
        if opt is not None and not finished:
            path = self.optimizer_path(block)
            atomic_write_bytes(path, encode_object(opt.state_dict()))
            self.optimizer_files[block] = path
        release(self.model, block)

    def materialize_all(self) -> None:
        """Load every block that lives on disk back into memory (for evaluation)."""
        from safetensors.torch import load_file

        for u in range(self.num_blocks):
            if not is_materialized(self.model, u):
                materialize(self.model, u, device_of(self.model), load_file(self.block_files[u]))

    def held_bytes(self) -> dict[str, int]:
        """Bytes of parameters, gradients and optimizer state that exist right now, of the
        finished blocks' copies of the shared modules (``shared=block-copies``), and of the
        weight averages (``ema``: buffers named ``...average...``)."""
        params = [p for p in self.model.parameters() if not p.is_meta]
        averages = [b for n, b in self.model.named_buffers()
                    if "average." in n and not b.is_meta]  # fmt: skip
        return {
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "average_bytes": sum(b.numel() * b.element_size() for b in averages),
            "grad_bytes": sum(
                p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None
            ),
            "optimizer_bytes": self.optimizers.state_bytes(),
            "shared_copy_bytes": sum(
                v.numel() * v.element_size()
                for c in self.optimizers.shared.copies.values()
                for v in c.values()
            ),
        }

    def note_state_bytes(self, block: int) -> None:
        """Track the peak of parameters + gradients + optimizer state held at once (exact
        accounting, independent of the allocator; activations are not included). What is held
        changes only when another block trains, so it is counted at the first step of a visit,
        and only once for each combination of what is held: the trained block, the blocks in
        memory, the optimizers and whether they have state yet, the shared modules' optimizer and
        copies (the schedules that change block at every step would otherwise count the same
        bytes at every step)."""
        if block == self._state_noted_for:
            return
        self._state_noted_for = block
        opt = self.optimizers
        held = (
            block,
            # the blocks in memory (all of them unless resident: not looked up every step)
            tuple(u for u in range(len(self.model.blocks)) if is_materialized(self.model, u))
            if self.resident
            else (),
            tuple(sorted((b, bool(o.state)) for b, o in opt.by_block.items())),
            tuple(sorted(opt.pending)),
            opt.shared_optimizer is not None and bool(opt.shared_optimizer.state),
            tuple(sorted(opt.shared.copies)),
        )
        if held in self._states_counted:
            return
        self._states_counted.add(held)
        self.peak_state_bytes = max(self.peak_state_bytes, sum(self.held_bytes().values()))
