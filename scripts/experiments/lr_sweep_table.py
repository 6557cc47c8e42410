"""The validation table of a learning-rate sweep (`mdm_lr_sweep.sh`, `lr_sweep.sh`): for every run
folder METHOD-lrLR under OUT, its val metric (BPC for the masked LM, lower is better, with each
block alone and the ensemble for DiffusionBlocks; accuracy for classification, higher is
better), the trivial baseline, and the lr each method would take (best val metric). Reads val
only.

    python scripts/experiments/lr_sweep_table.py OUT --json FILE
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the sweep's folder of METHOD-lrLR runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    trivial = None
    for path in sorted(args.out.glob("*-lr*/results.json")):
        r = json.loads(path.read_text())
        ev, config = r["eval_val"], r["config"]
        key = "bpc" if "bpc" in ev else "accuracy"
        trivial = r["trivial"]["val"][key]
        rows.append({
            "method": config["method"],
            "lr": config["lr"],
            f"val_{key}": ev[key],
            **({"val_bpc_stderr": ev["bpc_stderr"]} if key == "bpc" else {}),
            **({"block_alone": [b["bpc"] for b in ev.get("block_alone", [])],
                "ensemble": ev.get("ensemble", {}).get("bpc")} if key == "bpc" else {}),
            "train_seconds": r["timing"]["train_seconds"],
            "command": r["command"],
            "run": path.parent.name,
        })  # fmt: skip
    if not rows:
        raise SystemExit(f"{args.out} holds no METHOD-lrLR/results.json")
    higher_better = key == "accuracy"
    metric = f"val_{key}"
    chosen = {}
    for row in sorted(rows, key=lambda r: (r["method"], r["lr"])):
        best = chosen.get(row["method"])
        if best is None or (row[metric] > best[metric]) == higher_better:
            chosen[row["method"]] = row
        spread = f" ± {row['val_bpc_stderr']:.4f}" if key == "bpc" else ""
        print(f"{row['method']:12s} lr {row['lr']:<8g} val {key} {row[metric]:.4f}{spread}")
    print(f"trivial val {key} {trivial:.4f}")
    for method, row in chosen.items():
        print(f"chosen: {method} lr {row['lr']:g}")
    if args.json:
        out = {
            "protocol": {
                "selected_on": "val",
                "reported_on": "val (a choice; the final tables read test once)",
                "seeds": 1,
                "baselines": sorted({r["method"] for r in rows} - {"dblocks"}),
                "command": shlex.join(["python", *sys.argv]),
            },
            "split": "val",
            "seed": 0,
            "metric": f"val {key} ({'higher' if higher_better else 'lower'} is better)",
            f"trivial_val_{key}": trivial,
            "chosen_lr": {m: r["lr"] for m, r in chosen.items()},
            "rows": rows,
        }
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
