"""Checkpoint save and resume of a single-process run, and loading a checkpoint's weights into a
model (``load_shared_weights``, ``load_model_weights``).

``CheckpointState`` is a mixin of :class:`Trainer`: ``save`` writes every block (blocks that live
on disk as hard links), the shared modules, the optimizers and the trainer state (step, RNG,
counters); ``resume`` restores them from the latest checkpoint of the run folder and truncates the
metrics written after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import SAFE_RESUME_KEYS
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write_text,
    latest_checkpoint,
    save_checkpoint,
)
from .faults import NumericalFault
from .runfolder import saved_config_hashes
from .schedule import RESUME_HASH_IGNORE, make_optimizer, resume_hash


class CheckpointState:
    """Save and resume of the trainer's state (a mixin of ``Trainer``)."""

    def save(self) -> Path:
        """Write a checkpoint of every unit, the shared modules, optimizers and trainer state.
        Refuses non-finite weights; a failed write (disk full...) leaves the previous
        checkpoint as it was."""
        assert self.run_dir is not None
        bad = [n for n, p in self.model.named_parameters() if not p.is_meta and not bool(
            torch.isfinite(p).all()
        )]  # fmt: skip
        if bad:
            raise NumericalFault(
                f"refusing to write a checkpoint at step {self.step}: non-finite weights in "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
            )
        try:
            return self._save()
        except OSError as err:
            last = latest_checkpoint(self.run_dir / "checkpoints")
            raise CheckpointError(
                f"could not write a checkpoint to {self.run_dir / 'checkpoints'}: "
                f"{err.strerror or err}; the previous checkpoint ({last or 'none'}) is intact"
            ) from None

    def _save(self) -> Path:
        copies, shared_info = self.shared.state()
        tensors = {"shared": self._shared_state(), **copies}
        links: dict[str, Path] = {}
        for u in range(self.num_units):
            if self.model.block_is_materialized(u):
                tensors[f"block-{u}"] = self.model.blocks[u].state_dict()
            elif u in self.block_files:
                links[f"block-{u}.safetensors"] = self.block_files[u]
            else:  # never built (resident mode before fit): its initial weights
                tensors[f"block-{u}"] = self.model.build_block(u).state_dict()
        objects: dict[str, Any] = {
            "optimizer-shared": (
                self.shared_optimizer.state_dict() if self.shared_optimizer else None
            ),
            "trainer": {
                "step": self.step,
                "unit_steps": list(self.unit_steps),
                "generator": self.generator.get_state(),
                "train_seconds": self.train_seconds,
                "swap_seconds": self.swap_seconds,
                "swaps": self.swaps,
                "step_times": {str(u): list(t) for u, t in self.step_times.items()},
                "skipped_steps": self.skipped_steps,
                "unit_generators": {str(u): g.get_state() for u, g in self.unit_generators.items()},
                "layer_evals": self.layer_evals,
                "backward_layer_evals": self.backward_layer_evals,
                "shared": shared_info,
            },
        }
        for u, path in self.optimizer_files.items():  # optimizer states offloaded with a block
            links[f"optimizer-block-{u}.pt"] = path
        for u, state in self._pending_optimizer.items():
            objects[f"optimizer-block-{u}"] = state
        for u, opt in self.optimizers.items():
            objects[f"optimizer-block-{u}"] = opt.state_dict()
        meta = {
            "task": self.config.task,
            "method": self.config.method,
            "units": self.num_units,
            "config_hash": resume_hash(self.config),
            "total_steps": self.total_steps,
        }
        return save_checkpoint(
            self.run_dir / "checkpoints",
            self.step,
            tensors,
            objects,
            meta,
            self.config.keep_checkpoints,
            links,
        )

    def _shared_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("blocks.")}

    def resume(self) -> bool:
        """Load the latest checkpoint of ``run_dir`` if there is one; True if it did."""
        assert self.run_dir is not None
        path = latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            return False
        ckpt = Checkpoint(path)
        expect = resume_hash(self.config)
        if ckpt.meta.get("task") != self.config.task or ckpt.meta.get("units") != self.num_units:
            raise CheckpointError(
                f"{path} is a checkpoint of task {ckpt.meta.get('task')!r} with "
                f"{ckpt.meta.get('units')} units; this run is {self.config.task!r} with "
                f"{self.num_units}"
            )
        # A run folder written before config keys were added still resumes.
        older = saved_config_hashes(
            self.config, self.run_dir, RESUME_HASH_IGNORE, (SAFE_RESUME_KEYS,)
        )
        if ckpt.meta.get("config_hash") not in {expect, *older}:
            raise CheckpointError(
                f"{path} was written with a different configuration (hash "
                f"{ckpt.meta.get('config_hash')}, this run {expect})"
            )
        if self.resident:  # blocks stay on disk; each is loaded when it becomes active
            load_shared_weights(self.model, ckpt)
            for u in range(self.num_units):
                self.model.release_block(u) if self.model.block_is_materialized(u) else None
                self.block_files[u] = ckpt.export(f"block-{u}", self._block_path(u))
        else:
            load_model_weights(self.model, ckpt)
        self.optimizers.clear()
        state = ckpt.obj("trainer")
        self.shared.load(ckpt, state.get("shared", {}))
        # The shared optimizer covers what trained at the last saved step; the next step
        # switches the set (and the optimizer) exactly as an uninterrupted run would.
        step = int(state["step"])
        last_unit = self.units_at(step - 1)[0] if step > 0 else self.units[0]
        self.shared.forget()
        params = self._prepare_shared(last_unit)
        self.shared_optimizer = make_optimizer(params, self.config) if params else None
        saved = ckpt.obj("optimizer-shared")
        if self.shared_optimizer is not None and saved is not None:
            self.shared_optimizer.load_state_dict(saved)
        for u in range(self.num_units):
            if not ckpt.has(f"optimizer-block-{u}.pt"):
                continue
            if self.resident:  # stays on disk until its block becomes active
                path = self._optimizer_path(u)
                self.optimizer_files[u] = ckpt.export(f"optimizer-block-{u}.pt", path)
            else:
                self._pending_optimizer[u] = ckpt.obj(f"optimizer-block-{u}")
        state = ckpt.obj("trainer")
        self.step = int(state["step"])
        self.unit_steps = [int(s) for s in state["unit_steps"]]
        self.generator.set_state(state["generator"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.swap_seconds = float(state.get("swap_seconds", 0.0))
        self.swaps = int(state.get("swaps", 0))
        for u, gstate in state.get("unit_generators", {}).items():
            if int(u) in self.unit_generators:
                self.unit_generators[int(u)].set_state(gstate)
        self.layer_evals = int(state.get("layer_evals", 0))
        self.backward_layer_evals = int(state.get("backward_layer_evals", 0))
        for u, times in state.get("step_times", {}).items():
            self.step_times[int(u)] = [float(t) for t in times]
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.truncate_metrics(self.step)
        return True

    def truncate_metrics(self, step: int) -> None:
        """Keep the metrics records up to ``step`` (those after the checkpoint will be written
        again), dropping a line torn by a crash; rewritten atomically."""
        path = self.metrics.path
        if path is None or not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                keep.append(line)
        atomic_write_text(path, "".join(k + "\n" for k in keep))


def load_shared_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load the shared (non-block) tensors of ``ckpt`` into ``model``; every key must match."""
    shared = ckpt.tensors("shared")
    expected = {k for k in model.state_dict() if not k.startswith("blocks.")}
    missing, extra = expected - set(shared), set(shared) - expected
    if missing or extra:
        raise CheckpointError(
            f"{ckpt.path} does not fit this model: shared tensors missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    try:
        model.load_state_dict(shared, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{ckpt.path} does not fit this model: {err}") from None


def load_model_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load the shared and per-block tensors of ``ckpt`` into ``model``; blocks on the meta
    device are materialised; per-block copies of the shared modules (``shared=block-copies``)
    are installed so that each block runs with its own."""
    load_shared_weights(model, ckpt)
    if ckpt.has("shared-copy-0.safetensors"):
        model.set_shared_variants(
            {u: ckpt.tensors(f"shared-copy-{u}") for u in range(len(model.blocks))}
        )
    for u in range(len(model.blocks)):
        state = ckpt.tensors(f"block-{u}")
        try:
            model.materialize_block(u, model.device, state)
        except RuntimeError as err:
            raise CheckpointError(f"{ckpt.path} block {u} does not fit this model: {err}") from None
