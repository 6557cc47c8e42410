"""The network layer: plain modules that expose ``.blocks`` (groups of layers) and shared parts.
They know nothing about noise schedules."""

from .layers import AdaLNLayer, AdaLNOutput, Attention, BlockStack, LayerGroup, ScalarEmbedding
from .vit import ViT, ViTShape

__all__ = [
    "AdaLNLayer",
    "AdaLNOutput",
    "Attention",
    "BlockStack",
    "LayerGroup",
    "ScalarEmbedding",
    "ViT",
    "ViTShape",
]
