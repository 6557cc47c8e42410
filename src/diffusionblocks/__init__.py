"""diffusionblocks: train deep networks block by block as diffusion denoisers.

Layers of the package:

- :mod:`diffusionblocks.diffusion` -- the math (noise, partition, preconditioning, samplers);
- :mod:`diffusionblocks.networks` -- plain ``nn.Module`` networks with ``.blocks``;
- :mod:`diffusionblocks.tasks` -- data, losses and metrics per task;
- :mod:`diffusionblocks.training` -- the one block-wise trainer, checkpoints, metrics.
"""

__version__ = "0.1.0"
