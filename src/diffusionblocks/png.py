"""Minimal PNG writing (zlib + struct, no imaging library): image grids for samples."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import torch


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(pixels: torch.Tensor) -> bytes:
    """pixels: (H, W) grey or (H, W, 3) RGB, uint8."""
    if pixels.dtype != torch.uint8 or pixels.dim() not in (2, 3):
        raise ValueError("encode_png expects an (H, W) or (H, W, 3) uint8 tensor")
    h, w = pixels.shape[:2]
    colour = 0 if pixels.dim() == 2 else 2
    rows = pixels.reshape(h, -1).numpy()
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def image_grid(images: torch.Tensor, rows: int, pad: int = 2, scale: int = 2) -> torch.Tensor:
    """images (N, C, H, W) in [0, 1], C in (1, 3) -> one uint8 picture, ``rows`` rows, white
    padding, each pixel repeated ``scale`` times."""
    n, c, h, w = images.shape
    cols = -(-n // rows)
    canvas = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i].clamp(0, 1)
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    out = (canvas * 255).round().to(torch.uint8)
    return out[0] if c == 1 else out.permute(1, 2, 0).contiguous()


def save_png(pixels: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encode_png(pixels))
    os.replace(tmp, path)
    return path
