"""The block-wise trainer: one primitive, "train one unit for one step", and schedules over it.

A *unit* is an entry of ``task.model.blocks``: one DiffusionBlocks block, or the whole layer stack
for the end-to-end baseline. Each unit has its own AdamW optimizer, created when the unit first
trains, so a unit that does not train this step cannot move (no momentum or weight-decay drift).
The shared modules (stem, sigma embedder, head, target table) have their own optimizer; which of
them train at a step is the ``shared`` policy's decision (``shared.py``): with every step in the
paper's schedules, with their own block only when blocks train one after another.

Budget (docs/method.md §4): every trained unit gets ``ceil(epochs * steps_per_epoch)`` updates, so a
DiffusionBlocks run with B blocks takes B times the steps of the end-to-end run, each running 1/B
of the layers: equal total layer evaluations.

The concerns around the step live beside it: ``schedule.py`` (block order, learning rate, data
order, optimizer), ``residency.py`` (blocks in memory or on disk), ``state.py`` (checkpoint save
and resume), ``faults.py`` (non-finite steps, signals) and ``accounting.py`` (metrics records,
accounting, timing); ``Trainer`` combines them.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..tasks.base import Task
from .accounting import RunAccounting, _is_terminal
from .checkpoint import Checkpoint, CheckpointError, latest_checkpoint
from .faults import FaultHandling, NumericalFault, TrainingInterrupted
from .metrics import MetricsWriter, current_rss_bytes
from .residency import BlockResidency
from .runfolder import CONFIG_FILE, shared_state_of, write_run_config
from .schedule import batch_indices, block_sequence, learning_rate, make_optimizer, resume_hash
from .shared import SharedModules
from .state import CheckpointState, load_model_weights, load_shared_weights

# Names importable from this module before it was split (and still used from here).
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "NumericalFault",
    "Trainer",
    "TrainingInterrupted",
    "batch_indices",
    "block_sequence",
    "latest_checkpoint",
    "learning_rate",
    "load_model_weights",
    "load_shared_weights",
    "make_optimizer",
    "resume_hash",
]


class Trainer(BlockResidency, CheckpointState, FaultHandling, RunAccounting):
    """Trains a task's units according to its config; writes metrics and checkpoints to
    ``run_dir`` (or nothing when ``run_dir`` is None)."""

    def __init__(
        self,
        task: Task,
        run_dir: str | Path | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        data_shard: tuple[int, int] = (0, 1),
    ):
        self.task = task
        self.config = c = task.config
        self.model = task.model
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not (self.run_dir / CONFIG_FILE).exists():  # trained from Python: a run folder
                write_run_config(self.run_dir, c, command="python: Trainer(task, run_dir)")
        self.progress = progress
        self.log = log
        self.num_units = len(self.model.blocks)
        self.units = c.trained_units
        if any(u >= self.num_units for u in self.units):
            raise ValueError(f"blocks {self.units} out of range for {self.num_units} units")
        n = task.train_size()
        # (rank, ranks) of data parallelism: each rank reads its own part of every epoch.
        self.data_shard, self.data_shards = data_shard
        self.steps_per_epoch = n // (c.batch_size * self.data_shards)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"batch_size {c.batch_size} x {self.data_shards} data-parallel rank(s) is larger "
                f"than the {n} training examples"
            )
        self.first_epoch_indices: list[int] = []  # data-parallel: examples of this rank's epoch 0
        self.steps_per_unit = max(1, math.ceil(c.epochs * self.steps_per_epoch))
        self.synchronous = c.schedule == "synchronous"
        # Synchronous: each global step trains every unit on the same batch.
        self.total_steps = self.steps_per_unit * (1 if self.synchronous else len(self.units))
        self.sequence = block_sequence(
            c.schedule, self.units, self.steps_per_unit, c.seed, c.cycle_steps
        )
        self.generator = torch.Generator().manual_seed(c.seed + 1)
        # Synchronous training draws each unit's noise from its own generator, so that a
        # block-parallel run (one process per block) makes exactly the same draws.
        self.unit_generators = {
            u: torch.Generator().manual_seed((c.seed + 1) * 1_000_003 + u) for u in self.units
        }
        self.local_units = list(self.units)  # units this process trains (parallel: one)
        self.step = 0
        self.unit_steps = [0] * self.num_units
        self.shared_params = task.shared_parameters()
        self.shared_policy = c.shared_policy
        if c.shared_init:
            self._load_shared_from(c.shared_init)
        self.shared = SharedModules(task, self.shared_policy, self.units[0])
        self.shared_optimizer: torch.optim.AdamW | None = None
        self._prepare_shared(self.units[0])
        self.optimizers: dict[int, torch.optim.AdamW] = {}
        self._pending_optimizer: dict[int, dict] = {}  # loaded state for not-yet-built optimizers
        self._init_residency(c.block_resident)
        self.step_times: dict[int, list[float]] = defaultdict(list)
        self.train_seconds = 0.0
        self.skipped_steps = 0  # steps whose update was skipped for a non-finite loss/gradient
        self._stop_signal: int | None = None
        self.layer_evals = 0  # forward layer evaluations per example, summed over steps
        self.backward_layer_evals = 0  # layers that ran a backward pass, per example
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl" if self.run_dir else None)
        self._heldout = task.heldout_batch()  # fixed validation examples for the held-out loss
        self._trained_since_log: set[int] = set()

    # -- the primitive ----------------------------------------------------------------------
    def optimizer_for(self, unit: int) -> torch.optim.AdamW:
        if unit not in self.optimizers:
            opt = make_optimizer(self.task.unit_parameters(unit), self.config)
            if unit in self._pending_optimizer:
                opt.load_state_dict(self._pending_optimizer.pop(unit))
            self.optimizers[unit] = opt
        return self.optimizers[unit]

    # -- shared modules ---------------------------------------------------------------------
    def _prepare_shared(self, unit: int) -> list[torch.nn.Parameter]:
        """Apply the shared policy before a step of ``unit``; a changed set of trainable shared
        parameters gets a fresh optimizer (a frozen module's optimizer state is freed)."""
        if self.shared.prepare(unit):
            params = self.shared.current
            self.shared_optimizer = make_optimizer(params, self.config) if params else None
        return self.shared.current

    def _load_shared_from(self, run_dir: str) -> None:
        """Shared modules from a block-parallel run's latest shared checkpoint, or from any run
        or model folder that ``dblocks eval`` accepts."""
        from ..config import ConfigError

        state = shared_state_of(run_dir)
        expected = {k for k in self.model.state_dict() if not k.startswith("blocks.")}
        if set(state) != expected:
            raise ConfigError(f"shared_init={run_dir}: its shared modules do not fit this model")
        self.model.load_state_dict(state, strict=False)

    def train_step(self, unit: int, batch: Any) -> dict[str, float]:
        """One optimizer step on ``unit`` (and, if the policy says so, the shared modules)."""
        c = self.config
        opt = self.optimizer_for(unit)
        shared = self._prepare_shared(unit)
        params = self.task.unit_parameters(unit) + shared
        for p in params:
            p.grad = None
        loss, logs = self.task.loss(unit, batch, self.generator)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip if c.grad_clip > 0 else math.inf)
        logs["grad_norm"] = float(norm)
        loss_value = float(loss.detach())
        if not (math.isfinite(loss_value) and math.isfinite(float(norm))):
            return self._fault([unit], params, loss_value, logs)
        lr = learning_rate(
            self.unit_steps[unit], self.steps_per_unit, c.lr, c.warmup, c.min_lr_ratio
        )
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        if self.shared_optimizer is not None and shared:
            # Shared modules that belong to one block at a time follow that block's schedule.
            shared_lr = (
                lr
                if self.shared_policy in ("first-block", "block-copies")
                else learning_rate(self.step, self.total_steps, c.lr, c.warmup, c.min_lr_ratio)
            )
            for group in self.shared_optimizer.param_groups:
                group["lr"] = shared_lr
            self.shared_optimizer.step()
        self._note_state_bytes(unit)
        for p in params:
            p.grad = None
        self.unit_steps[unit] += 1
        self.step += 1
        logs["lr"] = lr
        return logs

    def synchronous_step(self, units: list[int], batch: Any) -> dict[str, float]:
        """One step of every unit in ``units`` on the same batch, each with its own noise
        generator; the shared modules take the mean of the units' gradients (across processes
        when block-parallel). Gradients are clipped per unit and for the shared modules."""
        c = self.config
        for p in self.shared_params:
            p.grad = None
        logs: dict[str, float] = {}
        unit_params = {}
        for u in units:
            unit_params[u] = self.task.unit_parameters(u)
            for p in unit_params[u]:
                p.grad = None
            loss, unit_logs = self.task.loss(u, batch, self.unit_generators[u])
            loss.backward()
            for k, v in unit_logs.items():
                logs[k] = logs.get(k, 0.0) + v / len(units)
            logs[f"loss_block_{u}"] = unit_logs["loss"]
        self.reduce_gradients(units, unit_params)
        every = [*self.shared_params, *(q for ps in unit_params.values() for q in ps)]
        grads = [p.grad for p in every if p.grad is not None]
        total = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))
        if not (math.isfinite(logs.get("loss", 0.0)) and math.isfinite(float(total))):
            return self._fault(units, every, logs.get("loss", math.nan), logs)
        for u in units:
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(unit_params[u], c.grad_clip)
            opt = self.optimizer_for(u)
            lr = learning_rate(
                self.unit_steps[u], self.steps_per_unit, c.lr, c.warmup, c.min_lr_ratio
            )
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            self.unit_steps[u] += 1
            logs["lr"] = lr
        if self.shared_trainable and self.shared_optimizer is not None:
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.shared_params, c.grad_clip)
            shared_lr = learning_rate(self.step, self.total_steps, c.lr, c.warmup, c.min_lr_ratio)
            for group in self.shared_optimizer.param_groups:
                group["lr"] = shared_lr
            self.shared_optimizer.step()
        self._note_state_bytes(units[0])
        for p in [*self.shared_params, *(q for ps in unit_params.values() for q in ps)]:
            p.grad = None
        self.step += 1
        return logs

    can_evaluate = True  # a block-parallel rank holds one block and cannot evaluate the chain

    @property
    def shared_trainable(self) -> bool:
        return self.shared_policy != "frozen"

    def reduce_gradients(self, units: list[int], unit_params: dict[int, list]) -> None:
        """Single process: the shared gradients were summed over ``units``; take their mean."""
        if len(units) > 1:
            for p in self.shared_params:
                if p.grad is not None:
                    p.grad /= len(units)

    def units_at(self, step: int) -> list[int]:
        """The units trained at global step ``step``."""
        return list(self.local_units) if self.synchronous else [int(self.sequence[step])]

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until every unit has its budget (or until global step ``stop_at``, then save a
        checkpoint as an interruption would); returns accounting, timing and memory."""
        c = self.config
        device = self.model.device
        cuda = device.type == "cuda"
        n = self.task.train_size()
        self.model.train()
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        if self.resident:
            self.prepare_resident()
            if self.step < end:  # the first block is in memory before the baseline, as in e2e
                self.activate(self.units_at(self.step)[0])
        rss_before = current_rss_bytes()
        params_before = self.resident_bytes()["param_bytes"]
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            allocated_before = torch.cuda.memory_allocated(device)
        accum: dict[str, list[float]] = defaultdict(list)
        # A bar on a terminal; piped or redirected output gets plain lines instead (a bar's
        # carriage-return frames would flood a log file), see _plain_progress.
        self._plain = self.progress and not _is_terminal(sys.stderr)
        self._plain_last = -math.inf
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.progress or self._plain,
            desc=f"{c.method}",
            unit="step",
            dynamic_ncols=True,
        )
        last_log = time.perf_counter()
        examples_since = 0
        restore = self._catch_signals()
        try:
            self._loop(end, n, cuda, device, bar, accum, last_log, examples_since)
        finally:
            restore()
        bar.close()
        return self._finish(rss_before, params_before, cuda, device,
                            allocated_before if cuda else 0)  # fmt: skip

    def _loop(self, end, n, cuda, device, bar, accum, last_log, examples_since) -> None:
        c = self.config
        while self.step < end:
            units = self.units_at(self.step)
            unit = units[0]
            self._drop_finished_optimizers(unit)
            if self.resident:
                self.activate(unit)
            idx = batch_indices(self.step, self.steps_per_epoch, n, c.batch_size, c.seed,
                                self.data_shard, self.data_shards)  # fmt: skip
            if self.data_shards > 1 and self.step < self.steps_per_epoch:  # the shards' audit
                self.first_epoch_indices.extend(idx.tolist())
            batch = self.task.train_batch(idx)
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            if self.synchronous:
                logs = self.synchronous_step(units, batch)
            else:
                logs = self.train_step(unit, batch)
            if cuda:
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            self.train_seconds += dt
            self.step_times[unit].append(dt)
            examples_since += c.batch_size
            # Tasks whose step cost varies (e.g. a random number of recurrent iterations) report
            # the layer evaluations per example they ran; otherwise units x layers is exact.
            default = sum(self.task.layers_in_unit(u) for u in units)
            self.layer_evals += logs.pop("layer_evals", default)
            self.backward_layer_evals += logs.pop("backward_layer_evals", default)
            for k, v in logs.items():
                accum[k].append(v)
            self._trained_since_log.update(units)
            if not self.synchronous:
                accum[f"loss_block_{unit}"].append(logs["loss"])
                key = self.task.plot_key
                if key != "loss" and key in logs:
                    accum[f"{key}_block_{unit}"].append(logs[key])
            bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.total_steps:
                now = time.perf_counter()
                rate = examples_since / max(now - last_log, 1e-9)
                record = {
                    "step": self.step,
                    # Epochs of the block trained at this step (its own steps), and passes over
                    # the training data by all blocks together (the global step).
                    "epoch": self.unit_steps[unit] / self.steps_per_epoch,
                    "block": unit,
                    "data_epochs": self.step / self.steps_per_epoch,
                    **{k: sum(v) / len(v) for k, v in accum.items()},
                    "examples_per_sec": rate,
                    **self.heldout_record(self._heldout_units(unit)),
                }
                self.metrics.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", block=unit,
                                epoch=f"{record['epoch']:.2f}", ex_s=f"{rate:.0f}")  # fmt: skip
                self._plain_progress(record, end)
                accum.clear()
                self._trained_since_log.clear()
                last_log, examples_since = now, 0
            if (
                c.eval_every
                and self.can_evaluate
                and self.step % c.eval_every == 0
                and self.step < self.total_steps
            ):
                quick = self.task.evaluate(quick=True)  # not block-resident (refused there)
                self.metrics.write(
                    {"step": self.step, **{f"eval_{k}": v for k, v in quick.items()}}
                )
            if (
                self.run_dir is not None
                and c.checkpoint_every
                and self.step % c.checkpoint_every == 0
                and self.step < self.total_steps
            ):
                self.save()
            if self._stop_signal is not None:
                bar.close()
                path = self.save() if self.run_dir is not None else None
                raise TrainingInterrupted(self._stop_signal, self.step, path)
