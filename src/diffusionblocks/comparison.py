"""The comparison table of ``dblocks compare``: one row per training run, one row per method
(mean and sample standard deviation over seeds), and the table and verdicts printed from them.
Plain data in, plain data out (results.json dicts).

A method row (``comparison.json`` ``rows``, and the list ``--json FILE`` writes) has the keys:

- ``method``, ``depth`` (layers the network was built with), ``num_blocks`` (1 end to end),
  ``seeds`` (the seeds run);
- ``metric`` (the headline metric's name), ``key`` (its key in results.json), and
  ``higher_is_better``;
- ``val_mean``, ``val_sd``, ``test_mean``, ``test_sd`` (None where a split or a second seed is
  missing), ``val_values``, ``test_values`` (one per seed, in seed order);
- ``peak_memory_bytes`` (the largest training peak over seeds: host RSS on the CPU, the CUDA
  allocator's peak on a GPU), ``train_flops`` (measured, mean over seeds; None for runs that did
  not measure), ``train_seconds`` (mean);
- ``value`` (= ``test_mean``) and the metric's own key, ``steps``, ``layer_evaluations``,
  ``median_step_ms``, ``train_peak_mib``, ``device``, ``command`` (the first seed's),
  ``warnings``, ``trivial`` (the task's trivial baseline per split, from results.json), ``runs``
  (the per-run rows); ``*_vs_e2e`` ratios where the baseline ran.

``comparison.json`` holds ``rows``, the ``trivial`` reference row (:func:`trivial_row`: the
headline metric of the majority class, the unigram model or noise images, on test and val) and
the ``protocol`` object (``selected_on``, ``reported_on``, ``seeds``, ``baselines``, ``command``,
``caveats``) and ``depth_check`` (:func:`depth_check`; null without e2e and e2e-shallow).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from .reporting import headline_metric


def run_row(method: str, results: dict[str, Any], command: str) -> dict[str, Any]:
    """The row of one training run (one method, one seed) from its ``results.json``."""
    cfg = results["config"]
    mem = results["memory"]
    # On CUDA the training memory is the allocator's peak above the first step, not host RSS.
    peak = mem.get("cuda_peak_bytes", mem["train_peak_rss_bytes"])
    test = headline_metric(results["eval"], cfg["task"])
    val = headline_metric(results["eval_val"], cfg["task"]) if "eval_val" in results else None
    resolved = results.get("resolved", {})
    return {
        "method": method,
        "seed": cfg.get("seed"),
        "depth": resolved.get("model_depth", cfg.get("depth")),
        "num_blocks": resolved.get("units", cfg["num_blocks"]),
        "shallow": bool(resolved.get("shallow")),
        **test,
        "val_value": val["value"] if val else None,
        "steps": results["accounting"]["steps"],
        "layer_evaluations": results["accounting"]["layer_evaluations"],
        "train_flops": results.get("compute", {}).get("train_flops"),
        "median_step_ms": results["timing"]["median_step_seconds"] * 1000,
        "train_seconds": results["timing"]["train_seconds"],
        "peak_memory_bytes": peak,
        "train_peak_mib": peak / 2**20,
        "device": results["environment"]["device"],
        "command": command,
        "warnings": results.get("warnings", []),
        "trivial": results.get("trivial", {}),
    }


comparison_row = run_row  # the name before seeds were aggregated


def _spread(values: list[float | None]) -> tuple[float | None, float | None]:
    known = [v for v in values if v is not None and not math.isnan(v)]
    if not known or len(known) < len(values):
        return None, None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else None


def mean_sd(values: list[float]) -> dict[str, Any]:
    """``{"values", "mean", "sd"}`` over seeds (sample s.d.; None with one value), as the
    experiment scripts publish them; mean and sd are None if a value is missing or NaN."""
    mean, sd = _spread(list(values))
    return {"values": list(values), "mean": mean, "sd": sd}


def row_costs(row: dict[str, Any]) -> dict[str, Any]:
    """The cost columns of a published ``compare`` row that tables built on it carry along:
    measured training FLOPs, training peak memory (MiB) and the first seed's command."""
    return {key: row[key] for key in ("train_flops", "train_peak_mib", "command")}


def cost_ratios(row: dict[str, Any], reference: dict[str, Any]) -> tuple[float, float]:
    """(training FLOPs, training peak memory) of a table row relative to a reference row."""
    return (row["train_flops"] / reference["train_flops"],
            row["train_peak_mib"] / reference["train_peak_mib"])  # fmt: skip


def spread_line(val: dict[str, Any], test: dict[str, Any], flops: float, memory: float) -> str:
    """One printed line of a table row: val and test mean ± s.d. (:func:`mean_sd` dicts), and
    FLOPs and memory relative to the table's reference."""
    return (f"val {val['mean']:.4f} ± {val['sd'] or 0:.4f}  test {test['mean']:.4f} ± "
            f"{test['sd'] or 0:.4f}  FLOPs {flops:.2f}x  memory {memory:.2f}x")  # fmt: skip


def method_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's row: its runs (one per seed) summarised (mean, sample s.d.)."""
    first = runs[0]
    test_values = [r["value"] for r in runs]
    val_values = [r["val_value"] for r in runs]
    test_mean, test_sd = _spread(test_values)
    val_mean, val_sd = _spread(val_values)
    flops = [r["train_flops"] for r in runs]
    row = {
        **{k: v for k, v in first.items() if k not in ("seed", "val_value")},
        "seeds": [r["seed"] for r in runs],
        "higher_is_better": first.get("higher_is_better", False),
        "test_mean": test_mean,
        "test_sd": test_sd,
        "val_mean": val_mean,
        "val_sd": val_sd,
        "test_values": test_values,
        "val_values": val_values,
        "value": test_mean if test_mean is not None else first["value"],
        "train_flops": statistics.fmean(flops) if None not in flops else None,
        "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
        "median_step_ms": statistics.fmean(r["median_step_ms"] for r in runs),
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
        "warnings": sorted({w for r in runs for w in r["warnings"]}),
        "runs": runs,
    }
    if first.get("key") in first:
        row[first["key"]] = row["value"]
    if "chain_ce_not_likelihood" in first:  # the chain's CE column, averaged like the headline
        row["chain_ce_not_likelihood"] = _spread([r.get("chain_ce_not_likelihood") for r in runs])[
            0
        ]
    row["train_peak_mib"] = row["peak_memory_bytes"] / 2**20
    return row


def trivial_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task's trivial baseline (majority class, unigram model, noise images) on the test and
    validation splits, in the headline metric, as recorded by the first run; None if unknown."""
    if not rows or not rows[0].get("trivial"):
        return None
    first, key = rows[0], rows[0].get("key")
    found = {split: v.get(key) for split, v in first["trivial"].items() if isinstance(v, dict)}
    if found.get("test") is None:
        return None
    return {"method": "trivial", "metric": first["metric"], "key": key,
            "higher_is_better": first.get("higher_is_better", False),
            "test_mean": found["test"], "val_mean": found.get("val")}  # fmt: skip


def add_ratios(rows: list[dict[str, Any]], baseline: str) -> None:
    """Each row's step time, training memory and FLOPs as multiples of the baseline's."""
    base = next((r for r in rows if r["method"] == baseline), None)
    if base is None:
        return
    for r in rows:
        r["step_time_vs_e2e"] = r["median_step_ms"] / base["median_step_ms"]
        r["train_peak_vs_e2e"] = r["train_peak_mib"] / max(base["train_peak_mib"], 1e-9)
        if r.get("train_flops") and base.get("train_flops"):
            r["flops_vs_e2e"] = r["train_flops"] / base["train_flops"]


def beats(a: dict[str, Any], b: dict[str, Any], split: str = "test") -> bool | None:
    """Whether method row ``a`` is better than ``b`` beyond seed noise on ``split``: the means
    differ in the better direction by more than the two standard deviations added (None when
    either row has fewer than two seeds)."""
    ma, sa, mb, sb = (a[f"{split}_mean"], a[f"{split}_sd"], b[f"{split}_mean"], b[f"{split}_sd"])
    if None in (ma, sa, mb, sb):
        return None
    gap = ma - mb if a.get("higher_is_better") else mb - ma
    return bool(gap > sa + sb)


def depth_check(rows: list[dict[str, Any]], baseline: str = "e2e") -> dict[str, Any] | None:
    """Whether this setting can show a method using its depth: full-depth end to end must beat
    the end-to-end model of depth L/B (``e2e-shallow``) beyond seed noise. Judged on the
    validation split where both rows have it (a choice: may this setting judge depth?).

    Returns None without both rows, else ``{"split", "gap", "beyond_noise", "text"}``: ``gap`` is
    full depth's advantage in the metric's better direction (mean over seeds), ``beyond_noise``
    is :func:`beats` (None with fewer than two seeds), ``text`` the sentence the table prints."""
    full = next((r for r in rows if r["method"] == baseline), None)
    shallow = next((r for r in rows if r.get("shallow")), None)
    if full is None or shallow is None:
        return None
    split = "val" if full["val_mean"] is not None and shallow["val_mean"] is not None else "test"
    gap = full[f"{split}_mean"] - shallow[f"{split}_mean"]
    if not full.get("higher_is_better"):
        gap = -gap
    verdict = beats(full, shallow, split)
    by = f"by {gap:.4f} {full['key']} ({split})"
    if verdict is None:
        text = (f"depth check: full-depth {baseline} ahead of e2e-shallow {by}; needs two or "
                "more seeds (--seeds 2+) to say whether depth matters here")  # fmt: skip
    elif verdict:
        text = (f"depth check: full-depth {baseline} beats e2e-shallow {by}, beyond seed "
                "noise, so this setting can show whether a method uses its depth")  # fmt: skip
    else:
        text = (f"depth check: full-depth {baseline} does NOT beat e2e-shallow beyond seed noise "
                f"(gap {gap:.4f} {full['key']}, {split}): this setting cannot show whether a "
                "method uses its depth")  # fmt: skip
    return {"split": split, "gap": gap, "beyond_noise": verdict, "text": text}


def _cell(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f}"


def format_comparison(rows: list[dict[str, Any]]) -> str:
    """The table of method rows (also accepts rows of single runs): the headline metric on the
    test split (mean ± s.d. over seeds), the same on the validation split, compute and memory."""
    metric = rows[0]["metric"] if rows else "-"
    chain = any("chain_ce_not_likelihood" in r for r in rows)
    extra = " chain's final-step CE (not a likelihood) |" if chain else ""
    head = (
        f"| method | depth | B | seeds | {metric} |{extra} on val | steps | layer evals "
        "| train FLOPs | FLOPs vs e2e | median step | step vs e2e | train time "
        "| train peak memory | memory vs e2e |"
    )
    lines = [head, "|" + "---|" * (16 if chain else 15)]

    def ratio(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "-"

    for r in rows:
        cell = ""
        if chain:
            value = r.get("chain_ce_not_likelihood")
            cell = f" {value:.4f} |" if value is not None else " - |"
        flops = r.get("train_flops")
        test = _cell(r.get("test_mean", r["value"]), r.get("test_sd"))
        lines.append(
            f"| {r['method']} | {r.get('depth', '-')} | {r['num_blocks']} "
            f"| {len(r.get('seeds', [None]))} | {test} |{cell} "
            f"{_cell(r.get('val_mean', r.get('val_value')), r.get('val_sd'))} | {r['steps']} "
            f"| {r['layer_evaluations']:.3g} | {f'{flops:.3g}' if flops else '-'} "
            f"| {ratio(r.get('flops_vs_e2e'))} | {r['median_step_ms']:.1f} ms "
            f"| {ratio(r.get('step_time_vs_e2e'))} | {r['train_seconds']:.0f} s "
            f"| {r['train_peak_mib']:.0f} MiB | {ratio(r.get('train_peak_vs_e2e'))} |"
        )
    trivial = trivial_row(rows)
    if trivial is not None:
        cell = " - |" if chain else ""
        test, val = _cell(trivial["test_mean"], None), _cell(trivial["val_mean"], None)
        lines.append(f"| trivial | - | - | - | {test} |{cell} {val} |" + " - |" * 9)
    return "\n".join(lines)
