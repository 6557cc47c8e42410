"""Layers from Hugging Face ``transformers`` (the optional extra ``[hf]``): a Llama-style decoder
layer (RMSNorm, rotary position embeddings, SwiGLU; the architecture of the paper's AR model,
Llama-2-style) as a residual layer ``forward(x, mask=None, positions=None)`` that the library
wraps with sigma conditioning (:class:`~diffusionblocks.networks.stack.SigmaConditioned`).

``transformers`` is imported only when such a layer is built; without it the error says how to
install it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ConfigError

HF_LAYERS = ("hf:llama",)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "invalid value for 'layer': hf:llama needs the transformers package; install the "
            "extra: pip install 'diffusionblocks[hf]'"
        ) from None
    return transformers


def llama_config(hidden: int, heads: int, mlp_ratio: float, max_len: int) -> Any:
    """A ``LlamaConfig`` for layers of width ``hidden`` with ``heads`` heads, a SwiGLU MLP of
    ``mlp_ratio * hidden`` units and rotary embeddings for ``max_len`` positions."""
    t = _transformers()
    config = t.LlamaConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=int(hidden * mlp_ratio),
        max_position_embeddings=max_len,
        num_hidden_layers=1,
        vocab_size=1,  # the layers only: no embedding table is built
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attention_dropout=0.0,
    )
    config._attn_implementation = "sdpa"
    return config


class LlamaLayer(nn.Module):
    """One ``LlamaDecoderLayer`` with its rotary embedding, as ``forward(x, mask, positions)`` on
    (N, L, C). Without a mask it attends causally (``causal``) or both ways; the library's
    networks always pass the mask they need (none for the masked diffusion LM)."""

    def __init__(self, config: Any, index: int, causal: bool):
        super().__init__()
        from transformers.models.llama.modeling_llama import (
            LlamaDecoderLayer,
            LlamaRotaryEmbedding,
        )

        self.layer = LlamaDecoderLayer(config, layer_idx=index)
        self.layer.self_attn.is_causal = causal
        self.rotary = LlamaRotaryEmbedding(config)  # no parameters; its buffer is not saved
        self.causal = causal

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (N, L, C); ``mask`` (L, L) bool, True where attention is allowed (None: the layer's
        own pattern, ``causal`` or both ways); ``positions`` (L,) the rotary position of each
        input (None: 0..L-1; the autoregressive model's two streams share positions)."""
        if positions is None:
            positions = torch.arange(x.shape[1], device=x.device)
        ids = positions[None].expand(len(x), -1)
        cos_sin = self.rotary(x, ids)
        attention = None if mask is None else mask[None, None]  # (1, 1, L, L), True = attend
        # is_causal is passed as well as set on the module: releases differ in which one their
        # attention functions read; an explicit mask always wins
        out = self.layer(x, attention_mask=attention, position_ids=ids, position_embeddings=cos_sin,
                         is_causal=self.causal and mask is None)  # fmt: skip
        return out[0] if isinstance(out, tuple) else out


def hf_layer(
    name: str, hidden: int, heads: int, mlp_ratio: float, max_len: int, causal: bool
) -> Any:
    """A function ``layer(index)`` building the ``transformers`` layers ``name`` names."""
    if name not in HF_LAYERS:
        raise ConfigError(f"invalid value for 'layer': {name!r} (choose one of "
                          f"{', '.join(HF_LAYERS)}, or FILE.py:NAME)")  # fmt: skip
    config = llama_config(hidden, heads, mlp_ratio, max_len)
    return lambda index: LlamaLayer(config, index, causal)
