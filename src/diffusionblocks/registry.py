"""Names -> classes, in one place: tasks, methods and presets. Strings from the command line
become classes here and nowhere else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import (
    ConfigError,
    RunConfig,
    build_config,
    config_from_dict,
    flat_keys,
    parse_assignments,
)
from .tasks import autoregressive, classification, generation, masked_lm, recurrent, stack
from .tasks.autoregressive import ARConfig, BlockwiseAR, EndToEndAR
from .tasks.base import Task
from .tasks.classification import (
    BlockwiseClassification,
    ClassificationConfig,
    EndToEndClassification,
)
from .tasks.generation import BlockwiseGeneration, EndToEndGeneration, GenerationConfig
from .tasks.masked_lm import BlockwiseMaskedLM, EndToEndMaskedLM, MaskedLMConfig
from .tasks.recurrent import BlockwiseRecurrent, RecurrentConfig, TruncatedBPTTRecurrent
from .tasks.stack import BlockwiseStack, EndToEndStack, StackConfig

# task name -> (config class, {method: task class})
TASKS: dict[str, tuple[type[RunConfig], dict[str, type[Task]]]] = {
    "classification": (
        ClassificationConfig,
        {"dblocks": BlockwiseClassification, "e2e": EndToEndClassification},
    ),
    "generation": (
        GenerationConfig,
        {"dblocks": BlockwiseGeneration, "e2e": EndToEndGeneration},
    ),
    "masked-lm": (
        MaskedLMConfig,
        {"dblocks": BlockwiseMaskedLM, "e2e": EndToEndMaskedLM},
    ),
    "autoregressive": (ARConfig, {"dblocks": BlockwiseAR, "e2e": EndToEndAR}),
    "recurrent": (
        RecurrentConfig,
        {"dblocks": BlockwiseRecurrent, "bptt": TruncatedBPTTRecurrent},
    ),
    "stack": (StackConfig, {"dblocks": BlockwiseStack, "e2e": EndToEndStack}),
}

# preset name -> (task, overrides, one-line description), gathered from the task modules
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    name: (task, values, text)
    for task, module in (
        ("classification", classification),
        ("generation", generation),
        ("masked-lm", masked_lm),
        ("autoregressive", autoregressive),
        ("recurrent", recurrent),
        ("stack", stack),
    )
    for name, (values, text) in module.PRESETS.items()
}

# Starting points for a user's own text (--set data=PATH): the paper-like Shakespeare settings.
for _task, _source in (("mdm", "mdm-shakespeare"), ("ar", "ar-shakespeare"),
                       ("recurrent", "recurrent-shakespeare")):  # fmt: skip
    _kind, _values, _ = PRESETS[_source]
    PRESETS[f"{_task}-text"] = (
        _kind,
        {**_values, "data": ""},
        f"start here for your own text (--set data=PATH, a UTF-8 file): the {_source} "
        "settings, character level",
    )


def preset_names() -> list[str]:
    return sorted(PRESETS)


def make_config(preset: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config of ``preset`` with ``overrides`` (strings or typed values) applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(preset_names())}")
    task, values, _ = PRESETS[preset]
    config_cls = TASKS[task][0]
    base = flat_keys(config_cls, values)  # the overrides win over the preset, by any name
    given = flat_keys(config_cls, overrides or {})
    values = {**base, **given}
    if values.get("pretrained"):  # a pretrained model fixes the shape and the tokenizer
        from .tasks.charlm import with_pretrained

        values = with_pretrained(values, given)
    return build_config(config_cls, values)


def preset_overrides(preset: str, items: list[str]) -> dict[str, Any]:
    """``--set`` items for ``preset`` as flat keys (``noise.p_mean`` -> ``p_mean``,
    ``block_order`` -> ``schedule``), so that a command may add or replace keys of its own."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(preset_names())}")
    return flat_keys(config_class(PRESETS[preset][0]), parse_assignments(items))


def config_class(task: str) -> type[RunConfig]:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; this version knows {', '.join(TASKS)}")
    return TASKS[task][0]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu. A CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"invalid value for 'device': {name!r} (CUDA is not available here)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"invalid value for 'device': {name!r} (MPS is not available here)")
    return device


def task_class(config: RunConfig) -> type[Task]:
    """The class of the task ``config`` describes (the baseline's variants, ``e2e-shallow`` and
    ``e2e-ckpt``, are the baseline's class built from their config)."""
    _, methods = TASKS[config.task]
    return methods[config.base_method]


def make_task(config: RunConfig, device: torch.device | None = None) -> Task:
    """Build the task (data and network) that ``config`` describes (:func:`task_class`)."""
    return task_class(config)(config, device or resolve_device(config.device))


def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The config saved in a run folder (or an assembled model folder), as its task's class."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: {run_dir} is not a run folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is corrupt: {err}") from None
    if not isinstance(data, dict) or "config" not in data:
        raise ConfigError(f"{path} has no 'config' entry: not written by dblocks")
    cfg = data["config"]
    if not isinstance(cfg, dict) or "task" not in cfg:
        raise ConfigError(f"{path}: the config names no task")
    return config_from_dict(config_class(cfg["task"]), cfg)
