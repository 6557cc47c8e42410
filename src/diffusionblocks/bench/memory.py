"""The memory benchmark: each configuration in a fresh process (``python -m
diffusionblocks.bench worker``), peak memory above the first step, activation bytes counted
exactly, and the paper's analytic prediction beside them (see the package docstring)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..runtime import autocast
from .configs import MEMORY_CONFIGS, config_overrides

if TYPE_CHECKING:
    from ..tasks.base import Task


class SavedTensorCounter:
    """Counts the bytes autograd saves for backward while active: unique storages, parameters
    excluded (they are weights, not activations)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self._skip = {p.untyped_storage().data_ptr() for p in params if not p.is_meta}
        self._seen: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._skip:
            self._seen[ptr] = max(self._seen.get(ptr, 0), storage.nbytes())
        return t

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    @contextmanager
    def counting(self) -> Iterator[SavedTensorCounter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


# ---------------------------------------------------------------------- memory worker
def warm_runtime(device: torch.device) -> None:
    """Run a tiny forward, backward and AdamW step so that one-time runtime costs (autograd
    engine threads, BLAS and attention workspaces, optimizer code paths) are paid before the
    baseline is read, and do not count as training memory of the configuration."""
    layer = torch.nn.TransformerEncoderLayer(32, 2, 64, batch_first=True).to(device)
    x = torch.randn(4, 8, 32, device=device, requires_grad=True)
    layer(x).square().mean().backward()
    torch.optim.AdamW(layer.parameters()).step()
    del layer, x


def measure_memory(preset: str, overrides: dict[str, Any], steps: int) -> dict[str, Any]:
    """Train ``steps`` steps of one configuration in this process and measure it. Meant to run in
    a fresh process (``python -m diffusionblocks.bench worker ...``)."""
    from ..networks.placement import device_of
    from ..registry import make_config, make_task
    from ..training.blockmodel import block_model
    from ..training.metrics import current_rss_bytes
    from ..training.schedule import batch_indices
    from ..training.trainer import Trainer

    config = make_config(preset, overrides)
    task = make_task(config)
    trainer = Trainer(task, None, progress=False)
    model = block_model(task.model)
    device = device_of(model)
    warm_runtime(device)
    # Enough steps that every block trained in this configuration has its optimizer state.
    steps = max(steps, len(trainer.trained_blocks) if config.schedule == "cycle" else steps)
    fitted = trainer.fit(stop_at=steps)
    mem = fitted["memory"]
    baseline_params = mem["params_at_first_step_bytes"]

    # One more step, with saved-tensor accounting, on the block the schedule trains next.
    block = int(trainer.sequence[trainer.step % trainer.total_steps])
    if trainer.resident:
        trainer.activate(block)
    n = task.train_size()
    idx = batch_indices(trainer.step, trainer.steps_per_epoch, n, config.batch_size, config.seed)
    batch = task.train_batch(idx)
    params = [p for p in task.model.parameters()]
    counter = SavedTensorCounter(params)
    with counter.counting(), autocast(config.precision, device):  # as the trainer's step
        loss, _ = task.loss(block, batch, trainer.generator)
    loss.backward()
    resident = trainer.resident_bytes()
    peak = mem["cuda_peak_bytes"] if device.type == "cuda" else mem["train_peak_rss_bytes"]
    return {
        "preset": preset,
        "overrides": {k: v for k, v in overrides.items()},
        "device": str(device),
        "steps": trainer.step,
        "peak_bytes": peak,
        "peak_with_weights_bytes": peak + baseline_params,
        "activation_bytes": counter.bytes,
        **resident,
        "rss_before_first_step_bytes": mem["rss_before_first_step_bytes"],
        "peak_rss_bytes": mem["peak_rss_bytes"],
        "layer_param_bytes": _layer_param_bytes(task),
        "shared_param_bytes": sum(p.numel() * p.element_size() for p in task.shared_parameters()),
        "depth": sum(task.layers_in_block(u) for u in range(len(model.blocks))),
        "current_rss_bytes": current_rss_bytes(),
    }


def _layer_param_bytes(task: Task) -> int:
    from ..training.blockmodel import block_model

    block = block_model(task.model).build_block(0)
    assert isinstance(block, Sized)  # a group of layers
    return sum(p.numel() * p.element_size() for p in block.parameters()) // len(block)


def predicted_bytes(
    name: str, blocks: int, depth: int, p_layer: int, a_layer: float, shared: int
) -> int:
    """The paper's formulas (docs/method.md §4) in bytes: P = parameter bytes per layer (x4:
    weights, gradients, two Adam moments), A = saved-activation bytes per layer; shared modules
    add 4x their parameters everywhere."""
    L, B, P, A = depth, blocks, p_layer, a_layer
    table = {
        "e2e": (4 * P + A) * L,
        "e2e+ckpt": 4 * P * L + A,
        "dblocks": 4 * P * L + A * L / B,  # the authors' code: only the activation part shrinks
        "dblocks-resident": (4 * P + A) * L / B,
        "dblocks-swap": (4 * P + A) * L / B,
        "dblocks-resident+ckpt": 4 * P * L / B + A,
    }
    return int(table[name] + 4 * shared)


DEFAULT_MMAP_THRESHOLD = 131072


def worker_env(mmap_threshold: int) -> dict[str, str]:
    """This process's environment for a benchmark worker, with glibc's
    ``MALLOC_MMAP_THRESHOLD_`` set to ``mmap_threshold`` (0: removed, glibc's default)."""
    env = os.environ.copy()
    if mmap_threshold > 0:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    return env


def run_memory_bench(
    preset: str,
    blocks: list[int],
    overrides: dict[str, Any],
    steps: int = 3,
    configs: tuple[str, ...] = MEMORY_CONFIGS,
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every configuration in its own subprocess; return one record per configuration and B
    (the end-to-end configurations once, with ``blocks`` = 1).

    ``mmap_threshold`` > 0 sets glibc's ``MALLOC_MMAP_THRESHOLD_`` in the workers: every
    allocation above it gets its own mapping and goes back to the OS when freed. Without it, glibc
    raises the threshold dynamically and keeps freed tensor memory in the heap, so peak RSS also
    measures fragmentation (much more so with activation checkpointing, which frees and
    reallocates a layer's activations many times). 0 keeps the allocator's default behaviour."""
    jobs: list[tuple[str, int]] = []
    for name in configs:
        if name.startswith("e2e"):
            jobs.append((name, 1))
        else:
            jobs.extend((name, b) for b in blocks)
    from ..registry import make_config

    baseline = make_config(preset, overrides).baseline_method  # "e2e" rows: recurrent's bptt
    records = []
    for name, b in jobs:
        ov = {**overrides, **config_overrides(name, b, baseline)}
        cmd = [
            sys.executable,
            "-m",
            "diffusionblocks.bench",
            "worker",
            "--preset",
            preset,
            "--steps",
            str(steps),
            "--overrides",
            json.dumps(ov),
        ]
        log(f"  measuring {name} B={b} ...")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(mmap_threshold))
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker for {name} B={b} failed:\n{proc.stderr[-3000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        rec["malloc_mmap_threshold"] = mmap_threshold or None
        records.append({"config": name, "blocks": b, **rec})
    e2e = next((r for r in records if r["config"] == "e2e"), None)
    for r in records:
        if e2e is not None:
            a_layer = e2e["activation_bytes"] / e2e["depth"]
            r["predicted_bytes"] = predicted_bytes(
                r["config"],
                r["blocks"],
                r["depth"],
                r["layer_param_bytes"],
                a_layer,
                r["shared_param_bytes"],
            )
            r["peak_ratio_to_e2e"] = r["peak_bytes"] / max(e2e["peak_bytes"], 1)
            r["peak_with_weights_ratio_to_e2e"] = r["peak_with_weights_bytes"] / max(
                e2e["peak_with_weights_bytes"], 1
            )
            r["activation_ratio_to_e2e"] = r["activation_bytes"] / max(e2e["activation_bytes"], 1)
    return records


# What the columns of the two tables measure (printed above them by `dblocks bench`).
MEMORY_TABLE_KEY = """\
What the columns measure (one fresh process per row):
  peak          training memory above the moment before the first step (CPU: RSS; CUDA: the
                allocator's peak); the weights that exist then are not in it
  peak+weights  peak plus those weights: the figure to compare configurations by
  vs e2e        peak+weights / e2e's peak+weights: the ratio to trust (on CPU, RSS also holds
                allocator slack; the exact columns further right show where the bytes go)
  predicted     the paper's formula (docs/method.md §4) from the measured per-layer sizes
  activations   bytes autograd saves for one step's backward (counted exactly)
  params, grads, optimizer  tensors resident after one step's backward (counted exactly)"""


def format_memory_table(records: list[dict[str, Any]]) -> str:
    mib = 2**20
    lines = [
        "| config | B | peak | peak+weights | vs e2e | predicted | activations | params | grads "
        "| optimizer |",
        "|" + "---|" * 10,
    ]
    for r in records:
        lines.append(
            f"| {r['config']} | {r['blocks']} | {r['peak_bytes'] / mib:.1f} MiB "
            f"| {r['peak_with_weights_bytes'] / mib:.1f} MiB "
            f"| {r.get('peak_with_weights_ratio_to_e2e', float('nan')):.3f}x "
            f"| {r.get('predicted_bytes', 0) / mib:.1f} MiB "
            f"| {r['activation_bytes'] / mib:.1f} MiB | {r['param_bytes'] / mib:.2f} MiB "
            f"| {r['grad_bytes'] / mib:.2f} MiB | {r['optimizer_bytes'] / mib:.2f} MiB |"
        )
    return "\n".join(lines)


def plot_memory(records: list[dict[str, Any]], out: str | os.PathLike) -> Path | None:
    """Peak training memory (with weights) per configuration and B, with the paper's prediction."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    mib = 2**20
    fig, ax = plt.subplots(figsize=(8, 4.5))
    e2e_rows = [r for r in records if r["config"].startswith("e2e")]
    for r in e2e_rows:
        style = "-" if r["config"] == "e2e" else "--"
        ax.axhline(r["peak_with_weights_bytes"] / mib, color="k", ls=style, lw=1, label=r["config"])
    measured_b: set[int] = set()
    predicted = False
    for name in sorted({r["config"] for r in records} - {r["config"] for r in e2e_rows}):
        rows = sorted((r for r in records if r["config"] == name), key=lambda r: r["blocks"])
        xs = [r["blocks"] for r in rows]
        measured_b.update(xs)
        line = ax.plot(xs, [r["peak_with_weights_bytes"] / mib for r in rows], "o-", label=name)[0]
        if all("predicted_bytes" in r for r in rows):
            ax.plot(xs, [r["predicted_bytes"] / mib for r in rows], "x:", color=line.get_color())
            predicted = True
    if predicted:  # one legend entry for every dotted line: they share their config's colour
        ax.plot([], [], "x:", color="grey", label="paper formula (dotted, same colour)")
    if measured_b:  # B is an integer: ticks at the measured values only
        ax.set_xticks(sorted(measured_b))
        ax.set_xticklabels([str(b) for b in sorted(measured_b)])
    ax.set_xlabel("blocks B")
    ax.set_ylabel("peak training memory incl. weights (MiB)")
    ax.set_title("measured (o, solid) and paper formula (x, dotted)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
