"""Metrics as JSON lines, process memory readings, and loss plots."""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import warnings
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (flushed at every record). ``None``: no-op."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({k: _clean(v) for k, v in record.items()})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a metrics file (a torn last line is ignored)."""
    records = []
    with open(path) as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def current_rss_bytes(statm: str = "/proc/self/statm") -> int:
    """Resident set size of this process now (Linux: /proc/self/statm). Where that file cannot
    be read (macOS, Windows) the peak so far stands in, with a warning: memory figures measured
    from it (training peak above the start) then under-count."""
    try:
        with open(statm) as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        warnings.warn(
            f"cannot read the current resident set size from {statm}; using the peak so far "
            "instead, so memory figures relative to the start of training under-count",
            RuntimeWarning,
            stacklevel=2,
        )
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def plot_losses(
    metrics_path: str | os.PathLike,
    out_png: str | os.PathLike,
    key: str = "loss",
    label: str | None = None,
) -> Path | None:
    """Per block against step: the logged quantity ``key`` of the training steps (left) and the
    same quantity on a fixed batch of validation examples (right, ``val_<key>_block_<b>``, when
    the run logged it), saved as a PNG. ``label`` names the quantity on the y axis. Returns None
    (and does nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    train = _block_series(records, f"{key}_block_")
    if not train and key != "loss":  # an older run, or a task that logs only the objective
        key, label = "loss", None
        train = _block_series(records, "loss_block_")
    heldout = _block_series(records, f"val_{key}_block_")
    panels = [("training steps", train)] + ([("validation batch (held out)", heldout)]
                                            if heldout else [])  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False,
                             sharey=True)  # fmt: skip
    values = [v for _, series in panels for pts in series.values() for _, v in pts]
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for name, pts in series.items():  # block b has colour C<b> in both panels
            colour = f"C{int(name.rsplit('_', 1)[1]) % 10}"
            ax.plot(*zip(*pts, strict=True), "o-" if len(pts) == 1 else "-", label=name,
                    color=colour)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_title(title)
        # A log axis only when every value can go on one (a loss of exactly 0, e.g. a run whose
        # data has a single class, would make matplotlib warn and drop the points).
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if series:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no training loss recorded", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
    axes[0][0].set_ylabel(label or ("training loss" if key == "loss" else key))
    fig.tight_layout()
    out = Path(out_png)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _block_series(records: list[dict[str, Any]], prefix: str) -> dict[str, list]:
    """{"block_<b>": [(step, value), ...]} of the keys ``<prefix><b>``."""
    series = {}
    for k in sorted({k for r in records for k in r if k.startswith(prefix)}):
        pts = [(r["step"], float(r[k])) for r in records if _plottable(r.get(k))]
        if pts:
            series["block_" + k[len(prefix) :]] = pts
    return series


def _plottable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
