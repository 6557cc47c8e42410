"""Write the two stand-ins for a user's own images used by scripts/experiments/user_images.sh:

- ``digits8.npz``: scikit-learn's 1,797 8x8 digits as uint8 0..255 (N, H, W), no test arrays
  (the loader holds out ``test_fraction``);
- ``fmnist16.npz``: 6,000 Fashion-MNIST training images pooled to 16x16, channels-last uint8
  (N, H, W, 1), with 2,000 official test images as ``x_test``/``y_test``.

    python scripts/experiments/make_user_npz.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffusionblocks.data.images import load_fashion_mnist


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images / 16.0 * 255).astype(np.uint8)
    np.savez(folder / "digits8.npz", x=x, y=digits.target.astype(np.int64))

    fm = load_fashion_mnist()

    def pool(images: torch.Tensor) -> np.ndarray:  # (N, 1, 28, 28) in [0, 1] -> (N, 16, 16, 1)
        small = F.interpolate(images, size=(16, 16), mode="area")
        return (small * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    np.savez(folder / "fmnist16.npz", x=pool(fm.train_x[:6000]), y=fm.train_y[:6000].numpy(),
             x_test=pool(fm.test_x[:2000]), y_test=fm.test_y[:2000].numpy())  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
