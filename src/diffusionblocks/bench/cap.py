"""``dblocks bench cap``: a memory cap enforced by the operating system (or CUDA's allocator),
and which training methods fit under it.

Each method trains in its own fresh process (``python -m diffusionblocks.bench cap-worker``)
with the cap applied to the whole process (the Python runtime, PyTorch and every library the
package may import, imported first in every run, then the data, the model and training) before
``dblocks train`` starts:

- CPU (Linux 4.7 or later): ``RLIMIT_DATA``, the kernel's limit on the process's data segment
  (heap and private writable mappings: every tensor, and also every thread's stack and memory
  mapped but not yet touched, so it counts address space, not resident memory, and depends on
  the number of threads). An allocation past it fails inside the allocator ("can't allocate
  memory"); nothing in this package checks or reports the limit itself.
- CUDA: ``torch.cuda.set_per_process_memory_fraction``, so the caching allocator raises
  ``torch.cuda.OutOfMemoryError`` past the cap (the CUDA context itself is outside it).

The methods: ``e2e`` (full depth), ``e2e-ckpt`` (full depth with activation checkpointing, the
usual way to save memory), and ``dblocks`` with ``resident=true`` (block-resident
DiffusionBlocks: one block's weights, gradients and optimizer state in memory at a time; the
same weights as the default run, bitwise). Without ``--cap`` every method first runs uncapped
(its peak and quality are reported beside) and the cap is a quarter of the way from
DiffusionBlocks' peak to end-to-end's (:func:`auto_cap`), so that the end-to-end run needs more
than the cap. The workers get glibc's ``MALLOC_MMAP_THRESHOLD_`` as in ``dblocks bench memory``
(:func:`run_cap_worker`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .memory import DEFAULT_MMAP_THRESHOLD, worker_env

CAP_METHODS: dict[str, dict[str, Any]] = {
    "e2e": {"method": "e2e"},
    "e2e-ckpt": {"method": "e2e-ckpt"},
    "dblocks": {"method": "dblocks", "resident": True},
}
# Messages of a failed allocation: PyTorch's CPU allocator, CUDA's, Python's, OpenBLAS's,
# zlib's, C++'s, OpenMP's.
OOM_MARKERS = (
    "can't allocate memory",
    "Cannot allocate memory",
    "cannot allocate memory",
    "out of memory",
    "MemoryError",
    "Memory allocation still failed",
    "Error -4 while",  # zlib's Z_MEM_ERROR
    "std::bad_alloc",
    "Thread creation failed",  # OpenMP (libgomp) when a thread's stack cannot be mapped
)


class CapBenchError(RuntimeError):
    """The benchmark cannot choose a cap (a probe failed, or the two peaks do not separate)."""


def data_bytes(status: str = "/proc/self/status") -> int | None:
    """This process's data segment now (``VmData``: what ``RLIMIT_DATA`` limits), or None where
    /proc is not available."""
    try:
        with open(status) as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class DataPeak:
    """Samples :func:`data_bytes` every ``interval`` seconds in a daemon thread; ``peak`` is the
    largest value seen (a sampled peak: a spike shorter than the interval can be missed)."""

    def __init__(self, interval: float = 0.002):
        self.peak = data_bytes() or 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(MemoryError):  # a sample lost under the cap, not the thread
                self.peak = max(self.peak, data_bytes() or 0)

    def __enter__(self) -> DataPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, data_bytes() or 0)


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is a failed memory allocation (CPU or CUDA)."""
    return isinstance(error, MemoryError) or any(m in str(error) for m in OOM_MARKERS)


def apply_cap(cap: int, device: str) -> None:
    """Enforce ``cap`` bytes on this process: the soft ``RLIMIT_DATA`` (CPU) or the CUDA
    allocator's per-process fraction (CUDA)."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0), index)
        return
    hard = hard_limit()
    if hard != resource.RLIM_INFINITY and cap > hard:
        raise ValueError(f"cap {cap} bytes is above this process's hard RLIMIT_DATA ({hard})")
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


# Third-party modules the package imports inside functions (the data loaders, the loss plot).
LAZY_IMPORTS = ("sklearn.datasets", "mnist1d.data", "matplotlib.pyplot")


def import_everything() -> None:
    """Import every module of this package and :data:`LAZY_IMPORTS` now, before a cap: a
    library whose start-up allocation fails under the cap may spin or exit instead of raising
    (OpenBLAS inside scipy did), and imports are not what the cap measures."""
    import importlib
    import pkgutil

    with contextlib.suppress(ImportError):  # optional (the `plot` extra)
        import matplotlib

        matplotlib.use("Agg")
    package = importlib.import_module("diffusionblocks")
    names = [m.name for m in pkgutil.walk_packages(package.__path__, "diffusionblocks.")
             if not m.name.endswith("__main__")]  # fmt: skip
    for name in [*names, *LAZY_IMPORTS]:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def warm_up() -> None:
    """What every run does before its cap: :func:`import_everything`, and start PyTorch's
    intra-op thread pool (each thread's stack counts against ``RLIMIT_DATA``, and OpenMP exits
    the process when it cannot create one)."""
    import torch

    import_everything()
    x = torch.ones(512, 512)
    (x @ x).sum()


def cap_worker(
    preset: str,
    overrides: dict[str, Any],
    out: str,
    cap: int | None,
    command: Callable[[list[str]], int],
) -> dict[str, Any]:
    """Train one configuration in this (fresh) process under ``cap`` bytes (None: no cap) with
    the real ``dblocks train`` (``command``: the command line's entry point, passed in by the
    worker's ``__main__`` so that this module does not import the command line). Returns its
    status (``ok``, ``oom`` or ``error``) with a message, the data segment when the cap was
    applied (``start_bytes``), the sampled peak of what the cap limits (``peak_bytes``: the data
    segment on CPU, the CUDA allocator's reserved memory on CUDA), peak RSS, threads and wall
    time."""
    import traceback

    import torch

    from ..registry import make_config, resolve_device
    from ..training.metrics import peak_rss_bytes

    argv = ["train", "--preset", preset, "--out", out, "--no-progress"]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    device = str(resolve_device(make_config(preset, overrides).device))
    cuda = device.startswith("cuda")
    status, message = "ok", ""
    start = time.perf_counter()
    warm_up()  # with or without a cap, so that probes and capped runs compare
    start_bytes = data_bytes()
    record: dict[str, Any] = {"start_bytes": start_bytes, "cpu_threads": torch.get_num_threads()}
    if cap is not None and not cuda and start_bytes is not None and cap <= start_bytes:
        return {**record, "status": "error", "peak_bytes": None, "peak_rss_bytes": None,
                "wall_seconds": None, "message": (
                    f"the cap ({cap / 2**20:.0f} MiB) is below the {start_bytes / 2**20:.0f} MiB "
                    "this process holds before training (Python, PyTorch, the libraries): "
                    "nothing can train under it")}  # fmt: skip

    def lift() -> None:  # the CPU cap back to the hard limit (CUDA's fraction stays)
        if cap is not None and not cuda:
            resource.setrlimit(resource.RLIMIT_DATA, (hard_limit(),) * 2)

    with DataPeak() as peak:
        try:
            if cap is not None:
                apply_cap(cap, device)
            code = command(argv)
            if code != 0:
                status, message = "error", f"dblocks train exited with code {code}"
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - every failure is reported
            lift()  # room to report it
            traceback.print_exc()
            status = "oom" if is_oom(err) else "error"
            message = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"
        finally:
            lift()
    wall = time.perf_counter() - start
    record.update({"status": status, "message": message, "peak_bytes": peak.peak,
                   "peak_of": "data segment (VmData, sampled)", "peak_data_bytes": peak.peak,
                   "peak_rss_bytes": peak_rss_bytes(), "wall_seconds": wall})  # fmt: skip
    if cuda:  # the cap limits the CUDA allocator: its peak is the one
        record["peak_bytes"] = torch.cuda.max_memory_reserved(torch.device(device))
        record["peak_of"] = "CUDA memory reserved by the allocator"
    return record


def hard_limit() -> int:
    """This process's hard ``RLIMIT_DATA`` (an unprivileged process cannot raise it)."""
    return resource.getrlimit(resource.RLIMIT_DATA)[1]


def run_cap_worker(
    preset: str,
    overrides: dict[str, Any],
    out: Path,
    cap: int | None,
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
) -> dict[str, Any]:
    """:func:`cap_worker` in a fresh subprocess; a worker that dies (a signal, an abort inside a
    library whose allocation failed) is reported as ``error`` with its exit code.
    ``mmap_threshold`` > 0 sets glibc's ``MALLOC_MMAP_THRESHOLD_`` as ``dblocks bench memory``
    does (freed activations go back to the system instead of fragmenting the heap, which would
    count against the cap; activation checkpointing suffers most); 0 keeps glibc's default."""
    cmd = [sys.executable, "-m", "diffusionblocks.bench", "cap-worker", "--preset", preset,
           "--overrides", json.dumps(overrides), "--out", str(out)]  # fmt: skip
    if cap is not None:
        cmd += ["--cap", str(cap)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(mmap_threshold))
    # The last line of stderr that reports a failed allocation (a library's own message).
    oom_line = next((line.strip() for line in reversed(proc.stderr.splitlines())
                     if any(m in line for m in OOM_MARKERS)), None)  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            record = dict(json.loads(lines[-1]))
        except json.JSONDecodeError:
            pass
        else:  # an allocation failure the command line turned into an error exit is still one
            exited = record["status"] == "error" and record["message"].startswith("dblocks")
            if exited and oom_line:
                record["status"] = "oom"
                record["message"] += f": {oom_line[:300]}"
            return record
    tail = oom_line or (proc.stderr.strip().splitlines() or [""])[-1]
    return {"status": "oom" if oom_line else "error",
            "message": f"worker exited with code {proc.returncode}: {tail[:300]}",
            "peak_bytes": None, "peak_rss_bytes": None, "wall_seconds": None}  # fmt: skip


def auto_cap(e2e_peak: int, dblocks_peak: int) -> int:
    """The cap chosen without ``--cap``: a quarter of the way from DiffusionBlocks' peak (of what
    the cap limits) to end-to-end's (room for allocator noise above DiffusionBlocks' need, well
    below end-to-end's), rounded up to a MiB."""
    cap = dblocks_peak + (e2e_peak - dblocks_peak) // 4
    return -(-cap // 2**20) * 2**20


def _quality(run_dir: Path) -> dict[str, Any]:
    """The run's headline metric on val and test from its results.json (empty if it has none)."""
    from ..reporting import headline_metric

    path = run_dir / "results.json"
    if not path.exists():
        return {}
    results = json.loads(path.read_text())
    task = results["config"]["task"]
    test = headline_metric(results["eval"], task)
    val = headline_metric(results["eval_val"], task) if "eval_val" in results else None
    return {"metric": test["metric"], "test_value": test["value"],
            "val_value": val["value"] if val else None}  # fmt: skip


def run_cap_bench(
    preset: str,
    overrides: dict[str, Any],
    out: Path,
    cap: int | None = None,
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every method of :data:`CAP_METHODS` under ``cap`` bytes (None: :func:`auto_cap` from
    uncapped probe runs of every method, kept under ``out/probe``); runs go to ``out/METHOD``.
    Returns the cap, how it was chosen, ``e2e_status``, ``e2e_ckpt_status``,
    ``dblocks_status`` and one record per method (status, peak, wall time, quality when it
    trained, and without ``cap`` its uncapped peak and quality)."""
    probes: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    if cap is None:
        for name, method_overrides in CAP_METHODS.items():
            log(f"  probe without a cap: {name} ...")
            probes[name] = run_cap_worker(preset, {**overrides, **method_overrides},
                                          out / "probe" / name, None, mmap_threshold)  # fmt: skip
            if probes[name]["status"] != "ok" or not probes[name]["peak_bytes"]:
                raise CapBenchError(
                    f"the uncapped {name} run failed ({probes[name]['message']}); "
                    "pass --cap BYTES to train every method under your own budget instead"
                )
        e2e_peak, dblocks_peak = (probes[m]["peak_bytes"] for m in ("e2e", "dblocks"))
        if e2e_peak <= dblocks_peak:
            raise CapBenchError(
                f"DiffusionBlocks needed as much memory as end to end at these settings "
                f"({dblocks_peak / 2**20:.0f} against {e2e_peak / 2**20:.0f} MiB): no cap lets "
                "one train and not the other; pass --cap BYTES to test a budget of your own"
            )
        cap = auto_cap(e2e_peak, dblocks_peak)
        if e2e_peak - dblocks_peak < e2e_peak // 10:
            warnings.append(
                f"end-to-end training needs only {(e2e_peak - dblocks_peak) / 2**20:.0f} MiB "
                f"more than DiffusionBlocks at this preset ({e2e_peak / 2**20:.0f} MiB in all): "
                "allocator noise can decide what fits; use a model whose activations dominate "
                "(e.g. --preset bench, or a larger batch_size)"
            )
    records = []
    for name, method_overrides in CAP_METHODS.items():
        log(f"  {name} under a cap of {cap / 2**20:.0f} MiB ...")
        record = run_cap_worker(
            preset, {**overrides, **method_overrides}, out / name, cap, mmap_threshold
        )
        record = {"method": name, "overrides": method_overrides, **record}
        if record["status"] == "ok":
            record.update(_quality(out / name))
        if name in probes:
            record["uncapped_peak_bytes"] = probes[name]["peak_bytes"]
            record["uncapped_quality"] = _quality(out / "probe" / name)
        records.append(record)
    status = {f"{r['method'].replace('-', '_')}_status": r["status"] for r in records}
    # RLIMIT_DATA counts mapped address space (thread stacks included), so the figures depend
    # on the number of threads and the kernel: recorded with them.
    environment = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                   "cpu_threads": records[0].get("cpu_threads"), "kernel": platform.release(),
                   "cpu_count": os.cpu_count()}  # fmt: skip
    return {"cap_bytes": cap, "cap_chosen": "given" if not probes else "auto", **status,
            "malloc_mmap_threshold": mmap_threshold or None, "environment": environment,
            "records": records, "warnings": warnings}  # fmt: skip


def format_cap_table(result: dict[str, Any]) -> str:
    """The markdown table ``dblocks bench cap`` prints."""
    metric = next((r["metric"] for r in result["records"] if "metric" in r), "quality")
    metric = metric.removeprefix("test ")  # the headline's name on the test split
    head = (f"cap {result['cap_bytes'] / 2**20:.0f} MiB ({result['cap_chosen']}; RLIMIT_DATA on "
            "CPU, the allocator's fraction on CUDA)\n\n"
            f"| method | under the cap | peak memory | {metric}: val / test | wall |\n"
            "|---|---|---|---|---|")  # fmt: skip
    rows = []
    for r in result["records"]:
        peak = r.get("peak_bytes") or r.get("uncapped_peak_bytes")
        peak_text = f"{peak / 2**20:.0f} MiB" if peak else "-"
        if r["status"] == "oom" and r.get("uncapped_peak_bytes"):
            peak_text = f"{r['uncapped_peak_bytes'] / 2**20:.0f} MiB uncapped"
        quality = "-"
        for source, label in ((r, ""), (r.get("uncapped_quality") or {}, " without the cap")):
            if "test_value" in source:
                val = "-" if source.get("val_value") is None else f"{source['val_value']:.4f}"
                quality = f"{val} / {source['test_value']:.4f}{label}"
                break
        wall = "-" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.0f} s"
        rows.append(f"| {r['method']} | **{r['status']}** | {peak_text} | {quality} | {wall} |")
    notes = "".join(f"\n\n{r['method']}: {r['message']}" for r in result["records"]
                    if r["status"] != "ok" and r.get("message"))  # fmt: skip
    notes += "".join(f"\n\nwarning: {w}" for w in result["warnings"])
    return head + "\n" + "\n".join(rows) + notes
