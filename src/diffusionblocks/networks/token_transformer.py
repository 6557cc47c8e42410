"""Transformer over token sequences with adaLN-Zero conditioning in every layer, its layers grouped
into blocks. Bidirectional unless an attention mask is passed.

Shared modules: token embedding, position embedding, the conditioning-scalar embedder and the
output head (adaLN + linear to the vocabulary). The network sees token ids (or embeddings), a
conditioning scalar per sequence and an optional attention mask; it knows nothing about masking
schedules or noise levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import AdaLNLayer, AdaLNOutput, ScalarEmbedding, TokenNetwork
from .stack import conditioned_layers


@dataclass(frozen=True)
class TokenShape:
    """Everything needed to build a :class:`TokenTransformer`."""

    vocab_in: int  # input ids, special tokens included
    vocab_out: int  # output classes
    max_len: int  # longest sequence (position embeddings)
    hidden: int  # token width
    depth: int  # transformer layers in total
    heads: int  # attention heads
    mlp_ratio: float = 4.0  # MLP width / hidden
    num_blocks: int = 1  # groups the layers are split into
    seed: int = 0  # seed of the per-block initialisation
    # layers in each block (None: equal blocks; docs/method.md §3, the paper's Table 7)
    layers_per_block: tuple[int, ...] | None = None
    # "": the built-in adaLN-Zero layer; "hf:llama" or FILE.py:NAME: another residual layer,
    # wrapped with sigma conditioning (networks/stack.py: conditioned_layers)
    layer: str = ""
    # a local Hugging Face causal-LM folder: its decoder layers (with their weights), token
    # embeddings and head (final norm + lm_head), sigma conditioning zero-initialised around
    # them; position embedding and stream offsets start at zero (rotary positions inside)
    pretrained: str = ""


class TokenTransformer(TokenNetwork):
    """ids -> embeddings -> blocks of adaLN layers -> adaLN head -> logits."""

    def __init__(self, shape: TokenShape, materialize_blocks: bool = True):
        super().__init__()
        s = shape
        self.shape = s
        self.hidden = s.hidden
        self.token_embed = nn.Embedding(s.vocab_in, s.hidden)
        self.pos_embed = nn.Parameter(torch.zeros(1, s.max_len, s.hidden))
        self.cond_embed = ScalarEmbedding(s.hidden)
        pretrained = None
        if s.pretrained:
            from .hf import PretrainedModel

            pretrained = PretrainedModel(s.pretrained)  # its config and weights, read once
            make = conditioned_layers(s.layer, s.hidden, s.heads, s.mlp_ratio, s.max_len, True,
                                      build=pretrained.layers(True))  # fmt: skip
        elif s.layer:
            make = conditioned_layers(s.layer, s.hidden, s.heads, s.mlp_ratio, s.max_len, False)
        else:
            make = lambda _: AdaLNLayer(s.hidden, s.heads, s.mlp_ratio)  # noqa: E731
        self._init_blocks(
            s.depth,
            s.num_blocks,
            make,
            s.seed,
            materialize_blocks,
            s.layers_per_block,
        )
        self.head: nn.Module = AdaLNOutput(s.hidden, s.vocab_out, zero_init=True)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        if pretrained is not None:
            pretrained.load_embedding(self.token_embed)  # refuses a vocabulary larger than its
            self.head = pretrained.head(s.vocab_out)  # embedding table before the head
            nn.init.zeros_(self.pos_embed)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N, T) -> (N, T, C) with position embeddings."""
        return self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]

    def output(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The adaLN head: (N, T, C) and the condition -> logits (N, T, vocab_out)."""
        return self.head(x, cond)


class TwoStreamTransformer(TokenTransformer):
    """A :class:`TokenTransformer` that also takes a second stream of continuous vectors (for
    DiffusionBlocks' autoregressive model: noisy target embeddings beside the clean tokens).

    Adds a learned offset per stream (clean, noisy) and a learned conditioning vector for clean
    tokens, so that clean tokens never depend on the noise level (their keys and values can be
    cached while the noisy token is denoised).
    """

    def __init__(self, shape: TokenShape, materialize_blocks: bool = True):
        super().__init__(shape, materialize_blocks)
        self.stream_embed = nn.Parameter(torch.zeros(2, shape.hidden))
        self.clean_cond = nn.Parameter(torch.zeros(shape.hidden))
        if not shape.pretrained:  # pretrained: the clean stream starts as the pretrained model
            nn.init.normal_(self.stream_embed, std=0.02)

    def clean_inputs(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Clean token embeddings (N, T, C) for positions start.. start+T-1."""
        t = ids.shape[1]
        return self.token_embed(ids) + self.pos_embed[:, start : start + t] + self.stream_embed[0]

    def noisy_inputs(self, vectors: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Noisy vectors (N, T, C) (already scaled by the task) for positions start.."""
        t = vectors.shape[1]
        return vectors + self.pos_embed[:, start : start + t] + self.stream_embed[1]

    def clean_condition(self, n: int, t: int) -> torch.Tensor:
        return self.clean_cond.expand(n, t, -1)
