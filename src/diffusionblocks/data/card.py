"""Data cards: what a trained network needs from its training data to predict and generate,
without the data.

A task reads its data for more than its examples: the image shape, the number of classes and the
pixel mean and std (images are standardised with the training set's), or the vocabulary (the
characters, or a subword tokenizer) and the character a text model starts generating from. A
*data card* is that, as plain JSON (:func:`data_card`); a model folder saved for the Hugging Face
Hub (``hub.py``) carries it in its ``config.json`` so that the model loads where its data is not.

While :func:`building_from` is active, the data loaders return a stand-in of the data from the
card instead of reading files: the same shapes, classes, statistics and vocabulary, with no
examples (an :class:`ImageDataset` with 0 images and its ``pixel_stats``; an
:class:`ArrayDataset` of a user's network with 0 examples and its input and target statistics; a
:class:`TextCorpus` holding only the first training id). Such a task predicts and generates
exactly as the task built from the data (tested); its evaluation is refused (``Task.from_card``,
``CARD_ONLY``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .arrays import ArrayDataset
from .base import ACTIVE_CARD, DataError, ImageDataset
from .text import TextCorpus, Vocabulary
from .tokens import TokenVocabulary

CARD_FORMAT = "diffusionblocks-data-card"
CARD_VERSION = 1


def data_card(task: Any) -> dict[str, Any]:
    """The data card of a built task: an image task (``task.data``, ``task.pixel_mean`` and
    ``task.pixel_std``) or a text task (``task.corpus``)."""
    base = {"format": CARD_FORMAT, "version": CARD_VERSION}
    corpus = getattr(task, "corpus", None)
    if corpus is not None:
        vocab = corpus.vocab
        text: dict[str, Any] = {"kind": "text", "name": corpus.name,
                                "first_id": int(corpus.train_ids[0])}  # fmt: skip
        if isinstance(vocab, Vocabulary):
            text["chars"] = vocab.chars
        else:
            text.update(tokenizer_json=vocab.json, tokenizer_source=vocab.source)
        return {**base, **text}
    data = getattr(task, "data", None)
    if isinstance(data, ArrayDataset) and hasattr(task, "x_mean"):  # your own network's arrays
        continuous = getattr(task, "y_mean", None) is not None
        return {**base, "kind": "arrays", "name": data.name,
                "input_shape": list(data.input_shape), "target_shape": list(data.target_shape),
                "num_classes": data.num_classes,
                "class_names": list(data.class_names) if data.class_names else None,
                "x_mean": float(task.x_mean), "x_std": float(task.x_std),
                "y_mean": task.y_mean.tolist() if continuous else None,
                "y_std": task.y_std.tolist() if continuous else None}  # fmt: skip
    if isinstance(data, ImageDataset) and hasattr(task, "pixel_mean"):
        return {**base, "kind": "images", "name": data.name, "image_shape": list(data.image_shape),
                "num_classes": data.num_classes,
                "class_names": list(data.class_names) if data.class_names else None,
                "pixel_mean": float(task.pixel_mean),
                "pixel_std": float(task.pixel_std)}  # fmt: skip
    raise DataError(f"a {type(task).__name__} has no data card (image, array and text tasks "
                    "have)")  # fmt: skip


def check_card(card: Any, kind: str) -> dict[str, Any]:
    """``card`` when it is a data card of ``kind`` (``images``, ``arrays`` or ``text``); else a
    DataError."""
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DataError("the model's config.json holds no data card (diffusionblocks-data-card)")
    if card.get("version") != CARD_VERSION:
        raise DataError(f"data card version {card.get('version')!r} is not {CARD_VERSION} "
                        "(saved by another diffusionblocks version?)")  # fmt: skip
    if card.get("kind") != kind:
        raise DataError(f"the data card describes {card.get('kind')!r} data, this task reads "
                        f"{kind}")  # fmt: skip
    return card


@dataclass(frozen=True)
class DataCard:
    """A data card the loaders read while :func:`building_from` is active."""

    card: dict[str, Any]

    def images(self) -> ImageDataset:
        return card_images(self.card)

    def corpus(self) -> TextCorpus:
        return card_corpus(self.card)

    def arrays(self) -> ArrayDataset:
        return card_arrays(self.card)


@contextmanager
def building_from(card: dict[str, Any]) -> Iterator[None]:
    """Within it, the image and text loaders return the stand-in data of ``card``."""
    token = ACTIVE_CARD.set(DataCard(card))
    try:
        yield
    finally:
        ACTIVE_CARD.reset(token)


def card_images(card: dict[str, Any]) -> ImageDataset:
    """The stand-in image dataset of ``card``: no images, its shape, classes and pixel
    statistics."""
    card = check_card(card, "images")
    c, h, w = (int(v) for v in card["image_shape"])
    empty_x = torch.zeros(0, c, h, w)
    empty_y = torch.zeros(0, dtype=torch.long)
    names = card.get("class_names")
    return ImageDataset(
        name=str(card["name"]), train_x=empty_x, train_y=empty_y, test_x=empty_x,
        test_y=empty_y, num_classes=int(card["num_classes"]),
        class_names=tuple(names) if names else None,
        pixel_stats=(float(card["pixel_mean"]), float(card["pixel_std"])),
    )  # fmt: skip


def card_arrays(card: dict[str, Any]) -> ArrayDataset:
    """The stand-in arrays of ``card``: no examples, the inputs' and targets' shapes, the
    classes, and the statistics the task standardises with."""
    card = check_card(card, "arrays")
    classes = int(card["num_classes"])
    x = torch.zeros(0, *(int(v) for v in card["input_shape"]))
    y = torch.zeros(0, *(int(v) for v in card["target_shape"]),
                    dtype=torch.long if classes else torch.float32)  # fmt: skip
    names = card.get("class_names")
    stats = None
    if card.get("y_mean") is not None:
        stats = ([float(v) for v in card["y_mean"]], [float(v) for v in card["y_std"]])
    return ArrayDataset(
        name=str(card["name"]), train_x=x, train_y=y, test_x=x, test_y=y, num_classes=classes,
        class_names=tuple(names) if names else None,
        pixel_stats=(float(card["x_mean"]), float(card["x_std"])), target_stats=stats,
    )  # fmt: skip


def card_corpus(card: dict[str, Any]) -> TextCorpus:
    """The stand-in text corpus of ``card``: its vocabulary (characters or the tokenizer), the
    first training id (where generation without a prompt may start), no held-out text."""
    card = check_card(card, "text")
    if "tokenizer_json" in card:
        vocab: Vocabulary | TokenVocabulary = TokenVocabulary(
            card["tokenizer_json"], str(card.get("tokenizer_source"))
        )
    else:
        vocab = Vocabulary(str(card["chars"]))
    first = torch.tensor([int(card["first_id"])], dtype=torch.long)
    empty = torch.zeros(0, dtype=torch.long)
    return TextCorpus(str(card["name"]), vocab, first, empty, "none (loaded from a data card)",
                      card=True)  # fmt: skip
