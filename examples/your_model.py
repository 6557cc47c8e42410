"""Train your own residual network with DiffusionBlocks: an MLP-Mixer on a user's .npz.

    python examples/your_model.py --quick          # 8x8 digits saved as an .npz: < 1 min on CPU
    python examples/your_model.py --data my.npz    # x: (N, 8, 8) images, y: integer labels

The network below is ordinary PyTorch (nothing from diffusionblocks inside it). DiffusionBlocks
wraps each layer with noise-level conditioning, cuts the layers into blocks, trains each block
alone and chains them at inference (docs/your-model.md). Edit SIDE, PATCH and CLASSES for your
images. The run folder works with every command: dblocks eval/assemble, db.load(...).predict(x).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

import diffusionblocks as db

SIDE, PATCH, CLASSES, WIDTH, DEPTH = 8, 2, 10, 64, 6
TOKENS = (SIDE // PATCH) ** 2 + 1  # the patches, and the slot token DiffusionBlocks puts first


class Patches(nn.Module):
    """Images (N, SIDE, SIDE) -> patch tokens (N, TOKENS - 1, WIDTH)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(PATCH * PATCH, WIDTH)
        self.position = nn.Parameter(torch.randn(1, TOKENS - 1, WIDTH) * 0.02)

    def forward(self, images):
        n, k = len(images), SIDE // PATCH
        x = images.reshape(n, k, PATCH, k, PATCH).permute(0, 1, 3, 2, 4)
        return self.embed(x.reshape(n, k * k, PATCH * PATCH)) + self.position


class MixerLayer(nn.Module):
    """Token mixing, then channel mixing, each residual (MLP-Mixer, Tolstikhin et al. 2021)."""

    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.tokens = nn.Sequential(nn.Linear(TOKENS, 2 * TOKENS), nn.GELU(),
                                    nn.Linear(2 * TOKENS, TOKENS))  # fmt: skip
        self.channels = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(),
                                      nn.Linear(4 * WIDTH, WIDTH))  # fmt: skip

    def forward(self, x):  # (N, TOKENS, WIDTH) -> the same shape
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


def build() -> db.ResidualStack:
    """The network: stem, residual layers, head (a function, so every run can rebuild it)."""
    return db.ResidualStack(
        stem=Patches(),
        layers=[MixerLayer() for _ in range(DEPTH)],
        head=nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, CLASSES)),
    )


def digits_npz(path: Path) -> Path:
    """scikit-learn's 8x8 digits (offline) as a user's .npz: x (N, 8, 8) floats, y labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(path, x=digits.images.astype(np.float32), y=digits.target)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="your .npz (default: the digits, saved to runs/digits.npz)")
    parser.add_argument("--out", help="run folder (default: a new one under runs/)")
    parser.add_argument("--quick", action="store_true", help="a short run (CPU, < 1 minute)")
    args = parser.parse_args()
    Path("runs").mkdir(exist_ok=True)
    # --- the user code: data, train, use --------------------------------------------------
    data = args.data or digits_npz(Path("runs/digits.npz"))
    model = db.train("your-model", out=args.out, model=build, data=data, num_blocks=3,
                     epochs=20 if args.quick else 60)  # fmt: skip
    x = np.load(data)["x"][:8]
    print("predictions for the first 8 examples:", model.predict(x).tolist())
    test = model.results["eval"]
    print(
        f"test accuracy {test['accuracy']:.4f} ({test['examples']} examples, readout "
        f"{test['readout']}; trivial baseline {model.results['trivial']['test']['accuracy']:.4f})"
    )


if __name__ == "__main__":
    main()
