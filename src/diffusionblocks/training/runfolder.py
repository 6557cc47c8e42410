"""What makes a folder a run folder: ``config.json`` with the resolved config.

Written by ``dblocks train`` before training starts and by a :class:`~.trainer.Trainer` given a
``run_dir`` that has none (training from Python), so that ``dblocks eval``/``sample``/``assemble``
and :func:`diffusionblocks.load` accept either.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import __version__
from ..config import RunConfig
from .checkpoint import atomic_write_json

CONFIG_FILE = "config.json"


def write_run_config(
    run_dir: str | os.PathLike,
    config: RunConfig,
    preset: str | None = None,
    command: str | None = None,
    **extra: object,
) -> Path:
    """Write ``run_dir/config.json`` (atomically): the config, how it was made, and when."""
    path = Path(run_dir) / CONFIG_FILE
    atomic_write_json(
        path,
        {
            "config": config.to_dict(),
            "preset": preset,
            "command": command,
            "config_hash": config.config_hash(),
            "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        },
    )
    return path
