"""Labelled image datasets: Fashion-MNIST (IDX files), scikit-learn digits, user ``.npz`` files.

Images come back as float32 in [0, 1], shape (N, C, H, W); labels as int64. Every problem with the
input raises :class:`DataError` with a message that says what is wrong and, for a missing dataset,
how to get it. There is no silent fallback to another dataset.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
IMAGE_DATASETS = ("fashion-mnist", "digits")


class DataError(ValueError):
    """The dataset is missing or malformed; the message says which file and why."""


@dataclass
class ImageDataset:
    """Train and test splits of a labelled image dataset, in memory."""

    name: str
    train_x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] | None = None
    val_x: torch.Tensor | None = None  # validation split (held out of training), if any
    val_y: torch.Tensor | None = None
    shuffled: bool = True  # whether the training examples are in random order (not by class)

    def hold_out(self, fraction: float) -> ImageDataset:
        """Move ``round(fraction * N)`` training examples to the validation split (the split every
        model choice is made on; the test split is read once for final tables): the last ones
        when the training set is in random order (Fashion-MNIST, digits, an ``.npz`` split by the
        loader), otherwise the last ones of a seed-0 permutation, so that a file sorted by class
        does not lose whole classes to validation. The training examples keep their order."""
        n = len(self.train_y)
        n_val = int(round(n * fraction))
        if n_val == 0:
            return self
        if n_val >= n:
            raise DataError(
                f"{self.name}: val_fraction={fraction} leaves no training examples out of {n}"
            )
        if self.shuffled:  # slices: views of the loaded images, no copy
            return dataclasses.replace(
                self,
                train_x=self.train_x[: n - n_val],
                train_y=self.train_y[: n - n_val],
                val_x=self.train_x[n - n_val :],
                val_y=self.train_y[n - n_val :],
            )
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            val = order[-n_val:].sort().values
            keep = torch.ones(n, dtype=torch.bool)
            keep[val] = False
            train = torch.nonzero(keep)[:, 0]
        return dataclasses.replace(
            self,
            train_x=self.train_x[train],
            train_y=self.train_y[train],
            val_x=self.train_x[val],
            val_y=self.train_y[val],
        )

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``name``: ``train``, ``val`` or ``test``."""
        if name == "val" and self.val_y is None:
            raise DataError(f"{self.name} has no validation split (val_fraction is 0)")
        x, y = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y),
                "test": (self.test_x, self.test_y)}[name]  # fmt: skip
        return x, y

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, train: int = 0, test: int = 0) -> ImageDataset:
        """The first ``train`` / ``test`` examples of each split (0 = all)."""

        def take(x: torch.Tensor, n: int) -> torch.Tensor:
            return x[:n] if n else x

        return dataclasses.replace(
            self,
            train_x=take(self.train_x, train),
            train_y=take(self.train_y, train),
            test_x=take(self.test_x, test),
            test_y=take(self.test_y, test),
        )


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
    directory = Path(data_dir or FASHION_MNIST_DIR)
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


# ---------------------------------------------------------------------- user .npz
def load_npz(path: str | os.PathLike, test_fraction: float = 0.1) -> ImageDataset:
    """A user dataset: ``x`` (N, H, W) or (N, C, H, W), uint8 (0-255) or float (0-1), and ``y``
    integer labels (N,). Optional ``x_test``/``y_test`` give the test split; otherwise the last
    ``test_fraction`` of a seed-0 permutation is held out. Optional ``class_names``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # zipfile/pickle/format errors all mean the same thing here
        raise DataError(f"cannot read {path} as an .npz archive: {err}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path} has no array '{key}' (found: {', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} must have both 'x_test' and 'y_test', or neither")
    x, y = _check_split(path, "x", "y", arrays["x"], arrays["y"])
    names = None
    if "class_names" in arrays:
        names = tuple(str(n) for n in arrays["class_names"].tolist())
    if "x_test" in arrays:
        tx, ty = _check_split(path, "x_test", "y_test", arrays["x_test"], arrays["y_test"])
        if tx.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{path}: test images have shape {tuple(tx.shape[1:])}, train images "
                f"{tuple(x.shape[1:])}"
            )
    else:
        if not 0 < test_fraction < 1:
            raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
        n_test = int(round(len(y) * test_fraction))
        if n_test < 1 or n_test >= len(y):
            raise DataError(
                f"{path}: {len(y)} examples cannot be split with test_fraction={test_fraction} "
                "(each split needs at least one example)"
            )
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        x, y, tx, ty = (
            x[order[:-n_test]],
            y[order[:-n_test]],
            x[order[-n_test:]],
            y[order[-n_test:]],
        )
    num_classes = int(max(y.max(), ty.max())) + 1
    if names is not None and len(names) < num_classes:
        raise DataError(f"{path}: {len(names)} class_names for labels up to {num_classes - 1}")
    # Training examples in the file's order (x_test given) may be sorted: say so.
    return ImageDataset(path.stem, x, y, tx, ty, num_classes, names,
                        shuffled="x_test" not in arrays)  # fmt: skip


def _check_split(path: Path, xk: str, yk: str, x: np.ndarray, y: np.ndarray):
    if x.ndim not in (3, 4):
        raise DataError(f"{path}: '{xk}' must be (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: '{xk}' is empty")
    if x.ndim == 4 and not 1 <= x.shape[1] <= 4:
        raise DataError(
            f"{path}: '{xk}' has {x.shape[1]} channels in (N, C, H, W) layout (expected 1-4)"
        )
    if min(x.shape[-2:]) < 2:
        raise DataError(f"{path}: '{xk}' images are {x.shape[-2:]} pixels (need at least 2x2)")
    if x.dtype == np.uint8:
        images = _to_images(x)
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{path}: '{xk}' contains NaN or infinite values")
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{path}: float '{xk}' must lie in [0, 1] (found {x.min():.3g}..{x.max():.3g}); "
                "scale it, or store uint8 in 0..255"
            )
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        images = images[:, None] if images.dim() == 3 else images
    else:
        raise DataError(f"{path}: '{xk}' has dtype {x.dtype} (expected uint8 or float)")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{path}: '{yk}' must be a vector with one label per image; got shape {y.shape} "
            f"for {len(x)} images"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{yk}' has dtype {y.dtype} (expected integer labels)")
    if y.min() < 0:
        raise DataError(f"{path}: '{yk}' has negative labels (min {y.min()})")
    if y.max() >= 100_000:
        raise DataError(f"{path}: '{yk}' has label {y.max()}; labels must be < 100000")
    return images, torch.from_numpy(y.astype(np.int64))


def _to_images(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, copy=True)).float().div_(255.0)
    return t[:, None] if t.dim() == 3 else t


# ---------------------------------------------------------------------- entry point
def load_image_dataset(
    data: str, data_dir: str | None = None, test_fraction: float = 0.1
) -> ImageDataset:
    """``data`` is a dataset name (``fashion-mnist``, ``digits``) or a path to a ``.npz`` file."""
    if data == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if data == "digits":
        return load_digits_dataset()
    if data.endswith(".npz") or os.sep in data or Path(data).exists():
        return load_npz(data, test_fraction)
    raise DataError(
        f"unknown dataset {data!r}: use one of {', '.join(IMAGE_DATASETS)} or a path to a .npz "
        "file with arrays x and y"
    )
