"""Collect scripts/experiments/user_images.sh: validation and test accuracy of every run (from
its results.json: the final evaluation with B block calls, and 1 call), memory and time, mean and
s.d. over seeds, and the trivial baseline; writes docs/results/user-images/.

    python scripts/experiments/user_images_report.py [--runs runs/user-images]
        [--out docs/results/user-images]

Choices (the preset's noise setting, the steps-per-block threshold) are read on the validation
columns; the test columns are reported once, for the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from diffusionblocks.data.images import load_image_dataset

VARIANTS = {
    "dblocks": "DiffusionBlocks B=3, the images preset (P_mean 1, no weighting)",
    "dblocks-paper": "DiffusionBlocks B=3, the paper's noise (P_mean -1.2, batch weighting)",
    "e2e": "end to end, 6 layers",
    "e2e-shallow": "end to end, 2 layers = L/B (the training memory of one block)",
}


def variant_of(config: dict) -> str:
    """The variant a run's config describes (not its folder name)."""
    if config["method"] == "e2e":
        return "e2e-shallow" if config["depth"] == 2 else "e2e"
    return "dblocks-paper" if config["p_mean"] == -1.2 else "dblocks"


def mean_sd(values: list[float]) -> list[float]:
    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def trivial(config: dict) -> dict:
    """Always the most frequent training class."""
    data = load_image_dataset(config["data"], config["data_dir"], config["test_fraction"])
    data = data.hold_out(config["val_fraction"])
    majority = int(data.train_y.bincount().argmax())
    return {split: float((data.split(split)[1] == majority).float().mean())
            for split in ("val", "test")}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/user-images")
    parser.add_argument("--out", default="docs/results/user-images")
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, configs = [], {}
    for run in sorted(p for p in runs.iterdir() if (p / "results.json").exists()):
        r = json.loads((run / "results.json").read_text())
        cfg = r["config"]
        dataset = Path(cfg["data"]).stem
        val, test = r["eval_val"], r["eval"]
        rows.append({
            "dataset": dataset, "variant": variant_of(cfg), "epochs": cfg["epochs"],
            "seed": cfg["seed"], "run": run.name,
            "steps_per_block": r["accounting"]["steps_per_unit"][0],
            "val_accuracy": val["accuracy"],
            "val_accuracy_1call": val.get("steps_sweep", {}).get("1", val["accuracy"]),
            "test_accuracy": test["accuracy"],
            "train_seconds": r["timing"]["train_seconds"],
            "train_peak_rss_mib": r["memory"]["train_peak_rss_bytes"] / 2**20,
            "peak_state_mib": r["memory"].get("peak_state_bytes", 0) / 2**20,
        })  # fmt: skip
        configs[run.name] = {"command": r["command"], "config": r["config"],
                             "resolved": r.get("resolved"), "task": r["task"]}  # fmt: skip
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(f"{row['dataset']}/{row['variant']}/{row['epochs']:g}", []).append(row)
    summary = {}
    for name, mine in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        entry = {"seeds": sorted(r["seed"] for r in mine),
                 "steps_per_block": mine[0]["steps_per_block"]}  # fmt: skip
        for key in ("val_accuracy", "val_accuracy_1call", "test_accuracy", "train_seconds",
                    "train_peak_rss_mib", "peak_state_mib"):  # fmt: skip
            entry[key] = mean_sd([r[key] for r in mine])
        summary[name] = entry
    baselines = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        first = next(r for r in rows if r["dataset"] == dataset)
        baselines[dataset] = trivial(configs[first["run"]]["config"])
    record = {
        "protocol": {"selected_on": "val", "reported_on": "test", "seeds": 3,
                     "baselines": ["e2e", "e2e-shallow", "trivial (majority class)"],
                     "command": "bash scripts/experiments/user_images.sh && "
                                "python scripts/experiments/user_images_report.py"},
        "variants": VARIANTS, "summary": summary, "trivial": baselines, "runs": configs,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "table.md").write_text(markdown(summary, baselines))
    print(markdown(summary, baselines))


def _order(name: str):
    dataset, variant, epochs = name.split("/")
    return dataset, list(VARIANTS).index(variant), float(epochs)


def markdown(summary: dict, baselines: dict) -> str:
    def cell(pair, digits=4):
        return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"

    lines = [
        "| data | variant | epochs per block | steps per block | val acc (B calls) | val acc (1 "
        "call) | test acc | train time (s) | peak state (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in summary.items():
        dataset, variant, epochs = name.split("/")
        lines.append(
            f"| {dataset} | {variant} | {epochs} | {e['steps_per_block']} | "
            f"{cell(e['val_accuracy'])} | "
            f"{cell(e['val_accuracy_1call'])} | {cell(e['test_accuracy'])} | "
            f"{cell(e['train_seconds'], 0)} | {cell(e['peak_state_mib'], 2)} |"
        )
    for dataset, b in baselines.items():
        lines.append(f"| {dataset} | trivial (majority class) | | | {b['val']:.4f} | | "
                     f"{b['test']:.4f} | | |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
