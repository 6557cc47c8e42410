"""`dblocks bench` (memory and speed benchmarks) and `dblocks evaluator` (the Fashion-MNIST
classifier whose features the Frechet distance uses)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..registry import make_config, preset_overrides
from ..training.checkpoint import atomic_write_json
from . import UsageError, command_line


# ---------------------------------------------------------------------- bench
def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} expects comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{name} expects integers >= 1, got {text!r}")
    return values


def bench_protocol(
    kind: str, preset: str, configs: tuple[str, ...], repeats: int, command: str
) -> dict[str, Any]:
    """The ``protocol`` object of the JSON ``--json`` writes (docs/protocol.md §5): a measurement
    of time or memory, no data split read, nothing chosen, one model per configuration (the
    preset's seed); the baselines are the end-to-end configurations measured."""
    if kind == "memory":
        reported_on = "none: training memory, no data split"
        spread = (f"one measurement per configuration (the {preset} preset's seed), each in a "
                  "fresh process: no seeds or repeats")  # fmt: skip
    else:
        reported_on = "none: timings, no data split"
        spread = (f"one model per configuration (the {preset} preset's seed): medians of "
                  f"{repeats} interleaved timing repeats, not seeds")  # fmt: skip
    return {
        "selected_on": "none",
        "reported_on": reported_on,
        "seeds": 1,
        "baselines": [name for name in configs if name.startswith("e2e")],
        "command": command,
        "caveats": [spread, "no e2e-shallow row (the protocol's depth-L/B baseline)"],
    }


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the memory or speed benchmark, print its table; ``--json`` writes
    ``{"protocol": ..., "command": ..., "records": [...]}`` (the records' keys: ``bench``)."""
    from .. import bench

    overrides: dict[str, Any] = preset_overrides(args.preset, args.set or [])
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        overrides["batch_size"] = args.batch_size
    blocks = _int_list(args.blocks, "--blocks")
    if args.kind == "memory" and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.kind == "speed" and args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    configs = bench.MEMORY_CONFIGS if args.kind == "memory" else bench.SPEED_CONFIGS
    baseline = make_config(args.preset, overrides).baseline_method  # recurrent: bptt
    for name in configs:  # validate every configuration before any work starts
        for b in [1] if name.startswith("e2e") else blocks:
            make_config(args.preset, {**overrides, **bench.config_overrides(name, b, baseline)})
    if args.kind == "memory":
        print(f"memory benchmark, preset {args.preset}, each configuration in a fresh process")
        if args.malloc_mmap_threshold < 0:
            raise UsageError("--malloc-mmap-threshold must be >= 0 (0 = glibc default)")
        records = bench.run_memory_bench(
            args.preset, blocks, overrides, args.steps, mmap_threshold=args.malloc_mmap_threshold
        )
        table = bench.format_memory_table(records)
    else:
        print(f"speed benchmark, preset {args.preset}, interleaved repeats in one process")
        records = bench.run_speed_bench(args.preset, blocks, overrides, args.repeats)
        table = bench.format_speed_table(records)
    key = bench.MEMORY_TABLE_KEY if args.kind == "memory" else bench.SPEED_TABLE_KEY
    print("\n" + key + "\n\n" + table)
    command = command_line(args.argv)
    if args.json:
        repeats = args.repeats if args.kind == "speed" else 1
        protocol = bench_protocol(args.kind, args.preset, configs, repeats, command)
        atomic_write_json(args.json, {"protocol": protocol, "command": command,
                                      "records": records})  # fmt: skip
        print(f"written: {args.json}")
    if args.kind == "memory" and args.plot:
        if bench.plot_memory(records, args.plot) is None:
            print("note: matplotlib is not installed; no plot written", file=sys.stderr)
        else:
            print(f"written: {args.plot}")
    return 0


def parse_bytes(text: str, name: str) -> int:
    """``text`` as a byte count: an integer, optionally with a K, M or G suffix (powers of 1024)."""
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}
    body, unit = (text[:-1], text[-1].upper()) if text[-1:].upper() in scale else (text, "")
    try:
        value = int(float(body) * scale.get(unit, 1))
    except (ValueError, OverflowError):
        raise UsageError(f"{name} expects bytes (e.g. 600M or 629145600), got {text!r}") from None
    if not 2**20 <= value <= 2**50:
        raise UsageError(f"{name} must be between 1M and 1024T, got {text!r}")
    return value


def cmd_bench_cap(args: argparse.Namespace) -> int:
    """Train e2e, e2e-ckpt and block-resident DiffusionBlocks under a memory cap the operating
    system enforces; print which fit; ``--json`` writes ``e2e_status``, ``e2e_ckpt_status``,
    ``dblocks_status``, the cap and one record per method."""
    from ..bench.cap import CAP_METHODS, CapBenchError, format_cap_table, hard_limit, run_cap_bench

    if sys.platform != "linux":
        raise UsageError("bench cap enforces the cap with Linux's RLIMIT_DATA: run it on Linux")
    overrides: dict[str, Any] = preset_overrides(args.preset, args.set or [])
    fixed = sorted({k for extra in CAP_METHODS.values() for k in extra} & set(overrides))
    if fixed:
        raise UsageError(f"--set {fixed[0]}: bench cap sets {' and '.join(fixed)} itself for "
                         "each method it trains; leave it out")  # fmt: skip
    cap = parse_bytes(args.cap, "--cap") if args.cap is not None else None
    hard = hard_limit()
    if cap is not None and 0 <= hard < cap:
        raise UsageError(f"--cap {args.cap} is above this shell's hard data limit ({hard} bytes, "
                         "ulimit -d); choose a smaller cap")  # fmt: skip
    for extra in CAP_METHODS.values():  # validate every configuration before any work starts
        make_config(args.preset, {**overrides, **extra})
    out = Path(args.out or f"runs/bench-cap-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} is a file or a folder that is not empty; choose another")
    if args.malloc_mmap_threshold < 0:
        threshold = args.malloc_mmap_threshold
        raise UsageError(f"--malloc-mmap-threshold must be >= 0 (0: glibc's), got {threshold}")
    print(f"memory-cap benchmark, preset {args.preset}, each method in a fresh process")
    try:
        result = run_cap_bench(args.preset, overrides, out, cap, args.malloc_mmap_threshold)
    except CapBenchError as err:
        raise UsageError(str(err)) from None
    print("\n" + format_cap_table(result))
    if args.json:
        write_measurement(args, "test (quality of the runs that trained; val beside it)",
                          ["e2e", "e2e-ckpt"],
                          "one run per method (the preset's seed): a demonstration of what "
                          "fits, not a quality comparison",
                          {"preset": args.preset, "overrides": overrides, **result})  # fmt: skip
    return 0


def write_measurement(
    args: argparse.Namespace, reported_on: str, baselines: list[str], caveat: str,
    payload: dict[str, Any],
) -> None:  # fmt: skip
    """Write ``--json``: the protocol object of a measurement (docs/protocol.md §5: nothing
    selected, one seed), the command line, then ``payload``."""
    command = command_line(args.argv)
    protocol = {"selected_on": "none", "reported_on": reported_on, "seeds": 1,
                "baselines": baselines, "command": command, "caveats": [caveat]}  # fmt: skip
    atomic_write_json(args.json, {"protocol": protocol, "command": command, **payload})
    print(f"written: {args.json}")


def cmd_bench_threads(args: argparse.Namespace) -> int:
    """Training steps/s of the run at each thread count, one process alone and several at
    once; ``--json`` writes the records with the command and a protocol object."""
    from ..bench.threads import THREADS_TABLE_KEY, format_threads_table, run_threads_bench
    from ..runtime import available_cores

    overrides: dict[str, Any] = preset_overrides(args.preset, args.set or [])
    if "threads" in overrides:
        raise UsageError("--set threads: bench threads sets threads itself; use --threads")
    cores = available_cores()
    counts = _int_list(args.threads, "--threads") if args.threads else list(range(1, cores + 1))
    processes = _int_list(args.processes, "--processes")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.json and not Path(args.json).expanduser().resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: its folder does not exist")
    make_config(args.preset, overrides)  # validate before any work starts
    print(f"threads benchmark, preset {args.preset}, {cores} cores available")
    records = run_threads_bench(args.preset, overrides, counts, processes, args.steps,
                                args.warmup)  # fmt: skip
    print("\n" + format_threads_table(records) + "\n\n" + THREADS_TABLE_KEY)
    if args.json:
        write_measurement(args, "none: timings, no data split", ["1 process x 1 thread"],
                          f"one model (the {args.preset} preset's seed): medians of "
                          f"{args.steps} timed steps per process, not seeds; timings depend on "
                          "the machine and its other load",
                          {"preset": args.preset, "overrides": overrides,
                           "available_cores": cores, "records": records})  # fmt: skip
    return 0


# ---------------------------------------------------------------------- evaluator
def cmd_evaluator(args: argparse.Namespace) -> int:
    """Train the Fashion-MNIST classifier whose features FID uses; write its weights and card."""
    from safetensors.torch import save_file

    from ..eval.fid import train_evaluator

    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model, card = train_evaluator(
        args.data_dir, epochs=args.epochs, seed=args.seed, device=args.device
    )
    card["command"] = command_line(args.argv)
    card["date"] = time.strftime("%Y-%m-%d")
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out)
    atomic_write_json(out.with_suffix(".json"), card)
    print(f"evaluator test accuracy {card['test_accuracy']:.4f}; written {out}")
    return 0
