"""Names -> classes, in one place: tasks, methods and presets. Strings from the command line
become classes here and nowhere else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, RunConfig, build_config, config_from_dict
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
}

# preset name -> (task, overrides, one-line description)
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "tiny": (
        "classification",
        dict(
            data="digits",
            depth=4,
            hidden=32,
            heads=2,
            patch_size=2,
            num_blocks=2,
            epochs=1,
            batch_size=64,
            lr=2e-3,
            log_every=5,
            eval_subset=200,
            eval_batch_size=200,
        ),
        "smoke test (seconds on a CPU; its accuracy means nothing): 8x8 digits, 4-layer ViT "
        "(hidden 32), B=2",
    ),
    "images": (
        "classification",
        dict(
            data="",  # the user's .npz: --set data=PATH
            depth=6,
            hidden=64,
            heads=4,
            patch_size=0,  # auto: 4 to 8 patches along each side
            num_blocks=3,
            epochs=20,
            batch_size=64,
            lr=2e-3,
            p_mean=1.0,
            weighting="none",
            log_every=20,
        ),
        "start here for your own images (--set data=PATH.npz): 6-layer ViT (hidden 64), patch "
        "sized to the image, B=3, 20 epochs per block; noise setting and epochs chosen on "
        "validation splits (docs/results/user-images/)",
    ),
    "vit-fmnist": (
        "classification",
        dict(
            data="fashion-mnist",
            depth=6,
            hidden=64,
            heads=4,
            patch_size=7,
            num_blocks=3,
            epochs=5,
            batch_size=128,
            lr=2e-3,
            p_mean=1.0,
            weighting="none",
            log_every=50,
        ),
        "paper-like: Fashion-MNIST (60k), 6-layer ViT (hidden 64, patch 7), B=3, 5 epochs per "
        "block; P_mean=1 and no loss weighting (measured, see docs/experiments.md)",
    ),
    "vit-fmnist-quick": (
        "classification",
        dict(
            data="fashion-mnist",
            depth=6,
            hidden=64,
            heads=4,
            patch_size=7,
            num_blocks=3,
            epochs=3,
            batch_size=128,
            lr=2e-3,
            p_mean=1.0,
            weighting="none",
            train_subset=20000,
            log_every=20,
        ),
        "a few CPU minutes per method: as vit-fmnist on 20k training images, 3 epochs",
    ),
    "bench": (
        "classification",
        dict(
            data="fashion-mnist",
            depth=12,
            hidden=128,
            heads=4,
            patch_size=4,
            num_blocks=3,
            epochs=1,
            batch_size=128,
            lr=1e-3,
            train_subset=2048,
            test_subset=512,
            log_every=10,
        ),
        "memory/speed benchmark: 12-layer ViT (hidden 128, patch 4, 50 tokens), batch 128",
    ),
    "dit-fmnist": (
        "generation",
        dict(
            data="fashion-mnist",
            depth=12,
            hidden=64,
            heads=4,
            patch_size=7,
            num_blocks=3,
            epochs=3,
            batch_size=128,
            lr=1e-3,
            overlap=0.05,
            inference_steps=50,
            cfg_scale=2.0,
            fid_samples=2000,
            log_every=50,
        ),  # fmt: skip
        "paper-like: class-conditional DiT on Fashion-MNIST, 12 layers (hidden 64, patch 7), "
        "B=3, 3 epochs per block, Euler 50 steps, CFG 2 (sized for a CPU)",
    ),
    "dit-tiny": (
        "generation",
        dict(
            data="fashion-mnist",
            train_subset=512,
            test_subset=200,
            depth=2,
            hidden=32,
            heads=2,
            patch_size=7,
            num_blocks=2,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            inference_steps=6,
            fid_samples=100,
            eval_batch_size=100,
            log_every=4,
        ),
        "smoke test (seconds on a CPU; its samples mean nothing): 512 Fashion-MNIST images, "
        "2-layer DiT, B=2",
    ),
    "mdm-shakespeare": (
        "masked-lm",
        dict(
            data="shakespeare",
            seq_len=128,
            depth=6,
            hidden=128,
            heads=4,
            num_blocks=3,
            overlap=0.05,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            eval_draws=8,
            eval_sequences=512,
            inference_steps=128,
            log_every=50,
        ),  # fmt: skip
        "paper-like masked diffusion LM: Shakespeare characters (Hamlet held out), sequences "
        "of 128, 6-layer bidirectional transformer (hidden 128), B=3, gamma 0.05",
    ),
    "mdm-tiny": (
        "masked-lm",
        dict(
            data="shakespeare",
            seq_len=32,
            train_subset=256,
            depth=2,
            hidden=32,
            heads=2,
            num_blocks=2,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            eval_draws=2,
            eval_sequences=32,
            eval_subset=16,
            inference_steps=8,
            log_every=4,
        ),  # fmt: skip
        "smoke test (seconds on a CPU; its metrics mean nothing): 256 Shakespeare sequences of "
        "32 characters, 2 layers, B=2",
    ),
    "ar-shakespeare": (
        "autoregressive",
        dict(
            data="shakespeare",
            seq_len=128,
            depth=8,
            hidden=128,
            heads=4,
            num_blocks=4,
            overlap=0.1,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            eval_sequences=256,
            gen_prompts=16,
            log_every=50,
        ),  # fmt: skip
        "paper-like autoregressive LM: Shakespeare characters (Hamlet held out), sequences of "
        "128, 8-layer causal transformer (hidden 128), B=4, gamma 0.1",
    ),
    "ar-tiny": (
        "autoregressive",
        dict(
            data="shakespeare",
            seq_len=32,
            train_subset=256,
            depth=4,
            hidden=32,
            heads=2,
            num_blocks=2,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            eval_sequences=16,
            eval_subset=8,
            gen_prompts=2,
            gen_prompt_len=8,
            gen_length=12,
            log_every=4,
        ),  # fmt: skip
        "smoke test (seconds on a CPU; its metrics mean nothing): 256 Shakespeare sequences of "
        "32 characters, 4 layers, B=2",
    ),
    "recurrent-shakespeare": (
        "recurrent",
        dict(
            data="shakespeare",
            seq_len=128,
            hidden=128,
            heads=4,
            prelude=2,
            core=4,
            coda=2,
            depth=8,
            mean_iterations=16,
            truncation=4,
            inference_steps=16,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            eval_sequences=256,
            gen_prompts=16,
            log_every=50,
        ),  # fmt: skip
        "paper-like recurrent depth: 2 prelude, 4-layer core, 2 coda (hidden 128), Shakespeare "
        "characters; bptt: 16 iterations on average, backprop through 4",
    ),
    "recurrent-tiny": (
        "recurrent",
        dict(
            data="shakespeare",
            seq_len=32,
            train_subset=256,
            hidden=32,
            heads=2,
            prelude=1,
            core=2,
            coda=1,
            depth=4,
            mean_iterations=4,
            truncation=2,
            inference_steps=4,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            eval_sequences=16,
            eval_subset=8,
            gen_prompts=2,
            gen_prompt_len=8,
            gen_length=12,
            log_every=4,
        ),  # fmt: skip
        "smoke test (seconds on a CPU; its metrics mean nothing): 1 prelude, 2-layer core, 1 "
        "coda (hidden 32)",
    ),
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
    return build_config(config_cls, {**values, **(overrides or {})})


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


def make_task(config: RunConfig, device: torch.device | None = None) -> Task:
    """Build the task (data and network) that ``config`` describes."""
    _, methods = TASKS[config.task]
    return methods[config.method](config, device or resolve_device(config.device))


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
