"""Collect run folders into one results table (CSV + JSON), one row per run, each with the exact
command that produced it.

    python scripts/experiments/collect.py OUT_PREFIX RUN_DIR [RUN_DIR ...]

writes OUT_PREFIX.csv and OUT_PREFIX.json. Extra evaluations stored beside a run as
``eval-*.json`` (e.g. ``eval-hard-bridge.json``) are added as ``<name>_accuracy`` columns.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def row(run_dir: Path) -> dict:
    r = json.loads((run_dir / "results.json").read_text())
    cfg, ev = r["config"], r["eval"]
    out = {
        "run": run_dir.name,
        "method": cfg["method"],
        "num_blocks": cfg["num_blocks"] if cfg["method"] == "dblocks" else 1,
        "seed": cfg["seed"],
        "epochs": cfg["epochs"],
        "train_subset": cfg.get("train_subset"),
        "depth": cfg.get("depth"),
        "hidden": cfg.get("hidden"),
        "weighting": cfg["weighting"] if cfg["method"] == "dblocks" else "",
        "p_mean": cfg["p_mean"] if cfg["method"] == "dblocks" else "",
        "overlap": cfg["overlap"] if cfg["method"] == "dblocks" else "",
        "accuracy": ev["accuracy"],
        "inference_steps": ev.get("steps", ""),
        "layer_evaluations": r["accounting"]["layer_evaluations"],
        "train_seconds": round(r["timing"]["train_seconds"], 1),
        "median_step_ms": round(1000 * r["timing"]["median_step_seconds"], 2),
    }
    for steps, acc in ev.get("steps_sweep", {}).items():
        out[f"acc_steps_{steps}"] = acc
    for extra in sorted(run_dir.glob("eval-*.json")):
        name = extra.stem.removeprefix("eval-").replace("-", "_")
        out[f"{name}_accuracy"] = json.loads(extra.read_text())["accuracy"]
    out["command"] = r.get("command") or ""
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    prefix, dirs = Path(argv[0]), [Path(d) for d in argv[1:]]
    rows = [row(d) for d in dirs if (d / "results.json").is_file()]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    keys.remove("command")
    keys.append("command")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    prefix.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} runs -> {prefix}.csv, {prefix}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
