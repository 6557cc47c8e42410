"""Block-parallel training (torchrun + gloo, one process per block) against single-process
training of the same blocks, on the ``bench`` preset (12-layer ViT, hidden 128) or any other.

    python scripts/experiments/parallel_bench.py --out docs/results/parallel/first-round \
        [--repeats 2] [--preset vit-fmnist-quick --epochs 0 --blocks 2]

Every configuration runs as its own fresh ``dblocks train`` (so peak RSS is per configuration) and
records, per process: peak RSS above the moment before the first step (``train_peak``), the
parameter bytes that existed then (``weights``), their sum, the training loop's wall time
(``train_seconds``), the job's wall time from launching the command to its exit
(``process_wall_seconds``: start-up, data loading, training, the parallel run's assembly of its
blocks into one model, and evaluation) and the final val and test accuracy. Configurations,
repeated ``--repeats`` times in interleaved order:

- ``e2e``: the plain end-to-end model (one process; with ``--threads`` and with
  ``max(--blocks) x threads`` threads, what a user with those cores would run);
- ``single-synchronous-B{B}``: one process trains all B blocks with the ``synchronous`` schedule
  (the computation a B-process run does, step for step);
- ``single-cycle-B{B}``: one process, the paper's one-block-per-step schedule (same updates per
  block);
- ``parallel-B{B}``: B processes, one block each.

Threads: every process gets ``--threads`` (default 1) OpenMP threads; single-process runs are also
measured with ``B x threads`` threads, so that "the same cores" compares fairly. Writes
``parallel.json`` and ``parallel.csv`` and prints a Markdown table. As in ``dblocks bench memory``,
glibc's ``MALLOC_MMAP_THRESHOLD_`` is pinned (default 128 KiB) so peak RSS measures tensors, not
heap fragmentation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = "bench"
MMAP_THRESHOLD = 131072
EXTRA: list[str] = []  # --set KEY=VALUE for every configuration


def run_config(name: str, blocks: int, threads: int, epochs: float, workdir: Path) -> dict:
    out = workdir / f"{name}-t{threads}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if MMAP_THRESHOLD:  # as in `dblocks bench memory`: freed tensors go back to the OS
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    common = ["--preset", PRESET, "--no-progress", "--set", "device=cpu", "--out", str(out)]
    for item in EXTRA:
        common += ["--set", item]
    if epochs > 0:  # 0: the preset's own epochs
        common += ["--set", f"epochs={epochs}"]
    if name == "e2e":
        cmd = [sys.executable, "-m", "diffusionblocks", "train", *common, "--set", "method=e2e"]
    elif name.startswith("single-"):
        schedule = name.split("-")[1]
        cmd = [sys.executable, "-m", "diffusionblocks", "train", *common,
               "--set", f"num_blocks={blocks}", "--set", f"schedule={schedule}"]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={blocks}", "-m", "diffusionblocks", "train", *common,
               "--set", f"num_blocks={blocks}", "--set", "parallel=true"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    r = json.loads((out / "results.json").read_text())
    ranks = r.get("ranks") or [{"memory": r["memory"], "timing": r["timing"], "block": None}]
    procs = []
    for rank in ranks:
        mem = rank["memory"]
        procs.append({
            "block": rank.get("block"),
            "train_peak_bytes": mem["train_peak_rss_bytes"],
            "weights_bytes": mem["params_at_first_step_bytes"],
            "peak_with_weights_bytes": mem["train_peak_rss_bytes"]
            + mem["params_at_first_step_bytes"],
            "peak_rss_bytes": mem["peak_rss_bytes"],
            "train_seconds": rank["timing"]["train_seconds"],
        })  # fmt: skip
    record = {
        "config": name,
        "blocks": blocks if name != "e2e" else 1,
        "processes": len(procs),
        "threads_per_process": threads,
        "epochs_per_block": epochs,
        "train_seconds": max(p["train_seconds"] for p in procs),
        "process_wall_seconds": wall,
        "max_process_peak_with_weights_bytes": max(p["peak_with_weights_bytes"] for p in procs),
        "accuracy": r["eval"]["accuracy"],
        "val_accuracy": (r.get("eval_val") or {}).get("accuracy"),
        "per_process": procs,
        "command": f"OMP_NUM_THREADS={threads} python " + " ".join(cmd[1:]),
    }
    shutil.rmtree(out, ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    global MMAP_THRESHOLD, PRESET
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="docs/results/parallel/first-round")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--preset", default=PRESET)
    p.add_argument("--epochs", type=float, default=4.0, help="epochs per block (0: the preset's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blocks", type=int, nargs="+", default=[2, 3])
    p.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=131072,
        help="glibc MALLOC_MMAP_THRESHOLD_ for every process (0 = allocator default)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for every configuration (e.g. final_eval=readout)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="CONFIG:THREADS",
        help="measure only these configurations, e.g. e2e:1 e2e:2 parallel-B2:1",
    )
    args = p.parse_args(argv)
    MMAP_THRESHOLD = args.malloc_mmap_threshold
    PRESET = args.preset
    EXTRA[:] = args.set
    plan = [("e2e", 1, args.threads), ("e2e", 1, max(args.blocks) * args.threads)]
    for b in args.blocks:
        plan += [
            (f"single-synchronous-B{b}", b, args.threads),
            (f"single-synchronous-B{b}", b, b * args.threads),
            (f"single-cycle-B{b}", b, args.threads),
            (f"parallel-B{b}", b, args.threads),
        ]
    if args.only:
        if not all(c.count(":") == 1 and c.split(":")[1].isdigit() for c in args.only):
            p.error("--only takes CONFIG:THREADS entries, e.g. e2e:1 parallel-B2:1")
        wanted = {(c.split(":")[0], int(c.split(":")[1])) for c in args.only}
        plan = [(n, b, t) for n, b, t in plan if (n, t) in wanted]
        if not any(n == "e2e" and t == args.threads for n, _, t in plan):
            p.error(f"--only must include e2e:{args.threads} (the memory reference)")
    records = []
    with tempfile.TemporaryDirectory(prefix="dblocks-par-") as tmp:
        for rep in range(args.repeats):
            for name, b, t in plan:
                rec = run_config(name, b, t, args.epochs, Path(tmp))
                rec["repeat"] = rep
                records.append(rec)
                print(f"[{rep}] {name} threads={t}: train {rec['train_seconds']:.1f} s, "
                      f"job {rec['process_wall_seconds']:.1f} s, "
                      f"peak+weights {rec['max_process_peak_with_weights_bytes'] / 2**20:.1f} MiB, "
                      f"acc {rec['accuracy']:.4f}", flush=True)  # fmt: skip
    # Medians per configuration.
    summary = []
    e2e_mem = statistics.median(
        r["max_process_peak_with_weights_bytes"]
        for r in records
        if r["config"] == "e2e" and r["threads_per_process"] == args.threads
    )
    for name, _b, t in plan:
        rs = [r for r in records if r["config"] == name and r["threads_per_process"] == t]
        row = {
            "config": name,
            "blocks": rs[0]["blocks"],
            "processes": rs[0]["processes"],
            "threads_per_process": t,
            "median_train_seconds": statistics.median(r["train_seconds"] for r in rs),
            "median_job_seconds": statistics.median(r["process_wall_seconds"] for r in rs),
            "median_max_process_peak_with_weights_mib": statistics.median(
                r["max_process_peak_with_weights_bytes"] for r in rs
            )
            / 2**20,
            "accuracy": rs[0]["accuracy"],
            "val_accuracy": rs[0]["val_accuracy"],
            "repeats": len(rs),
            "command": rs[0]["command"],
        }
        row["memory_vs_e2e"] = row["median_max_process_peak_with_weights_mib"] * 2**20 / e2e_mem
        summary.append(row)
    for b in args.blocks:
        par = next((s for s in summary if s["config"] == f"parallel-B{b}"), None)
        if par is None:
            continue
        for s in summary:
            if s["blocks"] in (b, 1) and not s["config"].startswith("parallel-"):
                s[f"speedup_of_parallel_B{b}"] = (
                    s["median_train_seconds"] / par["median_train_seconds"]
                )
                s[f"job_speedup_of_parallel_B{b}"] = (
                    s["median_job_seconds"] / par["median_job_seconds"]
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "preset": PRESET,
        "overrides": list(EXTRA),
        "threads_note": "OMP_NUM_THREADS per process as in threads_per_process",
        "epochs_per_block": args.epochs,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "malloc_mmap_threshold": MMAP_THRESHOLD,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python scripts/experiments/parallel_bench.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    protocol = {
        "selected_on": "none: no choice is made from these runs (timing and memory of fixed "
        "configurations; the assembled model's accuracy is reported, not selected on)",
        "reported_on": "test (and val)",
        "seeds": 1,
        "repeats": args.repeats,
        # the configurations measured other than the parallel runs
        "baselines": [
            f"{name} ({t} thread{'s' if t > 1 else ''})"
            for name, _, t in plan
            if not name.startswith("parallel-")
        ],  # fmt: skip
        "command": meta["command"],
    }
    (out / "parallel.json").write_text(
        json.dumps(
            {"protocol": protocol, "meta": meta, "summary": summary, "records": records}, indent=2
        )
        + "\n"
    )
    fieldnames = sorted({k for s in summary for k in s}, key=lambda k: (k.startswith("speedup"), k))
    with open(out / "parallel.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(summary)
    print("\n| configuration | processes x threads | train loop (median) | job, start to assembled "
          "and evaluated model (median) | peak + weights per process | vs e2e | val acc "
          "| test acc |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        val = "" if s["val_accuracy"] is None else f"{s['val_accuracy']:.4f}"
        print(f"| {s['config']} | {s['processes']} x {s['threads_per_process']} "
              f"| {s['median_train_seconds']:.1f} s | {s['median_job_seconds']:.1f} s "
              f"| {s['median_max_process_peak_with_weights_mib']:.1f} MiB "
              f"| {s['memory_vs_e2e']:.3f} | {val} | {s['accuracy']:.4f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
