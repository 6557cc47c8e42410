"""Autoregressive character language model: DiffusionBlocks (docs/method.md §6.4) and the plain
next-token baseline.

DiffusionBlocks. The clean target of position i is y_i = normalize(E)[token_i] (E: the token
embedding table). A training sequence of T characters becomes 2T tokens: the clean embeddings of
tokens 0..T-1, then the noisy targets z_i = y_i + sigma_i * eps_i. Attention: clean token i sees
clean tokens <= i; noisy token i sees clean tokens < i and itself, nothing else; clean tokens never
see noisy ones. Noisy token i is paired with target token i (never i+1). Clean tokens are
conditioned by a learned vector, noisy ones by their sigma (adaLN per token), so the clean prefix
does not depend on the noise level and can be cached while a new token is denoised. Loss: CE of
the logits from D = c_skip z + c_out F, weighted over sigma (``weighting``), plus optionally
``aux_ce`` x the clean stream's next-token CE; with ``context_noise`` > 0 some characters of the
clean stream are replaced by random ones in training (the targets are not). Generation: each new
token starts from noise and takes K denoising steps (default K = B) routed across blocks, soft
bridge between steps, and the last call's logits pick the token.

End to end: the same transformer on the clean stream with a causal mask, trained to predict the
next character.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..diffusion import (
    NoiseSchedule,
    chain,
    chain_levels,
    edm_denoise,
    mean_log_probs,
    soft_bridge,
    unit_table,
    weighted_loss,
)
from ..networks.layers import LayerGroup, causal_mask, two_stream_mask
from ..networks.recurrent import RecurrentDepthLM
from ..networks.stack import TwoStreamStackNetwork
from ..networks.token_transformer import TwoStreamTransformer
from .charlm import (  # noqa: F401 - the char-LM names, importable from here as before
    SIGMA_SAMPLING,
    ARConfig,
    CharLM,
    distinct_n,
    judge_perplexity,
    repetition,
)


# ---------------------------------------------------------------------- the tasks
class EndToEndAR(CharLM):
    """The baseline: a causal transformer trained to predict the next character."""

    ce_is_likelihood = True
    model: TwoStreamTransformer | TwoStreamStackNetwork

    def clean_logits(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        n, t = ids.shape
        x, cond = m.clean_inputs(ids), m.clean_condition(n, t)
        mask, positions = causal_mask(t, ids.device), torch.arange(t, device=ids.device)
        for group in m.blocks:
            x = group(x, cond, mask, positions)
        return m.output(x, cond)  # (N, T, V): position i predicts character i+1

    def loss(
        self, block: int, batch: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.clean_logits(batch)[:, :-1]
        loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:])
        return loss, {"loss": loss.item(), "ce": loss.item()}

    def predict_logits(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.clean_logits(ids)[:, :-1]

    @torch.no_grad()
    def generate_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str = "",
        steps: int | None = None,
        temperature: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        text = self._autoregress(length, generator, prompt, temperature,
                                 lambda ids: self.clean_logits(ids)[0, -1])  # fmt: skip
        return text, {"layer_calls": length}

    @torch.no_grad()
    def continuation_nll(self, prompt: str, continuation: str) -> tuple[float, int]:
        """Summed NLL (nats) of the continuation's characters given the prompt, and their count."""
        head, tail = self.vocab.encode(prompt), self.vocab.encode(continuation)
        ids = torch.cat([head, tail])[None].to(self.device)
        if ids.shape[1] > self.config.seq_len:
            raise ConfigError(f"judge sequence length {self.config.seq_len} is too short")
        logits = self.clean_logits(ids)[0, :-1]
        nll = F.cross_entropy(logits, ids[0, 1:], reduction="none")[len(head) - 1 :]
        return float(nll.sum()), len(continuation)


class TokenTargets:
    """What the DiffusionBlocks language models (autoregressive and recurrent depth) share: the
    unit-norm token table as the targets, the soft bridge over it, and the chain's noise levels.
    Needs ``self.model.token_embed``, ``self.schedule`` and ``self.config``."""

    model: TwoStreamTransformer | TwoStreamStackNetwork | RecurrentDepthLM
    schedule: NoiseSchedule
    config: ARConfig

    def target_prefixes(self) -> tuple[str, ...]:
        return ("token_embed.",)

    def table(self) -> torch.Tensor:
        """The L2-normalised embedding table: the clean targets."""
        return unit_table(self.model.token_embed.weight)

    def bridge(self, logits: torch.Tensor) -> torch.Tensor:
        """The soft bridge over the normalised token table (the training targets)."""
        return soft_bridge(logits, self.table(), self.config.bridge_temperature)

    def levels(self, steps: int | None) -> list[float]:
        """Noise levels of the chain: ``steps`` denoiser calls (default ``inference_steps``,
        or B: every block once)."""
        k = self.config.steps_at_inference if steps is None else steps
        try:
            return chain_levels(k, self.schedule, self.config.grid)
        except ValueError as err:
            raise ConfigError(str(err)) from None


class BlockwiseAR(TokenTargets, CharLM):
    """DiffusionBlocks: block b denoises target embeddings for sigma in its interval."""

    model: TwoStreamTransformer | TwoStreamStackNetwork
    config: ARConfig

    def __init__(self, config: ARConfig, device: torch.device):
        super().__init__(config, device)
        self.partition = config.block_partition()
        self.schedule = self.partition.schedule
        # The ensemble is one deterministic prediction per prefix; the chain's depends on noise.
        self.ce_is_likelihood = config.readout == "ensemble"

    def route(self, sigma: float) -> int:
        return int(self.partition.block_of(sigma))

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        judge: object = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """As the baseline's (on ``split``), plus diagnostics: ``sigma_max_call`` scores the
        logits of ONE call of the noisiest block on pure noise at sigma_max (the noisy token
        carries almost no information, so this is the model's predictive distribution of the
        next character given the prefix: a CE comparable with a likelihood),
        ``ensemble_call`` every block's such call averaged (:meth:`ensemble_logits`, also a
        likelihood), and, with ``steps``, ``steps_sweep`` scores the chain's final prediction
        for each number of denoising steps."""
        result = super().evaluate(quick=quick, steps=None, judge=judge, split=split, **options)
        if quick:
            return result
        seqs = self.eval_sequences(split=result["split"])

        def fresh() -> torch.Generator:  # the same noise as the main evaluation
            return torch.Generator().manual_seed(self.config.seed + 1_000_003)

        gen = fresh()
        result["sigma_max_call"] = self.score(seqs, lambda ids: self.sigma_max_logits(ids, gen))
        if self.config.readout == "ensemble":  # the headline already is the ensemble's
            result["ensemble_call"] = {"heldout_ce": result["heldout_ce"],
                                       "heldout_accuracy": result["heldout_accuracy"],
                                       "characters": result["heldout_characters"],
                                       **({"tokens": result["heldout_tokens"]}
                                          if "heldout_tokens" in result else {})}  # fmt: skip
        else:
            result["ensemble_call"] = self.score(seqs, self.ensemble_logits)
        if self.config.readout != "chain":  # the paper's chain beside the default readout
            g = fresh()
            result["chain_call"] = self.score(seqs, lambda ids: self.chain_logits(ids, g))
        if steps:
            sweep: dict[str, dict[str, float]] = {}
            for k in sorted(set(steps)):
                g = fresh()

                def predict(ids: torch.Tensor, k: int = k, g: torch.Generator = g) -> torch.Tensor:
                    return self.predict_logits(ids, g, k)

                sweep[str(k)] = self.score(seqs, predict)
            result["steps_sweep"] = sweep
        return result

    def ensemble_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Every block called once at sigma_max on z = 0 (no draw), the renormalised mean of
        their log-probabilities (N, T-1, V): each block's estimate of the next character from
        the prefix alone, averaged (the classification task's ``readout=ensemble``)."""
        n, t = ids.shape
        z = torch.zeros(n, t, self.model.hidden, device=self.device)
        levels = torch.full((n, t), self.schedule.sigma_max, device=self.device)
        logits = [self.denoise_logits(b, ids, z, levels)[0] for b in range(len(self.model.blocks))]
        return mean_log_probs(logits).log_softmax(-1)[:, 1:]

    def sigma_max_logits(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Logits (N, T-1, V) of the noisiest block, called once on z ~ sigma_max N(0, I): the
        chain with a single call."""
        return self.chain_logits(ids, generator, 1)

    def denoise_logits(
        self, block: int, ids: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full two-stream pass of ``block``: ids (N, T), noisy targets z (N, T, C) at
        levels sigma (N, T). Returns logits (N, T, V) for every noisy position, and the clean
        stream's output (N, T, C)."""
        m = self.model
        m.use_shared(block)  # block-copies: the block's own copy of the shared modules
        n, t = ids.shape
        kept: list[torch.Tensor] = []  # the noisy stream's condition and the clean stream's output
        clean = m.clean_inputs(ids)  # before c_in·z: the autograd order (and results) of before

        def network(scaled: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            x = torch.cat([clean, m.noisy_inputs(scaled)], 1)  # (N, 2T, C)
            noisy_cond = m.cond_embed(c_noise.reshape(-1)).view(n, t, -1)
            cond = torch.cat([m.clean_condition(n, t), noisy_cond], 1)
            positions = torch.arange(t, device=ids.device).repeat(2)  # both streams: 0..t-1
            h = m.blocks[block](x, cond, two_stream_mask(t, ids.device), positions)
            kept.extend([noisy_cond, h])
            return h[:, t:]  # F on the noisy positions

        denoised = edm_denoise(network, z, sigma[..., None], self.schedule.sigma_data)  # D
        logits = m.output(denoised, kept[0])
        return logits, kept[1][:, :t]

    def _noisy_context(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The clean stream's characters: ``batch``, each replaced with probability
        ``context_noise`` by a uniformly drawn character (nothing drawn when 0)."""
        p = self.config.context_noise
        if p == 0:
            return batch
        swap = (torch.rand(batch.shape, generator=generator) < p).to(batch.device)
        drawn = torch.randint(0, self.vocab.size, batch.shape, generator=generator)
        return torch.where(swap, drawn.to(batch.device), batch)

    def _sigmas(self, block: int, n: int, t: int, generator: torch.Generator) -> torch.Tensor:
        if self.config.sigma_sampling == "token":
            return self.partition.sample_sigma(block, n * t, generator, self.device).view(n, t)
        return self.partition.sample_sigma(block, n, generator, self.device)[:, None].expand(n, t)

    def loss(
        self, block: int, batch: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        n, t = batch.shape
        target = self.table()[batch]  # y_i = normalize(E)[token_i]: (N, T, C)
        sigma = self._sigmas(block, n, t, generator)
        noise = torch.randn(target.shape, generator=generator).to(self.device)
        z = target + sigma[..., None] * noise
        logits, clean = self.denoise_logits(block, self._noisy_context(batch, generator), z, sigma)
        ce = F.cross_entropy(logits.transpose(1, 2), batch, reduction="none")  # token i -> i
        c = self.config
        loss = weighted_loss(ce.reshape(-1), sigma.reshape(-1), c.weighting, c.sigma_data,
                             c.weight_clamp)  # fmt: skip
        logs = {"ce": ce.mean().item()}
        if c.aux_ce > 0:
            m = self.model
            aux_logits = m.output(clean[:, :-1], m.clean_condition(n, t - 1))
            aux = F.cross_entropy(aux_logits.transpose(1, 2), batch[:, 1:])
            loss = loss + c.aux_ce * aux
            logs["aux_ce"] = aux.item()
        logs["loss"] = loss.item()
        return loss, logs

    def predict_logits(
        self, ids: torch.Tensor, generator: torch.Generator, steps: int | None = None
    ) -> torch.Tensor:
        """Logits (N, T-1, V) of characters 1..T-1: the run's ``readout`` (the ensemble draws
        nothing), or with ``steps`` the chain of that many calls."""
        if steps is None and self.config.readout == "ensemble":
            return self.ensemble_logits(ids)
        return self.chain_logits(ids, generator, steps)

    def chain_logits(
        self, ids: torch.Tensor, generator: torch.Generator, steps: int | None = None
    ) -> torch.Tensor:
        """Every position at once: the chain from noise for each noisy token (they do not see
        each other); the last call's logits predict the character."""
        n, t = ids.shape
        z = self.schedule.sigma_max * torch.randn(n, t, self.model.hidden, generator=generator)

        def call(z: torch.Tensor, sigma: float, block: int) -> torch.Tensor:
            levels = torch.full((n, t), sigma, device=self.device)
            return self.denoise_logits(block, ids, z, levels)[0]

        logits = chain(call, z.to(self.device), self.levels(steps), self.route, self.bridge)
        return logits[:, 1:]  # position i's final prediction is character i (i >= 1)

    # -- generation with a cached clean prefix ----------------------------------------------
    def _noisy_logits(
        self,
        block: int,
        prefix: torch.Tensor,
        z: torch.Tensor,
        sigma: float,
        caches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]],
        cached: bool,
    ) -> torch.Tensor:
        """Logits (V,) for the noisy token right after ``prefix`` (1, P) at level sigma."""
        m = self.model
        m.use_shared(block)
        p = prefix.shape[1]
        group = cast(LayerGroup, m.blocks[block])
        conds: list[torch.Tensor] = []

        def network(scaled: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            noisy = m.noisy_inputs(scaled, start=p)  # (1, 1, C)
            conds.append(m.cond_embed(c_noise.reshape(1)).view(1, 1, -1))
            noisy_cond = conds[0]
            if cached:
                if block not in caches:  # the clean prefix through this block, once per token
                    clean = m.clean_inputs(prefix)
                    _, caches[block] = group.forward_cached(
                        clean, m.clean_condition(1, p), mask=causal_mask(p, self.device)
                    )
                h, _ = group.forward_cached(noisy, noisy_cond, prefix=caches[block])
                return h[:, -1:]
            # the whole [prefix; noisy] sequence with the two-stream mask, every step
            x = torch.cat([m.clean_inputs(prefix), noisy], 1)
            cond = torch.cat([m.clean_condition(1, p), noisy_cond], 1)
            mask = torch.ones(p + 1, p + 1, dtype=torch.bool, device=self.device)
            mask[:p, :p] = causal_mask(p, self.device)
            mask[:p, p] = False
            positions = torch.arange(p + 1, device=self.device)  # the noisy token at p
            return group(x, cond, mask, positions)[:, -1:]

        level = torch.tensor(sigma, device=self.device)
        denoised = edm_denoise(network, z, level, self.schedule.sigma_data)
        return m.output(denoised, conds[0])[0, 0]

    @torch.no_grad()
    def generate_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str = "",
        steps: int | None = None,
        temperature: float | None = None,
        cache: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        calls = [0] * len(self.model.blocks)
        hidden = self.model.hidden
        # the cached prefix needs the built-in layers (keys and values kept per layer); other
        # layers run the whole [prefix; noisy] sequence at every call
        cache = cache and not (self.config.layer or self.config.pretrained or self.config.model)
        if steps is not None and self.config.readout == "ensemble":
            raise ConfigError(
                "steps counts the calls of the chain, but this run generates with "
                "readout=ensemble (every block once per character); pass --set readout=chain "
                "to generate with a chain"
            )
        if self.config.readout == "ensemble":
            sigma_max = float(self.schedule.sigma_max)

            def ensemble(ids: torch.Tensor) -> torch.Tensor:  # every block once, no draw
                caches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
                z = torch.zeros(1, 1, hidden, device=self.device)
                for block in range(len(calls)):
                    calls[block] += 1
                logits = [self._noisy_logits(block, ids, z, sigma_max, caches, cache)
                          for block in range(len(calls))]  # fmt: skip
                return mean_log_probs(logits).log_softmax(-1)

            text = self._autoregress(length, generator, prompt, temperature, ensemble)
            return text, {"readout": "ensemble", "calls_per_unit": calls}
        levels = self.levels(steps)

        def next_logits(ids: torch.Tensor) -> torch.Tensor:  # one chain from sigma_max
            caches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            z = self.schedule.sigma_max * torch.randn(1, 1, hidden, generator=generator)

            def call(z: torch.Tensor, sigma: float, block: int) -> torch.Tensor:
                calls[block] += 1
                return self._noisy_logits(block, ids, z, sigma, caches, cache)

            return chain(call, z.to(self.device), levels, self.route,
                         lambda logits: self.bridge(logits)[None, None])  # fmt: skip

        text = self._autoregress(length, generator, prompt, temperature, next_logits)
        return text, {"steps": len(levels), "calls_per_unit": calls}  # saved key (old name)


# Presets of this task: name -> (config overrides, one-line description); the registry gathers
# every task's presets (`dblocks presets`).
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "ar-shakespeare": (
        dict(
            data="shakespeare",
            seq_len=128,
            depth=8,
            hidden=128,
            heads=4,
            num_blocks=4,
            overlap=0.1,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            eval_sequences=256,
            gen_prompts=16,
            log_every=50,
        ),  # fmt: skip
        "paper-like autoregressive LM: Shakespeare characters (Hamlet held out), sequences of "
        "128, 8-layer causal transformer (hidden 128), B=4, gamma 0.1",
    ),
    "ar-shakespeare-small": (
        dict(
            data="shakespeare",
            seq_len=64,
            train_subset=32000,
            depth=8,
            hidden=64,
            heads=4,
            num_blocks=4,
            overlap=0.1,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            eval_sequences=512,
            gen_prompts=16,
            gen_prompt_len=16,
            gen_length=48,
            log_every=50,
        ),  # fmt: skip
        "a character LM where depth shows, a few CPU minutes per method: sequences of 64, 8 "
        "layers (hidden 64), 1,000 steps, B=4; at equal steps full depth beats depth L/B = 2 by "
        "0.124 bits per character on val (3 seeds, docs/results/autoregressive/depth-check/)",
    ),
    "ar-tiny": (
        dict(
            data="shakespeare",
            seq_len=32,
            train_subset=256,
            depth=4,
            hidden=32,
            heads=2,
            num_blocks=2,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            eval_sequences=16,
            eval_subset=8,
            gen_prompts=2,
            gen_prompt_len=8,
            gen_length=12,
            log_every=4,
        ),  # fmt: skip
        "smoke test (seconds on a CPU; its metrics mean nothing): 256 Shakespeare sequences of "
        "32 characters, 4 layers, B=2",
    ),
}
