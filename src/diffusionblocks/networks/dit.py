"""Class-conditional diffusion transformer (DiT, Peebles & Xie 2023) with its layers grouped into
blocks.

Shared modules: the patch embedding with position embedding, the class embedding (one extra row
is the "no class" token used for classifier-free guidance), the conditioning-scalar embedder and the
final adaLN layer that maps tokens back to patches. ``blocks[b]`` holds the layers of block b. The
network sees a conditioning scalar (the task passes c_noise) and class indices; it knows nothing
about noise schedules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import AdaLNLayer, AdaLNOutput, BlockStack, ScalarEmbedding


@dataclass(frozen=True)
class DiTShape:
    """Everything needed to build a :class:`DiT`."""

    image_channels: int  # channels of the image (1 for grey)
    image_height: int  # pixels
    image_width: int  # pixels
    patch_size: int  # square patches; must divide height and width
    num_classes: int  # classes; index num_classes is the "no class" token
    hidden: int  # token width
    depth: int  # transformer layers in total
    heads: int  # attention heads
    mlp_ratio: float = 4.0  # MLP width / hidden
    num_blocks: int = 1  # groups the layers are split into
    seed: int = 0  # seed of the per-block initialisation
    # layers in each block (None: equal blocks; docs/method.md §3, the paper's Table 7)
    layers_per_block: tuple[int, ...] | None = None
    averaged: bool = False  # keep an EMA of the weights (per block, and of the shared modules)

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_height // self.patch_size, self.image_width // self.patch_size


class DiT(BlockStack):
    """Patchify -> adaLN-Zero layers (one block, or all) -> adaLN output -> unpatchify."""

    def __init__(self, shape: DiTShape, materialize_blocks: bool = True):
        super().__init__()
        s = shape
        if s.image_height % s.patch_size or s.image_width % s.patch_size:
            raise ValueError(
                f"patch_size {s.patch_size} does not divide the image size "
                f"{s.image_height}x{s.image_width}"
            )
        self.shape = s
        self.averaged = s.averaged
        gh, gw = s.grid
        self.patch_embed = nn.Conv2d(s.image_channels, s.hidden, s.patch_size, s.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw, s.hidden))
        self.class_embed = nn.Embedding(s.num_classes + 1, s.hidden)  # last row: no class
        self.cond_embed = ScalarEmbedding(s.hidden)
        self._init_blocks(
            s.depth,
            s.num_blocks,
            lambda _: AdaLNLayer(s.hidden, s.heads, s.mlp_ratio),
            s.seed,
            materialize_blocks,
            s.layers_per_block,
        )
        self.head = AdaLNOutput(s.hidden, s.patch_size**2 * s.image_channels, zero_init=True)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.class_embed.weight, std=0.02)
        self._average_shared_modules()

    @property
    def null_class(self) -> int:
        return self.shape.num_classes

    def condition(self, scalar: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Conditioning vector (N, hidden) from the noise scalar (N,) and class indices (N,)."""
        return self.cond_embed(scalar) + self.class_embed(labels)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (N, P, C)

    def _image(self, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self.shape
        gh, gw = s.grid
        out = self.head(tokens, cond)  # (N, P, p*p*C)
        n, p = out.shape[0], s.patch_size
        out = out.view(n, gh, gw, p, p, s.image_channels).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(n, s.image_channels, gh * p, gw * p)  # (N, C, H, W)

    def run_block(
        self, block: int, x: torch.Tensor, scalar: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """One block as a whole network: image (N, C, H, W) -> output image (N, C, H, W)."""
        self.use_shared(block)
        cond = self.condition(scalar, labels)
        return self._image(self.blocks[block](self._tokens(x), cond), cond)

    def run_all(self, x: torch.Tensor, scalar: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Every block in order (the end-to-end network)."""
        cond = self.condition(scalar, labels)
        tokens = self._tokens(x)
        for group in self.blocks:
            tokens = group(tokens, cond)
        return self._image(tokens, cond)
