"""The recurrent-depth table (docs/results/recurrent/table.json): truncated BPTT and its
one-application variant from their `dblocks compare` folders (K = inference_steps), and
DiffusionBlocks rows from each run's ``eval-val-refine.json`` / ``eval-test-refine.json``
(written by ``dblocks eval --run RUN --split val|test --set readout=refine --set gen_prompts=0
--json``): val and test CE in nats, measured training FLOPs and peak memory relative to BPTT.
Mean and sample s.d. over seeds.

    python scripts/experiments/recurrent_table.py --bptt FOLDER --shallow FOLDER \
      --dblocks NAME=FOLDER ... --json OUT
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import cost_ratios, mean_sd, row_costs, spread_line


def compare_row(folder: Path) -> dict[str, Any]:
    comparison = json.loads((folder / "comparison.json").read_text())
    (row,) = comparison["rows"]
    return {
        "val_ce": mean_sd(row["val_values"]),
        "test_ce": mean_sd(row["test_values"]),
        **row_costs(row),
        "trivial": comparison["trivial"],
    }


def refine_row(folder: Path) -> dict[str, Any]:
    comparison = json.loads((folder / "comparison.json").read_text())
    (row,) = comparison["rows"]
    runs = sorted((folder / "runs" / "dblocks").glob("seed-*"))
    val = [json.loads((r / "eval-val-refine.json").read_text()) for r in runs]
    test = [json.loads((r / "eval-test-refine.json").read_text()) for r in runs]
    return {
        "val_ce": mean_sd([e["heldout_ce"] for e in val]),
        "test_ce": mean_sd([e["heldout_ce"] for e in test]),
        "val_accuracy": mean_sd([e["heldout_accuracy"] for e in val]),
        **row_costs(row),
        "readout": "refine",
        "eval_command": "dblocks eval --run RUN --split val|test --set readout=refine "
        "--set gen_prompts=0 --json",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bptt", type=Path, required=True)
    ap.add_argument("--shallow", type=Path, required=True)
    ap.add_argument("--dblocks", action="append", default=[], help="NAME=FOLDER")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = {"bptt": compare_row(args.bptt), "e2e-shallow": compare_row(args.shallow)}
    for item in args.dblocks:
        name, _, folder = item.partition("=")
        rows[name] = refine_row(Path(folder))
    ref = rows["bptt"]
    for name, row in rows.items():
        ratios = row["flops_vs_bptt"], row["memory_vs_bptt"] = cost_ratios(row, ref)
        print(f"{name:24s} " + spread_line(row["val_ce"], row["test_ce"], *ratios))
    if args.json:
        protocol = {
            "selected_on": "val",
            "reported_on": "test",
            "seeds": min(len(r["val_ce"]["values"]) for r in rows.values()),
            "baselines": ["bptt", "e2e-shallow", "trivial"],
            "command": shlex.join(["python", *sys.argv]),
        }
        out = {"protocol": protocol, "trivial": ref["trivial"], "rows": rows}
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
