"""What the trainer needs of ``task.model``: the ``BlockModel`` protocol.

``Task.model`` is typed as a plain ``nn.Module``; the networks add a block interface to it
(``networks.layers.BlockStack``, ``networks.recurrent.RecurrentDepthLM``): ``blocks``, each of
which can be built alone with its initial weights (``build_block``), and per-block copies of the
shared modules (``set_shared_variants``, ``BlockStack`` only). Where the blocks live (in memory or
on the meta device) is not the networks' business: ``residency.py`` materialises and releases
them through this interface. The trainer's components see the model through this protocol
(``block_model`` names the one place where that view is taken).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, cast

import torch
from torch import nn


class BlockModel(Protocol):
    """A network whose ``blocks`` train separately (the trainer's view of ``task.model``)."""

    blocks: nn.ModuleList

    # A freshly built block ``block`` with its initial weights (the same every time).
    def build_block(self, block: int) -> nn.Module: ...

    def set_shared_variants(self, variants: dict[int, dict[str, torch.Tensor]]) -> None: ...

    # ``ema``: make the shared modules' weight average equal to their weights (after loading).
    def restart_shared_average(self) -> None: ...

    # -- what every nn.Module has ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def named_buffers(self) -> Iterator[tuple[str, torch.Tensor]]: ...

    def train(self, mode: bool = True) -> Any: ...

    def to(self, device: torch.device | str) -> Any: ...


def block_model(model: nn.Module) -> BlockModel:
    """``model`` seen through its block interface (every network of the package has one)."""
    return cast(BlockModel, model)


def shared_state(model: BlockModel) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` outside its blocks (stem, embeddings, head)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
