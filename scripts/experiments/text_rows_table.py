"""One table from several `dblocks compare` folders of a text or image-generation task (each run
at its own settings: a method's lr, an option), with FLOPs and memory relative to a reference
row; for masked-diffusion DiffusionBlocks runs their readout diagnostics on val (each block
alone, the ensemble, the best block per interval from ``interval_shares``: from
``eval-val.json`` beside a run's results.json when present, else its results.json); for image
generation the class agreement on val and test and the sampling cost. Mean and sample s.d. over
seeds.

    python scripts/experiments/text_rows_table.py NAME=COMPARE_FOLDER... --reference NAME \
      --json OUT

A row's folders joined with ``+`` (``NAME=F1+F2+F3``) are single-seed comparisons of one method
(``--set seed=S``), tabulated as one row of their seeds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import cost_ratios, mean_sd, row_costs, spread_line


def generation(runs: list[Path]) -> dict[str, Any]:
    """Image-generation runs: class agreement on val and test, and the sampling cost (layer
    evaluations per image, denoiser calls per block) of their evaluation (empty otherwise)."""
    if not runs or not all((run / "results.json").is_file() for run in runs):
        return {}
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    if not all("class_agreement" in r["eval"] for r in results):
        return {}
    first = results[0]["eval"]
    return {
        "class_agreement_val": mean_sd([r["eval_val"]["class_agreement"] for r in results]),
        "class_agreement_test": mean_sd([r["eval"]["class_agreement"] for r in results]),
        "layer_evals_per_image": first["layer_evals_per_image"],
        "calls_per_block": first["calls_per_unit"],
    }


def diagnostics(runs: list[Path]) -> dict[str, Any]:
    """Masked-diffusion readouts of the runs' val evaluations, or :func:`generation`'s numbers
    for image-generation runs (empty for other tasks)."""
    if found := generation(runs):
        return found
    evs = []
    for run in runs:
        extra = run / "eval-val.json"
        evs.append(json.loads(extra.read_text()) if extra.is_file() else
                   json.loads((run / "results.json").read_text())["eval_val"])  # fmt: skip
    if not evs or not all("block_alone" in ev for ev in evs):
        return {}
    blocks = len(evs[0]["block_alone"])
    out: dict[str, Any] = {
        "routed": mean_sd([ev["bpc"] for ev in evs]),
        "ensemble": mean_sd([ev["ensemble"]["bpc"] for ev in evs]),
        **{f"block_{b}_alone": mean_sd([ev["block_alone"][b]["bpc"] for ev in evs])
           for b in range(blocks)},
    }  # fmt: skip
    if all("interval_shares" in ev for ev in evs):
        diag, best, choice = [], [], []
        for ev in evs:
            m = ev["interval_shares"]
            diag.append(sum(m[i][i] for i in range(blocks)))
            best.append(sum(min(m[b][i] for b in range(blocks)) for i in range(blocks)))
            choice.append([min(range(blocks), key=lambda b, i=i: m[b][i]) for i in range(blocks)])
        out["interval_shares_routed"] = mean_sd(diag)
        out["interval_shares_best_block_per_interval"] = mean_sd(best)
        out["best_block_per_interval"] = choice
    return out


def run_folders(folder: str, row: dict[str, Any]) -> list[Path]:
    """The run folders of a comparison row: FOLDER/METHOD/seed-N, or published FOLDER/runs/...
    (one seed: no seed-N folder)."""
    method = row["method"]
    places = [Path(folder) / method, Path(folder) / "runs" / method]
    return [
        next(
            (p for p in [*(d / f"seed-{seed}" for d in places), *places]
             if (p / "results.json").is_file()),
            places[0],
        )
        for seed in row["seeds"]
    ]  # fmt: skip


def rows_of(
    folders: list[str], comparisons: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], list[Path], dict[str, Any]]]:
    """(row, its run folders, its comparison) for each row of one comparison; several
    comparisons of one method each (seeds run separately, ``--set seed=S``) make one row: their
    values and seeds joined, FLOPs and time their mean, memory their largest, and the
    comparison's protocol listing every command."""
    if len(folders) == 1:
        return [(row, run_folders(folders[0], row), comparisons[0])
                for row in comparisons[0]["rows"]]  # fmt: skip
    rows = []
    for folder, comparison in zip(folders, comparisons, strict=True):
        if len(comparison["rows"]) != 1:
            raise SystemExit(f"{folder}: joining seeds needs one method per comparison")
        rows.append(comparison["rows"][0])
    if len({r["method"] for r in rows}) != 1:
        raise SystemExit(f"{'+'.join(folders)}: the comparisons are of different methods")
    merged = dict(rows[0])
    for key in ("val_values", "test_values", "seeds", "runs"):
        merged[key] = [v for r in rows for v in r.get(key, [])]
    seeds = merged["seeds"]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"{'+'.join(folders)}: a seed appears twice ({seeds})")
    for key in ("train_flops", "train_seconds"):
        values = [r[key] for r in rows if r.get(key) is not None]
        merged[key] = sum(values) / len(values) if len(values) == len(rows) else None
    peaks = [r["peak_memory_bytes"] for r in rows if r.get("peak_memory_bytes") is not None]
    merged["peak_memory_bytes"] = max(peaks) if len(peaks) == len(rows) else None
    mibs = [r["train_peak_mib"] for r in rows if r.get("train_peak_mib") is not None]
    merged["train_peak_mib"] = max(mibs) if len(mibs) == len(rows) else None
    runs = [p for folder, r in zip(folders, rows, strict=True) for p in run_folders(folder, r)]
    protocol = dict(comparisons[0].get("protocol") or {})
    protocol["seeds"] = len(merged["seeds"])
    protocol["command"] = [c.get("protocol", {}).get("command") for c in comparisons]
    protocol["caveats"] = [v for c in comparisons for v in c.get("protocol", {}).get("caveats", [])]
    comparison = {**comparisons[0], "protocol": protocol}
    return [(merged, runs, comparison)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help="NAME=COMPARE_FOLDER[+COMPARE_FOLDER...]")
    ap.add_argument("--reference", help="the row FLOPs and memory are relative to")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    table: dict[str, Any] = {}
    trivial = None
    for item in args.rows:
        name, _, spec = item.partition("=")
        folders = spec.split("+")  # several single-seed comparisons of one method: one row
        comparisons = [json.loads((Path(f) / "comparison.json").read_text()) for f in folders]
        trivial = comparisons[0].get("trivial", trivial)
        for row, runs, comparison in rows_of(folders, comparisons):
            key = name if len(comparisons[0]["rows"]) == 1 else f"{name}:{row['method']}"
            table[key] = {
                "method": row["method"],
                "metric": row["metric"],
                "seeds": row["seeds"],
                "val": mean_sd(row["val_values"]),
                "test": mean_sd(row["test_values"]),
                **row_costs(row),
                "train_seconds": row["train_seconds"],
                "overrides": comparison.get("overrides"),
                "protocol": comparison.get("protocol"),
                "diagnostics_val": diagnostics([r for r in runs if r.is_dir()]),
            }
    if args.reference and args.reference not in table:
        raise SystemExit(f"--reference {args.reference}: no such row ({', '.join(table)})")
    ref = table.get(args.reference) if args.reference else None
    for name, row in table.items():
        ratios = cost_ratios(row, ref) if ref else (1.0, 1.0)
        if ref:
            row["flops_vs_reference"], row["memory_vs_reference"] = ratios
        print(f"{name:28s} " + spread_line(row["val"], row["test"], *ratios))
        for key, value in row["diagnostics_val"].items():
            if isinstance(value, dict):
                print(f"    {key:40s} {value['mean']:.4f} ± {value['sd'] or 0:.4f}")
            else:
                print(f"    {key:40s} {value}")
    if args.json:
        protocol = {
            "selected_on": "val",
            "reported_on": "test",
            "seeds": max(len(row["val"]["values"]) for row in table.values()),
            "seeds_per_row": {name: len(row["val"]["values"]) for name, row in table.items()},
            "baselines": sorted({row["method"] for row in table.values()} - {"dblocks"})
            + ["trivial"],
            "command": shlex.join(["python", *sys.argv]),
        }
        out = {"protocol": protocol, "reference": args.reference, "trivial": trivial,
               "rows": table}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
