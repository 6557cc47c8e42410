"""Faults during training: non-finite losses or gradients (``NumericalFault``, the skip-or-abort
policy of ``Faults.skip``) and SIGINT/SIGTERM (``Faults.catch_signals`` sets ``stop_signal``,
which the loop turns into a checkpoint and ``TrainingInterrupted``). ``Faults`` is a component of
:class:`Trainer`.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import torch

from .checkpoint import latest_checkpoint
from .metrics import MetricsWriter
from .schedule import Position

if TYPE_CHECKING:
    from ..config import TrainingSettings
    from ..tasks.base import Task


class NumericalFault(RuntimeError):
    """A non-finite loss or gradient under nan_policy=abort (or too many skips)."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no run folder, nothing saved"
        super().__init__(f"{name} at step {step}; {where}")


class Faults:
    """Non-finite steps (counted in ``skipped_steps``) and stop signals (``stop_signal``)."""

    def __init__(
        self,
        settings: TrainingSettings,
        task: Task,
        metrics: MetricsWriter,
        log: Callable[[str], None],
        checkpoints: Path | None,
    ) -> None:
        self.settings = settings
        self.task = task
        self.metrics = metrics
        self.log = log
        self.checkpoints = checkpoints  # where the last good checkpoint is looked for
        self.skipped_steps = 0  # steps whose update was skipped for a non-finite loss/gradient
        self.stop_signal: int | None = None

    def skip(
        self,
        position: Position,
        blocks: list[int],
        params: Iterable[torch.nn.Parameter],
        loss: float,
        logs: dict[str, float],
    ) -> dict[str, float]:
        """A non-finite loss or gradient: drop the update (the batch counts as used: ``position``
        advances), report it with the block, its noise interval and the step; abort under
        nan_policy=abort or after nan_max_skips skips. Returns the logs of the skipped step."""
        c, step = self.settings, position.step
        for p in params:
            p.grad = None
        what = "loss" if not math.isfinite(loss) else "gradient"
        where = ", ".join(
            f"block {u} (noise interval {self.task.block_interval(u)})" for u in blocks
        )
        message = f"non-finite {what} at step {step} on {where}"
        self.skipped_steps += 1
        self.metrics.write({"step": step, "fault": message, "skipped_steps": self.skipped_steps})
        if c.nan_policy == "abort" or self.skipped_steps > c.nan_max_skips:
            last = latest_checkpoint(self.checkpoints) if self.checkpoints else None
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
        position.advance(blocks)
        return {"loss": math.nan, "skipped": 1.0, **{k: v for k, v in logs.items() if k == "lr"}}

    @contextmanager
    def catch_signals(self) -> Iterator[None]:
        """Within: SIGINT/SIGTERM set ``stop_signal`` (the loop saves a checkpoint after the
        current step); the previous handlers come back on the way out."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop_signal = signum

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
