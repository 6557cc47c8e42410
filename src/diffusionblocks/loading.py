"""Run and model folders, loaded and evaluated: the task of a folder with its latest weights
(:func:`load_run`), its full evaluation (:func:`evaluate_run`, :func:`evaluate_task`), and the
checks that a moved data file is the one the run was trained on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, flat_keys
from .data.base import CARD_ONLY, DataError
from .registry import make_task, read_run_config, resolve_device
from .runtime import running
from .tasks.base import Task
from .training.runfolder import (
    BUILTIN_DATA,
    DATA_KEYS,
    check_run_files,
    data_fingerprint,
    recorded_fingerprint,
    resolve_paths,
    with_run_tokenizer,
)
from .training.weights import SavedWeights, install_weights, read_weights

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
    "readout",
    "final_eval",
    "eval_batch_size",
    "test_subset",
    "device",
    "threads",
)


def check_moved_data(run_dir: str | os.PathLike, saved: RunConfig, config: RunConfig) -> None:
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


def load_run(
    run_dir: str | os.PathLike,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Task, SavedWeights]:
    """The task of a run or model folder with its latest weights loaded (read by
    :func:`~.training.weights.read_weights`: an assembled model, a single-process run's latest
    checkpoint, or a block-parallel run's blocks, assembled or not), and those weights (their
    ``step`` and ``path``). ``overrides`` may change inference-only keys
    (:data:`INFERENCE_KEYS`)."""
    saved = config = read_run_config(run_dir)
    if overrides:
        overrides = flat_keys(type(config), overrides)
        bad = [k for k in overrides if k not in INFERENCE_KEYS + DATA_KEYS]
        if bad:
            raise ConfigError(
                f"eval --set can only change inference keys ({', '.join(INFERENCE_KEYS)}) and "
                f"where the data is ({', '.join(DATA_KEYS)}); got {', '.join(bad)}"
            )
        values = {**config.to_dict(), **overrides}
        config = resolve_paths(config_from_dict(type(config), values))
    check_moved_data(run_dir, saved, config)
    task = make_task(with_run_tokenizer(config, run_dir), resolve_device(device or config.device))
    check_run_files(run_dir, task.run_files())  # a subword run's tokenizer.json
    weights = read_weights(run_dir, saved)  # checked against the config it was trained with
    install_weights(task.model, weights)
    model_folder = weights.info.get("layout") == "model folder"
    task.source = str(weights.path.parent if model_folder else run_dir)
    return task, weights


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
    if task.from_card:
        raise DataError(CARD_ONLY)
    if steps is None:
        steps = task.final_sweep()
    options = {k: v for k, v in options.items() if v not in (None, False)}
    split = options.pop("split", None)
    if split is not None and split not in task.splits:
        if split == "val":
            raise ConfigError(
                f"invalid value for 'split': 'val' (this {task.config.task} run holds out no "
                "validation data: its val_fraction is 0, or it was trained before val_fraction "
                "existed; every part of its training data was trained on, so evaluate it on "
                "--split test, or train a new run with val_fraction > 0)"
            )
        raise ConfigError(
            f"invalid value for 'split': {split!r} (this {task.config.task} run has the splits "
            f"{', '.join(task.splits)})"
        )
    if split is not None and len(task.splits) > 1:
        options["split"] = split
    options = with_judge(options, task)
    with running(task):  # the config's threads and precision
        return task.evaluate(quick=False, steps=steps, **options)


def with_judge(options: dict[str, Any], task: Task) -> dict[str, Any]:
    """``options`` with the language-model judge (``judge=PATH`` given, or the run's ``judge``
    key) loaded: tasks score with a loaded model and never read run folders themselves."""
    if not hasattr(task.config, "judge"):
        return options
    judge = options.get("judge") or task.config.judge
    if isinstance(judge, (str, os.PathLike)):
        options = {**options, "judge": load_run(judge, str(task.device))[0]}
    return options


def load_pretrained(path: str | os.PathLike, device: str | None = None) -> Task:
    """The task (data, network with weights) of an assembled model folder or a run folder."""
    task, _ = load_run(path, device)
    return task
