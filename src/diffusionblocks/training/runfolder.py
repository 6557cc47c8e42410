"""What makes a folder a run folder: ``config.json`` with the resolved config.

Written by ``dblocks train`` before training starts and by a :class:`~.trainer.Trainer` given a
``run_dir`` that has none (training from Python), so that ``dblocks eval``/``sample``/``assemble``
and :func:`diffusionblocks.load` accept either.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .. import __version__
from ..config import ConfigError, RunConfig, config_from_dict, dict_hash
from ..data.images import IMAGE_DATASETS, TEXT_DATASETS
from .checkpoint import (
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)

CONFIG_FILE = "config.json"
# config keys that may name files (``tokenizer`` only when it names a .json file)
PATH_KEYS = ("data", "data_dir", "shared_init", "judge", "tokenizer", "pretrained")
BUILTIN_DATA = IMAGE_DATASETS + TEXT_DATASETS  # dataset names, not paths
# Where a run's data (and its network's code) lives: a moved file (same bytes for data) may be
# pointed at on eval, sample, resume.
CODE_KEYS = ("model", "layer")  # config keys that may name a function in a user's file
# ``tokenizer``: its file may move; the run's tokenizer.json is checked against it by content
DATA_KEYS = ("data", "data_dir", "pretrained", "tokenizer", *CODE_KEYS)


def resolve_paths(config: RunConfig) -> RunConfig:
    """``config`` with every file or folder it names as an absolute path (``~`` expanded), so
    that the run folder keeps working from another directory. Built-in dataset names stay."""
    values = config.to_dict()
    changed = False
    for key in CODE_KEYS:  # FILE.py:NAME of the user's network or layers
        value = values.get(key)
        if isinstance(value, str) and ".py:" in value:
            file, _, name = value.rpartition(":")
            if Path(file).expanduser().is_file():
                resolved = f"{Path(file).expanduser().resolve()}:{name}"
                changed |= resolved != value
                values[key] = resolved
    for key in PATH_KEYS:
        value = values.get(key)
        if not isinstance(value, str) or not value or value in BUILTIN_DATA:
            continue
        if key == "tokenizer" and not value.endswith(".json"):  # char, bpe:N
            continue
        path = Path(value).expanduser()
        if path.exists() or value.startswith("~"):
            resolved = str(path.resolve())
            changed |= resolved != value
            values[key] = resolved
    return config_from_dict(type(config), values) if changed else config


def data_fingerprint(config: RunConfig) -> str | None:
    """sha256 of the data file a config names (None for a built-in dataset or a folder)."""
    data = getattr(config, "data", None)
    if not data or data in BUILTIN_DATA or not Path(data).expanduser().is_file():
        return None
    return sha256_file(Path(data).expanduser())


def recorded_fingerprint(run_dir: str | os.PathLike) -> str | None:
    """The data sha256 recorded in a run (or model) folder's ``config.json``, if any."""
    try:
        card = json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return card.get("data_sha256") if isinstance(card, dict) else None


def write_run_config(
    run_dir: str | os.PathLike,
    config: RunConfig,
    preset: str | None = None,
    command: str | None = None,
    **extra: object,
) -> Path:
    """Write ``run_dir/config.json`` (atomically): the config with absolute paths, how it was
    made, when, and the sha256 of its data file."""
    path = Path(run_dir) / CONFIG_FILE
    config = resolve_paths(config)
    atomic_write_json(
        path,
        {
            "config": config.to_dict(),
            "data_sha256": data_fingerprint(config),
            "preset": preset,
            "command": command,
            "config_hash": config.config_hash(),
            "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        },
    )
    return path


def saved_config_hashes(
    config: RunConfig,
    run_dir: str | os.PathLike,
    ignore: tuple[str, ...],
    older_ignores: tuple[tuple[str, ...], ...] = (),
) -> set[str]:
    """Hashes an earlier version gave the config saved in ``run_dir/config.json`` (as written
    then, without the keys added since), leaving out ``ignore`` and each of ``older_ignores``:
    what a checkpoint of an older run may carry. Empty unless the saved config is ``config``, so
    that a different config never matches."""
    try:
        saved = json.loads((Path(run_dir) / CONFIG_FILE).read_text())["config"]
        same = config_from_dict(type(config), saved).config_hash(ignore) == config.config_hash(
            ignore
        )
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {dict_hash(saved, i) for i in (ignore, *older_ignores)} if same else set()


def write_run_files(run_dir: str | os.PathLike, files: dict[str, str]) -> None:
    """Write a task's :meth:`~diffusionblocks.tasks.base.Task.run_files` into ``run_dir``."""
    for name, text in files.items():
        atomic_write_text(Path(run_dir) / name, text)


def check_run_files(run_dir: str | os.PathLike, files: dict[str, str]) -> None:
    """Refuse a run folder whose saved task files (``tokenizer.json``) differ from the task's
    rebuilt ones, or that holds one the task does not have: the weights would read other ids."""
    from ..data.tokens import TOKENIZER_FILE

    for name in {*files, TOKENIZER_FILE}:
        path = Path(run_dir) / name
        saved = path.read_text(encoding="utf-8") if path.is_file() else None
        if saved != files.get(name):
            what = "is missing" if saved is None else "is not this config's"
            if name not in files:
                what = "belongs to a subword run, but the config says tokenizer=char"
            raise ConfigError(
                f"invalid value for 'tokenizer': {path} {what} (this run's weights read the ids "
                "of the tokenizer it was trained with; keep the run's own tokenizer key)"
            )


def with_run_tokenizer(config: RunConfig, run_dir: str | os.PathLike) -> RunConfig:
    """``config``, reading the run folder's copy of its tokenizer.json when the file the config
    names (``tokenizer=PATH.json``) is gone or moved; :func:`check_run_files` then checks it."""
    from ..data.tokens import TOKENIZER_FILE

    value = getattr(config, "tokenizer", "")
    copy = Path(run_dir) / TOKENIZER_FILE
    if value.endswith(".json") and not Path(value).expanduser().is_file() and copy.is_file():
        return config_from_dict(type(config), {**config.to_dict(), "tokenizer": str(copy)})
    return config
