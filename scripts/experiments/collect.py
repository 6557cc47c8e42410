"""Collect run folders into one results table (CSV + JSON), one row per run, each with the exact
command that produced it.

    python scripts/experiments/collect.py OUT_PREFIX RUN_DIR [RUN_DIR ...] \
        [--selected-on TEXT] [--caveat TEXT ...]

writes OUT_PREFIX.csv and OUT_PREFIX.json (``{"protocol": ..., "rows": [...]}``). Extra
evaluations stored beside a run as ``eval-*.json`` (e.g. ``eval-hard-bridge.json``) are added as
``<name>_accuracy`` columns. The accuracy is each run's end-of-training evaluation
(``results.json`` -> ``eval``: the test split). ``--selected-on`` says what the table was used to
choose, if anything (default: nothing).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol, seeds_per_method  # noqa: E402


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", type=Path, help="OUT_PREFIX: writes OUT_PREFIX.csv and .json")
    ap.add_argument("runs", type=Path, nargs="+", help="run folders")
    ap.add_argument("--selected-on", default="none (a table of runs; nothing is chosen on it)",
                    help="what this table was used to choose, on which split")  # fmt: skip
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    prefix = args.prefix
    rows = [row(d) for d in args.runs if (d / "results.json").is_file()]
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
    record = protocol(
        selected_on=args.selected_on,
        reported_on="test (each run's end-of-training evaluation, results.json -> eval)",
        seeds=seeds_per_method(rows),
        baselines=sorted({r["method"] for r in rows} - {"dblocks"}),
        caveats=args.caveat, argv=argv, script=__file__)  # fmt: skip
    prefix.with_suffix(".json").write_text(
        json.dumps({"protocol": record, "rows": rows}, indent=1) + "\n"
    )
    print(f"{len(rows)} runs -> {prefix}.csv, {prefix}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
