"""`dblocks schedule` (the blocks' noise intervals) and `dblocks compare` (each method trained
in its own process, one table)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..comparison import (
    add_ratios,
    depth_check,
    format_comparison,
    method_row,
    run_row,
    trivial_row,
)
from ..diffusion import BlockPartition, NoiseSchedule
from ..registry import PRESETS, make_config, preset_overrides
from ..reporting import print_schedule
from ..training.checkpoint import atomic_write_json, atomic_write_text
from . import UsageError

# ---------------------------------------------------------------------- schedule
# What `dblocks schedule` prints without --preset (the paper's EDM noise, no overlap).
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "blocks": None,
    "overlap": 0.0,
    "partition": "equi-probability",
    "p_mean": -1.2,
    "p_std": 1.2,
    "sigma_min": 0.002,
    "sigma_max": 80.0,
}


def cmd_schedule(args: argparse.Namespace) -> int:
    values = dict(SCHEDULE_DEFAULTS)
    sigma_data = NoiseSchedule().sigma_data
    if args.preset is not None:  # the preset's partition; explicit flags still override
        overrides = preset_overrides(args.preset, args.set or [])
        if PRESETS[args.preset][1].get("data") == "":  # a preset for users' data
            overrides.setdefault("data", "your data")  # the partition does not depend on it
        config = make_config(args.preset, overrides)
        if config.block_variable != "sigma":
            intervals = {k: v for k, v in config.resolved().items() if k.endswith("_intervals")}
            raise UsageError(
                f"preset {args.preset} is a {config.task} run: its blocks split "
                f"{config.block_variable}, not sigma ({intervals})"
            )
        values.update(blocks=config.num_blocks, overlap=config.overlap,
                      partition=config.partition, p_mean=config.p_mean, p_std=config.p_std,
                      sigma_min=config.sigma_min, sigma_max=config.sigma_max)  # fmt: skip
        sigma_data = config.sigma_data
    elif args.set:
        raise UsageError("--set needs --preset (or give the flags: --blocks, --overlap, ...)")
    values.update({k: getattr(args, k) for k in values if getattr(args, k) is not None})
    if values["blocks"] is None:
        raise UsageError("--blocks B is required (or --preset NAME for a preset's partition)")
    if values["blocks"] < 1:
        raise UsageError(f"--blocks must be >= 1, got {values['blocks']}")
    if not 0 <= values["overlap"] <= 1:
        raise UsageError(f"--overlap must be in [0, 1], got {values['overlap']}")
    try:
        schedule = NoiseSchedule(values["p_mean"], values["p_std"], values["sigma_min"],
                                 values["sigma_max"], sigma_data)  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    partition = BlockPartition.create(
        values["blocks"], schedule, values["partition"], values["overlap"]
    )
    if args.json:
        print(json.dumps(partition.describe()))
    else:
        source = f"preset {args.preset}" if args.preset else "flags"
        print(
            f"# {source}: B={values['blocks']}, ln sigma ~ N({values['p_mean']:g}, "
            f"{values['p_std']:g}^2) on [{values['sigma_min']:g}, {values['sigma_max']:g}]"
        )
        print_schedule(partition)
    return 0


# ---------------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> int:
    """Train each (method, seed) in its own fresh process (so peak memory is per run), then
    print one table: per method, the mean and s.d. over seeds of the headline metric on the
    test and validation splits, measured training FLOPs, time and peak memory."""
    base = preset_overrides(args.preset, args.set or [])
    config = make_config(args.preset, base)  # validate before any work starts
    baseline = config.baseline_method
    if args.methods is None:  # the default: the task's baseline, then DiffusionBlocks
        methods = [baseline, "dblocks"]
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods or len(set(methods)) < len(methods):
            raise UsageError(f"--methods needs distinct method names, got {args.methods!r}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    first_seed = int(base.get("seed", config.seed))
    seeds = [first_seed + i for i in range(args.seeds)]
    for m in methods:
        make_config(args.preset, {**base, "method": m})
    if args.json and not Path(args.json).expanduser().resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: its folder does not exist")
    out = Path(args.out or f"runs/compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "comparison.json").exists():
        raise UsageError(f"{out} already holds a comparison; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in methods:
        runs = []
        for seed in seeds:
            # One seed: OUT/METHOD (as before seeds were added); several: OUT/METHOD/seed-S.
            run_dir = out / m if len(seeds) == 1 else out / m / f"seed-{seed}"
            overrides = {**base, "method": m, **({"seed": seed} if len(seeds) > 1 else {})}
            cmd = [sys.executable, "-m", "diffusionblocks", "train", "--preset", args.preset]
            for k, v in overrides.items():
                cmd += ["--set", f"{k}={v}"]
            cmd += ["--out", str(run_dir)]
            if args.no_progress:
                cmd.append("--no-progress")
            print(f"\n=== {m}, seed {seed}: {shlex.join(cmd[1:])}", flush=True)
            proc = subprocess.run(cmd, env=os.environ.copy())
            if proc.returncode != 0:
                raise UsageError(f"training {m} (seed {seed}) failed (exit code {proc.returncode})")
            results = json.loads((run_dir / "results.json").read_text())
            runs.append(run_row(m, results, shlex.join(["dblocks", *cmd[3:]])))
        rows.append(method_row(runs))
    add_ratios(rows, baseline)
    table = format_comparison(rows)
    check = depth_check(rows, baseline)
    notes = ([check["text"]] if check else []) + [
        f"warning ({r['method']}): {w}" for r in rows for w in r["warnings"]
    ]
    table += "".join(f"\n\n{note}" for note in notes)
    print("\n" + table)
    command = shlex.join(["dblocks", *args.argv]) if getattr(args, "argv", None) else None
    baselines = [m for m in methods if make_config(args.preset, {**base, "method": m}).end_to_end]
    # What the protocol requires of the settings compared (docs/protocol.md); where a setting
    # was chosen otherwise (e.g. on test before the protocol existed), --caveat says so.
    protocol = {"selected_on": "val", "reported_on": "test", "seeds": len(seeds),
                "baselines": baselines, "command": command,
                "caveats": list(args.caveat or [])}  # fmt: skip
    atomic_write_json(out / "comparison.json", {"preset": args.preset, "overrides": base,
                                                "protocol": protocol, "rows": rows,
                                                "trivial": trivial_row(rows),
                                                "depth_check": check})  # fmt: skip
    atomic_write_text(out / "comparison.md", table + "\n")
    written = [f"{out}/comparison.json", f"{out}/comparison.md"]
    if args.json:
        atomic_write_json(Path(args.json), rows)
        written.append(str(args.json))
    print(f"\nwritten: {', '.join(written)}")
    return 0
