"""The block-wise trainer: the step primitives (one block, or several in step) and their loop.

A block is an entry of ``task.model.blocks``; end to end, the one block is the whole stack (older
versions also called it a "unit"; the trainer keeps those names as aliases). The concerns around
the step are components: ``schedule`` (``Plan``, ``Position``), ``optimizers``, ``residency``
(blocks in memory or on disk), ``state`` (a ``CheckpointStore``), ``faults``, ``accounting`` and
``sync`` (the gradients of a synchronous step). Block-parallel training (``parallel.py``) is this
trainer with other blocks, gradient sync and checkpoint store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..networks.layers import drawn_from
from ..networks.placement import device_of
from ..runtime import autocast, compile_block
from ..tasks.base import Task
from .accounting import Accounting, Heldout, MemoryProbe, ProgressLog
from .blockmodel import block_model
from .faults import Faults, TrainingInterrupted
from .metrics import MetricsWriter
from .optimizers import Optimizers, step_at
from .residency import BlockResidency
from .runfolder import CONFIG_FILE, write_run_config
from .schedule import Plan, Position
from .shared import SharedModules
from .state import CheckpointStore, Parts, RunCheckpoints, checked_save, load_shared_init
from .sync import GradientSync, LocalSync

# isort: split
# Names importable from this module before it was split (their homes: checkpoint, faults,
# schedule, state).
from .checkpoint import Checkpoint, CheckpointError, latest_checkpoint
from .faults import NumericalFault
from .schedule import batch_indices, block_sequence
from .state import load_model_weights

__all__ = ["Checkpoint", "CheckpointError", "NumericalFault", "Trainer", "TrainingInterrupted",
           "batch_indices", "block_sequence", "latest_checkpoint",
           "load_model_weights"]  # fmt: skip


def _read(part: str, name: str) -> Any:
    """A read-only attribute of the trainer that is ``name`` of its component ``part``."""
    return property(lambda self: getattr(getattr(self, part), name))


class Trainer:
    """Trains a task's blocks according to its config; writes metrics and checkpoints to
    ``run_dir`` (or nothing when it is None: block-resident training then swaps blocks to a
    temporary folder that goes with the trainer, so call :meth:`prepare_evaluation` before
    dropping it). The keyword-only components default to a single
    process; a block-parallel rank (``parallel.ParallelTrainer``) passes its ``local_blocks``
    (each step a synchronous step of them), ``sync``, ``checkpoints`` and no evaluation."""

    def __init__(
        self,
        task: Task,
        run_dir: str | Path | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        data_shard: tuple[int, int] = (0, 1),  # (rank, ranks) of data parallelism
        *,
        local_blocks: tuple[int, ...] | None = None,
        sync: GradientSync | None = None,
        checkpoints: CheckpointStore | None = None,
        can_evaluate: bool = True,
        resident: bool | None = None,
    ) -> None:
        self.task = task
        # What drives training: the training and run groups, resolved. The whole config is the
        # run's identity, which checkpoints and the run folder record.
        self.settings = c = task.config.training_settings()
        self.config: RunConfig = task.config
        self.model = block_model(task.model)
        self.device = device_of(self.model)  # the shared modules' (blocks may be on meta)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not (self.run_dir / CONFIG_FILE).exists():  # trained from Python: a run folder
                write_run_config(self.run_dir, task.config,
                                 command="python: Trainer(task, run_dir)")  # fmt: skip
        self.progress, self.log = progress, log
        self.num_blocks = len(self.model.blocks)
        self.plan = Plan.of(c, self.num_blocks, task.train_size(), data_shard, local_blocks)
        self.first_epoch_indices: list[int] = []  # data-parallel: examples of this rank's epoch 0
        self.position = Position.start(c.seed, self.num_blocks, self.plan.blocks)
        self.sync: GradientSync = sync or LocalSync()
        self.checkpoints: CheckpointStore = checkpoints or RunCheckpoints()
        self.can_evaluate = can_evaluate  # a block-parallel rank cannot evaluate the chain
        self.shared_params = task.shared_parameters()
        self.shared_policy: str = c.shared_policy
        if c.shared_init:
            load_shared_init(self.model, c.shared_init)
        self.shared = SharedModules(task, self.shared_policy, self.plan.blocks[0])
        self.optim = Optimizers(task, c, self.shared)
        self.optim.prepare_shared(self.plan.blocks[0])
        resident = c.block_resident if resident is None else resident
        self.residency = BlockResidency(self.model, resident, self.run_dir, self.optim)
        self.stats = Accounting(task)
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl" if self.run_dir else None)
        checkpoint_dir = self.run_dir / "checkpoints" if self.run_dir else None
        self.faults = Faults(c, task, self.metrics, log, checkpoint_dir)
        self.heldout = Heldout(task, c.seed)  # fixed validation examples for the held-out loss

    # -- the components' state under the trainer's names (read-only) ------------------------
    trained_blocks = _read("plan", "blocks")
    sequence = _read("plan", "sequence")
    total_steps = _read("plan", "total_steps")
    steps_per_epoch = _read("plan", "steps_per_epoch")
    steps_per_block = _read("plan", "steps_per_block")
    optimizers = _read("optim", "by_block")
    _pending_optimizer = _read("optim", "pending")
    optimizer_files = _read("residency", "optimizer_files")
    step = _read("position", "step")
    block_steps = _read("position", "block_steps")
    generator = _read("position", "generator")
    shared_optimizer = _read("optim", "shared_optimizer")
    swaps = _read("residency", "swaps")
    # Old names ("unit" for a block), kept for code and tests written against them.
    units = trained_blocks
    steps_per_unit = steps_per_block
    unit_steps = block_steps
    num_units = property(lambda self: self.num_blocks)

    @property
    def resident(self) -> bool:
        return self.residency.resident

    @resident.setter
    def resident(self, value: bool) -> None:
        self.residency.resident = value

    def _finished(self, block: int) -> bool:
        return self.position.block_steps[block] >= self.plan.steps_per_block

    # -- the primitive ----------------------------------------------------------------------
    def train_step(self, block: int, batch: Any) -> dict[str, float]:
        """One optimizer step on ``block`` (and, if the policy says so, the shared modules)."""
        c, pos = self.settings, self.position
        opt = self.optim.for_block(block)
        shared = self.optim.prepare_shared(block)
        params = self.task.block_parameters(block) + shared
        for p in params:
            p.grad = None
        loss, logs = self._loss(block, batch, pos.generator)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip if c.grad_clip > 0 else math.inf)
        logs["grad_norm"] = float(norm)
        loss_value = float(loss.detach())
        if not (math.isfinite(loss_value) and math.isfinite(float(norm))):
            return self.faults.skip(pos, [block], params, loss_value, logs)
        lr = self.plan.block_lr(pos.block_steps[block])
        step_at(opt, lr)
        shared_opt = self.optim.shared_optimizer
        if shared_opt is not None and shared:
            # Shared modules that belong to one block at a time follow that block's schedule.
            one_block = self.shared_policy in ("first-block", "block-copies")
            step_at(shared_opt, lr if one_block else self.plan.global_lr(pos.step))
        self.task.after_update([block])
        self.residency.note_state_bytes(block)
        for p in params:
            p.grad = None
        pos.advance([block])
        logs["lr"] = lr
        return logs

    def _loss(
        self, block: int, batch: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``task.loss`` of ``block``, compiled and under autocast as the config asks; dropout
        the task does not seed itself (a user's network) draws from ``generator``."""
        if self.settings.compile:
            compile_block(self.model.blocks[block])
        with (
            drawn_from(generator, self.device, self.task.unseeded_dropout),
            autocast(self.settings.precision, self.device),
        ):
            return self.task.loss(block, batch, generator)

    def synchronous_step(self, blocks: list[int], batch: Any) -> dict[str, float]:
        """One step of every block in ``blocks`` on the same batch, each with its own noise
        generator; the shared modules take the mean of the blocks' gradients (across processes
        when block-parallel: ``self.sync``). Gradients are clipped per block and for the shared
        modules."""
        c, pos = self.settings, self.position
        for p in self.shared_params:
            p.grad = None
        logs: dict[str, float] = {}
        block_params: dict[int, list[nn.Parameter]] = {}
        for u in blocks:
            block_params[u] = self.task.block_parameters(u)
            for p in block_params[u]:
                p.grad = None
            loss, block_logs = self._loss(u, batch, pos.block_generators[u])
            loss.backward()
            for k, v in block_logs.items():
                logs[k] = logs.get(k, 0.0) + v / len(blocks)
            logs[f"loss_block_{u}"] = block_logs["loss"]
        self.sync.reduce(blocks, block_params, self.shared_params)
        every = [*self.shared_params, *(q for ps in block_params.values() for q in ps)]
        grads = [p.grad for p in every if p.grad is not None]
        total = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))
        if not (math.isfinite(logs.get("loss", 0.0)) and math.isfinite(float(total))):
            return self.faults.skip(pos, blocks, every, logs.get("loss", math.nan), logs)
        for u in blocks:
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(block_params[u], c.grad_clip)
            lr = self.plan.block_lr(pos.block_steps[u])
            step_at(self.optim.for_block(u), lr)
            logs["lr"] = lr
        shared_opt = self.optim.shared_optimizer
        if self.shared_policy != "frozen" and shared_opt is not None:
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.shared_params, c.grad_clip)
            step_at(shared_opt, self.plan.global_lr(pos.step))
        self.task.after_update(blocks)
        self.residency.note_state_bytes(blocks[0])
        for p in every:
            p.grad = None
        pos.advance(blocks)
        return logs

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until every block has its budget (or until global step ``stop_at``, then save a
        checkpoint as an interruption would); returns accounting, timing and memory."""
        plan = self.plan
        self.model.train()
        end = plan.total_steps if stop_at is None else min(stop_at, plan.total_steps)
        if self.resident:
            self.residency.prepare()
            if self.step < end:  # the first block is in memory before the baseline, as in e2e
                self.activate(plan.blocks_at(self.step)[0])
        memory = MemoryProbe(self.device, self._weight_bytes)
        log = ProgressLog(self.settings, self.task.plot_key, self.metrics, self.heldout,
                          self.progress, plan, self.step)  # fmt: skip
        with self.faults.catch_signals():
            self._loop(end, memory, log)
        log.close()
        report = memory.report(self.residency.peak_state_bytes)
        if self.run_dir is not None:
            self.save()
        accounting = self.stats.report(self.settings, plan, self.position,
                                       self.faults.skipped_steps)  # fmt: skip
        timing = self.stats.timing(self.residency.swap_seconds, self.residency.swaps)
        return {"accounting": accounting, "timing": timing, "memory": report}

    def _loop(self, end: int, memory: MemoryProbe, log: ProgressLog) -> None:
        c, plan, pos = self.settings, self.plan, self.position
        while pos.step < end:
            blocks = plan.blocks_at(pos.step)
            block = blocks[0]
            self.optim.drop_finished(block, self._finished)
            if self.resident:
                self.activate(block)
            idx = plan.batch_indices(pos.step)
            if plan.data_shards > 1 and pos.step < plan.steps_per_epoch:  # the shards' audit
                self.first_epoch_indices.extend(idx.tolist())
            batch = self.task.train_batch(idx)
            memory.synchronize()
            t0 = time.perf_counter()
            if plan.synchronous:
                logs = self.synchronous_step(blocks, batch)
            else:
                logs = self.train_step(block, batch)
            memory.synchronize()
            self.stats.count(blocks, time.perf_counter() - t0, logs)
            log.add(logs, blocks, pos, end, self.resident)
            before_end = pos.step < plan.total_steps
            if c.eval_every and self.can_evaluate and pos.step % c.eval_every == 0 and before_end:
                with autocast(c.precision, self.device):  # not block-resident
                    quick = self.task.evaluate(quick=True)  # (refused there)
                self.metrics.write({"step": pos.step, **{f"eval_{k}": v for k, v in quick.items()}})
            every = c.checkpoint_every
            if self.run_dir is not None and every and pos.step % every == 0 and before_end:
                self.save()
            if self.faults.stop_signal is not None:
                log.close()
                path = self.save() if self.run_dir is not None else None
                raise TrainingInterrupted(self.faults.stop_signal, pos.step, path)

    # -- around the loop --------------------------------------------------------------------
    def save(self) -> Path:
        """Write a checkpoint where ``self.checkpoints`` says (``state.checked_save``)."""
        return checked_save(self._parts(), self.checkpoints)

    def resume(self) -> bool:
        """Load the latest checkpoint of the run, if there is one; True if it did."""
        return self.checkpoints.resume(self._parts())

    def _parts(self) -> Parts:
        return Parts(self.task.config, self.settings, self.task, self.model, self.run_dir,
                     self.plan, self.position, self.optim, self.residency, self.stats,
                     self.faults, self.metrics)  # fmt: skip

    def activate(self, block: int) -> None:
        """Resident mode: make ``block`` the only block in memory (others go to their files)."""
        self.residency.activate(block, self._finished)

    def materialize_all(self) -> None:
        """Load every block that lives on disk back into memory (for evaluation)."""
        self.residency.materialize_all()

    def prepare_evaluation(self) -> Callable[[], None]:
        """After training: every block in memory, each with its own copy of the shared modules
        where the policy gives blocks copies. Returns the function that puts the live copy back."""
        self.materialize_all()
        return self.shared.install()

    def resident_bytes(self) -> dict[str, int]:
        """Bytes of parameters, gradients, optimizer state and shared copies held now."""
        return self.residency.held_bytes()

    def _weight_bytes(self) -> int:
        """Bytes of the weights in memory: parameters and their averages (``ema``)."""
        held = self.resident_bytes()
        return held["param_bytes"] + held["average_bytes"]
