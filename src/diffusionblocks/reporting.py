"""What the command line prints: plans, results, evaluations, schedules and comparison
tables. Functions of plain data (results dicts) so that the CLI only parses and dispatches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .diffusion import BlockPartition
from .tasks.base import Task

if TYPE_CHECKING:
    from .config import RunConfig
    from .training.trainer import Trainer


def print_plan(config: RunConfig, preset: str | None) -> None:
    docs = type(config).field_docs()
    print(f"# preset: {preset}   task: {config.task}   (set a key as KEY=V or GROUP.KEY=V)")
    for group, values in config.to_nested().items():
        if group == "task":
            continue
        print(f"[{group}]")
        for key, value in values.items():
            print(f"{key:>18} = {value!s:<24} # {docs.get(key, '')}")
    resolved = config.resolved()
    truncation = resolved.get("bptt_truncation")  # recurrent depth's baselines
    print(
        f"# resolved: shared policy {resolved['shared_policy']}, block-resident "
        f"{'yes' if resolved['block_resident'] else 'no'}, {resolved['inference_calls']} "
        f"denoiser calls at inference, {resolved['model_depth']} layers built"
        + (f", BPTT truncation {truncation}" if truncation else "")
    )
    if not config.end_to_end:
        print()
        print_schedule(config.block_partition())


def check_plan(config: RunConfig) -> None:
    """Everything that can fail before training, checked now (``--dry-run``): the data is read
    and the model built on the CPU, without training or writing anything."""
    import torch

    from .registry import make_task
    from .training.runfolder import resolve_paths
    from .training.trainer import Trainer

    config = resolve_paths(config)
    task = make_task(config, torch.device("cpu"))
    trainer = Trainer(task, None, progress=False)
    info = task.describe()
    facts = ", ".join(f"{k} {v}" for k, v in info.items() if k != "parameters")
    print(f"\n# checked: data and model build ({facts}); {info.get('parameters', 0):,} parameters; "
          f"{trainer.total_steps} steps ({trainer.steps_per_block} per block)")  # fmt: skip
    for note in run_warnings(task, trainer):
        print(f"warning: {note}")


def print_results(results: dict[str, Any]) -> None:
    ev, acc, tim, mem = results["eval"], results["accounting"], results["timing"], results["memory"]
    print()
    print_evaluation(ev, results["config"]["task"])
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


def print_evaluation(ev: dict[str, Any], task: str | None = None) -> None:
    """Human-readable evaluation: each task writes its own lines (``Task.report``); without
    ``task`` (a task name), every task's report is asked and those that know the keys answer."""
    for cls in report_classes(task):
        for line in cls.report(ev):
            print(line)


def report_classes(task: str | None = None) -> list[type[Task]]:
    """The task class that reports ``task``'s evaluations, or one class per distinct report."""
    from .registry import TASKS

    names = [task] if task is not None else list(TASKS)
    out: list[type[Task]] = []
    for name in names:
        cls = next(iter(TASKS[name][1].values()))
        # The class that writes the report (autoregressive and recurrent share CharLM's).
        owner = next(k for k in cls.__mro__ if "report" in vars(k))
        if owner not in out:
            out.append(owner)
    return out


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


def headline_metric(ev: dict[str, Any], task: str | None = None) -> dict[str, Any]:
    """The one quality number per task that ``dblocks compare`` puts in its table
    (``Task.headline``)."""
    for cls in report_classes(task):
        found = cls.headline(ev)
        if found is not None:
            return found
    return {"metric": "-", "value": float("nan")}


def metrics_legend(task: Task) -> dict[str, str]:
    """What every key of ``metrics.jsonl`` measures (also in results.json). Keys ending in a
    block index are listed with ``<b>``, the validation curve's with ``<key>``."""
    key = task.plot_key
    legend = {
        "step": "global optimizer step (all blocks' steps together)",
        "block": "the block trained at this step (end to end: 0, all layers)",
        "epoch": "epochs of the block trained at this step (its own steps / steps per epoch)",
        "data_epochs": "passes over the training data by all blocks together",
        "examples_per_sec": "training examples per second since the previous record",
        "lr": "learning rate of the last step (warm-up, then cosine decay per block)",
        "grad_norm": "gradient norm of the last step before clipping (grad_clip)",
        "loss_block_<b>": "block b's training objective, mean over its steps since the last record",
        "fault": "why a step's update was skipped (a non-finite loss or gradient, nan_policy)",
        "skipped_steps": "steps skipped so far",
        "eval_<key>": "a quick evaluation of the whole model during training (eval_every), on "
        "the validation split when there is one",
        "test_<metric>": "the final evaluation of the whole model on the test split, written once "
        "at the end",
    }
    if key != "loss":
        legend[f"{key}_block_<b>"] = f"'{key}' of block b's training steps (plotted in loss.png)"
    if "val" in task.splits:
        legend["val_<key>_block_<b>"] = (
            "the logged quantity <key> of block b on a fixed batch of validation examples with "
            "fixed noise (never trained on): the held-out curve, plotted in loss.png"
        )
        legend["val_<metric>"] = "the final evaluation of the whole model on the validation split"
    legend.update(task.log_legend)
    return legend


def legend_entry(legend: dict[str, str], key: str) -> str | None:
    """The legend's explanation of a concrete metrics key (``val_ce_block_2`` ->
    ``val_<key>_block_<b>``), or None."""
    import re

    if key in legend:
        return legend[key]
    generic = re.sub(r"_block_\d+$", "_block_<b>", key)
    if generic in legend:
        return legend[generic]
    for pattern in ("val_<key>_block_<b>", "eval_<key>", "test_<metric>", "val_<metric>"):
        prefix = pattern.split("<")[0]
        if key.startswith(prefix) and pattern in legend:
            if pattern.endswith("_block_<b>") and not re.search(r"_block_\d+$", key):
                continue
            return legend[pattern]
    return None


# Below this many steps per block a run's numbers are flagged: on the validation splits of
# docs/results/user-images, 22-110 steps per block gave chance or near it, 220 an unstable
# 0.77 +- 0.10, 440 a stable 0.93 +- 0.03 (digits, the images preset, 3 seeds).
MIN_STEPS_PER_BLOCK = 400


def run_warnings(task: Task, trainer: Trainer) -> list[str]:
    """What makes this run's numbers meaningless, in words (printed after training)."""
    notes = []
    steps = trainer.steps_per_block
    if steps < MIN_STEPS_PER_BLOCK:
        who = "(end to end)" if task.config.end_to_end else "per block"
        notes.append(
            f"only {steps} optimizer step{'s' if steps != 1 else ''} {who} (fewer than "
            f"{MIN_STEPS_PER_BLOCK}): runs this short were at chance or unstable in our "
            "measurements (docs/results/user-images); raise epochs (or lower batch_size)"
        )
    return notes
