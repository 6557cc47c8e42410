"""Data parallelism within a block group: training throughput of 2 blocks x 2 data-parallel ranks
(4 processes) against 2 blocks x 1 rank (2 processes), same preset, same epochs, one thread per
process, gloo. Writes docs/results/data-parallel/{runs.json,README.md}.

    python scripts/experiments/data_parallel.py [--preset bench] [--epochs 1] [--repeats 2]

Examples per second counts the examples one block trained on (all its ranks together) divided by
the in-loop training time of its slowest rank; the job time is start to assembled model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402


def run(nproc: int, preset: str, epochs: float, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "diffusionblocks", "train", "--no-progress",
           "--preset", preset, "--set", "num_blocks=2", "--set", "parallel=true",
           "--set", f"epochs={epochs}", "--set", "device=cpu", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    job = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    results = json.loads((out / "results.json").read_text())
    ranks = results["ranks"]
    per_block = []
    for block in (0, 1):
        mine = [r for r in ranks if r["block"] == block]
        examples = sum(r["accounting"]["examples_seen"] for r in mine)
        seconds = max(r["timing"]["train_seconds"] for r in mine)
        per_block.append(examples / seconds)
    return {
        "processes": nproc,
        "dp": results["parallel"]["dp"],
        "job_seconds": job,
        "train_seconds": results["timing"]["train_seconds"],
        "examples_per_second_per_block": per_block,
        "steps_per_rank": ranks[0]["accounting"]["steps"],
        "accuracy": results["eval"]["accuracy"],
        "command": " ".join(cmd[2:]),
    }


def dp_protocol(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict:
    """The protocol object of runs.json: a throughput measurement, one seed, repeats of timing."""
    record = protocol(
        selected_on="none",
        reported_on=f"none: throughput and job time (each record's accuracy is the test accuracy "
        f"of a run of {args.epochs:g} epoch(s) per block on the {args.preset} preset, not a "
        "result)",
        seeds=1,
        baselines=["dp=1 (one process per block)"],
        caveats=[f"one seed (the {args.preset} preset's); the {args.repeats} repeats, "
                 "interleaved dp=1 and dp=2, are timing repeats, not seeds", *args.caveat],
        argv=argv, script=__file__)  # fmt: skip
    return {**record, "repeats": args.repeats}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="bench")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="docs/results/data-parallel")
    add_caveat_argument(p)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dblocks-dp-"))
    records = []
    for r in range(args.repeats):
        for nproc in (2, 4):  # interleaved: dp=1, dp=2, dp=1, dp=2
            rec = run(nproc, args.preset, args.epochs, work / f"r{r}-p{nproc}")
            rec["repeat"] = r
            records.append(rec)
            print(json.dumps({k: v for k, v in rec.items() if k != "command"}))
    shutil.rmtree(work, ignore_errors=True)

    def med(nproc, key):
        vals = [x[key] for x in records if x["processes"] == nproc]
        return statistics.median(vals if key != "examples_per_second_per_block" else
                                 [statistics.mean(v) for v in vals])  # fmt: skip

    summary = {
        "preset": args.preset,
        "epochs": args.epochs,
        "cpu_cores": os.cpu_count(),
        "examples_per_second_per_block_dp1": med(2, "examples_per_second_per_block"),
        "examples_per_second_per_block_dp2": med(4, "examples_per_second_per_block"),
        "job_seconds_dp1": med(2, "job_seconds"),
        "job_seconds_dp2": med(4, "job_seconds"),
    }
    summary["throughput_ratio_dp2_to_dp1"] = (
        summary["examples_per_second_per_block_dp2"] / summary["examples_per_second_per_block_dp1"]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"protocol": dp_protocol(args, argv), "summary": summary, "records": records}
    (out / "runs.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
