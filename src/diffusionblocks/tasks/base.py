"""What the trainer needs from a task.

A task owns the data, the network and the loss. The network exposes ``model.blocks`` (a
``ModuleList`` with one entry per separately trained block: B blocks for DiffusionBlocks, one
block of all layers end to end); every parameter outside ``model.blocks`` is *shared*. The
trainer only ever calls the methods below; the command line asks the reporting ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence, Sized
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import nn

from ..config import ConfigError, RunConfig
from ..networks.layers import has_dropout

if TYPE_CHECKING:
    from ..data.text import TextCorpus


class Task:
    """Base class for tasks. Subclasses implement the abstract methods; the registry pairs each
    with its config class."""

    model: nn.Module
    source: str | None = None  # the run or model folder the weights were loaded from, if any
    # Positions (tokens, patches) the network processes per example: with the parameter count
    # and batch size, an estimate of a training step's work (``runtime.step_flops``).
    positions: int = 1

    def __init__(self, config: RunConfig, device: torch.device):
        self.config = config
        self.device = device

    # -- data -------------------------------------------------------------------------------
    @property
    def from_card(self) -> bool:
        """Whether the task was built from a data card (``data/card.py``): its data is a
        stand-in without examples (it predicts and generates; it cannot train or evaluate)."""
        data = getattr(self, "corpus", None) or getattr(self, "data", None)
        return bool(getattr(data, "card", False))

    def train_size(self) -> int:
        """Number of training examples (one epoch)."""
        raise NotImplementedError

    def train_batch(self, indices: torch.Tensor) -> Any:
        """The training examples at ``indices`` (CPU LongTensor), on the task's device."""
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------
    def loss(
        self, block: int, batch: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss for one step that trains ``block`` (end to end: 0, all layers), and
        floats to log. All randomness comes from ``generator`` (a CPU generator)."""
        raise NotImplementedError

    @functools.cached_property
    def unseeded_dropout(self) -> bool:
        """Whether the training loss draws dropout masks that the task does not seed itself: a
        user's network (or layers) with dropout. The trainer then draws them from the training
        generator (:func:`~diffusionblocks.networks.layers.drawn_from`), so that such runs
        repeat and resume exactly. A task that seeds its own (``config.dropout``) says no."""
        return getattr(self.config, "dropout", 0.0) == 0 and has_dropout(self.model)

    def layers_in_block(self, block: int) -> int:
        """Transformer layers one step of ``block`` runs forward (for compute accounting)."""
        return len(cast("Sequence[Sized]", self.model.blocks)[block])

    def layer_evals(self, block: int) -> float:
        """Forward layer evaluations per example that the latest :meth:`loss` call on ``block``
        ran, for the compute accounting (the trainer asks right after the training step's
        ``loss``). Default: :meth:`layers_in_block`; a task whose step cost varies (a random
        number of recurrent iterations) returns what its latest call ran."""
        return self.layers_in_block(block)

    def backward_layer_evals(self, block: int) -> float:
        """Layer evaluations per example of the latest :meth:`loss` call on ``block`` that the
        backward pass runs through (iterations run without gradients are not counted). Default:
        :meth:`layers_in_block`."""
        return self.layers_in_block(block)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(
        self, quick: bool = False, steps: list[int] | None = None, **options: Any
    ) -> dict[str, Any]:
        """Held-out metrics. ``quick`` uses a small subset (for evaluation during training);
        ``steps`` lists inference step counts to sweep where the task has such a knob; tasks may
        accept further ``options`` (e.g. ``fid_samples`` for image generation) and must refuse
        the ones they do not know."""
        raise NotImplementedError

    splits: tuple[str, ...] = ("test",)  # held-out splits ``evaluate(split=...)`` can read

    # -- evaluation shared by processes (a block-parallel run's ranks) -------------------------
    @classmethod
    def shards_evaluation(cls, config: Any, quick: bool = False) -> bool:
        """Whether :meth:`evaluate` (the final one, or ``quick``) of a task of this class with
        ``config`` can be split among processes by examples: :meth:`evaluation_tally` on each
        process's share, then :meth:`merged_evaluation`, giving exactly what one process
        computes. Default: no (a block-parallel run then evaluates one split per rank)."""
        return False

    def evaluation_tally(
        self,
        split: str,
        shard: tuple[int, int] = (0, 1),
        quick: bool = False,
        steps: list[int] | None = None,
    ) -> dict[str, Any]:
        """Counts of :meth:`evaluate` on ``split`` over shard ``(index, count)`` of its
        batches (batch i belongs to shard i mod count), with every random draw of the other
        batches still taken (so each batch sees the numbers it sees in one process). Only
        where :meth:`shards_evaluation` says so. The result's ``examples``: how many it scored."""
        raise NotImplementedError

    def merged_evaluation(
        self,
        split: str,
        tallies: list[dict[str, Any]],
        quick: bool = False,
        steps: list[int] | None = None,
    ) -> dict[str, Any]:
        """:meth:`evaluate`'s result from the tallies of every shard of ``split``."""
        raise NotImplementedError

    def trivial_baseline(self, split: str = "test") -> dict[str, float]:
        """The reference value a model must beat to have learned anything: the headline metric
        (:attr:`headline_metric`'s key, and maybe others) of the task's trivial predictor on
        ``split``, computed from the data alone (no model): the majority training class and
        chance for classification, the training text's unigram model for the language models,
        images of uniform noise for image generation. A split the task lacks is refused."""
        raise NotImplementedError

    def heldout_batch(self) -> Any | None:
        """A fixed batch of validation examples (as :meth:`train_batch` returns them) on which
        the trainer logs each block's loss during training; None without a validation split."""
        return None

    # The logged number that is plotted per block (loss.png), and what every logged key means.
    plot_key = "loss"
    plot_label = "training loss"
    log_legend: dict[str, str] = {"loss": "the training objective of the step"}

    per_block_shared = False  # may each block own a copy of the shared modules? (parallel)

    # -- reporting: what the command line prints and compares (it never asks which task) -------
    # Inference step counts the final evaluation sweeps by default (None: the task has none).
    default_sweep: ClassVar[tuple[int, ...] | None] = None
    # What ``dblocks sample`` and ``Model.generate``/``sample_text`` make: "images", "text" or
    # nothing (None).
    generates: ClassVar[str | None] = None
    # What ``Model.classify``/``probabilities`` predict: "classes" (images); "targets" for a
    # user's own network (``Model.predict``: class indices or values); or nothing (None).
    predicts: ClassVar[str | None] = None

    def sample(
        self,
        generator: torch.Generator,
        *,
        labels: torch.Tensor | None = None,
        length: int | None = None,
        prompt: str = "",
        steps: int | None = None,
        cfg: float | None = None,
        temperature: float | None = None,
    ) -> tuple[torch.Tensor | str, dict[str, Any]]:
        """One call for what the task generates (``generates``): images of the classes
        ``labels`` (with ``steps`` and the guidance weight ``cfg``), or ``length`` characters
        after ``prompt`` (with ``steps`` and ``temperature``); and facts about the sampling
        (denoiser calls, layer evaluations). Options that do not apply are refused by name.
        Runs with the config's ``threads`` and ``precision`` (``runtime.running``)."""
        from ..runtime import running

        if self.generates == "images":
            self._sampling_options({"length": length, "prompt": prompt, "temperature": temperature})
            if labels is None:
                raise ConfigError("sampling images needs labels (class indices, one per image)")
            with running(self):
                return self._sample_images(labels, generator, steps, cfg)
        if self.generates == "text":
            self._sampling_options({"labels": labels, "cfg": cfg})
            if length is None:
                raise ConfigError("sampling text needs length (characters to generate)")
            with running(self):
                return self._sample_text(length, generator, prompt, steps, temperature)
        raise ConfigError(f"{self.config.task} runs generate nothing to sample")

    def final_sweep(self) -> list[int] | None:
        """The inference step counts the final evaluation sweeps: ``default_sweep``, or none
        where the config's ``final_eval`` is "readout" (the run's readout only)."""
        if getattr(self.config, "final_eval", "full") == "readout" or not self.default_sweep:
            return None
        return list(self.default_sweep)

    def _sampling_options(self, unused: dict[str, Any]) -> None:
        given = [
            k for k, v in unused.items() if v is not None and not (isinstance(v, str) and not v)
        ]
        if given:
            raise ConfigError(
                f"sampling {self.generates} takes no {', '.join(given)} (a {self.config.task} run)"
            )

    def _sample_images(
        self, labels: torch.Tensor, generator: torch.Generator, steps: int | None, cfg: float | None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Images of ``labels`` (tasks that generate images)."""
        raise NotImplementedError

    def _sample_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str,
        steps: int | None,
        temperature: float | None,
    ) -> tuple[str, dict[str, Any]]:
        """``length`` characters after ``prompt`` (tasks that generate text)."""
        raise NotImplementedError

    @classmethod
    def report(cls, ev: dict[str, Any]) -> list[str]:
        """Human-readable lines for an evaluation this task wrote (``dblocks eval``, the end of
        ``dblocks train``); keys it does not know are left to other tasks' reports."""
        return []

    # The evaluation key of the task's one quality number and its label in tables.
    headline_metric: ClassVar[tuple[str, str] | None] = None
    headline_higher_is_better: ClassVar[bool] = False  # accuracy: True; losses, distances: False
    # The ``task`` key this task's evaluations carry: None for the built-in tasks (their metric
    # keys tell them apart); a user's network's evaluations say "stack", so that an accuracy of
    # theirs is not read as an image classifier's.
    evaluation_tag: ClassVar[str | None] = None

    @classmethod
    def claims(cls, ev: dict[str, Any]) -> bool:
        """Whether ``ev`` may be this task's evaluation (its ``task`` tag is this task's)."""
        return ev.get("task") == cls.evaluation_tag

    @classmethod
    def headline(cls, ev: dict[str, Any]) -> dict[str, Any] | None:
        """The one quality number ``dblocks compare`` tabulates: ``{"metric": label, "value": v,
        ...}`` (extra columns allowed), or None when ``ev`` does not hold this task's metric."""
        if not cls.claims(ev) or cls.headline_metric is None or cls.headline_metric[0] not in ev:
            return None
        key, label = cls.headline_metric
        return {"metric": label, "value": ev[key], key: ev[key], "key": key,
                "higher_is_better": cls.headline_higher_is_better}  # fmt: skip

    def block_interval(self, block: int) -> list[float] | None:
        """The noise (or masking-time) interval ``block`` owns, for checkpoint metadata."""
        partition = getattr(self, "partition", None)
        return list(partition.interval(block)) if partition is not None else None

    def describe(self) -> dict[str, Any]:
        """Plain-data facts about the task for logs and results (dataset sizes, shapes...)."""
        return {}

    def run_files(self) -> dict[str, str]:
        """Files a run folder keeps beside its config, name -> text, written when the run
        starts and checked when it is loaded or resumed (a language model's subword
        ``tokenizer.json``). None by default."""
        return {}

    def after_update(self, blocks: list[int]) -> None:
        """Called by the trainer after every optimizer step that updated ``blocks`` (and the
        shared modules, if they train); not after a skipped step. Image generation moves its
        weight averages here (``ema``)."""

    # -- helpers ----------------------------------------------------------------------------
    def block_parameters(self, block: int) -> list[nn.Parameter]:
        """The parameters one block's optimizer updates (everything else is shared)."""
        return list(cast(nn.ModuleList, self.model.blocks)[block].parameters())

    def target_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the shared modules that define the denoising targets (a label
        or token embedding table): every block must see the same ones."""
        return ()

    def shared_parameters(self) -> list[nn.Parameter]:
        in_blocks = {id(p) for p in cast(nn.ModuleList, self.model.blocks).parameters()}
        return [p for p in self.model.parameters() if id(p) not in in_blocks]


def refuse_options(kind: str, options: dict[str, Any], hint: str = "") -> None:
    """Evaluation options a task does not know (given, not None or False) are refused by name."""
    given = [k for k, v in options.items() if v not in (None, False)]
    if given:
        raise ConfigError(f"{kind} evaluation has no option {', '.join(given)}{hint}")


class TextTask(Task):
    """A task over a character corpus (the language models): the corpus, its vocabulary, and its
    training, validation and test sequences of ``seq_len`` characters (the first
    ``train_subset`` for training when set). The validation text (``val_fraction`` of the text
    before the test text, its end) is never trained on; quick evaluations during training and
    the trainer's held-out loss read it. A batch larger than the training set is refused, naming
    ``batch_size``."""

    def __init__(self, config: RunConfig, device: torch.device):
        super().__init__(config, device)
        from ..data.text import load_text_corpus

        c: Any = config  # a text task's config: data, test_fraction, val_fraction, seq_len, ...
        corpus = load_text_corpus(c.data, c.test_fraction, c.val_fraction)
        self.corpus: TextCorpus = corpus.retokenized(c.tokenizer)  # char: the same corpus
        self.vocab = self.corpus.vocab
        train = self.corpus.chunks("train", c.seq_len)
        self.positions = c.seq_len
        self.train_seqs = train[: c.train_subset] if c.train_subset else train
        if c.batch_size > len(self.train_seqs) and not corpus.card:
            raise ConfigError(
                f"invalid value for 'batch_size': {c.batch_size} (larger than the "
                f"{len(self.train_seqs)} training sequences of {c.seq_len} {self.corpus.unit})"
            )
        self.test_seqs = self.corpus.chunks("test", c.seq_len)
        has_val = self.corpus.val_ids is not None
        self.val_seqs = self.corpus.chunks("val", c.seq_len) if has_val else None
        self.splits = ("val", "test") if has_val else ("test",)

    def train_size(self) -> int:
        return len(self.train_seqs)

    def train_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.train_seqs[indices].to(self.device)

    def split_seqs(self, split: str) -> torch.Tensor:
        """The held-out sequences of ``split`` (``val`` or ``test``); a split this run does not
        have is refused, naming ``val_fraction``."""
        if split not in ("val", "test"):
            raise ConfigError(f"invalid value for 'split': {split!r} (choose one of val, test)")
        if self.corpus.card:
            from ..data.base import CARD_ONLY, DataError

            raise DataError(CARD_ONLY)
        if split == "val":
            if self.val_seqs is None:
                raise ConfigError(
                    "invalid value for 'split': 'val' (this run holds out no validation text: "
                    "val_fraction is 0)"
                )
            return self.val_seqs
        return self.test_seqs

    def default_split(self, quick: bool) -> str:
        """Quick evaluations during training read the validation split when there is one; the
        final evaluation reads the test split."""
        return "val" if quick and self.val_seqs is not None else "test"

    def heldout_batch(self) -> torch.Tensor | None:
        """A fixed random subset (seed 0) of ``batch_size`` validation sequences, or None."""
        if self.val_seqs is None:
            return None
        pick = torch.randperm(len(self.val_seqs), generator=torch.Generator().manual_seed(0))
        return self.val_seqs[pick[: self.config.batch_size]].to(self.device)

    def run_files(self) -> dict[str, str]:
        """``tokenizer.json`` when the run uses subword tokens (``data/tokens.py``)."""
        from ..data.tokens import TOKENIZER_FILE, TokenVocabulary

        return {TOKENIZER_FILE: self.vocab.json} if isinstance(self.vocab, TokenVocabulary) else {}

    def describe_data(self) -> dict[str, Any]:
        """Sizes of the splits: characters (and, with a tokenizer, tokens) and sequences of
        each, and what the held-out text is."""
        corpus = self.corpus
        val = corpus.val_ids
        splits = {"train": corpus.train_ids, "val": val, "test": corpus.test_ids}
        sizes: dict[str, Any] = {
            f"{k}_characters": 0 if ids is None else int(self.vocab.characters(ids))
            for k, ids in splits.items()
        }
        if corpus.unit == "tokens":
            sizes = {"tokenizer": getattr(self.vocab, "source", ""), **sizes}
            sizes.update({f"{k}_tokens": 0 if ids is None else len(ids)
                          for k, ids in splits.items()})  # fmt: skip
        return {
            "dataset": corpus.name,
            "held_out": corpus.held_out,
            "validation": corpus.validation,
            "vocab_size": self.vocab.size,
            **sizes,
            "train_sequences": len(self.train_seqs),
            "val_sequences": 0 if self.val_seqs is None else len(self.val_seqs),
            "test_sequences": len(self.test_seqs),
        }

    @torch.no_grad()
    def _sample_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str,
        steps: int | None,
        temperature: float | None,
    ) -> tuple[str, dict[str, Any]]:
        return self.generate_text(length, generator, prompt, steps, temperature)

    def generate_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str = "",
        steps: int | None = None,
        temperature: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """``length`` characters after ``prompt`` and facts about the generation (calls made;
        blockwise AR adds ``cache``: whether the clean prefix was reused); ``steps`` and
        ``temperature`` default to the config's."""
        raise NotImplementedError

    def trivial_baseline(self, split: str = "test") -> dict[str, float]:
        """The unigram model: bits per character (``bpc``) and cross-entropy in nats
        (``heldout_ce``) of the whole ``split`` text under the training text's character
        frequencies, add-one smoothed (:meth:`TextCorpus.unigram_bits_per_char`)."""
        self.split_seqs(split)  # refuses a split this run does not have, naming the key
        ids = self.corpus.val_ids if split == "val" else self.corpus.test_ids
        bits = self.corpus.unigram_bits_per_char(ids)
        return {"bpc": bits, "heldout_ce": bits * math.log(2)}
