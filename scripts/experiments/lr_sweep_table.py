"""The validation table of a learning-rate sweep (`mdm_lr_sweep.sh`): for every run folder
METHOD-lrLR under OUT, its val BPC (and, for DiffusionBlocks, each block alone and the
ensemble), the trivial unigram BPC, and the lr each method would take (lowest val BPC). Reads
val only.

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
        trivial = r["trivial"]["val"]["bpc"]
        rows.append({
            "method": config["method"],
            "lr": config["lr"],
            "val_bpc": ev["bpc"],
            "val_bpc_stderr": ev["bpc_stderr"],
            "block_alone": [b["bpc"] for b in ev.get("block_alone", [])],
            "ensemble": ev.get("ensemble", {}).get("bpc"),
            "train_seconds": r["timing"]["train_seconds"],
            "command": r["command"],
            "run": path.parent.name,
        })  # fmt: skip
    if not rows:
        raise SystemExit(f"{args.out} holds no METHOD-lrLR/results.json")
    chosen = {}
    for row in sorted(rows, key=lambda r: (r["method"], r["lr"])):
        best = chosen.get(row["method"])
        if best is None or row["val_bpc"] < best["val_bpc"]:
            chosen[row["method"]] = row
        print(f"{row['method']:12s} lr {row['lr']:<8g} val BPC {row['val_bpc']:.4f} "
              f"± {row['val_bpc_stderr']:.4f}")  # fmt: skip
    print(f"trivial (unigram) val BPC {trivial:.4f}")
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
            "trivial_val_bpc": trivial,
            "chosen_lr": {m: r["lr"] for m, r in chosen.items()},
            "rows": rows,
        }
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
