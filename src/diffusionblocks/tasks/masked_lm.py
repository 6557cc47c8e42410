"""Masked-diffusion language model (MD4-style) over characters: DiffusionBlocks
(docs/method.md §6.3) and the end-to-end baseline.

DiffusionBlocks: block b is a bidirectional transformer that predicts the masked characters of
x_t for masking times t in its interval (block 0 = most masked), trained with the continuous-time
ELBO ``(1/t) * sum_{masked} CE``. End to end: the whole network over t ~ U(t_min, 1). Held-out
bits per character come from the same ELBO estimator for both (each t routed to its block).
Sampling: ancestral unmasking from t = 1 to 0 over S steps, each step run by the block owning t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
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
from ..diffusion import mean_log_probs
from ..diffusion.masking import (
    T_MIN,
    TimePartition,
    elbo_weight,
    mask_tokens,
    sample_t_full,
)
from ..networks.layers import seeded
from ..networks.placement import to_device
from ..networks.stack import TokenStackNetwork, check_network_keys, token_stack_network
from ..networks.token_transformer import TokenShape, TokenTransformer
from .base import TextTask, refuse_options


@dataclass
class MaskedLMConfig(RunConfig):
    """Masked-diffusion character language model."""

    task: str = "masked-lm"  # fixed

    task_groups = {
        "data": ("data", "tokenizer", "test_fraction", "val_fraction", "seq_len",
                 "train_subset"),
        "model": ("depth", "hidden", "heads", "mlp_ratio", "layer", "model"),
        "eval": ("eval_draws", "eval_sequences", "eval_batch_size", "eval_subset"),
    }  # fmt: skip
    # Runs saved before ``val_fraction`` existed trained on all of the text before the test text.
    saved_defaults = {"val_fraction": 0.0}

    inference_steps: int = 128  # ancestral unmasking steps when sampling
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
    depth: int = 6  # transformer layers in total
    hidden: int = 128  # token width
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP width / hidden
    # The layers: "" (the built-in adaLN-Zero transformer layer), hf:llama (a Llama decoder layer
    # from transformers: RMSNorm, RoPE, SwiGLU; extra [hf]) or FILE.py:NAME (your function
    # NAME(index, hidden, heads, mlp_ratio) returning a residual layer), wrapped with sigma
    # conditioning (docs/your-model.md)
    layer: str = ""  # "" (built-in) | hf:llama | FILE.py:NAME (docs/your-model.md)
    # Your whole network instead of the built-in transformer: FILE.py:NAME or package.module:NAME,
    # a function returning ResidualStack(target="tokens") (its stem embeds ids, its head gives
    # logits), called with the values of vocab_size, depth, hidden, heads, seq_len it names;
    # its layers must number depth (docs/your-model.md)
    model: str = ""  # FILE.py:NAME: your whole token network (docs/your-model.md)
    eval_draws: int = 8  # masking times per held-out sequence for the BPC estimate
    eval_sequences: int = 0  # held-out sequences for the BPC estimate (0 = all)
    eval_batch_size: int = 256  # sequences per evaluation batch
    eval_subset: int = 64  # held-out sequences for quick estimates during training

    block_variable = "the masking time t"

    def resolved(self) -> dict[str, Any]:
        """As every config's, with the blocks' masking-time intervals instead of noise levels."""
        out = {k: v for k, v in super().resolved().items() if "intervals" not in k}
        if not self.end_to_end:
            p = TimePartition(self.num_blocks, self.overlap)
            out["block_t_intervals"] = [list(p.interval(b)) for b in range(self.num_blocks)]
        return out

    def validate(self) -> None:
        super().validate()
        _check(self, "test_fraction", 0 < self.test_fraction < 1, "a fraction in (0, 1)")
        _check(self, "val_fraction", 0 <= self.val_fraction < 1, "a fraction in [0, 1)")
        _check(self, "seq_len", 2 <= self.seq_len <= 65536, "an integer in [2, 65536]")
        _check(self, "train_subset", self.train_subset >= 0, "an integer >= 0 (0 = all)")
        check_tokenizer_key(self)
        check_transformer(self)
        _check(self, "eval_draws", 1 <= self.eval_draws <= 10_000, "an integer in [1, 10000]")
        _check(self, "eval_sequences", self.eval_sequences >= 0, "an integer >= 0 (0 = all)")
        _check(self, "eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1")
        _check(self, "eval_subset", self.eval_subset >= 1, "an integer >= 1")
        _check(self, "inference_steps", self.inference_steps >= 1, "an integer >= 1")
        check_layer_split(self)
        check_network_keys(self)


class _MaskedLM(TextTask):
    log_legend = {
        "loss": "the masked-diffusion objective of the batch in nats per character (the "
        "block's share of the ELBO for DiffusionBlocks)",
        "bpc_term": "the same in bits per character",
    }
    # The targets (pixels, characters) do not depend on the shared modules, so block-parallel
    # training may give every block its own copy of them (shared=per-block).
    per_block_shared = True
    generates = "text"

    config: MaskedLMConfig
    model: TokenTransformer | TokenStackNetwork

    @classmethod
    def report(cls, ev: dict[str, Any]) -> list[str]:
        if "bpc" not in ev:
            return []
        where = "validation BPC    " if ev.get("split") == "val" else "held-out BPC      "
        lines = [
            f"{where} {ev['bpc']:.4f} +/- {ev['bpc_stderr']:.4f} (standard error; "
            f"{ev['sequences']} sequences x {ev['draws_per_sequence']} masking times; "
            f"held out: {ev['held_out']})"
        ]
        for row in ev.get("per_unit", []):
            lo, hi = row["t_interval"]
            lines.append(
                f"  block {row['block']} t in [{lo:.3f}, {hi:.3f}]: "
                f"BPC share {row['bpc_share']:.4f}"
            )
        for row in ev.get("block_alone", []):
            lines.append(f"  block {row['block']} alone at every t: BPC {row['bpc']:.4f}")
        if "ensemble" in ev:
            lines.append(f"  every block, log-probs averaged: BPC {ev['ensemble']['bpc']:.4f}")
        for b, row in enumerate(ev.get("interval_shares", [])):
            cells = ", ".join(f"{x:.3f}" for x in row)
            lines.append(f"  block {b} on each block's interval: BPC shares {cells}")
        return lines

    headline_metric = ("bpc", "held-out BPC")

    def __init__(self, config: MaskedLMConfig, device: torch.device):
        super().__init__(config, device)  # the corpus and its sequences (TextTask)
        if config.model:  # your own network (docs/your-model.md)
            self.model = self._token_stack(config, device)
            self.model.set_checkpointing(config.activation_checkpointing)
            return
        with seeded(config.seed):  # initialisation, global generator untouched
            model = TokenTransformer(
                TokenShape(
                    vocab_in=self.vocab.size + 1,  # + mask token
                    vocab_out=self.vocab.size,
                    max_len=config.seq_len,
                    hidden=config.hidden,
                    depth=config.model_depth,
                    heads=config.heads,
                    mlp_ratio=config.mlp_ratio,
                    num_blocks=config.num_model_blocks,
                    layers_per_block=config.block_sizes,
                    seed=config.seed,
                    layer=config.layer,
                ),
                materialize_blocks=not config.block_resident,
            )
            to_device(model, device)  # blocks without storage stay on the meta device
            self.model = model
        self.model.set_checkpointing(config.activation_checkpointing)

    def _token_stack(self, config: MaskedLMConfig, device: torch.device) -> Any:
        """The network of ``model=``: the user's ResidualStack(target="tokens"), its layers
        sigma-conditioned and grouped into blocks (``networks/stack.py``)."""
        with seeded(config.seed):  # the user's stem, head and layers, then every block's seed
            model = token_stack_network(TokenStackNetwork, config, self.vocab.size)
            to_device(model, device)  # blocks without storage stay on the meta device
        return model

    # -- method-specific --------------------------------------------------------------------
    def sample_t(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def network(self, block: int, ids: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def route(self, t: float) -> int:
        raise NotImplementedError

    # -- data -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        mine = (
            {"model": self.config.model, "hidden": self.model.hidden} if self.config.model else {}
        )
        return {
            **self.describe_data(),
            **mine,  # your network: its width is its stem's, whatever the config's hidden
            "parameters": sum(p.numel() for p in self.model.parameters() if not p.is_meta),
        }

    # -- the ELBO ---------------------------------------------------------------------------
    def elbo_terms(
        self,
        block: int,
        ids: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator,
        network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-sequence ELBO term in nats per character: (1/t) * sum_{masked} CE / T (T: the
        sequence's characters, its length for a character model), with
        ``block``'s network (or ``network(x_t, t)``, any predictor of the masked characters:
        the bound holds for every distribution it returns)."""
        x_t, masked = mask_tokens(ids, t.float(), self.vocab.mask_id, generator)
        if network is None:
            logits = self.network(block, x_t, t.float().to(self.device))  # (N, T, V)
        else:
            logits = network(x_t, t.float().to(self.device))
        ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # (N, T)
        weight = elbo_weight(t.to(self.device).float())  # (N,)
        return weight * (ce * masked).sum(1) / self.sequence_characters(ids)

    def sequence_characters(self, ids: torch.Tensor) -> int | torch.Tensor:
        """The characters of each sequence of ``ids`` (N, T): T for characters, each row's own
        count for subword tokens (so that every ELBO term is per character)."""
        if self.corpus.unit == "characters":
            return ids.shape[1]
        return self.vocab.per_sequence_characters(ids).float()

    def loss(
        self, block: int, batch: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.sample_t(block, len(batch), generator)
        terms = self.elbo_terms(block, batch, t, generator)
        loss = terms.mean()
        return loss, {"loss": loss.item(), "bpc_term": loss.item() / math.log(2)}

    @torch.no_grad()
    def estimate_bpc(
        self, sequences: torch.Tensor, draws: int, seed: int, readout: str = "routed"
    ) -> dict[str, Any]:
        """Held-out bits per character from the ELBO: for each sequence, ``draws`` masking times
        stratified over (t_min, 1] (draw k in [k/K, (k+1)/K), unbiased for the integral), each
        routed to the block that owns it (``readout`` "routed", the model's BPC), or scored by
        block k alone at every t ("block:k"), or by every block's prediction with their
        log-probabilities averaged ("ensemble"; both diagnostics, also bounds). The same masking
        draws for every readout. Returns the mean, its standard error over sequences, and the
        counts."""
        network = self._readout_network(readout)
        gen = torch.Generator().manual_seed(seed)
        self.model.eval()
        per_seq = []
        bs = self.config.eval_batch_size
        for start in range(0, len(sequences), bs):
            ids = sequences[start : start + bs].to(self.device)
            n = len(ids)
            total = torch.zeros(n, device=self.device)
            for k in range(draws):
                u = torch.rand(n, generator=gen, dtype=torch.float64)
                t = (k + u) / draws
                t = t.clamp(min=T_MIN)
                owners = self._owners(t)  # a readout's groups too: the same masking draws
                for block in owners.unique().tolist():
                    sel = owners == block
                    total[sel.to(self.device)] += self.elbo_terms(
                        block, ids[sel.to(self.device)], t[sel], gen, network
                    )
            per_seq.append((total / draws).cpu())
        self.model.train()
        values = torch.cat(per_seq).double() / math.log(2)
        bpc = float(values.mean())
        if self.corpus.unit == "tokens":  # each sequence's bits over all the characters
            chars = self.vocab.per_sequence_characters(sequences)
            bpc = float((values * chars).sum() / chars.sum())
        return {
            "bpc": bpc,
            "bpc_stderr": float(values.std() / math.sqrt(len(values))) if len(values) > 1 else 0.0,
            "sequences": len(values),
            "draws_per_sequence": draws,
            "characters": int(self.vocab.characters(sequences)),
        }

    def _readout_network(
        self, readout: str
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The predictor of ``readout`` for :meth:`estimate_bpc` (None: each t's own block)."""
        blocks = len(self.model.blocks)
        if readout == "routed":
            return None
        if readout == "ensemble":

            def pooled(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return mean_log_probs([self.network(b, x_t, t) for b in range(blocks)])

            return pooled
        if readout.startswith("block:") and readout[6:].isdigit() and int(readout[6:]) < blocks:
            block = int(readout[6:])
            return lambda x_t, t: self.network(block, x_t, t)
        raise ConfigError(
            f"readout must be 'routed', 'ensemble' or 'block:k' with k < {blocks}, got {readout!r}"
        )

    def _owners(self, t: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.route(float(x)) for x in t], dtype=torch.long)

    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Bits per character (the ELBO) of the sequences of ``split`` (``test`` by default;
        quick evaluations during training: ``val`` when there is one) and, not ``quick``, each
        block's share of it."""
        refuse_options("masked-LM", options)
        c = self.config
        split = split or self.default_split(quick)
        seqs = self.split_seqs(split)
        if quick:
            seqs = seqs[: c.eval_subset]
        elif c.eval_sequences:
            seqs = seqs[: c.eval_sequences]
        result = {"split": split, **self.estimate_bpc(seqs, c.eval_draws, c.seed + 1_000_003)}
        result["held_out"] = self.corpus.describe_split(split)
        if not quick:
            # Per-block ELBO share: the estimate restricted to each block's own interval.
            # "per_unit": saved key ("unit": a block's old name), kept for old results
            result["per_unit"] = self.per_block_terms(seqs[: min(len(seqs), 256)], c.seed + 17)
            result.update(self.readout_diagnostics(seqs, c.eval_draws, c.seed + 1_000_003))
        return result

    def readout_diagnostics(self, seqs: torch.Tensor, draws: int, seed: int) -> dict[str, Any]:
        """Other readouts of the same ELBO estimate (DiffusionBlocks only; none end to end)."""
        return {}

    def per_block_terms(self, seqs: torch.Tensor, seed: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- sampling ---------------------------------------------------------------------------
    def generate_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str = "",
        steps: int | None = None,
        temperature: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Ancestral unmasking: start from ``prompt`` followed by ``length`` masks; over S steps
        t goes 1 -> 0; at the step from t to s each masked position is revealed with probability
        (t - s)/t, drawn from the network that owns t. The last step (s = 0) reveals the rest."""
        c = self.config
        steps = c.inference_steps if steps is None else steps
        temperature = 1.0 if temperature is None else temperature
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if length < 1:
            raise ConfigError(f"length must be >= 1, got {length}")
        if not 0 < temperature <= 100:
            raise ConfigError(f"temperature must be in (0, 100], got {temperature}")
        prefix = self.vocab.encode(prompt) if prompt else torch.zeros(0, dtype=torch.long)
        total = len(prefix) + length
        if total > c.seq_len:
            raise ConfigError(
                f"prompt ({len(prefix)}) + length ({length}) = {total} exceeds the model's "
                f"sequence length {c.seq_len}"
            )
        ids = torch.cat([prefix, torch.full((length,), self.vocab.mask_id)])[None]
        ids = ids.to(self.device)
        calls = [0] * len(self.model.blocks)
        self.model.eval()
        grid = [1 - k / steps for k in range(steps + 1)]
        for t, s in zip(grid[:-1], grid[1:], strict=True):
            masked = ids == self.vocab.mask_id
            if not masked.any():
                break
            block = self.route(t)
            calls[block] += 1
            logits = self.network(block, ids, torch.full((1,), t, device=self.device))
            probs = (logits / temperature).softmax(-1)[0].cpu()  # (T, V)
            draw = torch.multinomial(probs, 1, generator=generator)[:, 0].to(self.device)
            reveal = torch.rand(ids.shape[1], generator=generator).to(self.device) < (t - s) / t
            ids = torch.where(masked & reveal[None], draw[None], ids)
        self.model.train()
        out = ids[0].cpu()
        assert not (out == self.vocab.mask_id).any(), "a mask survived the last step"
        return self.vocab.decode(out[len(prefix) :].tolist()), {
            "steps": steps,
            "calls_per_unit": calls,  # saved key, kept for old results
        }


class EndToEndMaskedLM(_MaskedLM):
    """The baseline: one network over all masking times."""

    def sample_t(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_t_full(n, generator)

    def network(self, block: int, ids: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model.run_all(ids, t)

    def route(self, t: float) -> int:
        return 0

    def per_block_terms(self, seqs: torch.Tensor, seed: int) -> list[dict[str, Any]]:
        return []


class BlockwiseMaskedLM(_MaskedLM):
    """DiffusionBlocks: block b predicts masked characters for t in its interval."""

    def __init__(self, config: MaskedLMConfig, device: torch.device):
        super().__init__(config, device)
        self.partition = TimePartition(config.num_blocks, config.overlap)

    def sample_t(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.partition.sample_t(block, n, generator)

    def readout_diagnostics(self, seqs: torch.Tensor, draws: int, seed: int) -> dict[str, Any]:
        """``block_alone``: each block scoring every masking time by itself (block 0, the most
        masked, is the analogue of the chain's first call: do the other blocks earn their
        depth?); ``ensemble``: every block's log-probabilities averaged at every t (B x the
        calls). BPC of the same masking draws as the headline estimate (lower is better)."""
        keep = ("bpc", "bpc_stderr")
        alone = []
        for b in range(self.config.num_blocks):
            est = self.estimate_bpc(seqs, draws, seed, readout=f"block:{b}")
            alone.append({"block": b, **{k: est[k] for k in keep}})
        est = self.estimate_bpc(seqs, draws, seed, readout="ensemble")
        return {
            "block_alone": alone,
            "ensemble": {k: est[k] for k in keep},
            "interval_shares": self.interval_shares(seqs[: min(len(seqs), 256)], seed + 29),
        }

    @torch.no_grad()
    def interval_shares(self, seqs: torch.Tensor, seed: int) -> list[list[float]]:
        """``[b][i]``: block b's share of the ELBO (bits per character) on block i's interval,
        every block scored on the same masking draws of that interval (the diagonal is the
        routed model's ``per_unit``, with other draws): which block predicts best where."""
        self.model.eval()
        ids = seqs.to(self.device)
        B = self.config.num_blocks
        rows = [[self.interval_share(block, interval, ids,  # the same draws for every block
                                     torch.Generator().manual_seed(seed + interval))
                 for interval in range(B)] for block in range(B)]  # fmt: skip
        self.model.train()
        return rows

    def interval_share(
        self, block: int, interval: int, ids: torch.Tensor, gen: torch.Generator
    ) -> float:
        """``block``'s share of the ELBO (bits per character) on ``interval``'s masking times:
        one t uniform in that interval per sequence, the mean term times the interval's width."""
        lo, hi = self.partition.interval(interval)
        lo_t = max(lo, T_MIN)
        t = lo_t + (hi - lo_t) * torch.rand(len(ids), generator=gen, dtype=torch.float64)
        return float(self.elbo_terms(block, ids, t, gen).mean()) * (hi - lo) / math.log(2)

    def network(self, block: int, ids: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model.run_block(block, ids, t)

    def route(self, t: float) -> int:
        return int(self.partition.block_of(t))

    @torch.no_grad()
    def per_block_terms(self, seqs: torch.Tensor, seed: int) -> list[dict[str, Any]]:
        """Each block's share of the held-out ELBO (t uniform in its own interval, times the
        interval's width): the shares add up to the BPC."""
        gen = torch.Generator().manual_seed(seed)
        out = []
        self.model.eval()
        ids = seqs.to(self.device)
        for block in range(self.config.num_blocks):  # one generator: the draws of before
            share = self.interval_share(block, block, ids, gen)
            interval = list(self.partition.interval(block))
            out.append({"block": block, "t_interval": interval, "bpc_share": share})
        self.model.train()
        return out


# Presets of this task: name -> (config overrides, one-line description); the registry gathers
# every task's presets (`dblocks presets`).
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "mdm-shakespeare": (
        dict(
            data="shakespeare",
            seq_len=128,
            depth=6,
            hidden=128,
            heads=4,
            num_blocks=3,
            overlap=0.05,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            eval_draws=8,
            eval_sequences=512,
            inference_steps=128,
            log_every=50,
        ),  # fmt: skip
        "paper-like masked diffusion LM: Shakespeare characters (Hamlet held out), sequences "
        "of 128, 6-layer bidirectional transformer (hidden 128), B=3, gamma 0.05",
    ),
    "mdm-shakespeare-small": (
        dict(
            data="shakespeare",
            seq_len=64,
            train_subset=64000,
            depth=6,
            hidden=64,
            heads=4,
            num_blocks=3,
            overlap=0.05,
            epochs=1,
            batch_size=32,
            lr=1e-3,
            eval_draws=8,
            eval_sequences=512,
            inference_steps=64,
            log_every=50,
        ),  # fmt: skip
        "a masked-diffusion LM a few CPU minutes per method: sequences of 64, 6 layers (hidden "
        "64), 2,000 steps, B=3; lr 1e-3, where every method learns (the end-to-end models' "
        "choice on val; DiffusionBlocks' is 2e-3, at which end to end stays at the unigram "
        "level: docs/results/masked-lm/)",
    ),
    "mdm-tiny": (
        dict(
            data="shakespeare",
            seq_len=32,
            train_subset=256,
            depth=2,
            hidden=32,
            heads=2,
            num_blocks=2,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            eval_draws=2,
            eval_sequences=32,
            eval_subset=16,
            inference_steps=8,
            log_every=4,
        ),  # fmt: skip
        "smoke test (seconds on a CPU; its metrics mean nothing): 256 Shakespeare sequences of "
        "32 characters, 2 layers, B=2",
    ),
}
