"""Layers from Hugging Face ``transformers`` (the optional extra ``[hf]``): a Llama-style decoder
layer (RMSNorm, rotary position embeddings, SwiGLU; the architecture of the paper's AR model,
Llama-2-style) as a residual layer ``forward(x, mask=None, positions=None)`` that the library
wraps with sigma conditioning (:class:`~diffusionblocks.networks.stack.SigmaConditioned`).

``transformers`` is imported only when such a layer is built; without it the error says how to
install it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..data.base import ACTIVE_CARD

HF_LAYERS = ("hf:llama",)


def _transformers(key: str = "layer") -> Any:
    try:
        import transformers
    except ImportError:
        what = "hf:llama needs" if key == "layer" else "a pretrained model needs"
        raise ConfigError(
            f"invalid value for '{key}': {what} the transformers package; install the extra: "
            "pip install 'diffusionblocks[hf]'"
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


# ---------------------------------------------------------------------- pretrained models
PRETRAINED_TYPES = ("llama",)  # model_type values whose decoder layers this module builds


def _pretrained_error(folder: str, why: str) -> ConfigError:
    return ConfigError(f"invalid value for 'pretrained': {folder} ({why})")


def read_pretrained_config(folder: str) -> dict[str, Any]:
    """The ``config.json`` of a local Hugging Face causal-LM folder, as plain JSON (no
    ``transformers`` needed): what the run's shape keys are filled from."""
    path = Path(folder).expanduser() / "config.json"
    if not path.is_file():
        raise _pretrained_error(folder, "no config.json: not a Hugging Face model folder; if "
                                "it moved, give its new place: --set pretrained=PATH")  # fmt: skip
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _pretrained_error(folder, f"its config.json cannot be read: {err}") from None
    if not isinstance(data, dict) or data.get("model_type") not in PRETRAINED_TYPES:
        kind = data.get("model_type") if isinstance(data, dict) else None
        raise _pretrained_error(folder, f"model_type {kind!r}; Llama-style models "
                                f"({', '.join(PRETRAINED_TYPES)}) are supported")  # fmt: skip
    return data


def pretrained_shape(folder: str) -> dict[str, Any]:
    """The run keys a pretrained model fixes: depth, hidden, heads, mlp_ratio."""
    c = read_pretrained_config(folder)
    try:
        hidden = int(c["hidden_size"])
        return {"depth": int(c["num_hidden_layers"]), "hidden": hidden,
                "heads": int(c["num_attention_heads"]),
                "mlp_ratio": int(c["intermediate_size"]) / hidden}  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise _pretrained_error(folder, f"its config.json lacks {err}") from None


class PretrainedWeights:
    """The tensors of a folder's ``model.safetensors`` (or the shards its
    ``model.safetensors.index.json`` names), read one by one on demand: building block b reads
    only block b's layers."""

    def __init__(self, folder: str):
        root = Path(folder).expanduser()
        self.folder = folder
        index = root / "model.safetensors.index.json"
        if index.is_file():
            mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.files = {name: root / file for name, file in mapping.items()}
        elif (root / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(root / "model.safetensors"), "pt") as f:
                names = f.keys()  # noqa: SIM118 - a safetensors file, not a dict
                self.files = {name: root / "model.safetensors" for name in names}
        else:
            raise _pretrained_error(folder, "no model.safetensors: save the model with "
                                    "save_pretrained (safetensors, the default)")  # fmt: skip

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        if name not in self.files:
            raise _pretrained_error(self.folder, f"its weights have no tensor {name}")
        with safe_open(str(self.files[name]), "pt") as f:
            return f.get_tensor(name)

    def has(self, name: str) -> bool:
        return name in self.files

    def load_into(self, module: nn.Module, prefix: str) -> None:
        """Copy the tensors ``prefix + key`` into ``module``'s parameters and buffers of the
        same key, each file opened once."""
        from safetensors import safe_open

        if any(p.is_meta for p in module.parameters()):
            return  # a block built without storage: filled when it is materialised
        # every parameter and buffer, except rotary frequencies (computed, not saved)
        targets = {prefix + key: target
                   for key, target in module.state_dict(keep_vars=True).items()
                   if self.has(prefix + key) or not key.endswith("inv_freq")}  # fmt: skip
        missing = [name for name in targets if not self.has(name)]
        if missing:
            raise _pretrained_error(self.folder, f"its weights have no tensor {missing[0]}")
        with torch.no_grad():
            for file in {self.files[name] for name in targets}:
                with safe_open(str(file), "pt") as f:
                    for name, target in targets.items():
                        if self.files[name] == file:
                            self._copy(name, f.get_tensor(name), target)

    def _copy(self, name: str, source: torch.Tensor, target: torch.Tensor) -> None:
        if source.shape != target.shape:
            raise _pretrained_error(self.folder, f"{name} has shape {tuple(source.shape)}, the "
                                    f"run needs {tuple(target.shape)}")  # fmt: skip
        target.copy_(source.to(target.dtype))


def pretrained_llama_config(folder: str) -> Any:
    """The folder's ``LlamaConfig`` (read locally, nothing downloaded)."""
    read_pretrained_config(folder)  # refuses a folder that is not a Llama-style model
    config = _transformers("pretrained").AutoConfig.from_pretrained(
        str(Path(folder).expanduser()), local_files_only=True
    )
    config._attn_implementation = "sdpa"
    return config


class PretrainedModel:
    """A pretrained folder read once: its ``LlamaConfig`` and its weights' index, and the parts a
    token network takes from it (layers, head, embedding table)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.config = pretrained_llama_config(folder)
        # A Hub folder of a fine-tuned model keeps only the pretrained model's config.json: built
        # from its data card, the network takes its architecture from it, and every weight from
        # the Hub folder's own model.safetensors afterwards (hub.py)
        building_from_card = ACTIVE_CARD.get() is not None
        self.weights = None if building_from_card else PretrainedWeights(folder)

    def layers(self, causal: bool) -> Any:
        """``layer(index)``: decoder layer ``index`` with its pretrained weights (read when the
        layer is built: a block reads only its own layers)."""

        def build(index: int) -> LlamaLayer:
            layer = LlamaLayer(self.config, index, causal)
            if self.weights is not None:
                self.weights.load_into(layer.layer, f"model.layers.{index}.")
            return layer

        return build

    def head(self, vocab: int) -> PretrainedHead:
        return PretrainedHead(self.config, self.weights, vocab)

    def load_embedding(self, embedding: nn.Embedding) -> None:
        """The first rows of the token embedding table into ``embedding`` (the run's vocabulary
        is the folder's tokenizer: its ids are the model's)."""
        if self.weights is None:
            return  # built from a data card: the Hub folder's weights replace it
        table = self.weights.get("model.embed_tokens.weight")
        rows = embedding.num_embeddings
        if table.shape[0] < rows:
            raise _pretrained_error(self.folder, f"its embedding table has {table.shape[0]} "
                                    f"rows, the tokenizer {rows} ids")  # fmt: skip
        if table.shape[1] != embedding.embedding_dim:
            raise _pretrained_error(self.folder, f"its embedding width is {table.shape[1]}, the "
                                    f"run needs {embedding.embedding_dim}")  # fmt: skip
        with torch.no_grad():
            embedding.weight.copy_(table[:rows].to(embedding.weight.dtype))


class PretrainedHead(nn.Module):
    """The pretrained model's final RMSNorm and ``lm_head``, modulated by the condition like
    :class:`~.layers.AdaLNOutput` (shift and scale zero-initialised: at the start it is the
    pretrained head exactly). ``forward(x, cond)`` -> logits."""

    def __init__(self, config: Any, weights: PretrainedWeights | None, vocab: int):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        hidden = config.hidden_size
        self.norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        modulation = nn.Linear(hidden, 2 * hidden)
        nn.init.zeros_(modulation.weight)
        nn.init.zeros_(modulation.bias)
        self.modulation = nn.Sequential(nn.SiLU(), modulation)
        self.linear = nn.Linear(hidden, vocab, bias=False)
        if weights is None:
            return  # built from a data card: the Hub folder's weights replace these
        weights.load_into(self.norm, "model.norm.")
        head = "lm_head.weight" if weights.has("lm_head.weight") else "model.embed_tokens.weight"
        with torch.no_grad():  # tied embeddings: the head is the embedding table
            self.linear.weight.copy_(weights.get(head)[:vocab])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and cond.dim() == 2:  # one condition per sequence
            cond = cond[:, None]
        shift, scale = self.modulation(cond).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)
