"""The threads benchmark (``dblocks bench threads``): training steps per second of one model at
each CPU thread count, alone and with other processes training beside it.

Every (processes, threads) pair runs ``processes`` fresh worker processes at once, each with
``OMP_NUM_THREADS`` and ``threads`` set to the count. A worker builds the run's task, takes
``warmup`` untimed steps, waits for the others (a file barrier, so that the timed steps overlap),
times ``steps`` training steps, then keeps stepping, untimed, until every worker has finished
its timed steps: no worker gets the machine to itself for its last steps. The measurement this
benchmark exists for is the one the ``threads=0`` default rests on (``runtime.py``): at which
size a model trains faster on one thread than on all cores, and how much two processes that each
take every core lose to oversubscription.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .memory import worker_env

THREADS_TABLE_KEY = """\
What the columns measure (each row: PROCESSES fresh processes training at once, each on THREADS
threads; timed steps overlap):
  median step     one training step of the run's method (median over the timed steps; a
                  DiffusionBlocks step trains one block), the slowest process's median
  steps/s         per process, and all processes together
  vs 1x1          total steps/s against one process on one thread"""


def _wait_for(paths: list[Path], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError("the other benchmark workers did not arrive")
        time.sleep(0.005)


def threads_worker(
    preset: str, overrides: dict[str, Any], steps: int, warmup: int, sync_dir: str, index: int,
    processes: int,
) -> dict[str, Any]:  # fmt: skip
    """One worker of :func:`run_threads_bench` (in its own process): median training-step time
    of the run ``preset`` + ``overrides`` on this process's threads."""
    import torch

    from ..registry import make_config, make_task
    from ..runtime import step_flops, threads_for
    from ..training.trainer import Trainer

    config = make_config(preset, {**overrides, "device": "cpu"})
    task = make_task(config)
    threads, reason = threads_for(task)
    torch.set_num_threads(threads)
    trainer = Trainer(task, None, progress=False)
    blocks = trainer.trained_blocks
    sync = Path(sync_dir)
    batches = [
        task.train_batch(trainer.plan.batch_indices(i)) for i in range(min(4, trainer.total_steps))
    ]

    def step(i: int) -> None:
        trainer.train_step(blocks[i % len(blocks)], batches[i % len(batches)])

    for i in range(warmup):
        step(i)
    (sync / f"ready-{index}").touch()
    _wait_for([sync / f"ready-{k}" for k in range(processes)])
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    (sync / f"done-{index}").touch()
    done = [sync / f"done-{k}" for k in range(processes)]
    i, deadline = steps, time.monotonic() + 600.0
    while not all(p.exists() for p in done):  # keep the load on until every worker is done
        if time.monotonic() > deadline:
            raise TimeoutError("the other benchmark workers did not finish")
        step(i)
        i += 1
    parameters = sum(p.numel() for p in task.model.parameters())
    return {
        "threads": torch.get_num_threads(),
        "threads_chosen_by": reason,
        "median_step_seconds": statistics.median(times),
        "step_seconds": times,
        "step_flops_estimate": step_flops(parameters, config.batch_size, task.positions),
        "parameters": parameters,
        "method": config.method,
    }


def _run_workers(
    preset: str, overrides: dict[str, Any], steps: int, warmup: int, sync_dir: Path,
    processes: int, env: dict[str, str],
) -> list[dict[str, Any]]:  # fmt: skip
    """Start ``processes`` workers at once (output to files, so none blocks on a full pipe);
    if one fails, stop the others (they would wait for it) and raise with its error."""
    procs = []
    for k in range(processes):
        cmd = [sys.executable, "-m", "diffusionblocks.bench", "threads-worker",
               "--preset", preset, "--overrides", json.dumps(overrides), "--steps", str(steps),
               "--warmup", str(warmup), "--sync-dir", str(sync_dir), "--index", str(k),
               "--processes", str(processes)]  # fmt: skip
        with (sync_dir / f"out-{k}").open("w") as out, (sync_dir / f"err-{k}").open("w") as err:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, env=env))
    while any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.05)
    for k, p in enumerate(procs):
        p.wait()
        if p.returncode != 0:
            error = (sync_dir / f"err-{k}").read_text().strip()[-800:]
            raise RuntimeError(f"threads worker {k} failed (exit {p.returncode}): {error}")
    return [json.loads((sync_dir / f"out-{k}").read_text().strip().splitlines()[-1])
            for k in range(processes)]  # fmt: skip


def run_threads_bench(
    preset: str,
    overrides: dict[str, Any],
    thread_counts: list[int],
    process_counts: list[int],
    steps: int = 30,
    warmup: int = 5,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One record per (processes, threads): each process's median step, steps/s per process
    and in total, and the ratio of the total to one process on one thread (when measured)."""
    records: list[dict[str, Any]] = []
    for processes in process_counts:
        for threads in thread_counts:
            log(f"  {processes} process(es) x {threads} thread(s) ...")
            env = worker_env(0)
            env["OMP_NUM_THREADS"] = str(threads)
            ov = {**overrides, "threads": threads}
            with tempfile.TemporaryDirectory(prefix="dblocks-threads-") as sync_dir:
                workers = _run_workers(preset, ov, steps, warmup, Path(sync_dir), processes, env)
            medians = [w["median_step_seconds"] for w in workers]
            per_process = [1.0 / m for m in medians]
            records.append({
                "processes": processes,
                "threads": threads,
                "median_step_seconds": max(medians),
                "median_step_seconds_by_process": medians,
                "steps_per_second_per_process": min(per_process),
                "steps_per_second_total": sum(per_process),
                "step_flops_estimate": workers[0]["step_flops_estimate"],
                "parameters": workers[0]["parameters"],
                "method": workers[0]["method"],
                "steps": steps,
                "warmup": warmup,
                "workers": workers,
            })  # fmt: skip
    base = next((r for r in records if r["processes"] == 1 and r["threads"] == 1), None)
    for r in records:
        r["total_vs_1x1"] = (
            r["steps_per_second_total"] / base["steps_per_second_total"] if base else None
        )
    return records


def format_threads_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| processes x threads | median step | steps/s per process | steps/s total | vs 1x1 |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        ratio = r["total_vs_1x1"]
        lines.append(
            f"| {r['processes']} x {r['threads']} | {r['median_step_seconds'] * 1000:.1f} ms "
            f"| {r['steps_per_second_per_process']:.1f} | {r['steps_per_second_total']:.1f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return "\n".join(lines)
