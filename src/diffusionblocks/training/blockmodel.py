"""What the trainer needs of ``task.model``: the ``BlockModel`` protocol.

``Task.model`` is typed as a plain ``nn.Module``; the networks add a block interface to it
(``networks.layers.BlockStack``, ``networks.recurrent.RecurrentDepthLM``): blocks that can live
on the meta device, be built alone, released and loaded. The trainer's components see the model
through this protocol (``block_model`` names the one place where that view is taken).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, cast

import torch
from torch import nn


class BlockModel(Protocol):
    """A network whose ``blocks`` train separately (the trainer's view of ``task.model``)."""

    blocks: nn.ModuleList

    @property
    def device(self) -> torch.device: ...

    def block_is_materialized(self, block: int) -> bool: ...

    def materialize_block(
        self,
        block: int,
        device: torch.device | str,
        state: dict[str, torch.Tensor] | None = None,
    ) -> nn.Module: ...

    def release_block(self, block: int) -> None: ...

    def build_block(self, block: int) -> nn.Module: ...

    def set_shared_variants(self, variants: dict[int, dict[str, torch.Tensor]]) -> None: ...

    # -- what every nn.Module has ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def train(self, mode: bool = True) -> Any: ...


def block_model(model: nn.Module) -> BlockModel:
    """``model`` seen through its block interface (every network of the package has one)."""
    return cast(BlockModel, model)


def shared_state(model: BlockModel) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` outside its blocks (stem, embeddings, head)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
