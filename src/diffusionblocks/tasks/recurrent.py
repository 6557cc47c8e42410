"""Recurrent-depth character language model (Huginn-style), two ways (docs/method.md §6.5):

- ``bptt`` (baseline): the state starts from noise, the weight-tied core runs a random number of
  iterations (uniform in 1..2*mean_iterations-1) and gradients flow only through the last
  ``truncation`` of them; the coda reads the final state.
- ``dblocks``: the state is the noisy embedding of the next character, z = y + sigma * eps with
  sigma from the whole range; ONE core application is trained as the EDM denoiser
  D = c_skip z + c_out core(c_in z) and the coda reads D into logits (CE weighted over sigma).
  Inference runs K core applications as an Euler chain from sigma_max (soft bridge between them),
  the last one at sigma_min giving the prediction.

The baseline's variants (``method``): ``e2e-ckpt`` is ``bptt`` with activation checkpointing;
``e2e-shallow``, the end-to-end model that needs the training memory of one DiffusionBlocks block,
is ``bptt`` with ``truncation`` 1. A DiffusionBlocks step backpropagates through prelude + ONE
core application + coda; a truncated-BPTT step through prelude + ``truncation`` core applications
+ coda (the iterations before them run without gradients and keep no activations), so with
truncation 1 the backward pass runs through the same layers, once each. The recurrent model is
one block (``num_blocks`` 1), so "depth L/B" is the whole stack, and the number of iterations
(``mean_iterations``) is left as configured: it costs forward compute, not memory.

Same corpus, same evaluation and generation metrics as the autoregressive model, so tables line
up. The compute accounting asks each task the layer evaluations its latest step ran, forward and
backward (``layer_evals``, ``backward_layer_evals``): for ``bptt`` they vary with the drawn number
of iterations; a ``dblocks`` step always runs prelude + one core application + coda.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, _check
from ..diffusion import chain, edm_denoise, weighted_loss
from ..networks.recurrent import RecurrentDepthLM, RecurrentShape
from .autoregressive import PRESETS as AR_PRESETS
from .autoregressive import TokenTargets
from .charlm import ARConfig, CharLM


@dataclass
class RecurrentConfig(ARConfig):
    """Recurrent-depth character language model."""

    task: str = "recurrent"  # fixed

    task_groups = {
        **ARConfig.task_groups,
        "model": (
            "depth",
            "hidden",
            "heads",
            "mlp_ratio",
            "prelude",
            "core",
            "coda",
            "layer",
            "pretrained",
            "model",
        ),
        "training": (
            "aux_ce",
            "context_noise",
            "mean_iterations",
            "truncation",
            "init_std",
            "self_condition",
        ),
    }

    num_blocks: int = 1  # one trained block (the whole recurrent network)
    overlap: float = 0.0  # unused: the core is one denoiser over the whole sigma range
    depth: int = 8  # distinct layers: prelude + core + coda
    prelude: int = 2  # layers before the loop
    core: int = 4  # layers of the weight-tied core
    coda: int = 2  # layers after the loop
    mean_iterations: int = 16  # bptt: mean number of core iterations per training step
    truncation: int = 4  # bptt: backpropagate through the last k iterations only
    init_std: float = 1.0  # bptt: std of the initial state noise
    inference_steps: int = 16  # K: core applications at inference (both methods)
    self_condition: float = 0.0  # dblocks: share of examples given the core's first estimate
    # DiffusionBlocks' readouts of K core applications (the baseline iterates its state):
    # "refine" (default, chosen on val: docs/results/recurrent/): K calls at sigma_max on z = 0
    # (no draw), each given the previous call's estimate of the target (the soft bridge of its
    # logits) when the model was trained with self_condition; a model without it would repeat
    # the same call, so "refine" is then ONE application, a feed-forward pass; "chain": the Euler
    # chain from sigma_max to sigma_min, soft bridge between calls (the paper). Runs saved before
    # the key existed keep the chain (ARConfig.saved_defaults).
    readout: str = "refine"  # dblocks: refine (K calls at sigma_max) | chain (the paper)
    readouts = ("refine", "chain")

    baseline_method = "bptt"  # the recurrent-depth baseline is truncated backpropagation

    @property
    def bptt_truncation(self) -> int:
        """The core iterations a truncated-BPTT step backpropagates through: ``truncation``, or
        1 for ``e2e-shallow`` (the layers one DiffusionBlocks step backpropagates through)."""
        return 1 if self.shallow else self.truncation

    def resolved(self) -> dict[str, Any]:
        """As every config's, with the truncation the baseline trains with."""
        out = super().resolved()
        if self.end_to_end:
            out["bptt_truncation"] = self.bptt_truncation
        return out

    @property
    def num_model_blocks(self) -> int:
        return 1

    @property
    def block_resident(self) -> bool:
        return False

    @property
    def one_after_another(self) -> bool:
        return False

    def validate(self) -> None:
        super().validate()
        _check(self, "parallel", not self.parallel,
               "false: a recurrent-depth model is one trained block, there are no blocks to "
               "spread over processes")  # fmt: skip
        _check(self, "resident", not self.resident,
               "false: a recurrent-depth model is one trained block")  # fmt: skip
        _check(self, "pretrained", not self.pretrained,
               "empty (pretrained models fine-tune with the autoregressive presets)")  # fmt: skip
        _check(self, "compile", not self.compile,
               "false: compile=true compiles each block's call, and the recurrent model runs "
               "its prelude, core and coda outside it (nothing would be compiled)")  # fmt: skip
        for name in ("prelude", "core", "coda"):
            _check(self, name, 1 <= getattr(self, name) <= 64, "an integer in [1, 64]")
        if self.depth != self.prelude + self.core + self.coda:
            raise ConfigError(
                f"invalid value for 'depth': {self.depth} (must equal prelude={self.prelude} + "
                f"core={self.core} + coda={self.coda})"
            )
        _check(self, "num_blocks", self.num_blocks == 1, "1 (the recurrent model is one block)")
        _check(self, "layers_per_block", self.layers_per_block is None,
               "unset (the recurrent model is one block)")  # fmt: skip
        _check(self, "layer", not self.layer,
               "empty (the recurrent model keeps its own layers)")  # fmt: skip
        _check(self, "model", not self.model,
               "empty (your own network trains with the autoregressive or masked-diffusion "
               "presets)")  # fmt: skip
        _check(self, "aux_ce", self.aux_ce == 0, "0 (aux_ce applies to the autoregressive task)")
        _check(self, "context_noise", self.context_noise == 0,
               "0 (context_noise applies to the autoregressive task)")  # fmt: skip
        _check(self, "mean_iterations", 1 <= self.mean_iterations <= 1000, "in [1, 1000]")
        _check(self, "truncation", 1 <= self.truncation <= 1000, "an integer in [1, 1000]")
        _check(self, "init_std", 0 < self.init_std <= 100, "a number in (0, 100]")
        _check(self, "inference_steps", self.inference_steps >= 1, "an integer >= 1")
        _check(self, "self_condition", 0 <= self.self_condition <= 1, "a probability in [0, 1]")
        _check(self, "self_condition", self.self_condition == 0 or not self.end_to_end,
               "0 for the truncated-BPTT baseline (self-conditioning is a DiffusionBlocks "
               "option)")  # fmt: skip


class _RecurrentLM(CharLM):
    config: RecurrentConfig
    model: RecurrentDepthLM

    def build_model(self) -> RecurrentDepthLM:
        c = self.config
        shape = RecurrentShape(
            vocab=self.vocab.size, max_len=c.seq_len, hidden=c.hidden, heads=c.heads,
            prelude=c.prelude, core=c.core, coda=c.coda, mlp_ratio=c.mlp_ratio, seed=c.seed,
            self_condition=c.self_condition > 0,
        )  # fmt: skip
        return RecurrentDepthLM(shape).to(self.device)

    def layers_in_block(self, block: int) -> int:
        c = self.config
        return c.prelude + c.core + c.coda

    def block_parameters(self, block: int) -> list[nn.Parameter]:
        return list(self.model.blocks[0].parameters())

    def inference_layer_evals(self, k: int) -> int:
        """Layer evaluations per predicted character with k core applications."""
        raise NotImplementedError

    def applications(self, k: int) -> int:
        """Core applications that K = k runs per predicted character."""
        return k

    def states(
        self, e: torch.Tensor, k: int, generator: torch.Generator, last_only: bool
    ) -> torch.Tensor:
        """Logits after k core applications for every position of e (N, T, C), or only the last
        position (last_only)."""
        raise NotImplementedError

    def predict_logits(
        self, ids: torch.Tensor, generator: torch.Generator, steps: int | None = None
    ) -> torch.Tensor:
        k = steps or self.config.inference_steps
        e = self.model.encode(ids)[:, :-1]  # position j predicts character j+1
        return self.states(e, k, generator, last_only=False)

    @torch.no_grad()
    def generate_text(
        self,
        length: int,
        generator: torch.Generator,
        prompt: str = "",
        steps: int | None = None,
        temperature: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        k = steps or self.config.inference_steps
        text = self._autoregress(
            length, generator, prompt, temperature,
            lambda ids: self.states(self.model.encode(ids), k, generator, last_only=True)[0, -1],
        )  # fmt: skip
        return text, {"core_applications": self.applications(k)}

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        judge: object = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        result = super().evaluate(quick=quick, steps=None, judge=judge, split=split, **options)
        result["inference_steps"] = self.config.inference_steps
        result["inference_layer_evals_per_char"] = self.inference_layer_evals(
            self.config.inference_steps
        )
        if quick or not steps:
            return result
        # Test-time depth: held-out CE/accuracy with k core applications.
        seqs = self.eval_sequences(split=result["split"])
        sweep: dict[str, dict[str, float]] = {}
        for k in sorted(set(steps)):
            gen = torch.Generator().manual_seed(self.config.seed + 1_000_003)

            def predict(ids: torch.Tensor, k: int = k, gen: torch.Generator = gen) -> torch.Tensor:
                return self.predict_logits(ids, gen, k)

            scored = self.score(seqs, predict)
            sweep[str(k)] = {
                "heldout_ce": scored["heldout_ce"],
                "heldout_accuracy": scored["heldout_accuracy"],
                "layer_evals_per_char": self.inference_layer_evals(k),
            }
        result["depth_sweep"] = sweep
        return result


class TruncatedBPTTRecurrent(_RecurrentLM):
    """The baseline: random depth, truncated backprop through the last k iterations (k =
    ``truncation``; 1 for ``e2e-shallow``)."""

    ce_is_likelihood = True

    def __init__(self, config: RecurrentConfig, device: torch.device):
        super().__init__(config, device)
        # Layer evaluations per example (forward, backward) of the latest loss call, per block.
        self._ran: dict[int, tuple[int, int]] = {}

    def loss(
        self, block: int, batch: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c, m = self.config, self.model
        e = m.encode(batch)[:, :-1]
        n, t, h = e.shape
        k_total = int(torch.randint(1, 2 * c.mean_iterations, (1,), generator=generator))
        state = c.init_std * torch.randn(n, t, h, generator=generator).to(self.device)
        cond = m.constant_condition(n, t)
        with_grad = min(c.bptt_truncation, k_total)
        with torch.no_grad():
            for _ in range(k_total - with_grad):
                state = m.core_step(e.detach(), state, cond.detach())
        for _ in range(with_grad):
            state = m.core_step(e, state, cond)
        logits = m.readout(e, state, cond)
        loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:])
        self._ran[block] = (
            c.prelude + k_total * c.core + c.coda,
            c.prelude + with_grad * c.core + c.coda,
        )
        return loss, {"loss": loss.item(), "ce": loss.item(), "iterations": k_total}

    def layer_evals(self, block: int) -> int:
        """Forward layer evaluations per example of the latest :meth:`loss` call on ``block``:
        prelude + (drawn iterations) x core + coda (before any call: :meth:`layers_in_block`)."""
        return self._ran[block][0] if block in self._ran else self.layers_in_block(block)

    def backward_layer_evals(self, block: int) -> int:
        """Layer evaluations per example the latest :meth:`loss` call on ``block`` backpropagates
        through: prelude + (the last ``truncation`` iterations) x core + coda (before any call:
        :meth:`layers_in_block`)."""
        return self._ran[block][1] if block in self._ran else self.layers_in_block(block)

    def inference_layer_evals(self, k: int) -> int:
        c = self.config
        return c.prelude + k * c.core + c.coda

    def states(
        self, e: torch.Tensor, k: int, generator: torch.Generator, last_only: bool
    ) -> torch.Tensor:
        c, m = self.config, self.model
        n, t, h = e.shape
        if last_only:
            e_state = e
            state = c.init_std * torch.randn(n, 1, h, generator=generator).to(self.device)
            cond = m.constant_condition(n, 1)
            for _ in range(k):
                state = self._last(m.core_step, e_state, state, cond)
            return self._last(m.readout, e_state, state, cond)
        state = c.init_std * torch.randn(n, t, h, generator=generator).to(self.device)
        cond = m.constant_condition(n, t)
        for _ in range(k):
            state = m.core_step(e, state, cond)
        return m.readout(e, state, cond)

    @staticmethod
    def _last(
        fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        e: torch.Tensor,
        state: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """Apply ``fn`` to the last position only: its state sees the whole clean prefix. Padding
        the earlier positions with copies keeps the two-stream mask unchanged (states never see
        each other)."""
        t = e.shape[1]
        full_state = state.expand(-1, t, -1)
        full_cond = cond.expand(-1, t, -1)
        return fn(e, full_state, full_cond)[:, -1:]


class BlockwiseRecurrent(TokenTargets, _RecurrentLM):
    """DiffusionBlocks: one core application, trained as a denoiser over all sigma."""

    model: RecurrentDepthLM
    config: RecurrentConfig

    def __init__(self, config: RecurrentConfig, device: torch.device):
        super().__init__(config, device)
        self.schedule = config.noise_schedule()
        # refine draws no noise: one deterministic prediction per prefix, a likelihood
        self.ce_is_likelihood = config.readout == "refine"

    def applications(self, k: int) -> int:
        """Core applications that K = k runs: k, but one for ``refine`` without
        self-conditioning (its calls would all be the same)."""
        c = self.config
        return 1 if c.readout == "refine" and c.self_condition == 0 else k

    def denoise(
        self,
        e: torch.Tensor,
        z: torch.Tensor,
        sigma: torch.Tensor,
        estimate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (N, T, V) from one core application at levels sigma (N, T), given (with
        self-conditioning) a previous estimate of the target (N, T, C)."""
        m = self.model
        conds: list[torch.Tensor] = []

        def network(scaled: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            conds.append(m.condition(c_noise[..., 0]))
            return m.core_step(e, scaled, conds[0], estimate)

        denoised = edm_denoise(network, z, sigma[..., None], self.schedule.sigma_data)
        return m.readout(e, denoised, conds[0])

    def loss(
        self, block: int, batch: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c, m = self.config, self.model
        e = m.encode(batch)[:, :-1]
        n, t, _ = e.shape
        target = self.table()[batch[:, 1:]]  # the next character's embedding
        if c.sigma_sampling == "token":
            sigma = self.schedule.sample(n * t, generator, device=self.device).view(n, t)
        else:
            sigma = self.schedule.sample(n, generator, device=self.device)[:, None].expand(n, t)
        z = target + sigma[..., None] * torch.randn(target.shape, generator=generator).to(
            self.device
        )
        estimate = None
        if c.self_condition > 0:
            # Self-conditioning (the previous estimate dropped for a 1 - p share of examples):
            # the core's own first estimate from the same z, without gradients, as in
            # diffusion self-conditioning; at inference each call gets the previous call's.
            with torch.no_grad():
                first = self.bridge(self.denoise(e, z, sigma))
            keep = torch.rand(n, generator=generator) < c.self_condition
            estimate = first * keep.to(self.device, first.dtype)[:, None, None]
        logits = self.denoise(e, z, sigma, estimate)
        ce = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        loss = weighted_loss(ce.reshape(-1), sigma.reshape(-1), c.weighting, c.sigma_data,
                             c.weight_clamp)  # fmt: skip
        # One core application: the step runs layers_in_block forward and backward (the default
        # layer_evals / backward_layer_evals of the task protocol), plus with self-conditioning
        # a forward pass of the core and coda for the first estimate (layer_evals).
        return loss, {"loss": loss.item(), "ce": ce.mean().item()}

    def layer_evals(self, block: int) -> int:
        """Forward layer evaluations per example of a training step: prelude + core + coda, and
        core + coda again for the self-conditioning estimate."""
        c = self.config
        extra = c.core + c.coda if c.self_condition > 0 else 0
        return self.layers_in_block(block) + extra

    def inference_layer_evals(self, k: int) -> int:
        c = self.config  # every application reads out (for the bridge, or the estimate)
        return c.prelude + self.applications(k) * (c.core + c.coda)

    def states(
        self, e: torch.Tensor, k: int, generator: torch.Generator, last_only: bool
    ) -> torch.Tensor:
        """The last of k core applications' logits, read out as ``readout`` says: the chain
        from sigma_max to sigma_min, or k refining calls at sigma_max on z = 0."""
        n, t, h = e.shape
        positions = 1 if last_only else t
        sc = self.config.self_condition > 0
        estimate: list[torch.Tensor | None] = [None]  # the previous call's, self-conditioning

        def call(z: torch.Tensor, sigma: float, block: int = 0) -> torch.Tensor:
            s = torch.full((n, positions), sigma, device=self.device)
            if not last_only:
                logits = self.denoise(e, z, s, estimate[0])
            else:
                given = estimate[0]
                pad = None if given is None else given.expand(-1, t, -1)
                logits = TruncatedBPTTRecurrent._last(
                    lambda e_, z_, s_: self.denoise(e_, z_, s_[..., 0], pad), e, z, s[..., None]
                )
            if sc:
                estimate[0] = self.bridge(logits)
            return logits

        if self.config.readout == "refine":
            zero = torch.zeros(n, positions, h, device=self.device)
            for _ in range(self.applications(k)):  # without an estimate, calls would repeat
                logits = call(zero, self.schedule.sigma_max)
            return logits
        z = self.schedule.sigma_max * torch.randn(n, positions, h, generator=generator)
        return chain(call, z.to(self.device), self.levels(k), bridge=self.bridge)


# Keys recurrent-shakespeare-small takes from ar-shakespeare-small (everything but the network).
SMALL_SHARED = ("data", "seq_len", "train_subset", "hidden", "heads", "epochs", "batch_size",
                "lr", "eval_sequences", "gen_prompts", "gen_prompt_len", "gen_length",
                "log_every")  # fmt: skip

# Presets of this task: name -> (config overrides, one-line description); the registry gathers
# every task's presets (`dblocks presets`).
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "recurrent-shakespeare": (
        dict(
            data="shakespeare",
            seq_len=128,
            hidden=128,
            heads=4,
            prelude=2,
            core=4,
            coda=2,
            depth=8,
            mean_iterations=16,
            truncation=4,
            inference_steps=16,
            epochs=1,
            batch_size=64,
            lr=1e-3,
            eval_sequences=256,
            gen_prompts=16,
            log_every=50,
        ),  # fmt: skip
        "paper-like recurrent depth: 2 prelude, 4-layer core, 2 coda (hidden 128), Shakespeare "
        "characters; bptt: 16 iterations on average, backprop through 4",
    ),
    "recurrent-shakespeare-small": (
        dict(
            # the data and training of ar-shakespeare-small, so the two tables line up
            **{k: AR_PRESETS["ar-shakespeare-small"][0][k] for k in SMALL_SHARED},
            prelude=1,
            core=2,
            coda=1,
            depth=4,
            mean_iterations=8,
            truncation=4,
            inference_steps=8,
        ),  # fmt: skip
        "recurrent depth a few CPU minutes per method: the ar-shakespeare-small data and "
        "training (1,000 steps), 1 prelude, 2-layer core, 1 coda (hidden 64); bptt: 8 iterations "
        "on average, backprop through 4; K = 8 at inference",
    ),
    "recurrent-tiny": (
        dict(
            data="shakespeare",
            seq_len=32,
            train_subset=256,
            hidden=32,
            heads=2,
            prelude=1,
            core=2,
            coda=1,
            depth=4,
            mean_iterations=4,
            truncation=2,
            inference_steps=4,
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
        "smoke test (seconds on a CPU; its metrics mean nothing): 1 prelude, 2-layer core, 1 "
        "coda (hidden 32)",
    ),
}
