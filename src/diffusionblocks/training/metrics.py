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


def plot_losses(metrics_path: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Training loss per block against step, saved as a PNG. Returns None (and does nothing)
    when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    keys = sorted({k for r in records for k in r if k.startswith("loss_block_")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key.replace("loss_", ""))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
