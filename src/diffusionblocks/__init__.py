"""diffusionblocks: train deep networks block by block as diffusion denoisers.

Start here (docs in :mod:`diffusionblocks.api`)::

    import diffusionblocks as db
    model = db.train("images", data="my_images.npz", out="runs/mine")
    model = db.load("runs/mine")
    model.classify(images)

Your own network (docs/your-model.md): a function returning :class:`ResidualStack` (stem,
residual layers, head), then ``db.train("your-model", model=build, data="my.npz")``.

Layers of the package:

- :mod:`diffusionblocks.diffusion` -- the math (noise, partition, preconditioning, samplers);
- :mod:`diffusionblocks.networks` -- plain ``nn.Module`` networks with ``.blocks``;
- :mod:`diffusionblocks.eval` -- metrics the tasks share (text, FID, per-block diagnostics) and
  the PNG writer;
- :mod:`diffusionblocks.tasks` -- data, losses and metrics per task;
- :mod:`diffusionblocks.training` -- the one block-wise trainer, checkpoints, metrics.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Model
    from .hub import DiffusionBlocksModel
    from .networks.stack import ResidualStack
    from .tasks.base import Task

__version__ = "0.1.0"
__all__ = ["DiffusionBlocksModel", "ResidualStack", "load", "load_pretrained", "train"]


def load(path: str | os.PathLike, device: str | None = None, **overrides: Any) -> Model:
    """The trained model of a run folder or an assembled model folder: ``classify``,
    ``generate``, ``sample_text``, ``evaluate``. See :func:`diffusionblocks.api.load`."""
    from .api import load as _load

    return _load(path, device, **overrides)


def train(
    preset: str, out: str | os.PathLike | None = None, progress: bool = True, **overrides: Any
) -> Model:
    """Train ``preset`` with config ``overrides`` into a run folder, as ``dblocks train`` does;
    returns the model. See :func:`diffusionblocks.api.train`."""
    from .api import train as _train

    return _train(preset, out, progress, **overrides)


def load_pretrained(path: str | os.PathLike, device: str | None = None) -> Task:
    """The task (data and network with weights) of a model folder (``dblocks assemble``) or a
    run folder. See :func:`diffusionblocks.loading.load_pretrained`."""
    from .loading import load_pretrained as _load

    return _load(path, device)


def __getattr__(name: str) -> Any:
    """``ResidualStack`` and ``DiffusionBlocksModel`` on first use (``import diffusionblocks``
    stays light)."""
    if name == "ResidualStack":
        from .networks.stack import ResidualStack

        return ResidualStack
    if name == "DiffusionBlocksModel":
        from .hub import DiffusionBlocksModel

        return DiffusionBlocksModel
    raise AttributeError(f"module 'diffusionblocks' has no attribute {name!r}")
