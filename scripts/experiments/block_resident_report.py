"""Collect the block-resident experiment (scripts/experiments/block_resident.sh): evaluate every
run's final checkpoint on the validation and the test split with 1-4 block calls, read memory and
time from the same run's results.json, and write docs/results/block-resident/.

    python scripts/experiments/block_resident_report.py [--runs runs/block-resident]
        [--out docs/results/block-resident]

Choices (which policy, how many calls) are read on the validation split; the test columns are
reported once, for the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from diffusionblocks.data.images import load_image_dataset
from diffusionblocks.runs import evaluate_run

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402

CALLS = [1, 2, 3, 4]
VARIANTS = {
    "e2e": "end to end, 6 layers (reference; one forward = 6 layer evaluations)",
    "e2e-shallow": "end to end, 2 layers = L/B (the memory of one block)",
    "random": "all blocks resident, random order (the paper), shared=sync",
    "cycle": "all blocks resident, round robin, shared=sync",
    "res-cycle": "block-resident round robin (resident=true, swaps), shared=sync",
    "seq-copies": "block-resident (sequential), shared=block-copies",
    "seq-first": "block-resident (sequential), shared=first-block",
    "seq-sync": "block-resident (sequential), shared=sync (drifts)",
    "seq-frozen": "block-resident (sequential), shared=frozen at init",
}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def trivial(config: dict) -> dict:
    """The trivial baseline: always answer the most frequent class of the training examples."""
    data = load_image_dataset(config["data"], config["data_dir"], config["test_fraction"])
    data = data.hold_out(config["val_fraction"]).subset(config["train_subset"], 0)
    majority = int(data.train_y.bincount().argmax())
    entry = {"what": f"trivial: always class {majority}, the most frequent in training",
             "seeds": []}  # fmt: skip
    for split in ("val", "test"):
        rate = float((data.split(split)[1] == majority).float().mean())
        for k in CALLS:
            entry[f"{split}_calls{k}"] = (rate, 0.0)
    for key in ("train_peak_rss_mib", "peak_rss_mib", "peak_state_mib", "train_seconds"):
        entry[key] = (0.0, 0.0)
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/block-resident")
    parser.add_argument("--out", default="docs/results/block-resident")
    add_caveat_argument(parser)
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, configs = [], {}
    for run in sorted(p for p in runs.iterdir() if (p / "results.json").exists()
                      and not p.name.startswith("swap-")):  # fmt: skip
        variant, seed = run.name.rsplit("-s", 1)
        results = json.loads((run / "results.json").read_text())
        row = {"variant": variant, "seed": int(seed), "run": run.name}
        for split in ("val", "test"):
            ev = evaluate_run(run, steps=CALLS, split=split)
            for k in CALLS:  # end to end: one forward pass whatever k
                row[f"{split}_calls{k}"] = ev.get("steps_sweep", {}).get(str(k), ev["accuracy"])
        mem, acc, tim = results["memory"], results["accounting"], results["timing"]
        row.update(
            train_peak_rss_mib=mem["train_peak_rss_bytes"] / 2**20,
            peak_rss_mib=mem["peak_rss_bytes"] / 2**20,
            peak_state_mib=mem.get("peak_state_bytes", 0) / 2**20,
            train_seconds=tim["train_seconds"],
            layer_evaluations=acc["layer_evaluations"],
            shared_policy=results["config"].get("shared"),
            schedule=results["config"]["schedule"],
        )
        configs[run.name] = {"command": results["command"], "config": results["config"],
                             "resolved": results.get("resolved")}  # fmt: skip
        rows.append(row)
        print(run.name, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        entry = {"what": VARIANTS[variant], "seeds": sorted(r["seed"] for r in mine)}
        for key in [f"{s}_calls{k}" for s in ("val", "test") for k in CALLS] + [
            "train_peak_rss_mib",
            "peak_rss_mib",
            "peak_state_mib",
            "train_seconds",
        ]:
            entry[key] = mean_sd([r[key] for r in mine])
        summary[variant] = entry
    swap = {}
    for run in sorted(runs.glob("swap-*/results.json")):
        r = json.loads(run.read_text())
        swap[run.parent.name] = {
            "command": r["command"],
            "train_seconds": r["timing"]["train_seconds"],
            "swap_seconds": r["timing"].get("swap_seconds"),
            "swaps": r["timing"].get("swaps"),
            "median_step_seconds": r["timing"]["median_step_seconds"],
            "peak_state_mib": r["memory"].get("peak_state_bytes", 0) / 2**20,
            "train_peak_rss_mib": r["memory"]["train_peak_rss_bytes"] / 2**20,
            "test_accuracy": r["eval"]["accuracy"],
        }
    summary["trivial"] = trivial(configs[rows[0]["run"]]["config"])
    baselines = [v for v in ("e2e", "e2e-shallow") if v in summary]
    caveats = [
        "the training modes are compared, not chosen; the choice this file backs (how many "
        "inference calls) is read on val, the test columns once, for the table"
    ]
    if swap:
        caveats.append(
            "the I/O runs (swap_cost_bench_preset) are one run each on the bench "
            "preset: timings, not a quality result"
        )
    record = {
        "protocol": protocol(
            selected_on="val", reported_on="val and test",
            seeds=max(len(e["seeds"]) for v, e in summary.items() if v != "trivial"),
            baselines=[*baselines, "trivial (most frequent training class)"],
            caveats=[*caveats, *args.caveat], argv=argv, script=__file__,
            preceded_by=("bash scripts/experiments/block_resident.sh"  # it trains into the default
                         if args.runs == parser.get_default("runs") else None)),
        "variants": summary, "swap_cost_bench_preset": swap, "runs": configs,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "table.md").write_text(markdown(summary, swap))
    print(json.dumps(summary, indent=1))


def markdown(summary: dict, swap: dict) -> str:
    """The tables of the results page, from the summary."""

    def cell(entry, key, digits=4):
        m, sd = entry[key]
        return f"{m:.{digits}f} ± {sd:.{digits}f}"

    lines = [
        "| training mode | val, B = 3 calls (default) | val, B+1 = 4 calls | val, 1 call (block "
        "0 alone) | test, B = 3 calls | peak state (MiB) | process peak (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, e in summary.items():
        if variant == "trivial":
            lines.append(f"| {e['what']} | {cell(e, 'val_calls3')} | | | {cell(e, 'test_calls3')}"
                         " | | |")  # fmt: skip
            continue
        lines.append(
            f"| {variant}: {e['what']} | {cell(e, 'val_calls3')} | {cell(e, 'val_calls4')} | "
            f"{cell(e, 'val_calls1')} | {cell(e, 'test_calls3')} | "
            f"{cell(e, 'peak_state_mib', 2)} | {cell(e, 'peak_rss_mib', 0)} |"
        )
    lines += [
        "",
        "| I/O run (preset bench, 2 epochs) | optimizer steps (s) | swapping (s) | swaps | "
        "peak state (MiB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in swap.items():
        lines.append(
            f"| {name} | {r['train_seconds']:.1f} | {r['swap_seconds'] or 0:.1f} | "
            f"{r['swaps'] or 0} | {r['peak_state_mib']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
