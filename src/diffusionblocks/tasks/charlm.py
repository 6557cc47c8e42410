"""Character language models: the config of the autoregressive and recurrent-depth tasks,
their shared task base (text data, held-out scoring, generation, the judge) and text metrics
(docs/method.md §6.4, §6.5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import (
    ConfigError,
    RunConfig,
    _check,
    check_layer_split,
    check_tokenizer_key,
    check_transformer,
)
from ..data.images import DataError
from ..eval.text import distinct_n, judge_perplexity, repetition
from ..networks.layers import seeded
from ..networks.placement import to_device
from ..networks.recurrent import RecurrentDepthLM
from ..networks.stack import TwoStreamStackNetwork, check_network_keys, token_stack_network
from ..networks.token_transformer import TokenShape, TwoStreamTransformer
from .base import Task, TextTask, refuse_options

SIGMA_SAMPLING = ("token", "example")
_CE_KEY = {"key": "heldout_ce", "higher_is_better": False}  # the headline's key (a loss)


@dataclass
class ARConfig(RunConfig):
    """Autoregressive character language model."""

    task: str = "autoregressive"  # fixed

    task_groups = {
        "data": ("data", "tokenizer", "test_fraction", "val_fraction", "seq_len",
                 "train_subset"),
        "model": ("depth", "hidden", "heads", "mlp_ratio", "layer", "pretrained", "model"),
        "noise": ("sigma_sampling",),
        "training": ("aux_ce", "context_noise"),
        "eval": ("bridge_temperature", "readout", "temperature", "eval_sequences",
                 "eval_batch_size", "eval_subset", "gen_prompts", "gen_prompt_len", "gen_length",
                 "judge"),
    }  # fmt: skip
    # Runs saved before ``val_fraction`` existed trained on all of the text before the test text;
    # runs saved before ``readout`` existed predicted with the chain.
    saved_defaults = {"val_fraction": 0.0, "readout": "chain"}
    # DiffusionBlocks' predictions of the next character (``readout``; the baseline ignores it):
    # "ensemble": every block once at sigma_max on z = 0, log-probabilities averaged (a
    # likelihood; chosen on val, docs/results/autoregressive/chain-research/); "chain": B calls
    # from sigma_max to sigma_min with the soft bridge (the paper).
    readouts = ("ensemble", "chain")

    num_blocks: int = 4  # B
    overlap: float = 0.1  # gamma (paper: 0.1 for text generation)
    weighting: str = "none"  # CE weighting over sigma: edm | batch | clamped | none
    p_mean: float = 1.0  # mean of ln sigma (see docs/experiments.md: label-like targets)
    data: str = "shakespeare"  # shakespeare | path to a UTF-8 text file
    # Tokens: char (characters, the default), bpe:N (a byte-level BPE of N tokens, the 256 bytes
    # included, trained with tokenizers on the training text; extra [hf]) or PATH.json (a local
    # tokenizer.json); seq_len and the generation lengths then count tokens, and every metric
    # stays per character (docs/data.md)
    tokenizer: str = "char"  # char | bpe:N | PATH.json (docs/data.md)
    test_fraction: float = 0.1  # held-out tail of a user text file
    val_fraction: float = 0.1  # end of the training text held out for validation (0 = none)
    seq_len: int = 128  # characters (tokens, with a subword tokenizer) per training sequence
    train_subset: int = 0  # use only the first N training sequences (0 = all)
    depth: int = 8  # transformer layers in total
    hidden: int = 128  # token width
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP width / hidden
    # The layers: "" (the built-in adaLN-Zero layer), hf:llama (a Llama decoder layer from
    # transformers; extra [hf]) or FILE.py:NAME (your function NAME(index, hidden, heads,
    # mlp_ratio)); wrapped with sigma conditioning; such layers must take mask= (the causal and
    # two-stream attention) and may take positions= (docs/your-model.md)
    layer: str = ""  # "" (built-in) | hf:llama | FILE.py:NAME (docs/your-model.md)
    # A local Hugging Face causal-LM folder (Llama-style; extra [hf]) to fine-tune block-wise:
    # its layers, embeddings and head, zero-initialised sigma conditioning around them; fills
    # depth, hidden, heads, mlp_ratio and tokenizer (its tokenizer.json) (docs/your-model.md)
    pretrained: str = ""  # a local Hugging Face causal-LM folder (docs/your-model.md)
    # Your whole token network: FILE.py:NAME, a function returning a
    # diffusionblocks.ResidualStack(target="tokens") given any of vocab_size, depth, hidden,
    # heads, seq_len; its layers must take mask= and number depth (docs/your-model.md)
    model: str = ""  # FILE.py:NAME: your whole token network (docs/your-model.md)
    sigma_sampling: str = "token"  # one sigma per noisy token, or one per sequence ("example")
    aux_ce: float = 0.0  # weight of the clean stream's next-token CE (0 = pure DiffusionBlocks)
    # DiffusionBlocks training: the probability that each character of the clean context is
    # replaced by a uniformly drawn one (the noisy targets and the loss keep the true ones), as
    # generation feeds back its own mistakes (0 = the paper; measured on val in
    # docs/results/autoregressive/chain-research/context-noise/)
    context_noise: float = 0.0
    bridge_temperature: float = 1.0  # soft bridge softmax(logits / T) @ normalize(E)
    readout: str = "ensemble"  # dblocks: how the next character is predicted (readouts above)
    temperature: float = 1.0  # sampling temperature of generated characters (0 = greedy)
    eval_sequences: int = 0  # held-out sequences for CE/accuracy (0 = all)
    eval_batch_size: int = 64  # sequences per evaluation batch
    eval_subset: int = 32  # held-out sequences for quick estimates during training
    gen_prompts: int = 16  # continuations generated for the diversity/judge metrics
    gen_prompt_len: int = 32  # characters of held-out text used as each prompt
    gen_length: int = 96  # characters generated per prompt
    judge: str | None = None  # run folder of an end-to-end model that scores continuations

    def validate(self) -> None:
        super().validate()
        _check(self, "shared", self.shared != "per-block",
               "sync or frozen for this task: the token embeddings are the targets, so all blocks "
               "must share them")  # fmt: skip
        _check(self, "test_fraction", 0 < self.test_fraction < 1, "a fraction in (0, 1)")
        _check(self, "val_fraction", 0 <= self.val_fraction < 1, "a fraction in [0, 1)")
        _check(self, "seq_len", 2 <= self.seq_len <= 65536, "an integer in [2, 65536]")
        _check(self, "train_subset", self.train_subset >= 0, "an integer >= 0 (0 = all)")
        check_tokenizer_key(self)
        check_transformer(self)
        check_network_keys(self)
        _check(self, "layer", not (self.pretrained and self.layer),
               "empty with pretrained (the pretrained model's layers are the layers)")  # fmt: skip
        if self.sigma_sampling not in SIGMA_SAMPLING:
            raise ConfigError(
                f"invalid value for 'sigma_sampling': {self.sigma_sampling!r} (choose one of "
                f"{', '.join(SIGMA_SAMPLING)})"
            )
        _check(self, "aux_ce", 0 <= self.aux_ce <= 100, "a number in [0, 100]")
        _check(self, "context_noise", 0 <= self.context_noise < 1, "a probability in [0, 1)")
        _check(self, "context_noise", self.context_noise == 0 or not self.end_to_end,
               "0 for end-to-end training (it corrupts the clean stream DiffusionBlocks "
               "conditions on)")  # fmt: skip
        _check(self, "bridge_temperature", 0 <= self.bridge_temperature <= 100, "in [0, 100]")
        _check(self, "readout", self.readout in self.readouts, " or ".join(self.readouts))
        _check(self, "temperature", 0 <= self.temperature <= 100, "in [0, 100] (0 = greedy)")
        _check(self, "eval_sequences", self.eval_sequences >= 0, "an integer >= 0 (0 = all)")
        _check(self, "eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1")
        _check(self, "eval_subset", self.eval_subset >= 1, "an integer >= 1")
        _check(self, "gen_prompts", self.gen_prompts >= 0, "an integer >= 0")
        _check(self, "gen_prompt_len", self.gen_prompt_len >= 1, "an integer >= 1")
        _check(self, "gen_length", self.gen_length >= 1, "an integer >= 1")
        if self.gen_prompts and self.gen_prompt_len + self.gen_length > self.seq_len:
            raise ConfigError(
                f"invalid value for 'gen_length': {self.gen_length} (gen_prompt_len="
                f"{self.gen_prompt_len} + gen_length must fit in seq_len={self.seq_len})"
            )
        check_layer_split(self)


# ---------------------------------------------------------------------- the task base
class CharLM(TextTask):
    """A character language model over a text corpus: data, held-out scoring, generation and
    the judge; the autoregressive and recurrent-depth tasks build on it."""

    config: ARConfig
    model: TwoStreamTransformer | TwoStreamStackNetwork | RecurrentDepthLM  # recurrent: the last
    # Is the held-out CE a likelihood (one deterministic prediction per prefix)? Not for the
    # DiffusionBlocks chains, whose final step depends on the noise they started from.
    ce_is_likelihood = False
    log_legend = {
        "loss": "the training objective (end to end: next-character cross-entropy; "
        "DiffusionBlocks: the cross-entropy of the denoised noisy tokens, weighted over sigma)",
        "ce": "next-character cross-entropy of the batch in nats (DiffusionBlocks: given a "
        "noisy version of the target token, so not a likelihood)",
        "aux_ce": "the auxiliary clean-stream cross-entropy (aux_ce > 0)",
        "iterations": "recurrent depth: core iterations of the step (bptt: random)",
    }
    plot_key = "ce"
    plot_label = "next-character cross-entropy (unweighted, nats)"
    generates = "text"

    @classmethod
    def report(cls, ev: dict[str, Any]) -> list[str]:
        if "heldout_ce" not in ev:
            return []
        kind = (
            "a likelihood" if ev["ce_is_likelihood"] else "final denoising step, not a likelihood"
        )
        where = "validation" if ev.get("split") == "val" else "held-out"
        lines = [
            f"{where} next-char CE {ev['heldout_ce']:.4f} nats ({kind}), accuracy "
            f"{ev['heldout_accuracy']:.4f} on {ev['heldout_characters']} characters"
        ]
        if "heldout_tokens" in ev:  # subword tokens: CE per character, accuracy per token
            lines[0] = (f"{where} next-token CE {ev['heldout_ce']:.4f} nats per character "
                        f"({kind}), token accuracy {ev['heldout_accuracy']:.4f} on "
                        f"{ev['heldout_tokens']} tokens ({ev['heldout_characters']} "
                        "characters)")  # fmt: skip
        if "sigma_max_call" in ev:
            e = ev["sigma_max_call"]
            lines.append(
                f"  one call at sigma_max (predictive, comparable with a likelihood): CE "
                f"{e['heldout_ce']:.4f}, accuracy {e['heldout_accuracy']:.4f}"
            )
        if "ensemble_call" in ev:
            e = ev["ensemble_call"]
            lines.append(
                f"  every block once at sigma_max, log-probabilities averaged (a likelihood): CE "
                f"{e['heldout_ce']:.4f}, accuracy {e['heldout_accuracy']:.4f}"
            )
        if "chain_call" in ev:
            e = ev["chain_call"]
            lines.append(
                f"  the chain (readout=chain, final step; not a likelihood): CE "
                f"{e['heldout_ce']:.4f}, accuracy {e['heldout_accuracy']:.4f}"
            )
        for key, label in (("steps_sweep", "denoising steps"), ("depth_sweep", "core iterations")):
            for k, e in ev.get(key, {}).items():
                lines.append(
                    f"  {k:>3} {label}: CE {e['heldout_ce']:.4f}, accuracy "
                    f"{e['heldout_accuracy']:.4f}"
                )
        if "distinct_1" in ev:
            judge = f", judge perplexity {ev['judge_perplexity']:.3f}" if "judge" in ev else ""
            lines.append(
                f"continuations: distinct-1/2 (words) {ev['distinct_1']:.3f}/"
                f"{ev['distinct_2']:.3f}, distinct-4 (chars) {ev['distinct_4_chars']:.3f}, "
                f"repetition {ev['repetition_4_chars']:.3f}{judge}"
            )
            for sample in ev["samples"][:2]:
                lines.append("  " + sample.replace("\n", " / ")[:120])
        return lines

    # The key of the headline number (``headline`` below decides which CE fills it).
    headline_metric = ("heldout_ce", "held-out CE (likelihood)")

    @classmethod
    def headline(cls, ev: dict[str, Any]) -> dict[str, Any] | None:
        """Likelihood beside likelihood: the chain's final-step CE is not a likelihood, so it
        gets its own column and never the headline; the headline of a DiffusionBlocks run is one
        call of the noisiest block where the task has it (autoregressive), else NaN."""
        if "ce_is_likelihood" not in ev:
            if "heldout_ce" not in ev:
                return None
            return {"metric": "held-out CE", "value": ev["heldout_ce"], **_CE_KEY,
                    "heldout_ce": ev["heldout_ce"]}  # fmt: skip
        if ev["ce_is_likelihood"]:
            return {"metric": "held-out CE (likelihood)", "value": ev["heldout_ce"], **_CE_KEY,
                    "heldout_ce": ev["heldout_ce"]}  # fmt: skip
        one_call = ev.get("sigma_max_call", {}).get("heldout_ce", float("nan"))
        return {"metric": "held-out CE (likelihood)", "value": one_call, "heldout_ce": one_call,
                **_CE_KEY, "chain_ce_not_likelihood": ev["heldout_ce"]}  # fmt: skip

    def __init__(self, config: ARConfig, device: torch.device):
        super().__init__(config, device)  # the corpus and its sequences (TextTask)
        with seeded(config.seed):  # initialisation, global generator untouched
            self.model = self.build_model()
        self.model.set_checkpointing(config.activation_checkpointing)

    def build_model(self) -> TwoStreamTransformer | TwoStreamStackNetwork | RecurrentDepthLM:
        c = self.config
        if c.model:  # your own network (docs/your-model.md)
            return self._token_stack()
        model = TwoStreamTransformer(
            TokenShape(
                vocab_in=self.vocab.size,
                vocab_out=self.vocab.size,
                max_len=c.seq_len,
                hidden=c.hidden,
                depth=c.model_depth,
                heads=c.heads,
                mlp_ratio=c.mlp_ratio,
                num_blocks=c.num_model_blocks,
                layers_per_block=c.block_sizes,
                seed=c.seed,
                layer=c.layer,
                pretrained=check_pretrained_shape(c),
            ),
            materialize_blocks=not c.block_resident,
        )
        to_device(model, self.device)  # blocks without storage stay on the meta device
        return model

    def _token_stack(self) -> TwoStreamStackNetwork:
        """The network of ``model=``: the user's ResidualStack(target="tokens") as the clean
        stream, with the noisy stream's entry added (``networks/stack.py``)."""
        model = token_stack_network(TwoStreamStackNetwork, self.config, self.vocab.size)
        to_device(model, self.device)  # blocks without storage stay on the meta device
        return model

    def describe(self) -> dict[str, Any]:
        c = self.config
        mine = {"model": c.model, "hidden": self.model.hidden} if getattr(c, "model", "") else {}
        return {
            **self.describe_data(),
            **mine,  # your network: its width is its stem's, whatever the config's hidden
            "parameters": sum(p.numel() for p in self.model.parameters() if not p.is_meta),
        }

    def start_text(self) -> str:
        """What generation without a prompt starts from (not part of the generated text): a
        newline when the vocabulary has one, otherwise the training text's first character."""
        if "\n" in self.vocab.chars or self.corpus.unit == "tokens":  # tokens: bytes cover it
            return "\n"
        return self.vocab.decode(self.corpus.train_ids[:1].tolist())

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The ids generation starts from: the prompt, or :meth:`start_text` when it is empty."""
        try:
            return self.vocab.encode(prompt or self.start_text())
        except DataError as err:
            raise ConfigError(f"prompt has {err}") from None

    # -- next-character predictions for evaluation ------------------------------------------
    def predict_logits(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Logits (N, T-1, V) for characters 1..T-1 of ids (N, T), each from its prefix."""
        raise NotImplementedError

    def _pick(self, logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
        if temperature == 0:
            return int(logits.argmax())
        probs = (logits.float() / temperature).softmax(-1).cpu()
        return int(torch.multinomial(probs, 1, generator=generator))

    def _autoregress(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str,
        temperature: float | None,
        next_logits: Callable[[torch.Tensor], torch.Tensor],
    ) -> str:
        """``length`` characters after ``prompt`` (or :meth:`start_text`), one at a time:
        ``next_logits(ids (1, T))`` gives the next character's logits (V,), :meth:`_pick` draws
        it at ``temperature`` (default the run's). Returns the generated text alone.

        Any prompt and length work: the model sees the last ``seq_len - 1`` characters (the
        longest prefix a training sequence predicts its next character from; nanoGPT's crop), so
        past the context the window rolls, and with it the clean prefix the DiffusionBlocks
        models cache per character."""
        temperature = self.config.temperature if temperature is None else temperature
        ids = self.encode_prompt(prompt)
        self._check_generation(length, temperature)
        ids = ids[None].to(self.device)
        context = self.config.seq_len - 1
        self.model.eval()
        for _ in range(length):
            token = self._pick(next_logits(ids[:, -context:]), temperature, generator)
            ids = torch.cat([ids, torch.tensor([[token]], device=self.device)], 1)
        self.model.train()
        start = len(self.encode_prompt(prompt))  # ids, not characters (subword tokens)
        return self.vocab.decode(ids[0, start:].tolist())

    def _check_generation(self, length: int, temperature: float) -> None:
        if length < 1:
            raise ConfigError(f"length must be >= 1, got {length}")
        if not 0 <= temperature <= 100:
            raise ConfigError(f"temperature must be in [0, 100], got {temperature}")

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        judge: object = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Next-character CE and accuracy on the sequences of ``split`` (``test`` by default;
        quick evaluations during training: ``val`` when there is one), and (not ``quick``) the
        continuations of prompts from that split."""
        refuse_options("language-model", options)
        c = self.config
        split = split or self.default_split(quick)
        seqs = self.eval_sequences(quick, split)
        gen = torch.Generator().manual_seed(c.seed + 1_000_003)
        scored = self.score(seqs, lambda ids: self.predict_logits(ids, gen))
        result: dict[str, Any] = {
            "split": split,
            "heldout_ce": scored["heldout_ce"],
            "heldout_accuracy": scored["heldout_accuracy"],
            "heldout_characters": scored["characters"],
            **({"heldout_tokens": scored["tokens"]} if "tokens" in scored else {}),
            "held_out": self.corpus.describe_split(split),
            "ce_is_likelihood": self.ce_is_likelihood,
        }
        if quick or c.gen_prompts == 0:
            return result
        if judge is not None and not isinstance(judge, Task):
            raise ConfigError(
                f"judge={judge!r}: pass the loaded run (diffusionblocks.load(path).task); "
                "`dblocks eval --judge PATH` and diffusionblocks.loading load it for you"
            )
        result.update(self.generation_metrics(gen, judge, split=split))
        if judge is None and c.judge:  # a path in the config: loaded by loading.py, not here
            result["judge_skipped"] = (
                f"judge={c.judge} was not loaded (evaluate through diffusionblocks.loading)"
            )
        return result

    def eval_sequences(self, quick: bool = False, split: str = "test") -> torch.Tensor:
        """The sequences of ``split`` an evaluation scores: the first ``eval_subset`` (quick) or
        ``eval_sequences`` (0: all)."""
        c = self.config
        seqs = self.split_seqs(split)
        seqs = seqs[: c.eval_subset] if quick else seqs
        if not quick and c.eval_sequences:
            seqs = seqs[: c.eval_sequences]
        return seqs

    @torch.no_grad()
    def score(
        self, seqs: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor]
    ) -> dict[str, float]:
        """Held-out CE (nats per character) and accuracy of ``predict(ids) -> logits (N, T-1,
        V)`` for ids 1..T-1 of every sequence. With subword tokens the summed CE is divided by
        the characters the target tokens hold (``data/tokens.py``) and the accuracy is per
        token (``tokens``: how many)."""
        c = self.config
        self.model.eval()
        nll, correct, count, chars = 0.0, 0, 0, 0.0
        for start in range(0, len(seqs), c.eval_batch_size):
            ids = seqs[start : start + c.eval_batch_size].to(self.device)
            logits = predict(ids)
            target = ids[:, 1:]
            nll += float(F.cross_entropy(logits.transpose(1, 2), target, reduction="sum"))
            correct += int((logits.argmax(-1) == target).sum())
            count += target.numel()
            chars += self.vocab.characters(target)  # subword tokens: the characters they hold
        self.model.train()
        out = {"heldout_ce": nll / chars, "heldout_accuracy": correct / count,
               "characters": int(chars)}  # fmt: skip
        if self.corpus.unit == "tokens":
            out["tokens"] = count  # accuracy is per token then
        return out

    def generation_metrics(
        self,
        gen: torch.Generator,
        judge: Task | None,
        steps: int | None = None,
        split: str = "test",
    ) -> dict[str, Any]:
        """Continue ``gen_prompts`` held-out prompts (the starts of the first sequences of
        ``split``); diversity of the continuations and, with a judge (a loaded end-to-end
        autoregressive run), their perplexity under it."""
        c = self.config
        prompts: list[str] = []
        continuations: list[str] = []
        held_out = self.split_seqs(split)
        for k in range(min(c.gen_prompts, len(held_out))):
            prompt = self.vocab.decode(held_out[k, : c.gen_prompt_len].tolist())
            text, _ = self.generate_text(c.gen_length, gen, prompt, steps, c.temperature)
            prompts.append(prompt)
            continuations.append(text)
        out: dict[str, Any] = {
            "generated": len(continuations),
            "distinct_1": distinct_n(continuations, 1, words=True),
            "distinct_2": distinct_n(continuations, 2, words=True),
            "distinct_4_chars": distinct_n(continuations, 4),
            "repetition_4_chars": repetition(continuations, 4),
            "samples": [p + "|" + t for p, t in zip(prompts[:4], continuations[:4], strict=True)],
        }
        if judge is not None:
            out["judge"] = str(getattr(judge, "source", "a loaded run"))
            out["judge_perplexity"] = judge_perplexity(
                judge, prompts, continuations, self.vocab.key
            )
        return out


def with_pretrained(values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A config's ``values`` with the keys a ``pretrained`` folder fixes filled from its
    config.json (depth, hidden, heads, mlp_ratio) and, unless ``given`` (the user's overrides)
    names one, its tokenizer.json; a given value that differs from the model's is refused
    naming the key."""
    from ..networks.hf import pretrained_shape

    if values.get("model"):  # nothing read: validation refuses pretrained beside model
        return values
    folder = str(values["pretrained"])
    shape = pretrained_shape(folder)
    for key, value in shape.items():
        try:
            differs = key in given and float(given[key]) != float(value)
        except (TypeError, ValueError):
            differs = True
        if differs:
            raise ConfigError(
                f"invalid value for '{key}': {given[key]} (the pretrained model {folder} has "
                f"{value}; leave {key} out to take it)"
            )
    values = {**values, **shape}
    if "tokenizer" not in given:
        own = Path(folder).expanduser() / "tokenizer.json"
        if not own.is_file():
            raise ConfigError(
                f"invalid value for 'pretrained': {folder} has no tokenizer.json; pass its "
                "tokenizer with --set tokenizer=PATH.json"
            )
        values["tokenizer"] = str(own.resolve())
    return values


def check_pretrained_shape(c: ARConfig) -> str:
    """``c.pretrained``, after checking that the run's shape keys are the folder's (a config
    made by :func:`with_pretrained` always passes); "" without one."""
    if not c.pretrained:
        return ""
    from ..networks.hf import pretrained_shape

    # depth is the whole model's also for e2e-shallow (which builds its first L/B layers)
    for key, value in pretrained_shape(c.pretrained).items():
        if float(getattr(c, key)) != float(value):
            raise ConfigError(f"invalid value for '{key}': {getattr(c, key)} (the pretrained "
                              f"model {c.pretrained} has {value})")  # fmt: skip
    if not c.tokenizer.endswith(".json"):
        raise ConfigError(
            f"invalid value for 'tokenizer': {c.tokenizer!r} (a pretrained model reads the ids "
            "of its own tokenizer: leave tokenizer out to take its tokenizer.json, or give that "
            "file)"
        )
    return c.pretrained
