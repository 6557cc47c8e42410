"""The .npz files of the MNIST-1D sizing probes (docs/results/classification/depth-check/probes/):
the mnist1d generator's default arguments with N signals, cut into tokens of P points (the
channels of one pixel). P=2, N=50,000 is what ``data=mnist1d`` loads.

    python scripts/experiments/mnist1d_probe_npz.py OUT.npz N P   # e.g. /tmp/mnist1d-c4.npz 12000 4
"""

from __future__ import annotations

import sys

import numpy as np

import diffusionblocks.data.images as images


def main(argv: list[str] | None = None) -> None:
    out, n, p = (argv or sys.argv[1:])[:3]
    images.MNIST1D_POINTS_PER_TOKEN = int(p)
    data = images.load_mnist1d(int(n))
    np.savez(out, x=data.train_x.numpy(), y=data.train_y.numpy(),
             x_test=data.test_x.numpy(), y_test=data.test_y.numpy())  # fmt: skip


if __name__ == "__main__":
    main()
