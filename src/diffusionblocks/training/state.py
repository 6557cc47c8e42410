"""The trainer state a checkpoint carries, and its save and resume (a checkpoint's weights are
read by ``weights.py``); ``load_shared_init`` for ``shared_init``.

``Parts`` names the components of a trainer that a checkpoint saves and restores. A
``CheckpointStore`` writes and reads them: ``RunCheckpoints`` for a single-process run (every
block, blocks that live on disk as hard links, the shared modules, the optimizers and the trainer
state in ``run_dir/checkpoints``; resuming truncates the metrics written after the checkpoint),
``parallel.BlockCheckpoints`` for one rank of a block-parallel run. ``checked_save`` refuses
non-finite weights and reports a failed write, whatever the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..config import SAFE_RESUME_KEYS, ConfigError
from .accounting import Accounting
from .blockmodel import BlockModel, shared_state
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write_text,
    latest_checkpoint,
    save_checkpoint,
)
from .faults import Faults, NumericalFault
from .metrics import MetricsWriter
from .optimizers import Optimizers
from .residency import BlockResidency, is_materialized, release
from .runfolder import saved_config_hashes
from .schedule import RESUME_HASH_IGNORE, Plan, Position, resume_hash
from .weights import load_model_weights, load_shared_weights, shared_state_of

if TYPE_CHECKING:
    from ..config import RunConfig, TrainingSettings
    from ..tasks.base import Task


@dataclass
class Parts:
    """The components of a trainer that a checkpoint saves and restores."""

    config: RunConfig  # the run's identity (task, config hash); behaviour comes from settings
    settings: TrainingSettings
    task: Task
    model: BlockModel
    run_dir: Path | None
    plan: Plan
    position: Position
    optimizers: Optimizers
    residency: BlockResidency
    accounting: Accounting
    faults: Faults
    metrics: MetricsWriter

    @property
    def folder(self) -> Path:
        """The run folder (saving and resuming need one)."""
        assert self.run_dir is not None
        return self.run_dir


class CheckpointStore(Protocol):
    """Where and how a trainer's checkpoints are written and read."""

    def write(self, parts: Parts) -> Path:
        """Write a checkpoint of ``parts``; returns its folder."""
        ...

    def resume(self, parts: Parts) -> bool:
        """Restore ``parts`` from the latest checkpoint, if there is one; True if it did."""
        ...


def checked_save(parts: Parts, store: CheckpointStore) -> Path:
    """Write a checkpoint with ``store``. Refuses non-finite weights; a failed write (disk
    full...) leaves the previous checkpoint as it was."""
    run_dir = parts.folder
    bad = [n for n, p in parts.model.named_parameters() if not p.is_meta and not bool(
        torch.isfinite(p).all()
    )]  # fmt: skip
    if bad:
        raise NumericalFault(
            f"refusing to write a checkpoint at step {parts.position.step}: non-finite weights in "
            f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        )
    try:
        return store.write(parts)
    except OSError as err:
        last = latest_checkpoint(run_dir / "checkpoints")
        raise CheckpointError(
            f"could not write a checkpoint to {run_dir / 'checkpoints'}: "
            f"{err.strerror or err}; the previous checkpoint ({last or 'none'}) is intact"
        ) from None


class RunCheckpoints:
    """The checkpoints of a single-process run, in ``run_dir/checkpoints``."""

    def write(self, parts: Parts) -> Path:
        """Every block, the shared modules, optimizers and trainer state."""
        model, pos, res, opts = parts.model, parts.position, parts.residency, parts.optimizers
        config = parts.config
        copies, shared_info = opts.shared.state()
        tensors = {"shared": shared_state(model), **copies}
        links: dict[str, Path] = {}
        for u in range(len(model.blocks)):
            if is_materialized(model, u):
                tensors[f"block-{u}"] = model.blocks[u].state_dict()
            elif u in res.block_files:
                links[f"block-{u}.safetensors"] = res.block_files[u]
            else:  # never built (resident mode before fit): its initial weights
                tensors[f"block-{u}"] = model.build_block(u).state_dict()
        objects: dict[str, Any] = {
            "optimizer-shared": (
                opts.shared_optimizer.state_dict() if opts.shared_optimizer else None
            ),
            "trainer": {  # its "unit" keys (a block's old name) are kept for old checkpoints
                "step": pos.step,
                "unit_steps": list(pos.block_steps),
                "generator": pos.generator.get_state(),
                "train_seconds": parts.accounting.train_seconds,
                "swap_seconds": res.swap_seconds,
                "swaps": res.swaps,
                "step_times": {str(u): list(t) for u, t in parts.accounting.step_times.items()},
                "skipped_steps": parts.faults.skipped_steps,
                "unit_generators": {str(u): g.get_state() for u, g in pos.block_generators.items()},
                "layer_evals": parts.accounting.layer_evals,
                "backward_layer_evals": parts.accounting.backward_layer_evals,
                "shared": shared_info,
            },
        }
        for u, path in res.optimizer_files.items():  # optimizer states offloaded with a block
            links[f"optimizer-block-{u}.pt"] = path
        for u, state in opts.pending.items():
            objects[f"optimizer-block-{u}"] = state
        for u, opt in opts.by_block.items():
            objects[f"optimizer-block-{u}"] = opt.state_dict()
        meta = {
            "task": config.task,
            "method": config.method,
            "units": len(model.blocks),  # saved key, kept for old checkpoints
            "config_hash": resume_hash(config),
            "total_steps": parts.plan.total_steps,
        }
        return save_checkpoint(
            parts.folder / "checkpoints",
            pos.step,
            tensors,
            objects,
            meta,
            parts.settings.keep_checkpoints,
            links,
        )

    def resume(self, parts: Parts) -> bool:
        """Load the latest checkpoint of ``run_dir`` if there is one; True if it did."""
        config, model, run_dir = parts.config, parts.model, parts.folder
        res, opts, pos = parts.residency, parts.optimizers, parts.position
        num_blocks = len(model.blocks)
        path = latest_checkpoint(run_dir / "checkpoints")
        if path is None:
            return False
        ckpt = Checkpoint(path)
        expect = resume_hash(config)
        # "units": the saved number of blocks (old name, kept for old checkpoints)
        if ckpt.meta.get("task") != config.task or ckpt.meta.get("units") != num_blocks:
            raise CheckpointError(
                f"{path} is a checkpoint of task {ckpt.meta.get('task')!r} with "
                f"{ckpt.meta.get('units')} units; this run is {config.task!r} with "
                f"{num_blocks}"
            )
        # A run folder written before config keys were added still resumes.
        older = saved_config_hashes(config, run_dir, RESUME_HASH_IGNORE, (SAFE_RESUME_KEYS,))
        if ckpt.meta.get("config_hash") not in {expect, *older}:
            raise CheckpointError(
                f"{path} was written with a different configuration (hash "
                f"{ckpt.meta.get('config_hash')}, this run {expect})"
            )
        if res.resident:  # blocks stay on disk; each is loaded when it becomes active
            load_shared_weights(model, ckpt)
            for u in range(num_blocks):
                if is_materialized(model, u):
                    release(model, u)
                res.block_files[u] = ckpt.export(f"block-{u}", res.block_path(u))
        else:
            load_model_weights(model, ckpt)
        opts.by_block.clear()
        state = ckpt.obj("trainer")
        opts.shared.load(ckpt, state.get("shared", {}))
        # The shared optimizer covers what trained at the last saved step; the next step
        # switches the set (and the optimizer) exactly as an uninterrupted run would.
        step = int(state["step"])
        opts.restart_shared(parts.plan.blocks_at(step - 1)[0] if step > 0 else parts.plan.blocks[0])
        saved = ckpt.obj("optimizer-shared")
        if opts.shared_optimizer is not None and saved is not None:
            opts.shared_optimizer.load_state_dict(saved)
        for u in range(num_blocks):
            if not ckpt.has(f"optimizer-block-{u}.pt"):
                continue
            if res.resident:  # stays on disk until its block becomes active
                res.optimizer_files[u] = ckpt.export(
                    f"optimizer-block-{u}.pt", res.optimizer_path(u)
                )
            else:
                opts.pending[u] = ckpt.obj(f"optimizer-block-{u}")
        pos.step = step
        pos.block_steps = [int(s) for s in state["unit_steps"]]  # saved key, kept
        pos.generator.set_state(state["generator"])
        acc = parts.accounting
        acc.train_seconds = float(state.get("train_seconds", 0.0))
        res.swap_seconds = float(state.get("swap_seconds", 0.0))
        res.swaps = int(state.get("swaps", 0))
        for u, gstate in state.get("unit_generators", {}).items():
            if int(u) in pos.block_generators:
                pos.block_generators[int(u)].set_state(gstate)
        acc.layer_evals = int(state.get("layer_evals", 0))
        acc.backward_layer_evals = int(state.get("backward_layer_evals", 0))
        for u, times in state.get("step_times", {}).items():
            acc.step_times[int(u)] = [float(t) for t in times]
        parts.faults.skipped_steps = int(state.get("skipped_steps", 0))
        truncate_metrics(parts.metrics, pos.step)
        return True


def truncate_metrics(metrics: MetricsWriter, step: int) -> None:
    """Keep the metrics records up to ``step`` (those after the checkpoint will be written
    again), dropping a line torn by a crash; rewritten atomically."""
    path = metrics.path
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


def load_shared_init(model: BlockModel, folder: str) -> None:
    """``shared_init``: the shared modules from a block-parallel run's latest shared checkpoint,
    or from any run or model folder that ``dblocks eval`` accepts."""

    def weights(tensors: Mapping[str, Any]) -> dict[str, Any]:  # without the averages (ema)
        return {k: v for k, v in tensors.items() if not k.startswith("shared_average.")}

    state = weights(shared_state_of(folder))
    if set(state) != set(weights(shared_state(model))):
        raise ConfigError(f"shared_init={folder}: its shared modules do not fit this model")
    model.load_state_dict(state, strict=False)
    if getattr(model, "averaged", False):  # ema: the average starts at the weights loaded
        model.restart_shared_average()
