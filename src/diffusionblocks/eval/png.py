"""Minimal PNG writing (zlib + struct, no imaging library): image grids for samples."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import torch

__all__ = ["encode_png", "image_grid", "save_png", "text_mask"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(pixels: torch.Tensor) -> bytes:
    """pixels: (H, W) grey, or (H, W, C) with C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA; uint8."""
    if pixels.dtype != torch.uint8 or pixels.dim() not in (2, 3):
        raise ValueError("encode_png expects an (H, W) or (H, W, C) uint8 tensor")
    if pixels.dim() == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    h, w = pixels.shape[:2]
    channels = 1 if pixels.dim() == 2 else pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"encode_png takes 1-4 channels, got {channels}")
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # PNG colour types
    rows = pixels.reshape(h, -1).numpy()
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


# A 5x7 bitmap font (upper case, digits, some punctuation) for row labels: rows of 5 pixels,
# top to bottom, '#' ink. Lower case is drawn as upper case, anything else as '?'.
_FONT = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# #...# .#.#. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    " ": "..... ..... ..... ..... ..... ..... .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "'": "..#.. ..#.. .#... ..... ..... ..... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
}


def text_mask(text: str, scale: int = 1) -> torch.Tensor:
    """``text`` drawn in the built-in 5x7 font: a bool (7 * scale, (6 * len - 1) * scale) mask,
    True where there is ink (one blank column between characters)."""
    glyphs = []
    for ch in text.upper():
        rows = _FONT.get(ch, _FONT["?"]).split()
        glyphs.append(torch.tensor([[c == "#" for c in row] for row in rows]))
        glyphs.append(torch.zeros(7, 1, dtype=torch.bool))
    mask = torch.cat(glyphs[:-1], 1) if glyphs else torch.zeros(7, 0, dtype=torch.bool)
    return mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def image_grid(
    images: torch.Tensor,
    rows: int,
    pad: int = 2,
    scale: int | None = None,
    row_labels: list[str] | None = None,
    min_side: int = 64,
) -> torch.Tensor:
    """images (N, C, H, W) in [0, 1], C in (1, 3) -> one uint8 picture, ``rows`` rows, white
    padding, each pixel repeated ``scale`` times (nearest neighbour; default: the smallest
    factor that makes every image at least ``min_side`` pixels on its longer side).
    ``row_labels``: one text per row, written in black at the left of its row."""
    n, c, h, w = images.shape
    if scale is None:
        scale = max(1, -(-min_side // max(h, w)))
    cols = -(-n // rows)
    canvas = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i].clamp(0, 1)
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    if row_labels:
        if len(row_labels) != rows:
            raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
        cell = (h + pad) * scale
        text_scale = max(1, min(3, cell // 30))
        masks = [text_mask(label, text_scale) for label in row_labels]
        margin = 3 * text_scale
        width = max(m.shape[1] for m in masks) + 2 * margin
        column = torch.ones(c, canvas.shape[1], width)
        for r, m in enumerate(masks):
            top = pad * scale + r * cell + max(0, (h * scale - m.shape[0]) // 2)
            region = column[:, top : top + m.shape[0], margin : margin + m.shape[1]]
            region[:, m[: region.shape[1], : region.shape[2]]] = 0.0
        canvas = torch.cat([column, canvas], 2)
    out = (canvas * 255).round().to(torch.uint8)
    return out[0] if c == 1 else out.permute(1, 2, 0).contiguous()


def save_png(pixels: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encode_png(pixels))
    os.replace(tmp, path)
    return path
