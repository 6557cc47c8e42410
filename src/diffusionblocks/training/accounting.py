"""What a run reports while and after it trains: the held-out loss of the blocks at each metrics
record, the plain progress lines written without a terminal, the accounting of steps and layer
evaluations, step timing, and the memory report at the end of ``fit``. ``RunAccounting`` is a
mixin of :class:`Trainer`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from .metrics import peak_rss_bytes


class RunAccounting:
    """Metrics records, progress lines, accounting and timing (a mixin of ``Trainer``)."""

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

    # -- accounting -------------------------------------------------------------------------
    def _finish(self, rss_before, params_before, cuda, device, allocated_before):
        """The end of ``fit``: the memory report, a final checkpoint (with a run folder), and
        the accounting and timing."""
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
