"""The block-wise trainer: one primitive, "train one unit for one step", and schedules over it.

A *unit* is an entry of ``task.model.blocks``: one DiffusionBlocks block, or the whole layer stack
for the end-to-end baseline. Each unit has its own AdamW optimizer, created when the unit first
trains, so a unit that does not train this step cannot move (no momentum or weight-decay drift).
The shared modules (stem, sigma embedder, head, target table) have their own optimizer; which of
them train at a step is the ``shared`` policy's decision (``shared.py``): with every step in the
paper's schedules, with their own block only when blocks train one after another.

Block-resident mode (``config.block_resident``) keeps only the active block's weights, gradients
and optimizer state in memory. The other blocks live in files (``run_dir/blocks/block-{b}.
safetensors``, atomically replaced; a block swapped out before it finished takes its optimizer
state to ``optimizer-{b}.pt``) and go into checkpoints as hard links, so the full B-fold saving of
the paper's memory formula is realised, not only the activation part.

Budget (docs/method.md §4): every trained unit gets ``ceil(epochs * steps_per_epoch)`` updates, so a
DiffusionBlocks run with B blocks takes B times the steps of the end-to-end run, each running 1/B
of the layers: equal total layer evaluations.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import SAFE_RESUME_KEYS, RunConfig
from ..tasks.base import Task
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write_bytes,
    encode_object,
    encode_tensors,
    latest_checkpoint,
    save_checkpoint,
)
from .metrics import MetricsWriter, current_rss_bytes, peak_rss_bytes
from .runfolder import CONFIG_FILE, shared_state_of, write_run_config
from .shared import SharedModules


class NumericalFault(RuntimeError):
    """A non-finite loss or gradient under nan_policy=abort (or too many skips)."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no run folder, nothing saved"
        super().__init__(f"{name} at step {step}; {where}")


def resume_hash(config: RunConfig) -> str:
    """The config hash that checkpoints carry: keys that may change on resume are left out, and
    where the data lives (a moved file is checked by its bytes, ``runs._check_moved_data``)."""
    return config.config_hash(ignore=(*SAFE_RESUME_KEYS, "data", "data_dir"))


# ---------------------------------------------------------------------- schedules
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


# ---------------------------------------------------------------------- trainer
class Trainer:
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
        self.resident = c.block_resident
        self.block_files: dict[int, Path] = {}  # where blocks that are not in memory live
        self.optimizer_files: dict[int, Path] = {}  # optimizer states of swapped-out blocks
        self.swaps = 0  # blocks loaded into memory (block-resident I/O)
        self.swap_seconds = 0.0  # time spent writing and reading swapped blocks
        self._offload_dir: Path | None = None
        self.step_times: dict[int, list[float]] = defaultdict(list)
        self.train_seconds = 0.0
        self.skipped_steps = 0  # steps whose update was skipped for a non-finite loss/gradient
        self._stop_signal: int | None = None
        self.peak_state_bytes = 0  # max parameters + gradients + optimizer state at a step
        self._state_noted_for: int | None = None  # the block trained when it was last counted
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

    # -- block residency --------------------------------------------------------------------
    @property
    def offload_dir(self) -> Path:
        if self._offload_dir is None:
            if self.run_dir is not None:
                self._offload_dir = self.run_dir / "blocks"
                self._offload_dir.mkdir(parents=True, exist_ok=True)
            else:
                self._offload_dir = Path(tempfile.mkdtemp(prefix="dblocks-blocks-"))
        return self._offload_dir

    def _block_path(self, unit: int) -> Path:
        return self.offload_dir / f"block-{unit}.safetensors"

    def _optimizer_path(self, unit: int) -> Path:
        return self.offload_dir / f"optimizer-{unit}.pt"

    def _write_block_file(self, unit: int, state: dict[str, torch.Tensor]) -> None:
        path = self._block_path(unit)
        atomic_write_bytes(path, encode_tensors(state))
        self.block_files[unit] = path

    def prepare_resident(self) -> None:
        """Give every block that is neither in memory nor on disk a file with its initial
        weights, one block at a time (so checkpoints always hold every block)."""
        for u in range(self.num_units):
            if u not in self.block_files and not self.model.block_is_materialized(u):
                self._write_block_file(u, self.model.build_block(u).state_dict())

    def activate(self, unit: int) -> None:
        """Resident mode: make ``unit`` the only block in memory (others go to their files)."""
        if self.model.block_is_materialized(unit):
            return
        start = time.perf_counter()
        try:
            self._swap_in(unit)
        finally:
            self.swap_seconds += time.perf_counter() - start

    def _swap_in(self, unit: int) -> None:
        for u in range(self.num_units):
            if u != unit and self.model.block_is_materialized(u):
                self.offload(u)
        state = None
        if unit in self.block_files:
            from safetensors.torch import load_file

            state = load_file(self.block_files[unit])
        self.model.materialize_block(unit, self.model.device, state)
        path = self.optimizer_files.pop(unit, None)
        if path is not None:  # a block swapped out mid-training: its optimizer comes back too
            self._pending_optimizer[unit] = torch.load(path, weights_only=True, map_location="cpu")
        self.swaps += 1

    def offload(self, unit: int) -> None:
        """Write block ``unit`` to its file and free its weights and optimizer state. A block
        that has not finished (schedules that come back to it) keeps its optimizer state in a
        file beside it; a finished block's is dropped."""
        self._write_block_file(unit, self.model.blocks[unit].state_dict())
        opt = self.optimizers.pop(unit, None)
        if opt is not None and self.unit_steps[unit] < self.steps_per_unit:
            path = self._optimizer_path(unit)
            atomic_write_bytes(path, encode_object(opt.state_dict()))
            self.optimizer_files[unit] = path
        self.model.release_block(unit)

    def prepare_evaluation(self) -> Callable[[], None]:
        """After training: every block in memory, each with its own copy of the shared modules
        where the policy gives blocks copies. Returns a function that puts the live training
        copy back (call it before training or saving again)."""
        self.materialize_all()
        return self.shared.install()

    def materialize_all(self) -> None:
        """Load every block that lives on disk back into memory (for evaluation)."""
        from safetensors.torch import load_file

        for u in range(self.num_units):
            if not self.model.block_is_materialized(u):
                self.model.materialize_block(u, self.model.device, load_file(self.block_files[u]))

    def resident_bytes(self) -> dict[str, int]:
        """Bytes of parameters, gradients and optimizer state that exist right now, and of the
        finished blocks' copies of the shared modules (``shared=block-copies``)."""
        params = [p for p in self.model.parameters() if not p.is_meta]
        opt_bytes = 0
        for opt in [self.shared_optimizer, *self.optimizers.values()]:
            if opt is None:
                continue
            for state in opt.state.values():
                opt_bytes += sum(
                    v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v)
                )
        for saved in self._pending_optimizer.values():  # loaded, not yet handed to an optimizer
            for state in saved.get("state", {}).values():
                opt_bytes += sum(
                    v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v)
                )
        return {
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "grad_bytes": sum(
                p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None
            ),
            "optimizer_bytes": opt_bytes,
            "shared_copy_bytes": sum(
                v.numel() * v.element_size()
                for c in self.shared.copies.values()
                for v in c.values()
            ),
        }

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

    def _note_state_bytes(self, unit: int) -> None:
        """Track the peak of parameters + gradients + optimizer state held at once (exact
        accounting, independent of the allocator; activations are not included). What is held
        changes only when another block trains, so it is counted at the first step of a visit."""
        if unit != self._state_noted_for:
            self._state_noted_for = unit
            self.peak_state_bytes = max(self.peak_state_bytes, sum(self.resident_bytes().values()))

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

    def _fault(self, units: list[int], params, loss: float, logs: dict) -> dict[str, float]:
        """A non-finite loss or gradient: drop the update (the batch counts as used), report it
        with the block, its noise interval and the step; abort under nan_policy=abort or after
        nan_max_skips skips."""
        c = self.config
        for p in params:
            p.grad = None
        what = "loss" if not math.isfinite(loss) else "gradient"
        where = ", ".join(
            f"block {u} (noise interval {self.task.block_interval(u)})" for u in units
        )
        message = f"non-finite {what} at step {self.step} on {where}"
        self.skipped_steps += 1
        self.metrics.write(
            {"step": self.step, "fault": message, "skipped_steps": self.skipped_steps}
        )
        if c.nan_policy == "abort" or self.skipped_steps > c.nan_max_skips:
            last = latest_checkpoint(self.run_dir / "checkpoints") if self.run_dir else None
            reason = (
                "nan_policy=abort"
                if c.nan_policy == "abort"
                else (f"more than nan_max_skips={c.nan_max_skips} skipped steps")
            )
            raise NumericalFault(
                f"{message}; stopping ({reason}); the last good checkpoint is "
                f"{last or 'none (no checkpoint written yet)'}"
            )
        self.log(f"warning: {message}; update skipped ({self.skipped_steps} so far)")
        for u in units:
            self.unit_steps[u] += 1
        self.step += 1
        return {"loss": math.nan, "skipped": 1.0, **{k: v for k, v in logs.items() if k == "lr"}}

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

    def _catch_signals(self):
        """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            self._stop_signal = signum

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, h) for sig, h in old.items()]

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

    def _finish(self, rss_before, params_before, cuda, device, allocated_before):
        peak = peak_rss_bytes()
        memory = {
            "rss_before_first_step_bytes": rss_before,
            "peak_rss_bytes": peak,
            "train_peak_rss_bytes": max(0, peak - rss_before),
            "params_at_first_step_bytes": params_before,
            "peak_state_bytes": self.peak_state_bytes,  # params + grads + optimizer state
        }
        if cuda:
            max_allocated = torch.cuda.max_memory_allocated(device)
            memory["cuda_max_allocated_bytes"] = max_allocated
            memory["cuda_peak_bytes"] = max_allocated - allocated_before
        if self.run_dir is not None:
            self.save()
        accounting = self.accounting()
        accounting["skipped_steps"] = self.skipped_steps
        return {"accounting": accounting, "timing": self.timing(), "memory": memory}

    def _heldout_units(self, unit: int) -> list[int]:
        """The blocks whose held-out loss a record carries: every block trained since the last
        record (so each block's curve has a point at every record of the random schedule), or
        only the block in memory when blocks are swapped out (block-resident)."""
        if self.resident:
            return [unit]
        return sorted(self._trained_since_log)

    @torch.no_grad()
    def heldout_record(self, units: list[int]) -> dict[str, float]:
        """The loss of each unit trained at this step on a fixed batch of validation examples
        with fixed noise (``val_<key>_block_<b>``), so that a block that only fits its training
        batches shows. Empty when the task has no validation split. Uses its own generator:
        training draws are unchanged."""
        if self._heldout is None:
            return {}
        record = {}
        for u in units:
            generator = torch.Generator().manual_seed(self.config.seed + 7_000_003 + u)
            _, logs = self.task.loss(u, self._heldout, generator)
            for k, v in logs.items():
                if k not in ("layer_evals", "backward_layer_evals"):
                    record[f"val_{k}_block_{u}"] = v
        return record

    PLAIN_PROGRESS_SECONDS = 10.0  # least time between two plain progress lines

    def _plain_progress(self, record: dict[str, Any], end: int) -> None:
        """Without a terminal: one plain line per log record, at most every
        ``PLAIN_PROGRESS_SECONDS`` (and always the last), on stderr where the bar would be."""
        if not getattr(self, "_plain", False):
            return
        now = time.monotonic()
        if self.step < end and now - self._plain_last < self.PLAIN_PROGRESS_SECONDS:
            return
        self._plain_last = now
        print(
            f"{self.config.method}: step {self.step}/{self.total_steps}, block {record['block']} "
            f"epoch {record['epoch']:.2f}, loss {record['loss']:.4f}, "
            f"{record['examples_per_sec']:.0f} examples/s",
            file=sys.stderr,
            flush=True,
        )

    @property
    def log_every(self) -> int:
        return self.config.log_every

    def _drop_finished_optimizers(self, unit: int) -> None:
        """In sequential mode a finished unit's optimizer state is freed for good."""
        if self.config.schedule != "sequential":
            return
        for u in list(self.optimizers):
            if u != unit and self.unit_steps[u] >= self.steps_per_unit:
                del self.optimizers[u]

    # -- accounting -------------------------------------------------------------------------
    def accounting(self) -> dict[str, Any]:
        c = self.config
        layers = [self.task.layers_in_unit(u) for u in range(self.num_units)]
        evals = self.layer_evals * c.batch_size
        backward = self.backward_layer_evals * c.batch_size
        return {
            "method": c.method,
            "units": self.num_units,
            "trained_units": list(self.units),
            "steps": self.step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "steps_per_unit_budget": self.steps_per_unit,
            "steps_per_unit": list(self.unit_steps),
            "layers_per_unit": layers,
            "layer_evaluations": evals,  # forward layer passes x examples
            "backward_layer_evaluations": backward,  # layers that ran backward x examples
            # Training compute in forward-layer units: a backward pass costs about two forwards.
            "compute_layer_units": evals + 2 * backward,
            "examples_seen": self.step * c.batch_size,
        }

    def timing(self) -> dict[str, Any]:
        per_unit = {
            str(u): _median(times[5:] if len(times) > 10 else times)
            for u, times in sorted(self.step_times.items())
        }
        every = [t for times in self.step_times.values() for t in times]
        return {
            "train_seconds": self.train_seconds,  # optimizer steps only
            "swap_seconds": self.swap_seconds,  # block-resident: moving blocks in and out
            "swaps": self.swaps,
            "median_step_seconds": _median(every[5:] if len(every) > 10 else every),
            "median_step_seconds_per_unit": per_unit,
        }

    # -- checkpoints ------------------------------------------------------------------------
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
        if ckpt.meta.get("config_hash") != expect:
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
        from .checkpoint import atomic_write_text

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


def _is_terminal(stream) -> bool:
    """Whether a progress bar can redraw itself on ``stream``: a terminal, or a notebook (where
    ``tqdm.auto`` draws a widget)."""
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])
