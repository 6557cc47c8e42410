"""diffusionblocks: train deep networks block by block as diffusion denoisers.

Layers of the package:

- :mod:`diffusionblocks.diffusion` -- the math (noise, partition, preconditioning, samplers);
- :mod:`diffusionblocks.networks` -- plain ``nn.Module`` networks with ``.blocks``;
- :mod:`diffusionblocks.tasks` -- data, losses and metrics per task;
- :mod:`diffusionblocks.training` -- the one block-wise trainer, checkpoints, metrics.
"""

__version__ = "0.1.0"


def load_pretrained(path, device=None):
    """The task (data and network with weights) of a model folder (``dblocks assemble``) or a
    run folder. See :func:`diffusionblocks.assemble.load_pretrained`."""
    from .assemble import load_pretrained as _load

    return _load(path, device)
