"""Recurrent-depth language model (Huginn-style): a prelude, a weight-tied core applied K times, a
coda.

The prelude turns tokens into a clean stream e (causal attention). The core and the coda work on
two streams, [e ; one state per position]: position j's state sees the clean stream up to j and
itself, never another position's state (so every position's recurrence is independent and the
clean stream can be shared). The core's input at each application is
``adapter([state ; e])``; adaLN conditions the state stream per token (on sigma for
DiffusionBlocks, on a learned constant for the truncated-backprop baseline).

The whole network is one trained block: ``blocks[0]`` holds prelude, core and coda. The network
knows nothing about noise: the task scales states and passes conditioning vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .layers import AdaLNLayer, AdaLNOutput, LayerGroup, ScalarEmbedding, seeded


@dataclass(frozen=True)
class RecurrentShape:
    vocab: int  # characters
    max_len: int  # longest sequence
    hidden: int  # token width
    heads: int  # attention heads
    prelude: int = 2  # layers before the loop
    core: int = 4  # layers in the weight-tied core
    coda: int = 2  # layers after the loop
    mlp_ratio: float = 4.0  # MLP width / hidden
    seed: int = 0  # initialisation seed of the layers
    self_condition: bool = False  # the core also reads a previous estimate (zero-initialised)


def prelude_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    i = torch.arange(t, device=device)
    return i[:, None] >= i[None, :]


def state_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(2t, 2t) for [clean 0..t-1 ; state 0..t-1]: clean i -> clean <= i; state i -> clean <= i
    and state i; clean never -> state."""
    i = torch.arange(t, device=device)
    causal = i[:, None] >= i[None, :]
    top = torch.cat([causal, torch.zeros(t, t, dtype=torch.bool, device=device)], 1)
    bottom = torch.cat([causal, torch.eye(t, dtype=torch.bool, device=device)], 1)
    return torch.cat([top, bottom], 0)


class RecurrentStack(nn.Module):
    """The trained block: prelude, core (applied K times with the same weights), coda."""

    def __init__(self, s: RecurrentShape):
        super().__init__()

        def group(n: int) -> LayerGroup:
            return LayerGroup([AdaLNLayer(s.hidden, s.heads, s.mlp_ratio) for _ in range(n)])

        with seeded(s.seed * 10_007 + 1_000):
            self.prelude, self.core, self.coda = group(s.prelude), group(s.core), group(s.coda)
        self.adapter = nn.Linear(2 * s.hidden, s.hidden)
        # Self-conditioning: a previous estimate of the target enters the core's input through
        # a zero-initialised linear map without bias, so that no estimate (None) and a zero
        # estimate are the same input (a model trained without it has no such weights).
        self.estimate_in: nn.Linear | None = None
        if s.self_condition:  # drawing nothing: every other weight as without it
            with torch.random.fork_rng(devices=[]):
                self.estimate_in = nn.Linear(s.hidden, s.hidden, bias=False)
            nn.init.zeros_(self.estimate_in.weight)

    def __len__(self) -> int:
        return len(self.prelude) + len(self.core) + len(self.coda)


class RecurrentDepthLM(nn.Module):
    """Embeddings, the recurrent stack (``blocks[0]``), the conditioning embedder and the head."""

    def __init__(self, shape: RecurrentShape):
        super().__init__()
        s = shape
        self.shape = s
        self.token_embed = nn.Embedding(s.vocab, s.hidden)
        self.pos_embed = nn.Parameter(torch.zeros(1, s.max_len, s.hidden))
        self.stream_embed = nn.Parameter(torch.zeros(2, s.hidden))
        self.clean_cond = nn.Parameter(torch.zeros(s.hidden))
        self.state_cond = nn.Parameter(torch.zeros(s.hidden))  # the baseline's constant condition
        self.cond_embed = ScalarEmbedding(s.hidden)
        # The stack's adapter draws from the global generator; its state here lets build_block
        # make the same stack again.
        self._stack_rng = torch.get_rng_state()
        self.blocks = nn.ModuleList([RecurrentStack(s)])
        self.head = AdaLNOutput(s.hidden, s.vocab, zero_init=True)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.stream_embed, std=0.02)

    def build_block(self, block: int) -> RecurrentStack:
        """A freshly initialised stack (the one block, ``block`` 0), on the default device: the
        weights the constructor gave ``blocks[0]``, every time (global generator untouched)."""
        if block != 0:
            raise IndexError(f"a recurrent-depth model has one block, not block {block}")
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._stack_rng)
            return RecurrentStack(self.shape)

    def set_checkpointing(self, enabled: bool) -> None:
        for g in (self.stack.prelude, self.stack.core, self.stack.coda):
            g.checkpointing = enabled

    @property
    def stack(self) -> RecurrentStack:
        return cast(RecurrentStack, self.blocks[0])

    # -- passes -----------------------------------------------------------------------------
    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Prelude: ids (N, T) -> clean stream e (N, T, C)."""
        n, t = ids.shape
        x = self.token_embed(ids) + self.pos_embed[:, :t] + self.stream_embed[0]
        return self.stack.prelude(x, self.clean_cond.expand(n, t, -1), prelude_mask(t, ids.device))

    def _two_stream(
        self,
        group: LayerGroup,
        e: torch.Tensor,
        states: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        n, t, _ = e.shape
        x = torch.cat([e, states], 1)
        c = torch.cat([self.clean_cond.expand(n, t, -1), cond], 1)
        return group(x, c, mask)[:, t:]

    def core_step(
        self,
        e: torch.Tensor,
        state: torch.Tensor,
        cond: torch.Tensor,
        estimate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One core application: state (N, T, C) -> new state (N, T, C). cond (N, T, C);
        ``estimate`` (N, T, C): a previous estimate of the target, read only by a model built
        with ``self_condition`` (None there = zeros: no estimate)."""
        t = e.shape[1]
        u = (
            self.stack.adapter(torch.cat([state, e], -1))
            + self.pos_embed[:, :t]
            + self.stream_embed[1]
        )
        if self.stack.estimate_in is not None and estimate is not None:
            u = u + self.stack.estimate_in(estimate)
        return self._two_stream(self.stack.core, e, u, cond, state_mask(t, e.device))

    def readout(self, e: torch.Tensor, state: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Coda and head: the state stream -> logits (N, T, V)."""
        t = e.shape[1]
        h = self._two_stream(self.stack.coda, e, state, cond, state_mask(t, e.device))
        return self.head(h, cond)

    def condition(self, c_noise: torch.Tensor) -> torch.Tensor:
        """Per-token conditioning from c_noise (N, T)."""
        n, t = c_noise.shape
        return self.cond_embed(c_noise.reshape(-1)).view(n, t, -1)

    def constant_condition(self, n: int, t: int) -> torch.Tensor:
        return self.state_cond.expand(n, t, -1)
