"""Transformer pieces with adaLN-Zero conditioning (Peebles & Xie 2023, DiT).

A conditioning vector ``cond`` (N, C) modulates every layer: LayerNorm without affine parameters,
then ``x * (1 + scale) + shift``, and a gate on each residual branch. The modulation projections
start at zero, so every layer starts as the identity. These modules know nothing about noise
schedules: they see a conditioning scalar and vectors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (N, T, C) * (1 + scale (N, 1, C)) + shift (N, 1, C)."""
    return x * (1 + scale) + shift


class ScalarEmbedding(nn.Module):
    """Embeds one conditioning scalar per example (e.g. c_noise = ln(sigma)/4) as a vector:
    sinusoidal features of ``scalar * input_scale`` followed by a two-layer MLP (as DiT's
    timestep embedder)."""

    def __init__(
        self, dim: int, frequency_dim: int = 128, input_scale: float = 1000.0, max_period=1e4
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
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, H, T, C/H)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, T, C/H)
        return self.proj(y.transpose(1, 2).reshape(n, t, c))


class AdaLNLayer(nn.Module):
    """Pre-norm transformer layer with adaLN-Zero: six modulation vectors from ``cond``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mods = self.modulation(cond)[:, None, :].chunk(6, dim=-1)  # 6 x (N, 1, C)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), mask)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class AdaLNOutput(nn.Module):
    """Final adaLN: LayerNorm modulated by ``cond`` (shift, scale), then a linear map."""

    def __init__(self, dim: int, out_dim: int, zero_init: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond).chunk(2, dim=-1)  # (N, C) each
        if x.dim() == 3:  # (N, T, C): broadcast over tokens
            shift, scale = shift[:, None], scale[:, None]
        return self.linear(modulate(self.norm(x), shift, scale))


class LayerGroup(nn.Module):
    """A block: consecutive adaLN layers run as one unit."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, cond, mask)
        return x

    def __len__(self) -> int:
        return len(self.layers)


def group_layers(depth: int, num_groups: int, make_layer) -> nn.ModuleList:
    """``depth`` layers from ``make_layer()`` split into ``num_groups`` equal consecutive groups."""
    if num_groups < 1 or depth % num_groups:
        raise ValueError(f"depth {depth} cannot be split into {num_groups} equal blocks")
    per = depth // num_groups
    return nn.ModuleList(LayerGroup([make_layer() for _ in range(per)]) for _ in range(num_groups))
