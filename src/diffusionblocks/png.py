"""Moved: the PNG writer now lives in :mod:`diffusionblocks.eval.png`. This module re-exports its
names so that ``from diffusionblocks.png import image_grid, save_png`` keeps working."""

from __future__ import annotations

from .eval.png import _FONT as _FONT  # private, kept importable from here
from .eval.png import _chunk as _chunk
from .eval.png import encode_png, image_grid, save_png, text_mask

__all__ = ["encode_png", "image_grid", "save_png", "text_mask"]
