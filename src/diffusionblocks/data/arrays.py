"""A user's arrays for their own network (the ``stack`` task, ``docs/your-model.md``): inputs of any
shape and either class labels or continuous targets, from one ``.npz``.

``x``: inputs (N, ...), numbers of any dtype (read as float32). ``y``: integer class labels (N,)
for ``target=classes``, or numbers (N,) or (N, ...) for ``target=continuous``. Optional
``x_test``/``y_test`` give the test split (else the last ``test_fraction`` of a seed-0 permutation);
optional ``class_names``. Every problem raises :class:`DataError` naming the file and the array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import ACTIVE_CARD, DataError, ImageDataset
from .npz import _check_labels, read_xy, split_test

TARGETS = ("classes", "continuous")


@dataclass
class ArrayDataset(ImageDataset):
    """Train/validation/test splits of inputs ``x`` (N, ...) and targets ``y``: class labels
    (N,) int64 (``num_classes`` > 0) or continuous targets (N, ...) float32 (``num_classes``
    0). The split and subset logic is the image datasets'. A data card's stand-in (``card.py``)
    has no examples; ``pixel_stats`` holds the training inputs' (mean, std) and
    ``target_stats`` the continuous targets' per-value (means, stds)."""

    target_stats: tuple[list[float], list[float]] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (no batch axis)."""
        return tuple(int(n) for n in self.train_x.shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The shape of one target (no batch axis): () for class labels and single numbers."""
        return tuple(int(n) for n in self.train_y.shape[1:])


def load_arrays(path: str | os.PathLike, target: str, test_fraction: float = 0.1) -> ArrayDataset:
    """The arrays of ``path`` (format in the module docstring) for a ``target`` of "classes" or
    "continuous"; ``~`` is expanded. While a task is built from a data card (``card.py``), the
    card's stand-in instead."""
    if target not in TARGETS:
        raise DataError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    card = ACTIVE_CARD.get()
    if card is not None:  # building from a data card: its stand-in
        return card.arrays()
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset file {os.path.abspath(path)} does not exist (an .npz with x, y)")
    arrays = read_xy(path)
    x, y = _pair(path, "x", "y", arrays["x"], arrays["y"], target)
    if "x_test" in arrays:
        tx, ty = _pair(path, "x_test", "y_test", arrays["x_test"], arrays["y_test"], target)
        for what, a, b in (("inputs", tx, x), ("targets", ty, y)):
            if a.shape[1:] != b.shape[1:]:
                raise DataError(f"{path}: test {what} have shape {tuple(a.shape[1:])}, "
                                f"training {what} {tuple(b.shape[1:])}")  # fmt: skip
    else:
        x, y, tx, ty = split_test(path, x, y, test_fraction)
    num_classes = 0
    names = None
    if target == "classes":
        num_classes = _check_labels(path, y, ty, allow_sparse=False, allow_single=False)
        if "class_names" in arrays:
            names = tuple(str(n) for n in arrays["class_names"].tolist())
    return ArrayDataset(path.stem, x, y, tx, ty, num_classes, names,
                        shuffled="x_test" not in arrays)  # fmt: skip


def _pair(
    path: Path, xk: str, yk: str, x: np.ndarray, y: np.ndarray, target: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of one split, checked and converted."""
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(
            f"{path}: '{xk}' must be (N, ...) with N >= 1 examples, got shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: '{xk}' has dtype {x.dtype} (expected numbers)")
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not torch.isfinite(inputs).all():
        raise DataError(f"{path}: '{xk}' contains NaN or infinite values")
    if len(y) != len(x):
        raise DataError(f"{path}: '{yk}' has {len(y)} rows for {len(x)} inputs in '{xk}'")
    if target == "classes":
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: '{yk}' must be integer class labels (N,) for target=classes, "
                            f"got dtype {y.dtype} shape {y.shape}")  # fmt: skip
        if y.min() < 0:
            raise DataError(f"{path}: '{yk}' has negative labels (min {y.min()})")
        return inputs, torch.from_numpy(y.astype(np.int64))
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: '{yk}' has dtype {y.dtype} (expected numbers)")
    targets = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    if not torch.isfinite(targets).all():
        raise DataError(f"{path}: '{yk}' contains NaN or infinite values")
    return inputs, targets
