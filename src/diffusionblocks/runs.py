"""Run folders: create, train, resume, load and evaluate.

A run folder holds ``config.json`` (the resolved config), ``metrics.jsonl``, ``checkpoints/``,
``results.json`` (accounting, timing, memory and the final evaluation) and ``loss.png``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .assemble import assemble, is_model_folder, load_model_folder
from .config import SAFE_RESUME_KEYS, ConfigError, RunConfig, config_diff, config_from_dict
from .registry import make_task, read_run_config, resolve_device
from .tasks.base import Task
from .training.checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write_json,
    latest_checkpoint,
)
from .training.metrics import plot_losses
from .training.runfolder import (
    BUILTIN_DATA,
    DATA_KEYS,
    data_fingerprint,
    recorded_fingerprint,
    resolve_paths,
    write_run_config,
)
from .training.trainer import Trainer, load_model_weights


def default_run_dir(preset: str, config: RunConfig) -> Path:
    """``runs/<preset>-<method>[-B<b>]-s<seed>-<date-time>``: a new folder for every run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    blocks = f"-B{config.num_blocks}" if config.method == "dblocks" else ""
    return Path("runs") / f"{preset}-{config.method}{blocks}-s{config.seed}-{stamp}"


def _check_moved_data(run_dir, saved: RunConfig, config: RunConfig) -> None:
    """A run whose data file moved: say how to point at it; the file given must hold the same
    bytes as the one the run was trained on (the pixel normalisation, vocabulary and splits come
    from it): a changed file, another file, or a built-in dataset instead of a file is refused."""
    data, before = getattr(config, "data", None), getattr(saved, "data", None)
    if not data or (data in BUILTIN_DATA and data == before):
        return
    if (data in BUILTIN_DATA) != (before in BUILTIN_DATA):
        raise ConfigError(
            f"invalid value for 'data': {data!r} (this run was trained on {before!r}; evaluate "
            "it on the same data)"
        )
    path = Path(data).expanduser()
    if not path.exists():
        raise ConfigError(
            f"invalid value for 'data': {data} does not exist (the data this run was trained on "
            "moved?); point at it with --set data=PATH"
        )
    recorded = recorded_fingerprint(run_dir)
    if recorded is None or not path.is_file():  # an older run, or a folder: the loader speaks
        return
    if data_fingerprint(config) != recorded:
        what = ("has changed since this run was trained on it" if data == before
                else "is not the file this run was trained on")  # fmt: skip
        raise ConfigError(
            f"invalid value for 'data': {data} {what} (its sha256 differs from the recorded "
            f"{recorded[:12]}...): the pixel normalisation, vocabulary and splits come from it; "
            "evaluate with the same data"
        )


def refuse_existing_run(run_dir: Path) -> None:
    """A new run never writes into a folder that holds another run."""
    if (Path(run_dir) / "config.json").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def prepare_run_dir(
    config: RunConfig,
    run_dir: str | os.PathLike,
    resume: bool,
    preset: str | None = None,
    command: str | None = None,
    allow_safe_changes: bool = False,
) -> RunConfig:
    """Create ``run_dir`` for a new run, or check it for ``--resume``; returns the config to use.

    A new run refuses a folder that already holds a run. A resumed run keeps the folder's saved
    config; an explicitly different config is refused, naming the keys that differ.
    """
    run_dir = Path(run_dir)
    has_run = (run_dir / "config.json").exists()
    if resume:
        if not has_run:
            raise ConfigError(f"--resume: {run_dir} holds no run (no config.json)")
        saved = read_run_config(run_dir)
        if config is None:
            _check_moved_data(run_dir, saved, saved)
            return saved
        config = resolve_paths(config)
        diff = config_diff(resolve_paths(saved), config)  # older runs saved paths as typed
        _check_moved_data(run_dir, saved, config)  # a moved data file must hold the same bytes
        if not diff:
            return saved
        keys = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        unsafe = [k for k in diff if k not in (*SAFE_RESUME_KEYS, *DATA_KEYS)]
        if unsafe:
            why = (
                " ('epochs' sets each block's learning-rate schedule, a warm-up then a cosine "
                "decay over all of the block's steps: a changed value would jump the learning "
                "rate mid-run and the result would match no fresh run)"
                if "epochs" in unsafe
                else ""
            )
            raise ConfigError(
                f"--resume: the requested config differs from the one in {run_dir} ({keys}); "
                f"{', '.join(unsafe)} cannot change in a resumed run (the checkpoint would "
                f"describe another run){why}; resume without those changes, or start a new --out"
            )
        if not allow_safe_changes:
            raise ConfigError(
                f"--resume: the requested config differs from the one in {run_dir} ({keys}); "
                "these changes are safe: pass --allow-safe-changes to resume with them"
            )
        update = json.loads((run_dir / "config.json").read_text())
        update["config"] = config.to_dict()
        update.setdefault("changes", []).append(
            {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": keys, "command": command}
        )
        atomic_write_json(run_dir / "config.json", update)
        return config
    refuse_existing_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to the run folder {run_dir}: {err.strerror}") from None
    write_run_config(run_dir, config, preset, command)
    return config


def train_run(
    config: RunConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    allow_safe_changes: bool = False,
    progress: bool = True,
    preset: str | None = None,
    sweep: tuple[int, ...] | None = None,
    log=print,
    command: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run, evaluate it (sweeping ``sweep`` inference step counts, by default
    the task's ``default_sweep``), and write ``results.json`` and ``loss.png``."""
    run_dir = Path(run_dir)
    if config is not None and not resume:
        config = resolve_paths(config)
    if config.parallel:
        return train_parallel(config, run_dir, resume, progress, preset, log, command)
    if resume:
        config = prepare_run_dir(config, run_dir, resume, preset, command, allow_safe_changes)
        device = resolve_device(config.device)
        task = make_task(config, device)
    else:
        # Everything bad input can break (device, data, model) fails before the folder exists,
        # so a corrected command can reuse the same --out.
        refuse_existing_run(run_dir)
        device = resolve_device(config.device)
        task = make_task(config, device)
        config = prepare_run_dir(config, run_dir, resume, preset, command, allow_safe_changes)
    check_disk_space(run_dir, task, config)
    trainer = Trainer(task, run_dir, progress=progress, log=log)
    if resume and trainer.resume():
        log(f"resumed {run_dir} at step {trainer.step}/{trainer.total_steps}")
    info = task.describe()
    log(
        f"{config.task}/{config.method}: {info.get('parameters', 0):,} parameters, "
        f"{trainer.total_steps} steps ({trainer.steps_per_unit} per block x "
        f"{len(trainer.units)} block{'s' if len(trainer.units) != 1 else ''}) on {device}"
    )
    fitted = trainer.fit()
    trainer.prepare_evaluation()  # every block in memory, with its own shared copy if any
    steps = list(sweep or task.default_sweep or ()) or None
    evaluation = task.evaluate(quick=False, steps=steps, **with_judge({}, task))
    extra = {}
    if "val" in task.splits:  # the split every choice is made on, reported beside the test split
        extra["eval_val"] = task.evaluate(quick=False, steps=steps, split="val")
    results = {
        "run_dir": str(run_dir),
        "preset": preset,
        "command": command or _saved_command(run_dir),
        "config": config.to_dict(),
        "resolved": config.resolved(),
        "task": info,
        **fitted,
        "eval": evaluation,
        **extra,
        "environment": environment(device),
    }
    results["metrics_legend"] = metrics_legend(task)
    results["warnings"] = run_warnings(task, trainer)
    atomic_write_json(run_dir / "results.json", results)
    final = {"step": trainer.step, **split_record(evaluation)}
    if "eval_val" in extra:
        final.update(split_record(extra["eval_val"]))
    trainer.metrics.write(final)
    plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", task.plot_key, task.plot_label)
    return results


# Keys that only change inference or evaluation; `dblocks eval --set` may override them.
INFERENCE_KEYS = (
    "inference_steps",
    "temperature",
    "judge",
    "gen_prompts",
    "gen_prompt_len",
    "gen_length",
    "eval_sequences",
    "cfg_scale",
    "fid_samples",
    "grid",
    "bridge_temperature",
    "eval_batch_size",
    "test_subset",
    "device",
)


def check_disk_space(run_dir: Path, task: Task, config: RunConfig) -> None:
    """Fail before training when the folder cannot hold the checkpoints: each one holds the
    weights and two Adam moments (3x the parameters), ``keep_checkpoints`` + 1 of them at once."""
    import shutil

    params = sum(p.numel() * p.element_size() for p in task.model.parameters() if not p.is_meta)
    if not params:  # block-resident models: count one block's worth per block
        params = 1
    need = 3 * params * (config.keep_checkpoints + 1) + (16 << 20)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(
            f"not enough free disk space for checkpoints in {run_dir}: about "
            f"{need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free"
        )


def _rank_device(config) -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` under torchrun when the config asks for CUDA."""
    if config.device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return config.device


def train_parallel(config, run_dir: Path, resume, progress, preset, log, command):
    """One rank of a block-parallel run (see :mod:`diffusionblocks.training.parallel`). Rank 0
    prepares the folder; at the end it assembles the blocks and evaluates the model."""
    import torch.distributed as dist

    from .training.parallel import (
        PARALLEL_HASH_IGNORE,
        ParallelTrainer,
        barrier,
        init_distributed,
        shutdown,
    )

    ctx = init_distributed(config)
    try:
        if not resume:  # bad input (device, data, model) fails before the folder is touched
            task = make_task(config, resolve_device(_rank_device(config)))
        if ctx.rank == 0:
            existing = (run_dir / "config.json").exists()
            if existing and not resume:
                saved = read_run_config(run_dir)
                if saved.config_hash(ignore=PARALLEL_HASH_IGNORE) != config.config_hash(
                    ignore=PARALLEL_HASH_IGNORE
                ):
                    raise ConfigError(
                        f"{run_dir} holds a run with another config; choose another --out"
                    )  # same config: (re)train the selected blocks into it
            else:
                prepare_run_dir(config, run_dir, resume, preset, command)
        barrier(ctx)
        if resume:
            config = _resumable(config, run_dir)
            task = make_task(config, resolve_device(_rank_device(config)))
        check_disk_space(run_dir, task, config)
        trainer = ParallelTrainer(task, run_dir, ctx, progress=progress, log=log)
        if resume and trainer.resume():
            log(f"rank {ctx.rank}: resumed block {ctx.block} at step {trainer.step}")
        log(
            f"rank {ctx.rank}/{ctx.world}: block {ctx.block} (data shard {ctx.dp_rank}/{ctx.dp}), "
            f"{trainer.total_steps} synchronous steps, shared={config.shared_policy}"
        )
        fitted = trainer.fit()
        record = {
            "rank": ctx.rank,
            "block": ctx.block,
            # What this process held: its own block only (checked by the tests).
            "materialized_blocks": [
                u for u in range(len(task.model.blocks)) if task.model.block_is_materialized(u)
            ],
            "optimizer_units": sorted(trainer.optimizers),
            "data_shard": [ctx.dp_rank, ctx.dp],
            # The examples this process trained on in its first epoch (the data shards' audit).
            "first_epoch_indices": sorted(trainer.first_epoch_indices),
            **fitted,
        }
        if ctx.world > 1:
            gathered = [None] * ctx.world
            dist.all_gather_object(gathered, record)
        else:
            gathered = [record]
        if ctx.rank != 0:
            return {"rank": ctx.rank, **record}
        model_dir = assemble(run_dir)
        model_task, _ = load_run(model_dir)
        sweep = model_task.default_sweep
        evaluation = model_task.evaluate(quick=False, steps=list(sweep) if sweep else None)
        results = {
            "run_dir": str(run_dir),
            "preset": preset,
            "command": command or _saved_command(run_dir),
            "config": config.to_dict(),
            "resolved": config.resolved(),
            "task": task.describe(),
            "parallel": {"world": ctx.world, "dp": ctx.dp, "shared": config.shared_policy},
            "ranks": gathered,
            "accounting": _merge_accounting([r["accounting"] for r in gathered]),
            "timing": {
                "train_seconds": max(r["timing"]["train_seconds"] for r in gathered),
                "median_step_seconds": gathered[0]["timing"]["median_step_seconds"],
            },
            "memory": {
                "train_peak_rss_bytes": max(r["memory"]["train_peak_rss_bytes"] for r in gathered),
                "per_rank_train_peak_rss_bytes": [
                    r["memory"]["train_peak_rss_bytes"] for r in gathered
                ],
            },
            "eval": evaluation,
            "environment": environment(task.model.device),
        }
        atomic_write_json(run_dir / "results.json", results)
        return results
    finally:
        shutdown(ctx)


def _merge_accounting(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's accounting from its ranks: steps per block from the ranks that trained it,
    layer evaluations summed over ranks."""
    merged = dict(records[0])
    per_rank = [r["steps_per_unit"] for r in records]
    merged["steps_per_unit"] = [max(col) for col in zip(*per_rank, strict=True)]
    for key in ("layer_evaluations", "backward_layer_evaluations", "compute_layer_units",
                "examples_seen"):  # fmt: skip
        merged[key] = sum(r[key] for r in records)
    merged["trained_units"] = sorted({u for r in records for u in r["trained_units"]})
    return merged


def _resumable(config, run_dir: Path):
    """Resuming keeps the folder's config (the selected blocks may differ)."""
    saved = read_run_config(run_dir)
    values = {**saved.to_dict(), "blocks": config.blocks, "parallel": True,
              "shared_init": config.shared_init}  # fmt: skip
    return config_from_dict(type(config), values)


def load_run(
    run_dir: str | os.PathLike,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Task, Checkpoint]:
    """The task of a run folder with the weights of its latest checkpoint loaded. ``overrides``
    may change inference-only keys (:data:`INFERENCE_KEYS`)."""
    saved = config = read_run_config(run_dir)
    if overrides:
        bad = [k for k in overrides if k not in INFERENCE_KEYS + DATA_KEYS]
        if bad:
            raise ConfigError(
                f"eval --set can only change inference keys ({', '.join(INFERENCE_KEYS)}) and "
                f"where the data is ({', '.join(DATA_KEYS)}); got {', '.join(bad)}"
            )
        values = {**config.to_dict(), **overrides}
        config = resolve_paths(config_from_dict(type(config), values))
    _check_moved_data(run_dir, saved, config)
    task = make_task(config, resolve_device(device or config.device))
    folder = Path(run_dir)
    no_checkpoint = latest_checkpoint(folder / "checkpoints") is None
    if not is_model_folder(folder) and is_model_folder(folder / "model") and no_checkpoint:
        folder = folder / "model"  # a block-parallel run: its assembled model
    if is_model_folder(folder):
        load_model_folder(task, folder)
        task.source = str(folder)
        card = json.loads((folder / "config.json").read_text())
        steps = [b["step"] for b in card.get("blocks", {}).values()] or [card.get("step", 0)]
        return task, ModelFolder(folder, int(max(steps)))
    path = latest_checkpoint(folder / "checkpoints")
    if path is None:
        hint = (
            " (a block-parallel run: assemble it with `dblocks assemble`)"
            if (folder / "blocks").is_dir()
            else " (train it first)"
        )
        raise CheckpointError(f"{run_dir} has no checkpoint yet{hint}")
    ckpt = Checkpoint(path)
    if ckpt.meta.get("task") != config.task or ckpt.meta.get("units") != len(task.model.blocks):
        raise CheckpointError(
            f"{path} is for task {ckpt.meta.get('task')!r} with {ckpt.meta.get('units')} units, "
            f"but {run_dir}/config.json describes {config.task!r} with {len(task.model.blocks)}"
        )
    load_model_weights(task.model, ckpt)
    task.source = str(run_dir)
    return task, ckpt


class ModelFolder:
    """Stands in for a checkpoint when a model folder is loaded."""

    def __init__(self, path: Path, step: int):
        self.path, self.step = path, step


def evaluate_run(
    run_dir: str | os.PathLike,
    steps: list[int] | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate the latest checkpoint of a run. ``options`` go to the task (e.g. ``fid_samples``,
    ``inception`` for image generation)."""
    task, ckpt = load_run(run_dir, device, overrides)
    result = evaluate_task(task, steps, **options)
    return {"run_dir": str(run_dir), "checkpoint_step": ckpt.step, **result}


def evaluate_task(task: Task, steps: list[int] | None = None, **options: Any) -> dict[str, Any]:
    """The full evaluation of a loaded task, as ``dblocks eval`` and ``Model.evaluate`` run it:
    the task's ``default_sweep`` of inference step counts unless ``steps`` is given, ``split``
    is checked against the task's splits, and a language-model judge given by path is loaded."""
    if steps is None and task.default_sweep:
        steps = list(task.default_sweep)
    options = {k: v for k, v in options.items() if v not in (None, False)}
    split = options.pop("split", None)
    if split is not None and split not in task.splits:
        raise ConfigError(
            f"invalid value for 'split': {split!r} ({task.config.task} runs have the splits "
            f"{', '.join(task.splits)}; validation splits for every task are still to come)"
        )
    if split is not None and len(task.splits) > 1:
        options["split"] = split
    return task.evaluate(quick=False, steps=steps, **with_judge(options, task))


def with_judge(options: dict[str, Any], task: Task) -> dict[str, Any]:
    """``options`` with the language-model judge (``judge=PATH`` given, or the run's ``judge``
    key) loaded: tasks score with a loaded model and never read run folders themselves."""
    if not hasattr(task.config, "judge"):
        return options
    judge = options.get("judge") or task.config.judge
    if isinstance(judge, (str, os.PathLike)):
        options = {**options, "judge": load_run(judge, str(task.device))[0]}
    return options


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
    steps = trainer.steps_per_unit
    if steps < MIN_STEPS_PER_BLOCK:
        who = "per block" if task.config.method == "dblocks" else "(end to end)"
        notes.append(
            f"only {steps} optimizer step{'s' if steps != 1 else ''} {who} (fewer than "
            f"{MIN_STEPS_PER_BLOCK}): runs this short were at chance or unstable in our "
            "measurements (docs/results/user-images); raise epochs (or lower batch_size)"
        )
    return notes


def _saved_command(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "config.json").read_text()).get("command")
    except (OSError, json.JSONDecodeError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def split_record(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a final evaluation as one metrics record, each key prefixed with the split
    it was measured on (``test_accuracy``, ``test_examples``); a key that already names the
    split is not prefixed again (never ``test_test_examples``)."""
    prefix = f"{evaluation.get('split', 'test')}_"
    return {k if k.startswith(prefix) else prefix + k: v for k, v in _flat(evaluation)}


def _flat(d: dict[str, Any]):
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, v


def load_pretrained(path: str | os.PathLike, device: str | None = None) -> Task:
    """The task (data, network with weights) of an assembled model folder or a run folder."""
    task, _ = load_run(path, device)
    return task
