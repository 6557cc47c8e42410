"""Where a network is: its device, and moving it, when some of its blocks have no storage.

A network built with ``materialize_blocks=False`` (block-resident training) has its blocks on the
``meta`` device; ``training/residency.py`` gives them storage and takes it away again. Moving
such a network (``nn.Module.to``) would fail on those blocks, and the device of its first
parameter may be ``meta``: :func:`to_device` and :func:`device_of` leave them out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, cast

import torch
from torch import nn


def has_storage(module: nn.Module) -> bool:
    """Whether every parameter of ``module`` has storage (none on the meta device)."""
    return not any(p.is_meta for p in module.parameters())


class HasParameters(Protocol):
    def parameters(self) -> Iterator[nn.Parameter]: ...


def device_of(model: HasParameters) -> torch.device:
    """Device of the shared modules (blocks on the meta device do not count)."""
    for p in model.parameters():
        if not p.is_meta:
            return p.device
    return torch.device("cpu")


def to_device(model: nn.Module, device: torch.device | str) -> None:
    """Move the shared modules and every materialised block to ``device`` (blocks on the meta
    device stay there)."""
    blocks = cast(nn.ModuleList, model.blocks)
    model.blocks = nn.ModuleList()
    model.to(device)
    for b, group in enumerate(blocks):
        if has_storage(group):
            blocks[b] = group.to(device)
    model.blocks = blocks
