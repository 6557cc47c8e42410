"""Transformer pieces with adaLN-Zero conditioning (Peebles & Xie 2023, DiT).

A conditioning vector ``cond`` (N, C), or one per token (N, T, C), modulates every layer:
LayerNorm without affine parameters, then ``x * (1 + scale) + shift``, and a gate on each
residual branch. The modulation projections
start at zero, so every layer starts as the identity. These modules know nothing about noise
schedules: they see a conditioning scalar and vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draws inside come from the CPU generator seeded with ``seed``; the caller's global
    generator is left as it was (model initialisation without a global side effect)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside (no dropout), then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def drawn_from(
    generator: torch.Generator, device: torch.device, enabled: bool = True
) -> Iterator[None]:
    """Draws of the global generators inside (dropout masks) come from a seed drawn from
    ``generator`` (a task's training generator, saved with the checkpoints), so that runs with
    dropout are reproducible and resume as they would have run. Seeds the CPU generator and, on
    CUDA, the generator of ``device`` only, and restores both afterwards (dropout on another
    accelerator draws from its own generator, unseeded: not reproducible there). Not ``enabled``:
    nothing is drawn (runs without dropout keep their streams)."""
    if not enabled:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda = device.type == "cuda"
    index = (
        (device.index if device.index is not None else torch.cuda.current_device()) if cuda else 0
    )
    with torch.random.fork_rng(devices=[index] if cuda else []):  # restores what is seeded below
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)  # this device's generator only
        yield


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` drops anything while training, drawing from PyTorch's global generator:
    a dropout module with p > 0, an ``nn.MultiheadAttention`` with dropout > 0, or a module with
    a float ``attention_dropout`` > 0 (Hugging Face attention)."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        if isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            return True
        p = getattr(m, "attention_dropout", 0.0)
        if isinstance(p, float) and p > 0:
            return True
    return False


def causal_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(t, t) bool, True where attention is allowed: position i sees j <= i."""
    i = torch.arange(t, device=device)
    return i[:, None] >= i[None, :]


def two_stream_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(2t, 2t) bool mask for [clean 0..t-1; noisy 0..t-1] (True = may attend):
    clean i -> clean j <= i; noisy i -> clean j < i and noisy i; clean never -> noisy."""
    i = torch.arange(t, device=device)
    clean_clean = i[:, None] >= i[None, :]
    noisy_clean = i[:, None] > i[None, :]
    top = torch.cat([clean_clean, torch.zeros(t, t, dtype=torch.bool, device=device)], 1)
    bottom = torch.cat([noisy_clean, torch.eye(t, dtype=torch.bool, device=device)], 1)
    return torch.cat([top, bottom], 0)


def _per_token(cond: torch.Tensor) -> torch.Tensor:
    """Conditioning (N, C) for a whole sequence becomes (N, 1, C); (N, T, C) is per token."""
    return cond[:, None, :] if cond.dim() == 2 else cond


def _zero_linear(linear: nn.Module) -> None:
    """Zero the weight and bias of ``linear`` (the adaLN-Zero modulation projections)."""
    assert isinstance(linear, nn.Linear)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (N, T, C) * (1 + scale (N, 1, C)) + shift (N, 1, C)."""
    return x * (1 + scale) + shift


class ScalarEmbedding(nn.Module):
    """Embeds one conditioning scalar per example (e.g. c_noise = ln(sigma)/4) as a vector:
    sinusoidal features of ``scalar * input_scale`` followed by a two-layer MLP (as DiT's
    timestep embedder)."""

    freqs: torch.Tensor  # a buffer (not saved in the state dict)

    def __init__(
        self,
        dim: int,
        frequency_dim: int = 128,
        input_scale: float = 1000.0,
        max_period: float = 1e4,
    ):
        super().__init__()
        half = frequency_dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.input_scale = input_scale
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, scalar: torch.Tensor) -> torch.Tensor:
        args = (scalar.float() * self.input_scale)[:, None] * self.freqs[None]  # (N, half)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (N, dim)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``. ``prefix`` lets new
    tokens attend to the cached keys and values of earlier ones as well as to themselves."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def heads_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, t, c = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # (N, H, T, C/H) each

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.heads_qkv(x)
        if kv_out is not None:
            kv_out.append((k, v))
        if prefix is not None:  # keys/values of earlier tokens come first
            k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, T, C/H)
        return self.proj(y.transpose(1, 2).reshape(n, t, c))


class AdaLNLayer(nn.Module):
    """Pre-norm transformer layer with adaLN-Zero: six modulation vectors from ``cond``.
    ``dropout`` > 0 zeroes units of each residual branch's output while training (as ViT's
    dropout; 0 = no dropout module at all)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        _zero_linear(self.modulation[1])

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor | None = None,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        *,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``prefix``: cached (keys, values) of earlier tokens that x also attends to;
        ``kv_out``: a list that receives this layer's (keys, values) of x. ``positions`` is
        unused: this layer's positions are in its inputs (learned embeddings)."""
        mods = self.modulation(_per_token(cond)).chunk(6, dim=-1)  # 6 x (N, 1 or T, C)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1 * self.dropout(self.attn(h, mask, prefix, kv_out))
        return x + gate2 * self.dropout(self.mlp(modulate(self.norm2(x), shift2, scale2)))


class AdaLNOutput(nn.Module):
    """Final adaLN: LayerNorm modulated by ``cond`` (shift, scale), then a linear map."""

    def __init__(self, dim: int, out_dim: int, zero_init: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)
        _zero_linear(self.modulation[1])
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (N, T, C): one conditioning per sequence, or one per token
            cond = _per_token(cond)
        shift, scale = self.modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class LayerGroup(nn.Module):
    """A block: consecutive layers run together. With ``checkpointing`` on (and gradients
    enabled), each layer keeps only its input and recomputes its activations in the backward
    pass (``torch.utils.checkpoint``)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.checkpointing = False

    def forward_cached(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run without checkpointing, attending to ``prefix[l]`` (cached keys/values of earlier
        tokens) at layer l; returns the output and every layer's (keys, values) of x."""
        kvs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, cond, mask, prefix[i] if prefix is not None else None, kvs)
        return x, kvs

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``positions`` (L,): each input position's index in the sequence, for layers that
        encode positions themselves (rotary embeddings); the built-in layers ignore it."""
        for layer in self.layers:
            call = partial(layer, positions=positions) if positions is not None else layer
            if self.checkpointing and torch.is_grad_enabled() and x.requires_grad:
                # Reentrant mode saves the layer input through autograd's saved tensors, so the
                # activation accounting (saved-tensor hooks) sees what is kept (but for
                # ``positions``, held by the call: L integers).
                x = torch.utils.checkpoint.checkpoint(call, x, cond, mask, use_reentrant=True)
            else:
                x = call(x, cond, mask)
        return x

    def __len__(self) -> int:
        return len(self.layers)


class WeightAverage(nn.Module):
    """An exponential moving average of some parameters (EMA, as DiT and EDM sample from), kept in
    buffers so that it travels with its module's ``state_dict``: checkpoints, the files of
    swapped-out blocks, per-block checkpoints of block-parallel runs and assembled models. It
    starts equal to the parameters; :meth:`update` moves it by ``1 - decay`` towards them."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]):
        super().__init__()
        self.names = [name for name, _ in named]
        for name, param in named:  # buffer names cannot hold dots
            self.register_buffer(name.replace(".", "__"), param.detach().clone())

    def shadows(self) -> list[torch.Tensor]:
        """The averages, in the order of ``names``."""
        return [cast(torch.Tensor, getattr(self, n.replace(".", "__"))) for n in self.names]

    @torch.no_grad()
    def restart(self, params: dict[str, torch.Tensor]) -> None:
        """Make every average equal to its parameter again (bitwise)."""
        for name, shadow in zip(self.names, self.shadows(), strict=True):
            shadow.copy_(params[name])

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], decay: float) -> None:
        """``average <- decay * average + (1 - decay) * param`` for every averaged parameter."""
        for name, shadow in zip(self.names, self.shadows(), strict=True):
            shadow.lerp_(params[name].detach(), 1.0 - decay)


class BlockStack(nn.Module):
    """Base for networks whose layers are grouped into blocks (``self.blocks``).

    Every block is initialised from its own seed, so block b can be built alone, later
    (:meth:`build_block`), and come out identical to the block b of a network built whole. A
    network built with ``materialize_blocks=False`` makes its blocks on the ``meta`` device (no
    storage). Where blocks live, giving them storage and taking it back, is the business of
    ``training/residency.py`` (block-resident training keeps one block in memory at a time).
    """

    blocks: nn.ModuleList
    # Whether every block and the shared modules keep an average of their weights
    # (``WeightAverage``); set before ``_init_blocks``, then ``_average_shared_modules`` at the
    # end of the network's ``__init__``.
    averaged: bool = False

    def _init_blocks(
        self,
        depth: int,
        num_blocks: int,
        make_layer: Callable[[int], nn.Module],
        seed: int,
        materialize: bool = True,
        layers_per_block: Sequence[int] | None = None,
    ) -> None:
        """Blocks of ``make_layer(i)`` (i: the layer's index in the whole stack): ``num_blocks``
        equal blocks of ``depth`` layers, or the sizes ``layers_per_block`` (summing to
        ``depth``; the paper's layer-distribution ablation, Table 7)."""
        if layers_per_block is None:
            if num_blocks < 1 or depth % num_blocks:
                raise ValueError(f"depth {depth} cannot be split into {num_blocks} equal blocks")
            layers_per_block = [depth // num_blocks] * num_blocks
        sizes = [int(n) for n in layers_per_block]
        if len(sizes) != num_blocks or sum(sizes) != depth or min(sizes) < 1:
            raise ValueError(
                f"layers_per_block {sizes} must be {num_blocks} sizes >= 1 summing to {depth}"
            )
        self._make_layer = make_layer
        self._block_sizes = sizes
        self._block_seed = seed
        if materialize:
            self.blocks = nn.ModuleList(self.build_block(b) for b in range(num_blocks))
        else:  # the same blocks without storage
            with torch.device("meta"):
                self.blocks = nn.ModuleList(self.build_block(b) for b in range(num_blocks))

    def block_layers(self, block: int) -> range:
        """The indices (in the whole stack) of the layers of ``block``."""
        start = sum(self._block_sizes[:block])
        return range(start, start + self._block_sizes[block])

    def build_block(self, block: int) -> LayerGroup:
        """A freshly initialised block ``block`` (same weights every time), on the default
        device (the CPU)."""
        with seeded(self._block_seed * 10_007 + 1_000 + block):
            group = LayerGroup([self._make_layer(i) for i in self.block_layers(block)])
        if self.averaged:  # per block: it moves only when its block trains
            group.average = WeightAverage(list(group.named_parameters()))
        return group

    # -- averaged weights (EMA) -------------------------------------------------------------------
    def _shared_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, q) for n, q in self.named_parameters() if not n.startswith("blocks.")]

    def _average_shared_modules(self) -> None:
        """Give the shared modules (everything outside ``blocks``) their average; call at the end
        of ``__init__``, after every shared module exists and is initialised."""
        if self.averaged:
            self.shared_average = WeightAverage(self._shared_named_parameters())

    def restart_shared_average(self) -> None:
        """Make the shared modules' average equal to their weights (e.g. after ``shared_init``
        loaded them: a run's average starts at its initial weights)."""
        self.shared_average.restart(dict(self._shared_named_parameters()))

    @torch.no_grad()
    def update_averages(self, blocks: list[int], decay: float) -> None:
        """After an optimizer step that updated ``blocks`` (and the shared modules): move their
        averages, and the shared modules', towards the new weights."""
        for b in blocks:
            group = self.blocks[b]
            cast(WeightAverage, group.average).update(dict(group.named_parameters()), decay)
        self.shared_average.update(dict(self._shared_named_parameters()), decay)

    def _averaged_pairs(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        for group in self.blocks:
            params = dict(group.named_parameters())
            if any(q.is_meta for q in params.values()):
                continue  # a block without storage (block-resident): nothing to swap
            average = cast(WeightAverage, group.average)
            pairs += [(params[n], t) for n, t in zip(average.names, average.shadows(), strict=True)]
        shared = dict(self._shared_named_parameters())
        average = self.shared_average
        pairs += [(shared[n], t) for n, t in zip(average.names, average.shadows(), strict=True)]
        return pairs

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Inside, every block in memory and the shared modules hold their averaged weights;
        afterwards their trained weights again, bitwise. A no-op for a network without averages,
        and inside another ``averaged_weights`` (an evaluation swaps once for all its batches)."""
        if not self.averaged or getattr(self, "_averages_in", False):
            yield
            return
        pairs = self._averaged_pairs()
        trained = [q.detach().clone() for q, _ in pairs]
        with torch.no_grad():
            for q, average in pairs:
                q.copy_(average)
        self._averages_in = True
        try:
            yield
        finally:
            self._averages_in = False
            with torch.no_grad():
                for (q, _), saved in zip(pairs, trained, strict=True):
                    q.copy_(saved)

    def set_checkpointing(self, enabled: bool) -> None:
        for group in self.blocks:
            cast(LayerGroup, group).checkpointing = enabled

    def set_shared_variants(self, variants: dict[int, dict[str, torch.Tensor]]) -> None:
        """Per-block copies of the shared modules (``shared=block-copies`` in sequential
        training, ``shared=per-block`` in block-parallel training): running block b first loads
        copy b into the shared modules. An empty dict switches copies off."""
        self._shared_variants = variants
        self._shared_current: int | None = None

    @property
    def has_shared_variants(self) -> bool:
        """Whether blocks run with their own copies of the shared modules."""
        return bool(getattr(self, "_shared_variants", None))

    def use_shared(self, block: int) -> None:
        variants = getattr(self, "_shared_variants", None)
        if variants and self._shared_current != block:
            self.load_state_dict(variants[block], strict=False)
            self._shared_current = block


class TokenNetwork(BlockStack):
    """What the token networks share (the built-in
    :class:`~diffusionblocks.networks.token_transformer.TokenTransformer` and a user's
    :class:`~diffusionblocks.networks.stack.TokenStackNetwork`): ids -> :meth:`embed` -> blocks
    (each layer given the condition, an optional attention mask and the positions) ->
    :meth:`output` -> logits. Subclasses set ``cond_embed`` and define ``embed`` and
    ``output``."""

    cond_embed: nn.Module

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N, T) -> (N, T, C)."""
        raise NotImplementedError

    def output(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(N, T, C) -> logits (N, T, V)."""
        raise NotImplementedError

    def run_block(
        self,
        block: int,
        ids: torch.Tensor,
        scalar: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One block as a whole network: ids (N, T), scalar (N,) -> logits (N, T, V)."""
        self.use_shared(block)
        cond = self.cond_embed(scalar)
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.output(self.blocks[block](self.embed(ids), cond, mask, positions), cond)

    def run_all(
        self, ids: torch.Tensor, scalar: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every block in order (the end-to-end network)."""
        cond = self.cond_embed(scalar)
        x = self.embed(ids)
        positions = torch.arange(ids.shape[1], device=ids.device)
        for group in self.blocks:
            x = group(x, cond, mask, positions)
        return self.output(x, cond)


class SlotNetwork(BlockStack):
    """What the networks that predict a target from an input share (the built-in
    :class:`~diffusionblocks.networks.vit.ViT` and a user's
    :class:`~diffusionblocks.networks.stack.StackNetwork`, both trained by
    :class:`~diffusionblocks.tasks.slot.SlotDenoiser`): input -> :meth:`features` (tokens
    (N, T, C) or a vector (N, C), and an optional condition (N, C)); the noisy target enters
    through a *slot* (:meth:`enter`: a token before the tokens carrying a learned embedding, or
    added to the vector); the blocks run on it with the condition; the output at the slot
    (:meth:`leave`) goes to :meth:`output` (logits, or the target's values).

    Subclasses set ``hidden``, ``token_stem``, ``cond_embed`` and ``label_embed`` (class
    targets) and define :meth:`features`, :meth:`slot_embedding` and :meth:`output`. With a
    ``self_cond`` projection (self-conditioning), the slot also reads an earlier estimate of the
    target (a subclass registers it only then)."""

    hidden: int
    token_stem: bool = True
    cond_embed: nn.Module
    label_embed: nn.Embedding

    def features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stem on ``inputs``: tokens (N, T, C) or a vector (N, C), and a condition (N, C)
        of the input's own or None."""
        raise NotImplementedError

    def slot_embedding(self) -> torch.Tensor:
        """The learned embedding (1, C) added to the slot token (token stems)."""
        raise NotImplementedError

    def output(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The head: the slot's output (N, C) and the condition -> logits (N, K) (class
        targets), or the target's values (N, D)."""
        raise NotImplementedError

    def target_entry(self, scaled: torch.Tensor) -> torch.Tensor:
        """The scaled noisy target as the slot's input (N, C): a label embedding as it is."""
        return scaled

    def label_table(self) -> torch.Tensor:
        """The L2-normalised label embeddings (K, C): the clean targets of class labels."""
        return F.normalize(self.label_embed.weight, dim=-1)

    def condition(
        self, c_noise: torch.Tensor, features: tuple[torch.Tensor, torch.Tensor | None]
    ) -> torch.Tensor:
        """The conditioning vector (N, C): the noise level's embedding, plus the stem's own."""
        cond = self.cond_embed(c_noise)
        extra = features[1]
        return cond if extra is None else cond + extra

    def enter(self, tokens: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """The slot (N, C) joined to the stem's output: a token (plus its learned embedding)
        before the tokens, or added to the vector."""
        if self.token_stem:
            return torch.cat([(slot + self.slot_embedding())[:, None], tokens], dim=1)
        return tokens + slot

    @staticmethod
    def leave(x: torch.Tensor) -> torch.Tensor:
        """The output at the slot (N, C)."""
        return x[:, 0] if x.dim() == 3 else x

    def run_block(
        self,
        block: int,
        slot: torch.Tensor,
        features: tuple[torch.Tensor, torch.Tensor | None],
        cond: torch.Tensor,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One block on the slot ``slot`` (N, C) and the stem's ``features``; returns the output
        at the slot (N, C). With ``self_cond``, ``previous`` (N, C) is an earlier estimate of
        the target, projected into the slot (None = zeros: no estimate)."""
        self.use_shared(block)
        self_cond = self._modules.get("self_cond")  # a submodule only with self-conditioning
        if self_cond is not None:
            slot = slot + self_cond(torch.zeros_like(slot) if previous is None else previous)
        return self.leave(self.blocks[block](self.enter(features[0], slot), cond))

    def run_all(
        self,
        slot: torch.Tensor,
        features: tuple[torch.Tensor, torch.Tensor | None],
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """Every block in order (the end-to-end network); the output at the slot (N, C)."""
        x = self.enter(features[0], slot)
        for group in self.blocks:
            x = group(x, cond)
        return self.leave(x)
