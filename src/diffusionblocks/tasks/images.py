"""What the two image tasks (classification, generation) share: the keys of their data (the
validation split ``val_fraction`` included) and transformer shape, validated once, and the
automatic patch size."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import ConfigError, RunConfig, _check, check_layer_split, check_transformer
from ..data.base import CARD_ONLY, DataError, ImageDataset


@dataclass
class ImageTaskConfig(RunConfig):
    """Image data (a built-in dataset or a user's ``.npz``) and a patch transformer."""

    task_groups = {
        "data": ("data", "data_dir", "train_subset", "test_subset", "test_fraction",
                 "sparse_labels", "val_fraction"),
        "model": ("depth", "hidden", "heads", "patch_size", "mlp_ratio"),
        "eval": ("eval_batch_size", "eval_subset"),
    }  # fmt: skip
    # Runs saved before ``val_fraction`` existed trained on every training image.
    saved_defaults = {"val_fraction": 0.0}

    data: str = "fashion-mnist"  # fashion-mnist | digits | path to a .npz with x, y
    data_dir: str | None = None  # Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)
    train_subset: int = 0  # use only the first N training images (0 = all)
    test_subset: int = 0  # use only the first N test images (0 = all)
    test_fraction: float = 0.1  # held-out fraction for a .npz without x_test/y_test
    val_fraction: float = 0.1  # last fraction of the training images held out for validation
    depth: int = 6  # transformer layers in total
    hidden: int = 128  # token width
    heads: int = 4  # attention heads
    patch_size: int = 4  # square patch side in pixels
    mlp_ratio: float = 4.0  # MLP width / hidden
    sparse_labels: bool = False  # accept labels that skip values (one class per value up to max)
    eval_batch_size: int = 500  # images per evaluation batch
    eval_subset: int = 1000  # test images used by quick evaluations during training

    def validate(self) -> None:
        super().validate()
        _check(self, "train_subset", self.train_subset >= 0, "an integer >= 0 (0 = all)")
        _check(self, "test_subset", self.test_subset >= 0, "an integer >= 0 (0 = all)")
        _check(self, "test_fraction", 0 < self.test_fraction < 1, "a fraction in (0, 1)")
        _check(self, "val_fraction", 0 <= self.val_fraction < 1, "a fraction in [0, 1)")
        check_transformer(self)
        _check(self, "eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1")
        _check(self, "eval_subset", self.eval_subset >= 1, "an integer >= 1")
        check_layer_split(self)


def majority_baseline(data: ImageDataset, split: str) -> dict[str, float]:
    """The trivial baseline of a classifier of ``data`` on ``split`` (refused as
    :func:`split_images` refuses it): the accuracy of always predicting the most frequent
    training label (``accuracy``; a tie goes to the lowest label), and of guessing uniformly
    (``chance_accuracy``, 1 / classes)."""
    _, labels = split_images(data, split)
    majority = int(torch.bincount(data.train_y, minlength=data.num_classes).argmax())
    return {
        "accuracy": float((labels == majority).double().mean()),
        "chance_accuracy": 1.0 / data.num_classes,
    }


def fit_images(
    config: ImageTaskConfig, data: ImageDataset, patch_size: int, hint: str = ""
) -> tuple[float, float]:
    """Refuse a patch size that does not divide the images and a batch larger than the training
    set (each naming its key); return the training pixels' mean and std (std 1 if constant; a
    data card's stand-in: the recorded ones)."""
    _, h, w = data.image_shape
    if h % patch_size or w % patch_size:
        raise ConfigError(
            f"invalid value for 'patch_size': {config.patch_size} (must divide the "
            f"{h}x{w} images of {data.name}{hint})"
        )
    if data.pixel_stats is not None:  # a data card's stand-in: the statistics it recorded
        return data.pixel_stats
    if config.batch_size > len(data.train_y):
        raise ConfigError(
            f"invalid value for 'batch_size': {config.batch_size} (larger than the "
            f"{len(data.train_y)} training images)"
        )
    return float(data.train_x.mean()), float(data.train_x.std()) or 1.0


def auto_patch_size(height: int, width: int) -> int:
    """The patch side for ``patch_size=0``: the largest side that divides both image sides and
    leaves at least 4 patches along each (28x28 -> 7, 16x16 -> 4, 8x8 -> 2, 32x32 -> 8); 1 when
    no side does (tiny or prime-sized images)."""
    best = 1
    for p in range(1, min(height, width) // 4 + 1):
        if height % p == 0 and width % p == 0:
            best = p
    return best


def split_images(data: ImageDataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of the ``val`` or ``test`` split of ``data``; another name, or ``val``
    when no validation images were held out, is refused naming ``val_fraction``; a data card's
    stand-in has none (refused)."""
    if split not in ("val", "test"):
        raise ConfigError(f"invalid value for 'split': {split!r} (choose one of val, test)")
    if data.card:
        raise DataError(CARD_ONLY)
    if split == "val" and data.val_y is None:
        raise ConfigError(
            "invalid value for 'split': 'val' (this run holds out no validation images: "
            "val_fraction is 0)"
        )
    return data.split(split)


def split_batches(
    data: ImageDataset, split: str, batch_size: int, limit: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) batches of ``batch_size`` from the ``val`` or ``test`` split of
    ``data`` (the first ``limit`` examples; refused as :func:`split_images` refuses it), as
    stored: the task prepares them."""
    x, y = split_images(data, split)
    n = len(y) if limit is None else min(limit, len(y))
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)  # the last batch stops at the limit
        yield x[start:end], y[start:end]


def validation_images(data: ImageDataset, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A fixed random subset (seed 0) of ``n`` validation images and their labels (all of them
    when there are fewer), for the trainer's held-out loss; None without a validation split. A
    random subset: the split may be in the file's order (sorted by class)."""
    if data.val_x is None or data.val_y is None:
        return None
    pick = torch.randperm(len(data.val_y), generator=torch.Generator().manual_seed(0))[:n]
    return data.val_x[pick], data.val_y[pick]


def augment_images(
    images: torch.Tensor,
    shift: int,
    flip: bool,
    background: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Training augmentation of a batch (N, C, H, W): each image moved by up to ``shift`` pixels
    along each axis (drawn uniformly per image; uncovered pixels take the value ``background``)
    and, with ``flip``, mirrored left-right with probability 1/2. Draws from ``generator`` only
    what is enabled (none when ``shift`` is 0 and ``flip`` off: the batch comes back as given)."""
    n, c, h, w = images.shape
    if shift > 0:
        dy, dx = (torch.randint(-shift, shift + 1, (2, n), generator=generator)
                  .to(images.device))  # fmt: skip
        padded = images.new_full((n, c, h + 2 * shift, w + 2 * shift), background)
        padded[:, :, shift : shift + h, shift : shift + w] = images
        rows = (shift - dy)[:, None] + torch.arange(h, device=images.device)  # (N, H)
        cols = (shift - dx)[:, None] + torch.arange(w, device=images.device)  # (N, W)
        batch = torch.arange(n, device=images.device)[:, None, None]
        # (N, H, W, C) from advanced indexing over the batch, row and column dimensions
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        images = images.permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
    return images
