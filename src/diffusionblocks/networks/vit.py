"""Vision transformer with adaLN-Zero conditioning in every layer, its layers grouped into blocks.

Shared modules (used by every block): the patch stem with position embedding, the label embedding
table, the conditioning embedder and the output head. ``blocks[b]`` holds the layers of block b.
The network knows nothing about noise levels: it takes a conditioning scalar per example and a
vector for the first token slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import AdaLNLayer, AdaLNOutput, ScalarEmbedding, SlotNetwork


@dataclass(frozen=True)
class ViTShape:
    """Everything needed to build a :class:`ViT`."""

    image_channels: int  # input channels (1 for grey images)
    image_height: int  # pixels
    image_width: int  # pixels
    patch_size: int  # square patches; must divide height and width
    num_classes: int  # size of the label table and of the logits
    hidden: int  # token width
    depth: int  # total number of transformer layers
    heads: int  # attention heads
    mlp_ratio: float = 4.0  # MLP width / hidden
    num_blocks: int = 1  # groups the layers are split into
    seed: int = 0  # seed of the per-block initialisation
    # layers in each block (None: equal blocks; docs/method.md §3, the paper's Table 7)
    layers_per_block: tuple[int, ...] | None = None
    dropout: float = 0.0  # dropout on every layer's residual branches while training
    # The slot also reads a previous estimate of the label embedding (self-conditioning) through
    # a zero-initialised projection, shared by every block
    self_condition: bool = False

    @property
    def num_patches(self) -> int:
        return (self.image_height // self.patch_size) * (self.image_width // self.patch_size)


class ViT(SlotNetwork):
    """Patch stem -> [slot token; patch tokens] -> blocks of adaLN layers -> adaLN head.

    Token 0 is the *slot*: the noisy label for DiffusionBlocks, nothing (zeros) end to end; its
    learned position embedding plays the role of a CLS token. A
    :class:`~diffusionblocks.networks.layers.SlotNetwork`: the user's
    :class:`~diffusionblocks.networks.stack.StackNetwork` with a patch stem, adaLN-Zero layers
    and an adaLN head (each taking the condition) computes the same (tests/test_your_model.py).
    """

    def __init__(self, shape: ViTShape, materialize_blocks: bool = True):
        super().__init__()
        s = shape
        if s.image_height % s.patch_size or s.image_width % s.patch_size:
            raise ValueError(
                f"patch_size {s.patch_size} does not divide the image size "
                f"{s.image_height}x{s.image_width}"
            )
        self.shape = s
        self.hidden = s.hidden
        self.patch_embed = nn.Conv2d(s.image_channels, s.hidden, s.patch_size, s.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + s.num_patches, s.hidden))
        self.label_embed = nn.Embedding(s.num_classes, s.hidden)
        self.cond_embed = ScalarEmbedding(s.hidden)
        self._init_blocks(
            s.depth,
            s.num_blocks,
            lambda _: AdaLNLayer(s.hidden, s.heads, s.mlp_ratio, s.dropout),
            s.seed,
            materialize_blocks,
            s.layers_per_block,
        )
        self.head = AdaLNOutput(s.hidden, s.num_classes, zero_init=True)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.label_embed.weight, std=1.0)
        if s.self_condition:  # created after the rest: every other weight as without it
            self.self_cond = nn.Linear(s.hidden, s.hidden)
            nn.init.zeros_(self.self_cond.weight)
            nn.init.zeros_(self.self_cond.bias)

    def features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Images (N, C, H, W) -> patch tokens with position embedding (N, P, hidden); no
        condition of their own."""
        x = self.patch_embed(inputs).flatten(2).transpose(1, 2)  # (N, P, hidden)
        return x + self.pos_embed[:, 1:], None

    def slot_embedding(self) -> torch.Tensor:
        """The slot token's learned position embedding (1, hidden)."""
        return self.pos_embed[:, 0]

    def output(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The adaLN head: the slot's output (N, hidden) -> logits (N, classes)."""
        return self.head(x, cond)
