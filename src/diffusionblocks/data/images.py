"""Labelled image datasets: Fashion-MNIST (IDX files), scikit-learn digits, MNIST-1D (generated),
user ``.npz`` files.

Images come back as float32 in [0, 1], shape (N, C, H, W); labels as int64. Every problem with the
input raises :class:`DataError` with a message that says what is wrong and, for a missing dataset,
how to get it; data that loads but will distort the results (test classes with no training
example) gives a :class:`DataWarning`. There is no silent fallback to another dataset. The user
file format is described in ``docs/data.md``.

This module holds the built-in datasets and the entry point :func:`load_image_dataset`; the
dataset type and the errors live in :mod:`.base`, the user ``.npz`` loader in :mod:`.npz`, and
every name of theirs listed in ``__all__`` is importable from here as well.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .base import ACTIVE_CARD, DataError, DataWarning, ImageDataset, _to_images
from .npz import FORMATS_HINT, NPY_MAGIC, ZIP_MAGIC, load_npz

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_HELP",
    "FORMATS_HINT",
    "IMAGE_DATASETS",
    "NPY_MAGIC",
    "TEXT_DATASETS",
    "ZIP_MAGIC",
    "DataError",
    "DataWarning",
    "ImageDataset",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_image_dataset",
    "load_mnist1d",
    "load_npz",
    "read_idx",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_HELP = (
    "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
    f"{FASHION_MNIST_DIR}), or download the four *-ubyte.gz files from "
    "https://github.com/zalandoresearch/fashion-mnist and pass --set data_dir=DIR."
)
IMAGE_DATASETS = ("fashion-mnist", "digits", "mnist1d")
TEXT_DATASETS = ("shakespeare",)  # named here too: text.py imports this module, not the reverse


# ---------------------------------------------------------------------- IDX (Fashion-MNIST)
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file (only {len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header incomplete)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DataError(
            f"{path} is truncated or corrupt: header says {dims} ({size} bytes), "
            f"found {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DataError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}. {FASHION_MNIST_HELP}"
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Fashion-MNIST, 60,000 train and 10,000 test 28x28 grey images in 10 classes."""
    directory = Path(data_dir or FASHION_MNIST_DIR).expanduser()
    if not directory.is_dir():
        raise DataError(f"Fashion-MNIST directory {directory} does not exist. {FASHION_MNIST_HELP}")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"Fashion-MNIST {split} split: images {images.shape} and labels {labels.shape} "
                "do not match"
            )
        if labels.max() >= 10:
            raise DataError(f"Fashion-MNIST {split} labels go up to {labels.max()} (expected < 10)")
        parts[split] = (_to_images(images), torch.from_numpy(labels.astype(np.int64)))
    return ImageDataset("fashion-mnist", *parts["train"], *parts["test"], 10, FASHION_MNIST_CLASSES)


# ---------------------------------------------------------------------- scikit-learn digits
def load_digits_dataset(test_size: int = 360) -> ImageDataset:
    """scikit-learn's 8x8 digits (1,797 images), split into fixed train and test parts (the
    last ``test_size`` examples of a permutation with seed 0)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "the 'digits' dataset needs scikit-learn: pip install scikit-learn "
            "(or pip install 'diffusionblocks[digits]')"
        ) from None
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:-test_size], order[-test_size:]
    return ImageDataset("digits", x[train], y[train], x[test], y[test], 10)


# ---------------------------------------------------------------------- MNIST-1D (generated)
MNIST1D_SAMPLES = 50_000  # examples generated: 80% train (40,000), 20% test (10,000)
MNIST1D_POINTS_PER_TOKEN = 2  # consecutive points of the 40-point signal in one pixel's channels


def load_mnist1d(num_samples: int | None = None) -> ImageDataset:
    """MNIST-1D (Greydanus, 2020): ten 1-D digit templates, each padded, sheared, translated,
    scaled and noised into a 40-point signal; a small data set on which the choice of
    architecture (and depth) shows, unlike Fashion-MNIST. Generated offline and deterministically
    by the ``mnist1d`` package's ``make_dataset`` with its default arguments (seed 42) except
    ``num_samples`` (default ``MNIST1D_SAMPLES``, 10x the package's 5,000, so that a 6-layer
    model does not overfit: about 11 s); the package's own split (the first 80% train) is kept.

    The image classifier reads it as images: each signal is cut into tokens of
    ``MNIST1D_POINTS_PER_TOKEN`` consecutive points, held as the channels of one pixel, and the
    20 pixels are laid out row by row as a 4x5 image (learned position embeddings make the
    layout immaterial; use ``patch_size=1``: one token per pixel). Values are mapped to [0, 1]
    by one fixed affine map (the generated set's minimum and maximum). The generator's global
    ``random`` and ``numpy`` seeds are restored afterwards."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(
            "the 'mnist1d' dataset needs the mnist1d package: pip install 'mnist1d==0.0.2.post1' "
            "(or pip install 'diffusionblocks[mnist1d]')"
        ) from None
    import random

    args = get_dataset_args()
    args.num_samples = num_samples or MNIST1D_SAMPLES
    states = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    lo = min(data["x"].min(), data["x_test"].min())
    hi = max(data["x"].max(), data["x_test"].max())
    p = MNIST1D_POINTS_PER_TOKEN
    pixels = data["x"].shape[1] // p  # 40-point signals
    rows = max(d for d in range(2, int(pixels**0.5) + 1) if pixels % d == 0)  # 4x5 for 20

    def images(x: np.ndarray) -> torch.Tensor:
        x = ((x - lo) / (hi - lo)).astype(np.float32).reshape(len(x), pixels, p)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1))).reshape(
            len(x), p, rows, pixels // rows
        )

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    names = tuple(str(d) for d in range(10))
    return ImageDataset("mnist1d", images(data["x"]), labels(data["y"]),
                        images(data["x_test"]), labels(data["y_test"]), 10, names)  # fmt: skip


# ---------------------------------------------------------------------- entry point
def load_image_dataset(
    data: str,
    data_dir: str | None = None,
    test_fraction: float = 0.1,
    *,
    allow_sparse_labels: bool = False,
    allow_single_class: bool = False,
) -> ImageDataset:
    """``data`` is a dataset name (``fashion-mnist``, ``digits``, ``mnist1d``) or a path to a
    ``.npz`` file (see :func:`load_npz` for the keywords). While a task is built from a data
    card (``card.py``), the card's stand-in instead."""
    card = ACTIVE_CARD.get()
    if card is not None:
        return card.images()
    if data == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if data == "digits":
        return load_digits_dataset()
    if data == "mnist1d":
        return load_mnist1d()
    if data in TEXT_DATASETS:
        raise DataError(
            f"{data!r} is a text dataset: {FORMATS_HINT} (image datasets: "
            f"{', '.join(IMAGE_DATASETS)})"
        )
    path = Path(data).expanduser()
    if path.suffix or os.sep in data or "/" in data or path.exists():
        return load_npz(
            data,
            test_fraction,
            allow_sparse_labels=allow_sparse_labels,
            allow_single_class=allow_single_class,
        )
    raise DataError(
        f"unknown dataset {data!r}: use one of {', '.join(IMAGE_DATASETS)} or a path to a .npz "
        "file with arrays x and y"
    )
