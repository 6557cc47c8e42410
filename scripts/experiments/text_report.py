"""First-round tables of the three text tasks, from the runs of
``scripts/experiments/text_small.sh``.

    python scripts/experiments/text_report.py [RUNS_DIR] [--caveat TEXT ...]  # runs/text-small

Writes ``docs/results/{masked-lm,autoregressive,recurrent}/first-round/results.{json,csv}``
(``{"protocol": ..., "rows": [one row per run, with the exact training and evaluation
commands]}``) and ``samples.md`` (continuations of the same prompts), and prints the Markdown
tables used in each folder's README. ``--caveat`` goes into all three files' protocol.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol, seeds_per_method  # noqa: E402

EVAL_MDM = "(end of training)"
RUNS = Path("runs/text-small")  # where text_small.sh trains


def load(run: Path) -> dict:
    r = json.loads((run / "results.json").read_text())
    judged = run / "eval-judged.json"
    r["judged"] = json.loads(judged.read_text()) if judged.is_file() else None
    sweep = run / "eval-sweep.json"
    r["sweep"] = json.loads(sweep.read_text()) if sweep.is_file() else None
    samples = run / "samples.txt"
    r["samples_text"] = samples.read_text() if samples.is_file() else ""
    return r


def common(name: str, r: dict) -> dict:
    cfg, acc = r["config"], r["accounting"]
    return {
        "run": name,
        "method": cfg["method"],
        "num_blocks": cfg.get("num_blocks") if cfg["method"] == "dblocks" else 1,
        "seed": cfg["seed"],
        "optimizer_steps": acc["steps"],
        "layer_evaluations": acc["layer_evaluations"],
        "backward_layer_evaluations": acc["backward_layer_evaluations"],
        "compute_layer_units": acc["compute_layer_units"],
        "train_seconds": round(r["timing"]["train_seconds"], 1),
        "median_step_ms": round(1000 * r["timing"]["median_step_seconds"], 1),
        "train_peak_rss_mib": round(r["memory"]["train_peak_rss_bytes"] / 2**20, 1),
    }


def lm_metrics(ev: dict) -> dict:
    return {
        "heldout_ce": round(ev["heldout_ce"], 4),
        "heldout_accuracy": round(ev["heldout_accuracy"], 4),
        "judge_perplexity": round(ev["judge_perplexity"], 3) if "judge_perplexity" in ev else "",
        "distinct_1": round(ev["distinct_1"], 3),
        "distinct_2": round(ev["distinct_2"], 3),
        "distinct_4_chars": round(ev["distinct_4_chars"], 3),
        "repetition_4_chars": round(ev["repetition_4_chars"], 4),
    }


def text_protocol(rows: list[dict], runs: Path, caveats: Sequence[str] = (),
                  argv: Sequence[str] | None = None) -> dict:  # fmt: skip
    """The protocol object of one task's results.json: a table of runs read on the held-out
    text, compared with the task's baseline methods."""
    return protocol(
        selected_on="none (a table of runs; nothing is chosen on it)",
        reported_on="test (the held-out text: each run's end-of-training or judged evaluation)",
        seeds=seeds_per_method(rows),
        baselines=sorted({r["method"] for r in rows} - {"dblocks"}),
        caveats=caveats, argv=argv, script=__file__,
        preceded_by="bash scripts/experiments/text_small.sh" if runs == RUNS else None)  # fmt: skip


def write(folder: str, rows: list[dict], samples: dict[str, str], record_protocol: dict) -> None:
    out = Path("docs/results") / folder / "first-round"
    out.mkdir(parents=True, exist_ok=True)
    record = {"protocol": record_protocol, "rows": rows}
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and not isinstance(r[k], (dict, list))]
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# Samples ({folder}, first round)", ""]
    for name, text in samples.items():
        lines += [f"## {name}", "", "```", text.strip(), "```", ""]
    (out / "samples.md").write_text("\n".join(lines))


def masked(runs: Path, caveats: Sequence[str] = (), argv: Sequence[str] | None = None) -> None:
    rows, samples = [], {}
    for run in sorted(runs.glob("mdm-*/")):
        if not (run / "results.json").is_file():
            continue
        r = load(run)
        ev = r["eval"]
        rows.append({
            **common(run.name, r),
            "heldout_bpc": round(ev["bpc"], 4),
            "bpc_stderr": round(ev["bpc_stderr"], 4),
            "per_block_bpc_share": [round(u["bpc_share"], 4) for u in ev.get("per_unit", [])],
            "command": r["command"],
        })  # fmt: skip
        samples[run.name] = r["samples_text"]
    write("masked-lm", rows, samples, text_protocol(rows, runs, caveats, argv))
    print("| method | seed | held-out BPC ± s.e. | train time | layer evaluations |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} B={row['num_blocks']} | {row['seed']} "
              f"| {row['heldout_bpc']:.3f} ± {row['bpc_stderr']:.3f} "
              f"| {row['train_seconds']:.0f} s | {row['layer_evaluations']:,} |")  # fmt: skip
    for method in ("e2e", "dblocks"):
        v = [row["heldout_bpc"] for row in rows if row["method"] == method]
        if len(v) > 1:
            mean, sd = statistics.mean(v), statistics.stdev(v)
            print(f"{method}: mean {mean:.3f} sd {sd:.3f} n={len(v)}")


def ar_extra(sweep: dict | None) -> dict:
    """One-call-at-sigma_max CE/accuracy and the steps sweep, from eval-sweep.json."""
    if not sweep:
        return {}
    out = {
        "sigma_max_call_ce": round(sweep["sigma_max_call"]["heldout_ce"], 4),
        "sigma_max_call_accuracy": round(sweep["sigma_max_call"]["heldout_accuracy"], 4),
    }
    for k, e in sweep.get("steps_sweep", {}).items():
        out[f"ce_steps_{k}"] = round(e["heldout_ce"], 4)
        out[f"accuracy_steps_{k}"] = round(e["heldout_accuracy"], 4)
    return out


def autoregressive(
    runs: Path, caveats: Sequence[str] = (), argv: Sequence[str] | None = None
) -> None:
    rows, samples = [], {}
    for run in sorted(runs.glob("ar-*/")):
        if not (run / "results.json").is_file():
            continue
        r = load(run)
        ev = r["judged"] or r["eval"]
        cfg = r["config"]
        rows.append({
            **common(run.name, r),
            "sigma_sampling": cfg.get("sigma_sampling", "") if cfg["method"] == "dblocks" else "",
            "aux_ce": cfg.get("aux_ce", 0) if cfg["method"] == "dblocks" else "",
            **lm_metrics(ev),
            **ar_extra(r["sweep"]),
            "samples": ev["samples"],
            "command": r["command"],
            "eval_command": f"dblocks eval --run {runs}/{run.name} --judge {runs}/ar-e2e-s0 --json",
        })  # fmt: skip
        samples[run.name] = "\n".join(ev["samples"]) + "\n\n" + r["samples_text"]
    write("autoregressive", rows, samples, text_protocol(rows, runs, caveats, argv))
    swept = [row for row in rows if "sigma_max_call_ce" in row]
    if swept:
        ks = sorted(
            {int(k.split("_")[-1]) for row in swept for k in row if k.startswith("ce_steps_")}
        )
        print("\n| run | one call at sigma_max: CE / acc | "
              + " | ".join(f"{k} steps: CE / acc" for k in ks) + " |")  # fmt: skip
        print("|---|---|" + "---|" * len(ks))
        for row in swept:
            cells = [f"{row[f'ce_steps_{k}']:.3f} / {row[f'accuracy_steps_{k}']:.3f}" for k in ks]
            first = f"{row['sigma_max_call_ce']:.3f} / {row['sigma_max_call_accuracy']:.3f}"
            print(f"| {row['run']} | {first} | " + " | ".join(cells) + " |")
    print("\n| run | held-out CE | accuracy | judge ppl | distinct-1/2 | distinct-4 (chars) "
          "| repetition-4 | train time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['heldout_ce']:.3f} | {row['heldout_accuracy']:.3f} "
              f"| {row['judge_perplexity']} | {row['distinct_1']:.2f}/{row['distinct_2']:.2f} "
              f"| {row['distinct_4_chars']:.3f} | {row['repetition_4_chars']:.4f} "
              f"| {row['train_seconds']:.0f} s |")  # fmt: skip


def recurrent(runs: Path, caveats: Sequence[str] = (), argv: Sequence[str] | None = None) -> None:
    rows, samples = [], {}
    for run in sorted(runs.glob("rec-*/")):
        if not (run / "results.json").is_file():
            continue
        r = load(run)
        ev = r["judged"] or r["eval"]
        rows.append({
            **common(run.name, r),
            **lm_metrics(ev),
            "inference_steps": ev.get("inference_steps"),
            "depth_sweep": ev.get("depth_sweep", {}),
            "samples": ev["samples"],
            "command": r["command"],
            "eval_command": f"dblocks eval --run {runs}/{run.name} --judge {runs}/ar-e2e-s0 "
            "--steps 1 2 4 8 12 16 24 32 --json",
        })  # fmt: skip
        samples[run.name] = "\n".join(ev["samples"]) + "\n\n" + r["samples_text"]
    write("recurrent", rows, samples, text_protocol(rows, runs, caveats, argv))
    print("\n| method | held-out CE | accuracy | judge ppl | distinct-4 | forward layer evals "
          "| backward layer evals | train time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['heldout_ce']:.3f} | {row['heldout_accuracy']:.3f} "
              f"| {row['judge_perplexity']} | {row['distinct_4_chars']:.3f} "
              f"| {row['layer_evaluations']:,} | {row['backward_layer_evaluations']:,} "
              f"| {row['train_seconds']:.0f} s |")  # fmt: skip
    ks = sorted({int(k) for row in rows for k in row["depth_sweep"]})
    if ks:
        print("\n| iterations K | " + " | ".join(str(k) for k in ks) + " |")
        print("|---|" + "---|" * len(ks))
        for row in rows:
            cells = [f"{row['depth_sweep'][str(k)]['heldout_ce']:.3f}" for k in ks]
            print(f"| {row['method']} CE | " + " | ".join(cells) + " |")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="?", default=RUNS)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    for report in (masked, autoregressive, recurrent):
        report(args.runs, args.caveat, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
