"""What the command line prints: plans, results, evaluations, schedules and comparison
tables. Functions of plain data (results dicts) so that the CLI only parses and dispatches."""

from __future__ import annotations

from typing import Any

from .diffusion import BlockPartition


def print_plan(config, preset: str | None) -> None:
    docs = type(config).field_docs()
    print(f"# preset: {preset}   task: {config.task}")
    for key, value in config.to_dict().items():
        print(f"{key:>18} = {value!s:<24} # {docs.get(key, '')}")
    resolved = config.resolved()
    print(
        f"# resolved: shared policy {resolved['shared_policy']}, block-resident "
        f"{'yes' if resolved['block_resident'] else 'no'}, {resolved['inference_calls']} "
        "denoiser calls at inference"
    )
    if config.method == "dblocks":
        print()
        print_schedule(config.block_partition())


def check_plan(config) -> None:
    """Everything that can fail before training, checked now (``--dry-run``): the data is read
    and the model built on the CPU, without training or writing anything."""
    import torch

    from .registry import make_task
    from .runs import resolve_paths, run_warnings
    from .training.trainer import Trainer

    config = resolve_paths(config)
    task = make_task(config, torch.device("cpu"))
    trainer = Trainer(task, None, progress=False)
    info = task.describe()
    facts = ", ".join(f"{k} {v}" for k, v in info.items() if k != "parameters")
    print(f"\n# checked: data and model build ({facts}); {info.get('parameters', 0):,} parameters; "
          f"{trainer.total_steps} steps ({trainer.steps_per_unit} per block)")  # fmt: skip
    for note in run_warnings(task, trainer):
        print(f"warning: {note}")


def print_results(results: dict[str, Any]) -> None:
    ev, acc, tim, mem = results["eval"], results["accounting"], results["timing"], results["memory"]
    print()
    print_evaluation(ev)
    print(
        f"steps              {acc['steps']} ({acc['steps_per_unit']} per block); "
        f"layer evaluations {acc['layer_evaluations']:,}"
    )
    if tim.get("median_step_seconds") is not None:
        print(f"median step time   {tim['median_step_seconds'] * 1000:.1f} ms")
    if "cuda_peak_bytes" in mem:
        print(f"train peak CUDA    {mem['cuda_peak_bytes'] / 2**20:.1f} MiB above the first step")
    else:
        print(f"train peak RSS     {mem['train_peak_rss_bytes'] / 2**20:.1f} MiB above the start")


def print_evaluation(ev: dict[str, Any]) -> None:
    """Human-readable evaluation of any task."""
    if "accuracy" in ev:
        split = ev.get("split", "test")
        print(f"{split} accuracy{' ' * (9 - len(split))}{ev['accuracy']:.4f}  "
              f"({ev['examples']} {split} examples)")  # fmt: skip
        for steps, value in ev.get("steps_sweep", {}).items():
            print(f"  {steps:>3} block calls: {value:.4f}")
        for row in ev.get("per_block", []):
            chain = row["chain_accuracy"]
            chain_s = "  -   " if chain is None else f"{chain:.4f}"
            print(
                f"  block {row['block']} sigma [{row['sigma_interval'][0]:.4g}, "
                f"{row['sigma_interval'][1]:.4g}]: chain acc {chain_s}  own-interval CE "
                f"{row['denoise_ce']:.4f}  CE@sigma_max {row['ce_at_sigma_max']:.4f}"
            )
    if "bpc" in ev:
        print(
            f"held-out BPC       {ev['bpc']:.4f} +/- {ev['bpc_stderr']:.4f} (standard error; "
            f"{ev['sequences']} sequences x {ev['draws_per_sequence']} masking times; "
            f"held out: {ev['held_out']})"
        )
        for row in ev.get("per_unit", []):
            lo, hi = row["t_interval"]
            print(
                f"  block {row['block']} t in [{lo:.3f}, {hi:.3f}]: "
                f"BPC share {row['bpc_share']:.4f}"
            )
    if "heldout_ce" in ev:
        kind = (
            "a likelihood" if ev["ce_is_likelihood"] else "final denoising step, not a likelihood"
        )
        print(
            f"held-out next-char CE {ev['heldout_ce']:.4f} nats ({kind}), accuracy "
            f"{ev['heldout_accuracy']:.4f} on {ev['heldout_characters']} characters"
        )
        if "sigma_max_call" in ev:
            e = ev["sigma_max_call"]
            print(
                f"  one call at sigma_max (predictive, comparable with a likelihood): CE "
                f"{e['heldout_ce']:.4f}, accuracy {e['heldout_accuracy']:.4f}"
            )
        for key, label in (("steps_sweep", "denoising steps"), ("depth_sweep", "core iterations")):
            for k, e in ev.get(key, {}).items():
                print(
                    f"  {k:>3} {label}: CE {e['heldout_ce']:.4f}, accuracy "
                    f"{e['heldout_accuracy']:.4f}"
                )
        if "distinct_1" in ev:
            judge = f", judge perplexity {ev['judge_perplexity']:.3f}" if "judge" in ev else ""
            print(
                f"continuations: distinct-1/2 (words) {ev['distinct_1']:.3f}/"
                f"{ev['distinct_2']:.3f}, distinct-4 (chars) {ev['distinct_4_chars']:.3f}, "
                f"repetition {ev['repetition_4_chars']:.3f}{judge}"
            )
            for sample in ev["samples"][:2]:
                print("  " + sample.replace("\n", " / ")[:120])
    if "fid_skipped" in ev:
        print(f"note: no FID ({ev['fid_skipped']})")
    if "heldout_mse_per_unit" in ev:
        mse = ", ".join(f"{v:.4f}" for v in ev["heldout_mse_per_unit"])
        print(f"held-out denoising MSE per block (own sigma range): {mse}")
    if "fid" in ev:
        for steps, e in ev["steps_sweep"].items():
            line = (
                f"FID ({e['samples']} samples, {steps} steps, CFG {e['cfg_scale']}): {e['fid']:.3f}"
            )
            if "fid_inception" in e:
                line += f"; Inception FID {e['fid_inception']:.3f}"
            print(line)
            print(
                f"  layer evaluations per image {e['layer_evals_per_image']}, denoiser calls per "
                f"block {e['calls_per_unit']}; evaluator agrees with the requested class "
                f"{e['class_agreement']:.3f}; samples per class as judged {e['class_counts']}"
            )


def describe_generation(info: dict[str, Any]) -> str:
    """One line on what a text generation ran (its keys differ per task and method)."""
    names = {"steps": "steps", "calls_per_unit": "calls per block", "layer_calls": "model calls",
             "core_applications": "core applications per character"}  # fmt: skip
    return ", ".join(f"{names.get(k, k.replace('_', ' '))} {v}" for k, v in info.items())


def print_schedule(partition: BlockPartition) -> None:
    d = partition.describe()
    print(f"partition {d['partition']}, overlap {d['overlap']}, block 0 = noisiest")
    print(
        f"{'block':>5} {'sigma_lo':>10} {'sigma_hi':>10} {'train_lo':>10} {'train_hi':>10}"
        f" {'mass':>7}"
    )
    for b in d["blocks"]:
        print(
            f"{b['block']:>5} {b['sigma_lo']:>10.4g} {b['sigma_hi']:>10.4g} "
            f"{b['train_lo']:>10.4g} {b['train_hi']:>10.4g} {b['mass']:>7.4f}"
        )


def comparison_row(method: str, results: dict[str, Any], command: str) -> dict[str, Any]:
    cfg = results["config"]
    mem = results["memory"]
    # On CUDA the training memory is the allocator's peak above the first step, not host RSS.
    peak = mem.get("cuda_peak_bytes", mem["train_peak_rss_bytes"])
    return {
        "method": method,
        "num_blocks": cfg["num_blocks"] if method == "dblocks" else 1,
        **headline_metric(results["eval"]),
        "steps": results["accounting"]["steps"],
        "layer_evaluations": results["accounting"]["layer_evaluations"],
        "median_step_ms": results["timing"]["median_step_seconds"] * 1000,
        "train_seconds": results["timing"]["train_seconds"],
        "train_peak_mib": peak / 2**20,
        "device": results["environment"]["device"],
        "command": command,
        "warnings": results.get("warnings", []),
    }


# The one quality number per task that `dblocks compare` puts in its table.


# The one quality number per task that `dblocks compare` puts in its table.
HEADLINE = (
    ("accuracy", "test acc"),
    ("bpc", "held-out BPC"),
    ("fid", "FID"),
    ("heldout_ce", "held-out CE"),
)


def headline_metric(ev: dict[str, Any]) -> dict[str, Any]:
    if "ce_is_likelihood" in ev:  # autoregressive: compare likelihoods with likelihoods
        if ev["ce_is_likelihood"]:
            return {"metric": "held-out CE (likelihood)", "value": ev["heldout_ce"],
                    "heldout_ce": ev["heldout_ce"]}  # fmt: skip
        # The chain's final-step CE is not a likelihood: its own column, never the headline;
        # the headline is one call of the noisiest block where the task has it (autoregressive).
        one_call = ev.get("sigma_max_call", {}).get("heldout_ce", float("nan"))
        return {"metric": "held-out CE (likelihood)", "value": one_call, "heldout_ce": one_call,
                "chain_ce_not_likelihood": ev["heldout_ce"]}  # fmt: skip
    for key, label in HEADLINE:
        if key in ev:
            return {"metric": label, "value": ev[key], key: ev[key]}
    return {"metric": "-", "value": float("nan")}


def format_comparison(rows: list[dict[str, Any]]) -> str:
    metric = rows[0]["metric"] if rows else "-"
    chain = any("chain_ce_not_likelihood" in r for r in rows)
    extra = " chain's final-step CE (not a likelihood) |" if chain else ""
    head = (
        f"| method | B | {metric} |{extra} steps | layer evals | median step | step vs e2e "
        "| train time | train peak memory | memory vs e2e |"
    )
    lines = [head, "|" + "---|" * (11 if chain else 10)]
    for r in rows:
        cell = ""
        if chain:
            value = r.get("chain_ce_not_likelihood")
            cell = f" {value:.4f} |" if value is not None else " - |"
        lines.append(
            f"| {r['method']} | {r['num_blocks']} | {r['value']:.4f} |{cell} {r['steps']} "
            f"| {r['layer_evaluations']:.3g} | {r['median_step_ms']:.1f} ms "
            f"| {r.get('step_time_vs_e2e', float('nan')):.2f}x | {r['train_seconds']:.0f} s "
            f"| {r['train_peak_mib']:.0f} MiB "
            f"| {r.get('train_peak_vs_e2e', float('nan')):.2f}x |"
        )
    return "\n".join(lines)
