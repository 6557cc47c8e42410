"""Collect the noise-setting sweep on the validation split (scripts/experiments/noise_val_sweep.sh)
into docs/results/classification/noise-on-val/: one row per setting, validation accuracy only
(mean ± s.d. over seeds). The test split is not read here: the choice is made on val.

    python scripts/experiments/noise_val_report.py [--runs /tmp/noise-val]
        [--out docs/results/classification/noise-on-val]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="/tmp/noise-val")
    parser.add_argument("--out", default="docs/results/classification/noise-on-val")
    args = parser.parse_args(argv)
    rows = []
    for comparison in sorted(Path(args.runs).glob("*/comparison.json")):
        saved = json.loads(comparison.read_text())
        (row,) = saved["rows"]
        vals = row["val_values"]
        configs = [json.loads((Path(r["command"].split("--out ")[1].split()[0]) /
                               "config.json").read_text()) for r in row["runs"]]  # fmt: skip
        rows.append({
            "setting": saved["overrides"], "method": row["method"], "seeds": row["seeds"],
            "val_accuracy": vals, "val_mean": statistics.fmean(vals),
            "val_sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "train_seconds": row["train_seconds"], "command": saved["protocol"]["command"],
            "config": configs[0].get("config", configs[0]),
        })  # fmt: skip
    rows.sort(key=lambda r: -r["val_mean"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocol = {
        "selected_on": "val",
        "reported_on": "val (a choice; no test number is read)",
        "seeds": min(len(r["seeds"]) for r in rows),
        "baselines": [],
        "command": "bash scripts/experiments/noise_val_sweep.sh /tmp/noise-val",
    }
    (out / "summary.json").write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=1))
    lines = ["| P_mean | weighting | val accuracy (mean ± s.d.) | seeds |", "|---|---|---|---|"]
    for r in rows:
        s = r["setting"]
        lines.append(f"| {s['p_mean']} | {s['weighting']} | {r['val_mean']:.4f} ± "
                     f"{r['val_sd']:.4f} | {len(r['seeds'])} |")  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
