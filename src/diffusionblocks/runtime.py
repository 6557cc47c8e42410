"""How a run uses the machine, apart from what it computes: CPU threads (``threads``), reduced
precision (``precision``) and compilation (``compile``).

**Threads.** PyTorch starts one intra-op thread per physical core. Alone on the machine that is
the fastest choice for every preset measured, the smallest included (``dblocks bench threads``,
``docs/results/threads/``: on 2 cores, 1.2-1.8x the steps/s of one thread). But two processes
that each start a thread per core oversubscribe the cores and their threads wait for each other:
two such training processes on 2 cores made 0.03-1.2x the steps/s of a single one-thread
process between them, against 1.9-2.0x for two one-thread processes. ``threads=0`` (the default)
therefore chooses:

1. ``OMP_NUM_THREADS`` when it is set: the user, a job scheduler or torchrun decided (torchrun
   sets 1 when it starts several processes and the variable is unset: block-parallel ranks then
   run one thread each unless the user sets ``OMP_NUM_THREADS`` or ``threads``);
2. else the cores this process may use (PyTorch's own default when the package was imported,
   one per physical core, within the process's affinity mask), divided among the processes a
   launcher started on this machine (``LOCAL_WORLD_SIZE``), so that they never oversubscribe.

Results depend slightly on the thread count (floating-point sums split differently), so runs
compared bitwise must run on the same number of threads (the tests run everything on one).

Processes it does not know of (two ``dblocks train`` started side by side) it cannot divide the
cores among: give each ``--set threads=N`` (or ``OMP_NUM_THREADS``) with N x jobs <= cores.

A positive ``threads`` is used as it is. Within Python (``api.train``) the previous thread count
comes back when the run ends (:func:`use_threads`).

**Precision.** ``precision=bf16`` runs the loss (forward) and evaluation under
``torch.autocast`` with bfloat16: matrix products and attention in bfloat16, weights, gradients
and optimizer state in float32 (no loss scaling needed, unlike float16).

**Compile.** ``compile=true`` compiles each block of layers with ``torch.compile``
(``nn.Module.compile``: in place, so parameter names, checkpoints and the block interface stay
as they are). A block that is built again (block-resident training brings blocks back from disk)
is compiled when it is next used. Refused where it would recompile at every swap
(``resident=true`` with the random or cycle order) and for recurrent depth, whose layers run
outside its block's call (nothing would be compiled).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

# The backend of ``compile=true`` (tests switch to "aot_eager", which skips code generation).
COMPILE_BACKEND = "inductor"


def step_flops(parameters: int, examples: int, positions: int) -> float:
    """An estimate of one end-to-end training step's FLOPs: 6 per parameter per position
    (forward 2, backward 4), for ``examples`` examples of ``positions`` positions each
    (tokens, patches; 1 for a network that sees an example as one vector). ``dblocks bench
    threads`` records it beside its timings, to relate them to a model's size."""
    return 6.0 * parameters * examples * max(1, positions)


# PyTorch's default intra-op thread count (one per physical core) as the package found it, when
# OMP_NUM_THREADS did not set it (None: it did).
_DEFAULT_THREADS = None if os.environ.get("OMP_NUM_THREADS") else torch.get_num_threads()


def available_cores() -> int:
    """The cores this process may use: within its affinity mask (where the OS has one), at most
    PyTorch's default thread count when the package was imported (one per physical core),
    unless ``OMP_NUM_THREADS`` had set that (then the logical CPUs of the mask)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, _DEFAULT_THREADS or cpus or 1))


def choose_threads(requested: int, alone: bool = False) -> tuple[int, str]:
    """The intra-op thread count for a run, and why: ``requested`` (the ``threads`` key) when
    positive; else ``OMP_NUM_THREADS``; else the available cores divided among the processes a
    launcher started on this machine (all of them when ``alone``: the others are idle)."""
    if requested > 0:
        return requested, "threads key"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    local = os.environ.get("LOCAL_WORLD_SIZE", "1").strip()
    processes = int(local) if local.isdigit() and int(local) > 0 else 1
    if alone:
        processes = 1
    cores = available_cores()
    share = max(1, cores // processes)
    if processes > 1:
        return share, f"{cores} cores / {processes} processes"
    return share, f"{cores} cores"


def threads_for(task: Any, alone: bool = False) -> tuple[int, str]:
    """:func:`choose_threads` for a built task (its ``threads`` key; 0 for a config without
    one)."""
    return choose_threads(getattr(task.config, "threads", 0), alone)


@contextlib.contextmanager
def use_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` on ``device`` (``fp32``: none)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_block(block: nn.Module) -> None:
    """Compile ``block`` in place with ``torch.compile`` unless it already is."""
    if getattr(block, "_compiled_call_impl", None) is None:
        block.compile(backend=COMPILE_BACKEND)


@contextlib.contextmanager
def running(task: Any) -> Iterator[None]:
    """Inference with a task's ``threads`` (:func:`threads_for`) and ``precision``."""
    threads, _ = threads_for(task)
    precision = getattr(task.config, "precision", "fp32")
    device = getattr(task, "device", torch.device("cpu"))
    with use_threads(threads), autocast(precision, device):
        yield
