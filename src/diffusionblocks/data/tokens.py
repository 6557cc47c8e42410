"""Subword tokens for the language models: a byte-level BPE trained with Hugging Face
``tokenizers`` on the training text (``tokenizer=bpe:N``), or a local ``tokenizer.json``
(``tokenizer=PATH``). Characters stay the default (:class:`~.text.Vocabulary`).

Every text metric stays **per character** whatever the tokens: a token's share of the text is
the number of characters that start in it (:attr:`TokenVocabulary.char_counts`), so that the
summed loss of a batch's target tokens divided by the characters they hold is bits (or nats)
per character, comparable with a character model's. For a byte-level tokenizer that count is
exact: the UTF-8 lead bytes among the token's bytes (a character split over two tokens counts
once, in the token holding its first byte). For other tokenizers (SentencePiece-style files) it
is the length of the token's text, with ``▁`` as one space and byte-fallback tokens ``<0xNN>``
counted by lead byte, exact for such vocabularies up to added special tokens (which count 0).

The BPE is trained on the training text only (never the validation or test text), with
``vocab_size`` N including the 256 byte tokens, so any text encodes. Its training is
deterministic: the same text and N give the same ``tokenizer.json`` (tested), which the run
saves beside its config; loading a run checks the rebuilt tokenizer against that file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import torch

from .images import DataError

TOKENIZER_FILE = "tokenizer.json"  # the run folder's copy of the run's tokenizer
HELP = "subword tokens need Hugging Face tokenizers: pip install 'diffusionblocks[hf]'"
BPE_MIN, BPE_MAX = 257, 1 << 20  # 256 byte tokens + at least one merge


def byte_alphabet() -> dict[str, int]:
    """The byte-level alphabet's printable stand-in for each byte (as ``tokenizers``' ByteLevel
    uses it): printable Latin-1 bytes stand for themselves, the other bytes map in order to the
    code points from 256 up. Returns stand-in character -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _lead_bytes(data: Iterable[int]) -> int:
    """How many UTF-8 characters start in ``data`` (bytes that are not continuation bytes)."""
    return sum(1 for b in data if b & 0xC0 != 0x80)


def char_counts(tokenizer: object, spec: dict) -> torch.Tensor:
    """Characters that start in each token id (module docstring), as float64 (V,); ``spec``:
    the tokenizer's JSON, parsed."""
    tok = tokenizer  # a tokenizers.Tokenizer
    byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel"
    special = {t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
    alphabet = byte_alphabet() if byte_level else {}
    fallback = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
    size = tok.get_vocab_size(with_added_tokens=True)  # type: ignore[attr-defined]
    counts = torch.zeros(size, dtype=torch.float64)
    for i in range(size):
        piece = tok.id_to_token(i)  # type: ignore[attr-defined]
        if piece is None or i in special:
            continue
        if byte_level:
            counts[i] = _lead_bytes(alphabet.get(c, 0x41) for c in piece)
        elif m := fallback.match(piece):
            counts[i] = _lead_bytes([int(m.group(1), 16)])
        else:
            counts[i] = len(piece)
    return counts


class TokenVocabulary:
    """Subword tokens <-> ids, through a ``tokenizers.Tokenizer``. Id ``size`` is the mask
    token (the masked-diffusion model's), as for characters."""

    def __init__(self, tokenizer_json: str, source: str):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DataError(HELP) from None
        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as err:  # tokenizers raises its own Exception for a bad file
            raise DataError(
                f"invalid value for 'tokenizer': {source} is not a tokenizers "
                f"tokenizer.json ({err})"
            ) from None
        self.json = tokenizer_json
        self.source = source  # what it is, in words (for messages and describe_data)
        spec = json.loads(tokenizer_json)
        pre = spec.get("pre_tokenizer") or {}
        # GPT-2-style byte level: the text splits into words before any merge, so a long
        # text may be encoded piece by piece (encode_text) with the same ids
        self.splits_words = (pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
                             and not pre.get("add_prefix_space", False))  # fmt: skip
        self.size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.char_counts = char_counts(self.tokenizer, spec)
        self._lengths = torch.cat([self.char_counts, torch.zeros(1, dtype=torch.float64)])

    @property
    def mask_id(self) -> int:
        return self.size

    @property
    def key(self) -> str:
        """What two vocabularies must share to score each other's text (the judge)."""
        return self.json

    @property
    def chars(self) -> str:
        """A character vocabulary's characters; tokens have none (start text: a newline)."""
        return ""

    def encode(self, text: str) -> torch.Tensor:
        # no special tokens (a Llama tokenizer's <s>): the text's own ids, pieces included
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return torch.tensor(ids, dtype=torch.long)

    def encode_text(self, text: str, piece: int = 1 << 18) -> torch.Tensor:
        """:meth:`encode` for a whole corpus: for a word-splitting byte-level tokenizer, in
        pieces of about ``piece`` characters cut before a newline that follows a character
        that is not a space (a word boundary the pre-tokenizer makes anyway: the same ids,
        tested), so that the tokenizer's per-token records for a long text are never all in
        memory at once (hundreds of MB for Shakespeare); other tokenizers encode it whole."""
        if not self.splits_words or len(text) <= piece:
            return self.encode(text)
        parts, start = [], 0
        while start < len(text):
            end = start + piece
            while end < len(text) and not (text[end] == "\n" and not text[end - 1].isspace()):
                end += 1
            parts.append(self.encode(text[start:end]))
            start = end
        return torch.cat(parts)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        kept = [int(i) for i in list(ids) if int(i) < self.size]  # the mask token has no text
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def characters(self, ids: torch.Tensor) -> float:
        """The characters ``ids`` hold (each token's :attr:`char_counts`, summed)."""
        return float(self._lengths.to(ids.device)[ids].sum())

    def per_sequence_characters(self, ids: torch.Tensor) -> torch.Tensor:
        """The characters each row of ``ids`` (N, T) holds, as float64 (N,)."""
        return self._lengths.to(ids.device)[ids].sum(-1)


def train_bpe(text: str, vocab_size: int) -> str:
    """A byte-level BPE of ``vocab_size`` tokens trained on ``text``: its ``tokenizer.json``."""
    return _train_bpe(hashlib.sha256(text.encode("utf-8")).hexdigest(), text, vocab_size)


@lru_cache(maxsize=4)
def _train_bpe(digest: str, text: str, vocab_size: int) -> str:
    """:func:`train_bpe`, cached per process by the text's sha256 (the task is built more than
    once per run: training, then the judge or a reload)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise DataError(HELP) from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_pieces(text), trainer=trainer, length=None)
    return tok.to_str()


def _pieces(text: str, size: int = 1 << 16) -> Iterable[str]:
    """``text`` in pieces for the trainer, cut after newlines (the byte-level pre-tokenizer
    splits words at spaces and newlines anyway, so the counts are those of the whole text)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def parse_tokenizer(value: str) -> tuple[str, int | str]:
    """``tokenizer``'s value as ("char", 0), ("bpe", N) or ("file", path); raises ValueError
    with the reason for anything else."""
    if value in ("", "char"):
        return "char", 0
    if value.startswith("bpe:"):
        n = value[4:]
        if not n.isdigit() or not BPE_MIN <= int(n) <= BPE_MAX:
            raise ValueError(f"bpe:N needs an integer N in [{BPE_MIN}, {BPE_MAX}] (256 byte "
                             "tokens and the merges)")  # fmt: skip
        return "bpe", int(n)
    if value.endswith(".json"):
        return "file", value
    raise ValueError("char, bpe:N (a byte-level BPE of N tokens trained on the training text) "
                     "or the path of a tokenizer.json")  # fmt: skip


def token_vocabulary(value: str, train_text: str) -> TokenVocabulary:
    """The vocabulary ``tokenizer=value`` names (not "char"): a BPE trained on ``train_text``
    or a tokenizer.json read from disk."""
    kind, arg = parse_tokenizer(value)
    if kind == "bpe":
        return TokenVocabulary(train_bpe(train_text, int(arg)), f"a byte-level BPE of {arg} tokens")
    path = Path(str(arg)).expanduser()
    if not path.is_file():
        raise DataError(f"invalid value for 'tokenizer': the file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"invalid value for 'tokenizer': cannot read {path}: {err}") from None
    return TokenVocabulary(text, str(path))
