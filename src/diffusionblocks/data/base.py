"""What every data loader shares: the in-memory labelled image dataset the image loaders return
(:class:`ImageDataset`), the pixel conversion they use, and the errors and warnings of all of them
(:mod:`.images`, :mod:`.npz`, :mod:`.text`).
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# While a task is built from a data card (``card.py``: a ``DataCard``, with ``images()`` and
# ``corpus()``), the loaders return its stand-in instead of reading files.
ACTIVE_CARD: ContextVar[Any] = ContextVar("data_card", default=None)


# What evaluating a task built from a data card says (it has no examples, only the card).
CARD_ONLY = ("this model was built from its data card (DiffusionBlocksModel.from_pretrained), "
             "without its data: there are no held-out examples to evaluate on; load the run or "
             "model folder with diffusionblocks.load, which reads the data")  # fmt: skip


class DataError(ValueError):
    """The dataset is missing or malformed; the message says which file and why."""


class DataWarning(UserWarning):
    """The dataset loads, but something in it will distort the results; the message says what."""


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
    # A stand-in from a data card (``card.py``): no images, the training pixels' (mean, std)
    pixel_stats: tuple[float, float] | None = None

    @property
    def card(self) -> bool:
        """Whether this is a data card's stand-in (no examples to train or evaluate on)."""
        return self.pixel_stats is not None

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
        assert x is not None and y is not None  # hold_out sets val_x and val_y together
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


def _to_images(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, copy=True)).float().div_(255.0)
    return t[:, None] if t.dim() == 3 else t
