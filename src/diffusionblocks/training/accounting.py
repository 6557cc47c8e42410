"""What a run reports while and after it trains: the held-out loss of the blocks at each metrics
record (``Heldout``), the metrics records and the progress bar or plain progress lines of a
``fit`` (``ProgressLog``), the accounting of steps and layer evaluations and the step timing
(``Accounting``), and the memory report at the end of ``fit`` (``MemoryProbe``). Components of
:class:`Trainer`; each is given what it reports on.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..networks.layers import evaluating
from ..runtime import autocast
from .metrics import MetricsWriter, current_rss_bytes, peak_rss_bytes
from .schedule import Plan, Position

if TYPE_CHECKING:
    from ..config import TrainingSettings
    from ..tasks.base import Task


class Accounting:
    """Counts of what the steps ran (layer evaluations) and how long they took."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.train_seconds = 0.0  # optimizer steps only
        self.step_times: dict[int, list[float]] = defaultdict(list)
        self.layer_evals: float = 0  # forward layer evaluations per example, summed over steps
        self.backward_layer_evals: float = 0  # layers that ran a backward pass, per example

    def count(self, blocks: list[int], seconds: float, logs: dict[str, float]) -> None:
        """A step of ``blocks`` (one unless synchronous; timed as the first's) took ``seconds``;
        called right after the step's ``loss`` calls. The layer evaluations per example are the
        task's (:meth:`Task.layer_evals`, :meth:`Task.backward_layer_evals` of each block's
        latest loss call); a step skipped for a non-finite loss or gradient (``skipped`` in its
        ``logs``) counts the layers of its blocks (:meth:`Task.layers_in_block`)."""
        self.train_seconds += seconds
        self.step_times[blocks[0]].append(seconds)
        if logs.get("skipped"):
            layers = sum(self.task.layers_in_block(u) for u in blocks)
            self.layer_evals += layers
            self.backward_layer_evals += layers
            return
        self.layer_evals += sum(self.task.layer_evals(u) for u in blocks)
        self.backward_layer_evals += sum(self.task.backward_layer_evals(u) for u in blocks)

    def report(
        self, settings: TrainingSettings, plan: Plan, at: Position, skipped: int
    ) -> dict[str, Any]:
        """Steps and layer evaluations at ``at``; ``skipped``: steps whose update was skipped
        (non-finite)."""
        c, step = settings, at.step
        layers = [self.task.layers_in_block(u) for u in range(len(at.block_steps))]
        evals = self.layer_evals * c.batch_size
        backward = self.backward_layer_evals * c.batch_size
        # The "unit" keys (a block's old name) are saved keys, kept for old results and readers.
        return {
            "method": c.method,
            "units": len(layers),
            "trained_units": list(plan.blocks),
            "steps": step,
            "total_steps": plan.total_steps,
            "steps_per_epoch": plan.steps_per_epoch,
            "steps_per_unit_budget": plan.steps_per_block,
            "steps_per_unit": list(at.block_steps),
            "layers_per_unit": layers,
            "layer_evaluations": evals,  # forward layer passes x examples
            "backward_layer_evaluations": backward,  # layers that ran backward x examples
            # Training compute in forward-layer units: a backward pass costs about two forwards.
            "compute_layer_units": evals + 2 * backward,
            "examples_seen": step * c.batch_size,
            "skipped_steps": skipped,
        }

    def timing(self, swap_seconds: float, swaps: int) -> dict[str, Any]:
        per_block = {
            str(u): _median(times[5:] if len(times) > 10 else times)
            for u, times in sorted(self.step_times.items())
        }
        every = [t for times in self.step_times.values() for t in times]
        return {
            "train_seconds": self.train_seconds,  # optimizer steps only
            "swap_seconds": swap_seconds,  # block-resident: moving blocks in and out
            "swaps": swaps,
            "median_step_seconds": _median(every[5:] if len(every) > 10 else every),
            "median_step_seconds_per_unit": per_block,  # saved key, kept for old results
        }


class Heldout:
    """The held-out loss of blocks on a fixed batch of validation examples with fixed noise, and
    which blocks trained since the last metrics record."""

    def __init__(self, task: Task, seed: int) -> None:
        self.task = task
        self.seed = seed
        self.batch = task.heldout_batch()  # fixed validation examples (None: no such split)
        self.trained_since_log: set[int] = set()

    def recorded_blocks(self, block: int, resident: bool) -> list[int]:
        """The blocks whose held-out loss a record carries: every block trained since the last
        record (so each block's curve has a point at every record of the random schedule), or
        only the block in memory when blocks are swapped out (block-resident)."""
        if resident:
            return [block]
        return sorted(self.trained_since_log)

    @torch.no_grad()
    def record(self, blocks: list[int]) -> dict[str, float]:
        """The loss of each block trained at this step on the held-out batch
        (``val_<key>_block_<b>``), so that a block that only fits its training batches shows.
        Empty when the task has no validation split. Uses its own generator: training draws are
        unchanged; the model is in eval mode meanwhile (no dropout or augmentation)."""
        if self.batch is None:
            return {}
        record = {}
        with evaluating(self.task.model):  # no dropout, no augmentation: the batch as it is
            for u in blocks:
                generator = torch.Generator().manual_seed(self.seed + 7_000_003 + u)
                with autocast(self.task.config.precision, self.task.device):  # as training
                    _, logs = self.task.loss(u, self.batch, generator)
                for k, v in logs.items():
                    record[f"val_{k}_block_{u}"] = v
        return record


class ProgressLog:
    """One ``fit``'s metrics records (every ``log_every`` steps, the means of the logged values
    since the last record) and its progress display: a bar on a terminal; piped or redirected
    output gets plain lines instead (a bar's carriage-return frames would flood a log file)."""

    PLAIN_PROGRESS_SECONDS = 10.0  # least time between two plain progress lines

    def __init__(
        self,
        settings: TrainingSettings,
        plot_key: str,
        metrics: MetricsWriter,
        heldout: Heldout,
        progress: bool,
        plan: Plan,
        initial: int,
    ) -> None:
        self.settings = settings
        self.plot_key = plot_key
        self.metrics = metrics
        self.heldout = heldout
        self.plan = plan
        self.accum: dict[str, list[float]] = defaultdict(list)
        self.plain = progress and not _is_terminal(sys.stderr)
        self.plain_last = -math.inf
        self.bar = tqdm(
            total=plan.total_steps,
            initial=initial,
            disable=not progress or self.plain,
            desc=f"{settings.method}",
            unit="step",
            dynamic_ncols=True,
        )
        self.last_log = time.perf_counter()
        self.examples_since = 0

    def add(
        self, logs: dict[str, float], blocks: list[int], at: Position, end: int, resident: bool
    ) -> None:
        """The logs of the step that trained ``blocks`` (one block unless synchronous) and brought
        the run to ``at``; writes a record when one is due (``end``: where this ``fit`` stops;
        ``resident``: blocks are swapped out, so only the active one has a held-out loss)."""
        self.examples_since += self.settings.batch_size
        for k, v in logs.items():
            self.accum[k].append(v)
        self.heldout.trained_since_log.update(blocks)
        block = blocks[0]
        if not self.plan.synchronous:
            self.accum[f"loss_block_{block}"].append(logs["loss"])
            key = self.plot_key
            if key != "loss" and key in logs:
                self.accum[f"{key}_block_{block}"].append(logs[key])
        self.bar.update(1)
        if at.step % self.settings.log_every == 0 or at.step == self.plan.total_steps:
            self._write(at, block, end, resident)

    def _write(self, at: Position, block: int, end: int, resident: bool) -> None:
        now = time.perf_counter()
        rate = self.examples_since / max(now - self.last_log, 1e-9)
        per_epoch = self.plan.steps_per_epoch
        record = {
            "step": at.step,
            # Epochs of the block trained at this step (its own steps), and passes over the
            # training data by all blocks together (the global step).
            "epoch": at.block_steps[block] / per_epoch,
            "block": block,
            "data_epochs": at.step / per_epoch,
            **{k: sum(v) / len(v) for k, v in self.accum.items()},
            "examples_per_sec": rate,
            **self.heldout.record(self.heldout.recorded_blocks(block, resident)),
        }
        self.metrics.write(record)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", block=block,
                             epoch=f"{record['epoch']:.2f}", ex_s=f"{rate:.0f}")  # fmt: skip
        self._plain_progress(at.step, record, end)
        self.accum.clear()
        self.heldout.trained_since_log.clear()
        self.last_log, self.examples_since = now, 0

    def _plain_progress(self, step: int, record: dict[str, Any], end: int) -> None:
        """Without a terminal: one plain line per log record, at most every
        ``PLAIN_PROGRESS_SECONDS`` (and always the last), on stderr where the bar would be."""
        if not self.plain:
            return
        now = time.monotonic()
        if step < end and now - self.plain_last < self.PLAIN_PROGRESS_SECONDS:
            return
        self.plain_last = now
        print(
            f"{self.settings.method}: step {step}/{self.plan.total_steps}, block {record['block']} "
            f"epoch {record['epoch']:.2f}, loss {record['loss']:.4f}, "
            f"{record['examples_per_sec']:.0f} examples/s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        self.bar.close()


class MemoryProbe:
    """Memory readings around a ``fit``: process RSS, parameters at the first step, CUDA."""

    def __init__(self, device: torch.device, param_bytes: Callable[[], int]) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.rss_before = current_rss_bytes()
        self.params_before = param_bytes()
        self.allocated_before = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.allocated_before = torch.cuda.memory_allocated(device)

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def report(self, peak_state_bytes: int) -> dict[str, int]:
        """The memory report of the ``fit`` (``peak_state_bytes``: params + grads + optimizer
        state, counted by the residency)."""
        peak = peak_rss_bytes()
        memory = {
            "rss_before_first_step_bytes": self.rss_before,
            "peak_rss_bytes": peak,
            "train_peak_rss_bytes": max(0, peak - self.rss_before),
            "params_at_first_step_bytes": self.params_before,
            "peak_state_bytes": peak_state_bytes,
        }
        if self.cuda:
            max_allocated = torch.cuda.max_memory_allocated(self.device)
            memory["cuda_max_allocated_bytes"] = max_allocated
            memory["cuda_peak_bytes"] = max_allocated - self.allocated_before
        return memory


def _is_terminal(stream: IO[str] | None) -> bool:
    """Whether a progress bar can redraw itself on ``stream``: a terminal, or a notebook (where
    ``tqdm.auto`` draws a widget)."""
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    if stream is None:  # no stream
        return False
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
