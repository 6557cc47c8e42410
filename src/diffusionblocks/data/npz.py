"""User image datasets: loading and validating an ``.npz`` archive (format: ``docs/data.md``).

Every problem with the file (not an archive, missing or malformed arrays, pixels out of range,
labels that would make a meaningless model) raises :class:`DataError` naming the file and what to
do; test labels that training never shows give a :class:`DataWarning`. :func:`load_npz` is also
importable from :mod:`diffusionblocks.data.images`, whose ``load_image_dataset`` reaches it for
``--set data=PATH``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .base import DataError, DataWarning, ImageDataset, _to_images

FORMATS_HINT = "image presets take an .npz archive, text presets a UTF-8 text file"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an .npz is one), or an empty one
NPY_MAGIC = b"\x93NUMPY"  # a single .npy array


def load_npz(
    path: str | os.PathLike,
    test_fraction: float = 0.1,
    *,
    allow_sparse_labels: bool = False,
    allow_single_class: bool = False,
) -> ImageDataset:
    """A user dataset (format: ``docs/data.md``); ``~`` in ``path`` is expanded.

    ``x``: images (N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1..4 channels. A 4-D array
    is read as channels-last (N, H, W, C) when its last axis is 1..4 and axis 1 is not; when both
    are 1..4 (e.g. 3x3 images) it is read as channels-first (N, C, H, W). Pixels: uint8 or any
    other integer dtype with values in 0..255, or float in [0, 1]. ``y``: integer labels (N,).
    Optional ``x_test``/``y_test`` give the test split; otherwise the last ``test_fraction`` of a
    seed-0 permutation is held out. Optional ``class_names``.

    Labels: the training split needs at least two classes (``allow_single_class`` lifts this);
    the labels of both splits together must be 0..K-1 without gaps, since the model gets one
    output per value up to the largest (``allow_sparse_labels`` accepts gaps). Test labels with
    no training example give a :class:`DataWarning`."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(
            f"{path} is a folder, not an .npz archive: image presets take one .npz file with "
            "arrays x (images) and y (labels), see docs/data.md (for the Fashion-MNIST IDX "
            "files, use data=fashion-mnist with data_dir=FOLDER)"
        )
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file: image presets take an .npz archive")
    if not path.is_file():
        hint = f"; {FORMATS_HINT}" if path.suffix == ".txt" else ""
        raise DataError(f"dataset file {os.path.abspath(path)} does not exist{hint}")
    arrays = read_xy(path)
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
        x, y, tx, ty = split_test(path, x, y, test_fraction)
    num_classes = _check_labels(path, y, ty, allow_sparse_labels, allow_single_class)
    if names is not None and len(names) < num_classes:
        raise DataError(f"{path}: {len(names)} class_names for labels up to {num_classes - 1}")
    # Training examples in the file's order (x_test given) may be sorted: say so.
    return ImageDataset(path.stem, x, y, tx, ty, num_classes, names,
                        shuffled="x_test" not in arrays)  # fmt: skip


def read_xy(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the .npz ``path``, which must hold ``x`` and ``y``, and ``x_test`` and
    ``y_test`` both or neither."""
    arrays = _read_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path} has no array '{key}' (found: {', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} must have both 'x_test' and 'y_test', or neither")
    return arrays


def split_test(
    path: Path, x: torch.Tensor, y: torch.Tensor, test_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and test examples (x, y, x_test, y_test): the last ``test_fraction`` of a
    seed-0 permutation is the test split."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(len(y) * test_fraction))
    if n_test < 1 or n_test >= len(y):
        raise DataError(
            f"{path}: {len(y)} examples cannot be split with test_fraction={test_fraction} "
            "(each split needs at least one example)"
        )
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:-n_test], order[-n_test:]
    return x[train], y[train], x[test], y[test]


def _looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file read as UTF-8 text (a character may be cut at the end)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.reason == "unexpected end of data" and err.start >= len(head) - 3
    return True


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; anything else is named (a text file, a single .npy array, a zip
    of other files, arrays of Python objects)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if not head.startswith(ZIP_MAGIC):
        if head.startswith(NPY_MAGIC):
            why = (
                "it is a single .npy array; save images and labels together with "
                "np.savez(path, x=images, y=labels)"
            )
        elif not head:
            why = "the file is empty"
        elif _looks_like_text(head):
            why = f"it is a text file, and {FORMATS_HINT}"
        else:
            why = f"it is neither a zip archive nor text, and starts with bytes {head[:4]!r}"
        raise DataError(f"{path} is not an .npz archive (cannot read it: {why})")
    arrays, others = {}, []
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    value = npz[key]
                except ValueError as err:
                    if "allow_pickle" not in str(err):
                        raise
                    raise DataError(
                        f"{path}: array '{key}' holds Python objects (dtype object), which are "
                        "not loaded; store numbers (uint8 or float images, integer labels) and "
                        "class_names as strings"
                    ) from None
                if isinstance(value, np.ndarray):
                    arrays[key] = value
                else:  # a member that is not a .npy array comes back as raw bytes
                    others.append(key)
    except DataError:
        raise
    except Exception as err:  # zipfile/format errors all mean the same thing here
        raise DataError(f"{path} is not a valid .npz archive (cannot read it: {err})") from None
    if not arrays and others:
        raise DataError(
            f"{path} is not an .npz archive (it is a zip archive of other files: "
            f"{', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"
        )
    return arrays


def _check_split(
    path: Path, xk: str, yk: str, x: np.ndarray, y: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim not in (3, 4):
        raise DataError(
            f"{path}: '{xk}' must be (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{path}: '{xk}' is empty")
    if x.ndim == 4 and not 1 <= x.shape[1] <= 4:
        if not 1 <= x.shape[3] <= 4:
            raise DataError(
                f"{path}: '{xk}' has shape {x.shape}: neither axis 1 ({x.shape[1]}) nor the last "
                f"axis ({x.shape[3]}) is a number of channels in 1-4, as (N, C, H, W) or "
                "(N, H, W, C) images need"
            )
        x = np.ascontiguousarray(np.moveaxis(x, 3, 1))  # channels-last (N, H, W, C) -> (N, C, H, W)
    if min(x.shape[-2:]) < 2:
        raise DataError(f"{path}: '{xk}' images are {x.shape[-2:]} pixels (need at least 2x2)")
    if x.dtype == np.uint8:
        images = _to_images(x)
    elif np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{path}: '{xk}' has dtype {x.dtype} with values {lo}..{hi}, but integer pixels "
                "must lie in 0..255; scale them to 0..255 (16-bit images: x // 257), or store "
                "float in [0, 1]"
            )
        images = _to_images(x.astype(np.uint8))
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
        raise DataError(
            f"{path}: '{xk}' has dtype {x.dtype} (expected uint8, another integer type with "
            "values 0..255, or float in [0, 1])"
        )
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


def _show_labels(values: Iterable[int] | torch.Tensor) -> str:
    labels = [int(v) for v in values]
    shown = labels if len(labels) <= 8 else labels[:6] + ["...", labels[-1]]
    return ", ".join(str(v) for v in shown)


def _check_labels(
    path: Path, y: torch.Tensor, ty: torch.Tensor, allow_sparse: bool, allow_single: bool
) -> int:
    """The number of classes (largest label + 1), after refusing labels that would make a
    meaningless model and warning about test labels that training never shows."""
    train = torch.unique(y)
    if len(train) < 2 and not allow_single:
        raise DataError(
            f"{path}: all {len(y)} training examples have label {int(train[0])}; a classifier "
            "needs at least two classes"
        )
    used = torch.unique(torch.cat([y, ty]))
    num_classes = int(used[-1]) + 1
    if len(used) < num_classes and not allow_sparse:
        raise DataError(
            f"{path}: the labels use {len(used)} values ({_show_labels(used)}) but go up to "
            f"{num_classes - 1}, so the model would get {num_classes} outputs, "
            f"{num_classes - len(used)} of them for labels no example has; relabel to "
            f"0..{len(used) - 1} (np.unique over y and y_test together, with "
            "return_inverse=True), or set sparse_labels=true to keep them"
        )
    unseen = sorted(set(torch.unique(ty).tolist()) - set(train.tolist()))
    if unseen:
        n = int(torch.isin(ty, torch.tensor(unseen)).sum())
        warnings.warn(
            f"{path}: test labels {_show_labels(unseen)} have no training example, so the model "
            f"cannot learn them and the {n} test example{'s' * (n > 1)} with them will score 0",
            DataWarning,
            stacklevel=3,
        )
    return num_classes
