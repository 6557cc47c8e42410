"""Run and model folders, loaded and evaluated: the task of a folder with its latest weights
(:func:`load_run`), its full evaluation (:func:`evaluate_run`, :func:`evaluate_task`), the
checks that a moved data file is the one the run was trained on, and a model folder saved with
``save_pretrained`` built from its data card without the data (:func:`has_data_card`,
:func:`load_card_folder`, loading its weights strictly: :func:`strict_weights`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, flat_keys
from .data.base import CARD_ONLY, DataError
from .data.card import CARD_FORMAT, building_from
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
    if has_data_card(run_dir):  # a save_pretrained folder: its code/ and pretrained/ are its own
        named = code_key(config.to_dict())
        key = named[0] if named else ("pretrained" if getattr(config, "pretrained", "") else "")
        if key:
            raise ConfigError(
                f"invalid value for '{key}': {getattr(config, key)} (a Hub folder of your own "
                "network or of a fine-tuned pretrained model loads with "
                "DiffusionBlocksModel.from_pretrained, which reads its code and architecture "
                "from the folder)"
            )
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


# -- model folders with a data card (saved with save_pretrained: hub.py) -----------------------
MODEL_FORMAT = "diffusionblocks-model"  # config.json's "format", as dblocks assemble writes it


def has_data_card(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a model folder whose config.json holds a data card."""
    try:
        saved = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    card = saved.get("data_card") if isinstance(saved, dict) else None
    return isinstance(card, dict) and card.get("format") == CARD_FORMAT


def load_card_folder(
    folder: Path,
    device: str | None,
    options: dict[str, Any],
    what: str,
    trust_code: bool = False,
) -> tuple[Task, SavedWeights, dict[str, Any]]:
    """The task of a model folder built from its data card, without the data (``data/card.py``),
    on ``device`` (default: the config's, as :func:`load_run`), its weights loaded strictly
    (:func:`strict_weights`), and the folder's config.json. ``options``: inference keys
    (:data:`INFERENCE_KEYS`, ``device`` included); ``what`` names the caller in refusals. A
    config naming code is refused before it is parsed unless ``trust_code``
    (:func:`check_card_config`); one naming files from elsewhere always."""
    saved = read_model_config(folder)
    card = saved.get("data_card")
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DataError(
            f"{folder} has no data card (an assembled model folder, not one saved with "
            "save_pretrained): load it with diffusionblocks.load, which reads its data"
        )
    # parsed (grouped and dotted keys resolved; parsing imports and reads nothing), then checked
    # before anything is built
    config = read_run_config(folder)
    inside = check_card_config(config.to_dict(), folder, trust_code)
    if inside:  # the folder's own code (trusted) and pretrained architecture
        config = config_from_dict(type(config), {**config.to_dict(), **inside})
    if options:
        given = flat_keys(type(config), {k: str(v) for k, v in options.items()})
        bad = sorted(k for k in given if k not in INFERENCE_KEYS)
        if bad:
            raise ConfigError(f"{what} has no option {', '.join(bad)} (it takes inference "
                              f"keys: {', '.join(INFERENCE_KEYS)})")  # fmt: skip
        config = config_from_dict(type(config), {**config.to_dict(), **given})
    with building_from(card):
        task = make_task(config, resolve_device(device or config.device))
    weights = strict_weights(folder, task, config)
    task.source = str(folder)
    return task, weights, saved


# Where a Hub folder keeps the code of your own network or layers (``model=`` / ``layer=``)
CODE_FOLDER = "code"
# Where a Hub folder of a fine-tuned pretrained model keeps that model's config.json
PRETRAINED_FOLDER = "pretrained"


def code_key(config: dict[str, Any]) -> tuple[str, str] | None:
    """The key that names your code in a config (``model``, or ``layer`` other than the
    built-in and ``hf:`` layers) and its value; None for a config of built-in parts."""
    if config.get("model"):
        return "model", str(config["model"])
    layer = str(config.get("layer", "") or "")
    if layer and not layer.startswith("hf:"):
        return "layer", layer
    return None


def check_card_config(
    config: dict[str, Any], folder: Path | None = None, trust_code: bool = False
) -> dict[str, str]:
    """Check a config a Hub folder holds, before anything is built; refusals name the key.
    Saving (``folder`` None): a config naming your code passes (the folder gets a copy of the
    file), and a fine-tuned ``pretrained`` model's config.json must be there (the folder gets a
    copy). Loading from ``folder``: ``pretrained`` must be the folder's own ``pretrained/`` (no
    other folder is read); a config naming code (``model``, ``layer``) is refused unless
    ``trust_code``, so that a downloaded config.json never runs code nobody asked for; trusted,
    a ``FILE.py`` reference must be a file of the folder's own ``code/`` (not a link out of it),
    and a ``package.module:NAME`` is imported from the installed packages. ``config`` is the
    parsed config (its ``to_dict()``: grouped keys resolved). Returns the overrides that point
    those keys into the folder."""
    overrides: dict[str, str] = {}
    pretrained = str(config.get("pretrained", "") or "")
    if pretrained and folder is None:  # saving: the folder gets its config.json
        if not (Path(pretrained).expanduser() / "config.json").is_file():
            raise ConfigError(f"invalid value for 'pretrained': {pretrained} (its config.json, "
                              "the architecture, is not there to copy into the model folder; "
                              "give its new place with --set pretrained=PATH)")  # fmt: skip
    elif pretrained and folder is not None:  # loading: the folder's own pretrained/config.json
        own = folder / PRETRAINED_FOLDER
        if pretrained != PRETRAINED_FOLDER or not (own / "config.json").is_file():
            raise ConfigError(
                f"invalid value for 'pretrained': {pretrained} (a model folder's pretrained "
                f"architecture is its own {PRETRAINED_FOLDER}/config.json, saved with it)"
            )
        overrides["pretrained"] = str(own)
    named = code_key(config)
    if folder is None or named is None:
        return overrides
    key, value = named
    where, _, name = value.rpartition(":")
    if not trust_code:
        raise ConfigError(
            f"invalid value for '{key}': {value} is code that building this model runs (your "
            "network's); read it, then load with trust_code=True (dblocks sample --trust-code)"
        )
    if not where.endswith(".py"):
        return overrides  # package.module:NAME: trusted, imported from the installed packages
    parts = Path(where).parts
    file = folder / where
    code_folder = (folder / CODE_FOLDER).resolve()
    if (len(parts) != 2 or parts[0] != CODE_FOLDER or not file.is_file()
            or file.resolve().parent != code_folder):  # fmt: skip
        raise ConfigError(
            f"invalid value for '{key}': {value} (a model folder's code is a file in its "
            f"{CODE_FOLDER}/ folder, saved with it)"
        )
    return {**overrides, key: f"{file}:{name}"}


def read_model_config(folder: Path) -> dict[str, Any]:
    """The config.json of a diffusionblocks model folder; another file is refused."""
    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{folder}/config.json is missing or unreadable: {err}") from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise DataError(f"{folder} is not a diffusionblocks model folder (its config.json "
                        f"has no 'format': '{MODEL_FORMAT}')")  # fmt: skip
    return saved


def strict_weights(folder: Path, task: Any, config: RunConfig) -> Any:
    """Load ``folder``'s weights into ``task.model`` with every tensor present, none extra, every
    shape right: the shared modules and blocks (``install_weights`` checks them), and the per-
    block copies of the shared modules, exactly one per block with the shared state's keys (the
    targets excepted) when the config's ``shared`` policy keeps copies, none otherwise."""
    from .training.weights import CheckpointError, install_weights, model_folder_weights

    weights = model_folder_weights(folder)
    model = task.model
    blocks = len(model.blocks)
    copies = config.shared in ("block-copies", "per-block") and not config.end_to_end
    found = sorted(weights.variants)
    if found != (list(range(blocks)) if copies else []):
        raise CheckpointError(
            f"{folder}/model.safetensors holds per-block copies of the shared modules for blocks "
            f"{found}; this model ({config.shared=!s}, {blocks} blocks) needs "
            + (f"one for each of blocks 0..{blocks - 1}" if copies else "none")
        )
    if copies:
        targets = tuple(task.target_prefixes())
        layout = {k: v.shape for k, v in model.state_dict().items()
                  if not k.startswith(("blocks.", *targets))}  # fmt: skip
        for b, read in weights.variants.items():
            state = read()
            wrong = sorted(set(layout) ^ set(state)) or sorted(
                k for k in layout if tuple(state[k].shape) != tuple(layout[k]))  # fmt: skip
            if wrong:
                raise CheckpointError(f"{folder}/model.safetensors: block {b}'s copy of the shared "
                                      f"modules does not fit this model ({wrong[0]})")  # fmt: skip
    install_weights(model, weights)
    return weights
