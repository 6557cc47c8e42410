"""Gradient synchronisation of a synchronous step: what happens to the gradients after every
block of the step ran its backward pass, before the updates. ``LocalSync`` is the single-process
strategy; block-parallel training (``parallel.DistributedSync``) reduces across processes.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn


class GradientSync(Protocol):
    """Turns the gradients of one synchronous step into the ones the optimizers apply."""

    def reduce(
        self,
        blocks: list[int],
        block_params: dict[int, list[nn.Parameter]],
        shared_params: list[nn.Parameter],
    ) -> None:
        """``blocks`` ran their backward pass (``block_params``: each block's parameters); the
        ``shared_params`` hold the sum of their gradients."""
        ...


class LocalSync:
    """One process: the shared gradients were summed over ``blocks``; take their mean."""

    def reduce(
        self,
        blocks: list[int],
        block_params: dict[int, list[nn.Parameter]],
        shared_params: list[nn.Parameter],
    ) -> None:
        if len(blocks) > 1:
            for p in shared_params:
                if p.grad is not None:
                    p.grad /= len(blocks)
