"""DiffusionBlocks on a :class:`~diffusionblocks.networks.layers.SlotNetwork`: the one path of
every task that predicts a target from an input, the built-in image classification (a ViT) and
a user's residual stack (``docs/your-model.md``), for class labels and continuous targets.

Block b is the denoiser ``D = c_skip * z + c_out * F(c_in * z, c_noise)`` (the paper's Eq. 7,
EDM preconditioning) of the target over its own noise interval, given the input: the scaled
noisy target enters the network's slot, F is the block's output there. Class targets: the clean
target is the unit-norm label embedding and the head turns D into logits (the loss is their
cross-entropy, weighted over sigma: docs/method.md §6.1); continuous targets: F is the head's
output and the loss the weighted L2 of D (as the paper's image generation). Inference: the
*chain* (the paper's Euler sampler, Eqs. 3-5, from sigma_max to sigma_min through the blocks that
own each level; class targets: the soft bridge between calls, Eq. 9) or the *ensemble* (every
block once at sigma_max on z = 0, their estimates averaged). End to end, the same network runs
all its layers on an empty slot at c_noise = 0 (:meth:`SlotEndToEnd.end_to_end`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..diffusion import chain, chain_levels, edm_denoise, mean_log_probs, soft_bridge
from ..networks.layers import drawn_from

Features = tuple[torch.Tensor, torch.Tensor | None]
Calls = list[tuple[int, float, torch.Tensor]]


class SlotEndToEnd:
    """The end-to-end baseline's forward pass on a slot network (mixed into a task whose
    ``model`` is a :class:`SlotNetwork`)."""

    model: Any  # a SlotNetwork (the task's own annotation names which)

    def end_to_end(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every layer on an empty slot at c_noise = 0: logits (N, K) or values (N, D)."""
        m = self.model
        n, device = len(inputs), inputs.device
        features = m.features(inputs)
        cond = m.condition(torch.zeros(n, device=device), features)
        slot = torch.zeros(n, m.hidden, device=device)
        return m.output(m.run_all(slot, features, cond), cond)


class SlotDenoiser:
    """DiffusionBlocks on a slot network, mixed into a task that sets ``model``, ``config``,
    ``device``, ``partition`` and ``schedule``. ``classes``: class labels (else continuous
    targets, ``target_width`` numbers each). Hooks a task may override: :meth:`clean_targets`
    (label swaps), :meth:`augmented` (training augmentation) and :meth:`self_condition_share`;
    ``config.dropout`` > 0 draws dropout masks from the training generator."""

    model: Any  # a SlotNetwork (the task's own annotation names which)
    config: Any
    device: torch.device
    partition: Any
    schedule: Any
    classes: bool = True

    # -- one block --------------------------------------------------------------------------------
    def label_table(self) -> torch.Tensor:
        """The unit-norm label embeddings: the clean targets of class labels (and the soft
        bridge's table)."""
        return self.model.label_table()

    @property
    def target_width(self) -> int:
        """Numbers per noisy target: the label embedding's width, or the target's values."""
        return self.model.hidden

    def block_features(
        self, block: int, inputs: torch.Tensor, cache: dict[int, Features] | None = None
    ) -> Features:
        """The stem's output on ``inputs`` as block ``block`` sees it; with a ``cache`` (one
        inference pass) computed once, or once per block when blocks own copies of the stem
        (``shared=block-copies`` or ``per-block``)."""
        m = self.model
        key = block if m.has_shared_variants else -1
        if cache is not None and key in cache:
            return cache[key]
        m.use_shared(block)
        features = m.features(inputs)
        if cache is not None:
            cache[key] = features
        return features

    def block_output(
        self,
        block: int,
        z: torch.Tensor,
        sigma: torch.Tensor,
        features: Features,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Block ``block``'s prediction for noisy targets z (N, D) at levels sigma (N,), given
        :meth:`block_features` of the same block: the logits of the head on D (N, K) (class
        targets), or D itself (continuous). ``previous`` (N, C): an earlier estimate of the
        label embedding, read with self-conditioning (None = zeros)."""
        m = self.model
        m.use_shared(block)
        conds: list[torch.Tensor] = []

        def network(scaled: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:  # F
            conds.append(m.condition(c_noise[:, 0], features))  # (N, C)
            out = m.run_block(block, m.target_entry(scaled), features, conds[0], previous)
            return out if self.classes else m.output(out, conds[0])

        denoised = edm_denoise(network, z, sigma[:, None], self.schedule.sigma_data)  # D
        return m.output(denoised, conds[0]) if self.classes else denoised

    # -- training -------------------------------------------------------------------------------
    def clean_targets(self, targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The clean targets y (N, D): the label embeddings of class labels, or the values."""
        return self.label_table()[targets] if self.classes else targets

    def augmented(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A training batch's inputs after augmentation (none here)."""
        return inputs

    def self_condition_share(self) -> float:
        """The share of training examples whose slot reads the block's own first estimate
        (self-conditioning; 0: off)."""
        return 0.0

    def denoise(
        self,
        block: int,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training batch through block ``block``: sigma drawn from its interval (N,), the
        clean targets y, and the block's prediction (:meth:`block_output`) for y + sigma * eps.
        Every draw comes from ``generator``, in a fixed order (sigma, the targets' hook, the
        noise, augmentation, dropout, self-conditioning), none when a feature is off."""
        sigma = self.partition.sample_sigma(block, len(targets), generator, self.device)
        clean = self.clean_targets(targets, generator)
        noise = torch.randn(clean.shape, generator=generator).to(self.device)
        z = clean + sigma[:, None] * noise  # z = y + sigma * eps
        inputs = self.augmented(inputs, generator)
        with drawn_from(generator, self.device, getattr(self.config, "dropout", 0.0) > 0):
            features = self.block_features(block, inputs)
            previous = self._self_condition(block, z, sigma, features, generator)
            return sigma, clean, self.block_output(block, z, sigma, features, previous)

    def _self_condition(
        self,
        block: int,
        z: torch.Tensor,
        sigma: torch.Tensor,
        features: Features,
        generator: torch.Generator,
    ) -> torch.Tensor | None:
        """With a self-conditioning share p > 0: the estimate each training example's slot
        reads, the block's own first estimate (its soft bridge on zeros for ``previous``, no
        gradient) for a share p of the examples and zeros for the rest (as the chain's first
        call); None when off (nothing drawn)."""
        p = self.self_condition_share()
        if p == 0:
            return None
        keep = (torch.rand(len(z), generator=generator) < p).to(self.device)
        with torch.no_grad():
            first = self.block_output(block, z, sigma, features)
            estimate = soft_bridge(first, self.label_table(), self.bridge_temperature)
        return torch.where(keep[:, None], estimate, torch.zeros_like(estimate))

    # -- inference ------------------------------------------------------------------------------
    @property
    def bridge_temperature(self) -> float:
        """The soft bridge's temperature T (softmax(logits / T) @ E; 1 as the paper)."""
        return float(getattr(self.config, "bridge_temperature", 1.0))

    def route(self, sigma: float) -> int:
        """The block that owns noise level ``sigma``."""
        return int(self.partition.block_of(sigma))

    @torch.no_grad()
    def ensemble(self, inputs: torch.Tensor) -> tuple[torch.Tensor, Calls]:
        """Every block called once at sigma_max on z = 0 (the mean of the chain's pure-noise
        start, so no draw), each an estimate of the target from the input alone (at sigma_max
        z holds next to no information about it; docs/method.md §6.1), the stem run once
        (once per block when blocks own copies of it). Returns the mean of their
        log-probabilities (N, K) (class targets) or of their estimates (N, D), and the calls
        (block, sigma, output). The cost of one forward pass, as the default chain."""
        n, s_max = len(inputs), self.schedule.sigma_max
        sigmas = torch.full((n,), s_max, device=self.device)
        z = torch.zeros(n, self.target_width, device=self.device)
        cache: dict[int, Features] = {}
        calls: Calls = []
        for b in range(self.config.num_blocks):
            features = self.block_features(b, inputs, cache)
            calls.append((b, s_max, self.block_output(b, z, sigmas, features)))
        outs = [out for _, _, out in calls]
        return (mean_log_probs(outs) if self.classes else torch.stack(outs).mean(0)), calls

    def chain_start(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The chain's pure-noise start (n, D) at sigma_max on the CPU: its only draw (an
        evaluation shared by processes takes it for the batches it leaves to the others)."""
        return self.schedule.sigma_max * torch.randn(n, self.target_width, generator=generator)

    @torch.no_grad()
    def chain(
        self,
        inputs: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        grid: str | None = None,
    ) -> tuple[torch.Tensor, Calls]:
        """The paper's sampler (Eqs. 3-5): ``steps`` denoiser calls (default
        ``inference_steps``: B, every block once, the cost of one forward pass) from pure noise
        at sigma_max (drawn from ``generator``; default: seeded with seed + 1000003), each
        through the block owning its level, on the noise ``grid`` (default: the config's).
        Class targets: the soft bridge between calls (self-conditioning: the previous call's
        bridge is the next call's estimate). Returns the last call's output (logits (N, K) or
        values (N, D)) and, per call, (block, sigma, output)."""
        c = self.config
        steps = c.steps_at_inference if steps is None else steps
        if generator is None:
            generator = torch.Generator().manual_seed(c.seed + 1_000_003)
        n = len(inputs)
        table = self.label_table() if self.classes else None
        temperature = self.bridge_temperature
        selfcond = self.self_condition_share() > 0
        cache: dict[int, Features] = {}  # the stem once (once per block with copies of it)
        calls: Calls = []

        def call(z: torch.Tensor, sigma: float, block: int) -> torch.Tensor:
            sigmas = torch.full((n,), sigma, device=z.device)
            previous = (soft_bridge(calls[-1][2], table, temperature)
                        if selfcond and calls and table is not None else None)  # fmt: skip
            out = self.block_output(
                block, z, sigmas, self.block_features(block, inputs, cache), previous
            )
            calls.append((block, sigma, out))
            return out

        bridge = None
        if table is not None:
            bridge = lambda logits: soft_bridge(logits, table, temperature)  # noqa: E731
        z = self.chain_start(n, generator)
        levels = chain_levels(steps, self.schedule, grid or c.grid)
        return chain(call, z.to(self.device), levels, self.route, bridge), calls
