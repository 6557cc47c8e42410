"""Test-time depth of recurrent-depth runs on the validation split: next-character CE and
accuracy with K core applications, for every run under the given `dblocks compare` folders;
DiffusionBlocks runs read out both ways (``readout=chain``: the Euler chain from sigma_max,
the paper; ``readout=refine``: K calls at sigma_max, each reading the previous estimate when
the run was trained with self_condition). Mean and s.d. over seeds. Reads val only.

    python scripts/experiments/recurrent_readouts.py COMPARE_FOLDER... --steps 1 2 4 8 16 \
      --json OUT
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import mean_sd
from diffusionblocks.loading import evaluate_run


def label(config: dict[str, Any]) -> str:
    """A row's name: the method, and the self-conditioning probability when it is on."""
    sc = config.get("self_condition", 0)
    return config["method"] + (f" (self_condition={sc})" if sc else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="dblocks compare output folders")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    per_run: list[dict[str, Any]] = []
    for folder in args.folders:
        found = [*folder.glob("*/seed-*/results.json"), *folder.glob("runs/*/seed-*/results.json")]
        runs = sorted(p.parent for p in found)  # as compare wrote it, or as published
        if not runs:
            raise SystemExit(f"{folder} holds no [runs/]METHOD/seed-N/results.json")
        for run in runs:
            config = json.loads((run / "config.json").read_text())["config"]
            readouts = ["chain", "refine"] if config["method"] == "dblocks" else [None]
            for readout in readouts:
                overrides: dict[str, Any] = {"gen_prompts": 0}
                if readout:
                    overrides["readout"] = readout
                ev = evaluate_run(run, steps=args.steps, overrides=overrides, split="val")
                per_run.append({"run": str(run), "row": label(config), "seed": config["seed"],
                                "readout": readout, "depth_sweep": ev["depth_sweep"]})  # fmt: skip
                print(run, readout, {k: round(v["heldout_ce"], 4)
                                     for k, v in ev["depth_sweep"].items()})  # fmt: skip
    table: dict[str, dict[str, Any]] = {}
    for item in per_run:
        name = item["row"] + (f", readout={item['readout']}" if item["readout"] else "")
        row = table.setdefault(name, {})
        for k, v in item["depth_sweep"].items():
            cell = row.setdefault(k, {"ce": [], "accuracy": []})
            cell["ce"].append(v["heldout_ce"])
            cell["accuracy"].append(v["heldout_accuracy"])
    summary = {name: {k: {"ce": mean_sd(c["ce"]), "accuracy": mean_sd(c["accuracy"])}
                      for k, c in row.items()} for name, row in table.items()}  # fmt: skip
    for name, row in summary.items():
        cells = "  ".join(f"K={k}: {c['ce']['mean']:.4f}±{c['ce']['sd'] or 0:.4f}"
                          for k, c in row.items())  # fmt: skip
        print(f"{name}: {cells}")
    if args.json:
        protocol = {
            "selected_on": "val",
            "reported_on": "val (a choice of readout)",
            "seeds": max(len(c["ce"]["values"]) for row in summary.values() for c in row.values()),
            "baselines": ["bptt"],
            "command": shlex.join(["python", *sys.argv]),
        }
        out = {"protocol": protocol, "split": "val", "steps": args.steps, "summary": summary,
               "runs": per_run}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
