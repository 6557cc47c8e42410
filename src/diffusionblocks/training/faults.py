"""Faults during training: non-finite losses or gradients (``NumericalFault``, the skip-or-abort
policy of ``_fault``) and SIGINT/SIGTERM (``_catch_signals`` sets a flag that the loop turns into
a checkpoint and ``TrainingInterrupted``). ``FaultHandling`` is a mixin of :class:`Trainer`.
"""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path

from .checkpoint import latest_checkpoint


class NumericalFault(RuntimeError):
    """A non-finite loss or gradient under nan_policy=abort (or too many skips)."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no run folder, nothing saved"
        super().__init__(f"{name} at step {step}; {where}")


class FaultHandling:
    """The trainer's handling of non-finite steps and of stop signals (a mixin of ``Trainer``)."""

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

    def _catch_signals(self):
        """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            self._stop_signal = signum

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, h) for sig, h in old.items()]
