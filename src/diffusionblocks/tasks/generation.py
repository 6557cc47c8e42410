"""Class-conditional image generation with a DiT: DiffusionBlocks (docs/method.md §6.2) and the
end-to-end EDM baseline.

The clean target is the image, standardised and scaled so that its standard deviation is
sigma_data. DiffusionBlocks: block b is an EDM denoiser
``D = c_skip * z + c_out * F_b(c_in * z, c_noise, class)`` trained on its (widened) noise interval
with the L2 loss weighted by w(sigma). End to end: the whole DiT is one such denoiser over the full
noise range. Labels are dropped (replaced by the "no class" token) with probability
``label_dropout`` for classifier-free guidance. Sampling: Euler from sigma_max to sigma_min; with
DiffusionBlocks each step runs only the block that owns its sigma.

Splits as for classification: ``val_fraction`` of the training images is held out for validation
(``ImageDataset.hold_out``), never trained on; ``evaluate(split="val")`` computes the held-out
denoising MSE on them and the Frechet distance against them, the test evaluation on the test
split (the Frechet distance against the whole test split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

from ..config import ConfigError, _check
from ..data.base import CARD_ONLY, DataError
from ..data.images import ImageDataset, load_image_dataset
from ..diffusion import chain, chain_levels, edm_denoise, weighted_loss
from ..networks.dit import DiT, DiTShape
from ..networks.layers import LayerGroup, evaluating, seeded
from ..networks.placement import to_device
from .base import Task
from .images import ImageTaskConfig, fit_images, split_images, validation_images


@dataclass
class GenerationConfig(ImageTaskConfig):
    """Class-conditional image generation with a DiT."""

    task: str = "generation"  # fixed

    task_groups = {
        "data": ImageTaskConfig.task_groups["data"],
        "model": (*ImageTaskConfig.task_groups["model"], "label_dropout", "ema"),
        "eval": ("cfg_scale", "fid_samples", *ImageTaskConfig.task_groups["eval"]),
    }

    weighting: str = "edm"  # L2 loss x w(sigma) (EDM); edm | batch | clamped | none
    inference_steps: int = 50  # denoiser calls per sample (Euler steps between them)
    label_dropout: float = 0.1  # probability of training with the "no class" token (for CFG)
    cfg_scale: float = 2.0  # guidance weight w: D = D_uncond + w (D_cond - D_uncond); 1 = none
    fid_samples: int = 1000  # samples for the FID at the end of training (0 = skip)
    # DiT and EDM sample from an exponential moving average (EMA) of the weights. DiffusionBlocks:
    # one average per block, moved only when its block trains, and one of the shared modules.
    ema: float = 0.0  # EMA decay of the weights sampling and evaluation use (0 = off: the trained)

    def validate(self) -> None:
        super().validate()
        _check(self, "patch_size", 1 <= self.patch_size <= 1024, "an integer >= 1")
        _check(self, "label_dropout", 0 <= self.label_dropout < 1, "a probability in [0, 1)")
        _check(self, "cfg_scale", 0 <= self.cfg_scale <= 100, "a number in [0, 100]")
        _check(self, "fid_samples", 0 <= self.fid_samples <= 1_000_000, "an integer >= 0")
        _check(self, "inference_steps", self.inference_steps >= 1, "an integer >= 1")
        _check(self, "ema", 0 <= self.ema < 1, "a decay in [0, 1); 0 = off")
        if self.ema > 0 and self.shared_policy in ("block-copies", "per-block"):
            raise ConfigError(
                f"invalid value for 'ema': {self.ema} with shared={self.shared_policy!r} (each "
                "block's own copy of the shared modules would need its own average; use "
                "shared=sync, frozen or first-block)"
            )


class _ImageGeneration(Task):
    """Data, network, the EDM denoiser, sampling and evaluation shared by both methods."""

    # The targets (pixels) do not depend on the shared modules, so block-parallel training may
    # give every block its own copy of them (shared=per-block).
    per_block_shared = True
    plot_key = "mse"
    plot_label = "denoising MSE (unweighted)"
    log_legend = {
        "loss": "the denoising objective: MSE of the denoised image, weighted over sigma",
        "mse": "unweighted MSE of the denoised image against the clean one",
    }

    generates = "images"

    config: GenerationConfig
    model: DiT

    @classmethod
    def report(cls, ev: dict[str, Any]) -> list[str]:
        lines = []
        val = ev.get("split") == "val"  # validation: the MSE and the FID reference
        if "fid_skipped" in ev:
            lines.append(f"note: no Frechet distance ({ev['fid_skipped']})")
        if "heldout_mse_per_unit" in ev:
            mse = ", ".join(f"{v:.4f}" for v in ev["heldout_mse_per_unit"])
            where = "validation" if val else "held-out"
            lines.append(f"{where} denoising MSE per block (own sigma range): {mse}")
        if "fid" in ev:
            for steps, e in ev["steps_sweep"].items():
                line = (
                    f"{'validation ' if val else ''}Frechet distance in the shipped classifier's "
                    f"feature space (not Inception FID; {e['samples']} samples, {steps} steps, "
                    f"CFG {e['cfg_scale']}): {e['fid']:.3f}"
                )
                if "fid_inception" in e:
                    line += f"; Inception FID {e['fid_inception']:.3f}"
                lines.append(line)
                lines.append(
                    f"  layer evaluations per image {e['layer_evals_per_image']}, denoiser calls "
                    f"per block {e['calls_per_unit']}; evaluator agrees with the requested class "
                    f"{e['class_agreement']:.3f}; samples per class as judged {e['class_counts']}"
                )
        return lines

    # "fid" (the saved key): a Frechet distance in the shipped Fashion-MNIST classifier's features
    headline_metric = ("fid", "Frechet distance (classifier features)")

    def __init__(self, config: GenerationConfig, device: torch.device):
        super().__init__(config, device)
        # One class is fine here: unconditional generation of a user's unlabelled images.
        full = load_image_dataset(config.data, config.data_dir, config.test_fraction,
                                  allow_sparse_labels=config.sparse_labels,
                                  allow_single_class=True)  # fmt: skip
        data = full.hold_out(config.val_fraction).subset(config.train_subset, config.test_subset)
        self.data: ImageDataset = data
        self.reference = full  # the full test split is the FID reference of the test split
        self.splits = ("val", "test") if data.val_y is not None else ("test",)
        c, h, w = self.data.image_shape
        self.pixel_mean, self.pixel_std = fit_images(config, self.data, config.patch_size)
        self.positions = (h // config.patch_size) * (w // config.patch_size)
        self.schedule = config.noise_schedule()
        with seeded(config.seed):  # initialisation, global generator untouched
            model = DiT(
                DiTShape(
                    image_channels=c,
                    image_height=h,
                    image_width=w,
                    patch_size=config.patch_size,
                    num_classes=self.data.num_classes,
                    hidden=config.hidden,
                    depth=config.model_depth,
                    heads=config.heads,
                    mlp_ratio=config.mlp_ratio,
                    num_blocks=config.num_model_blocks,
                    layers_per_block=config.block_sizes,
                    seed=config.seed,
                    averaged=config.ema > 0,
                ),
                materialize_blocks=not config.block_resident,
            )
            to_device(model, device)  # blocks without storage stay on the meta device
            self.model = model
        self.model.set_checkpointing(config.activation_checkpointing)

    # -- data: pixels in [0, 1] <-> targets with std sigma_data ------------------------------
    def to_target(self, images: torch.Tensor) -> torch.Tensor:
        scale = self.schedule.sigma_data / self.pixel_std
        return ((images - self.pixel_mean) * scale).to(self.device, non_blocking=True)

    def to_pixels(self, target: torch.Tensor) -> torch.Tensor:
        return (target * (self.pixel_std / self.schedule.sigma_data) + self.pixel_mean).clamp(0, 1)

    def train_size(self) -> int:
        return len(self.data.train_y)

    def train_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_target(self.data.train_x[indices]), self.data.train_y[indices].to(
            self.device
        )

    def heldout_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        val = validation_images(self.data, self.config.batch_size)
        return None if val is None else (self.to_target(val[0]), val[1].to(self.device))

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {
            "dataset": d.name,
            "train_examples": len(d.train_y),
            "val_examples": 0 if d.val_y is None else len(d.val_y),
            "test_examples": len(d.test_y),
            "image_shape": list(d.image_shape),
            "num_classes": d.num_classes,
            "parameters": sum(p.numel() for p in self.model.parameters() if not p.is_meta),
        }

    # -- method-specific pieces ---------------------------------------------------------------
    def sample_sigma(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def network(
        self, block: int, x: torch.Tensor, scalar: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def route(self, sigma: float) -> int:
        raise NotImplementedError

    def layers_per_call(self, block: int) -> int:
        raise NotImplementedError

    # -- the denoiser and the loss ------------------------------------------------------------
    def denoise(
        self, block: int, z: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """EDM denoiser D(z, sigma, class) of ``block`` (docs/method.md §2).
        z (N, C, H, W), sigma (N,)."""
        return edm_denoise(
            lambda scaled, c_noise: self.network(block, scaled, c_noise.flatten(), labels),
            z, sigma[:, None, None, None], self.schedule.sigma_data,
        )  # fmt: skip

    def loss(
        self, block: int, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        target, labels = batch
        n = len(labels)
        sigma = self.sample_sigma(block, n, generator)  # (N,)
        noise = torch.randn(target.shape, generator=generator).to(self.device)
        z = target + sigma[:, None, None, None] * noise
        drop = (torch.rand(n, generator=generator) < self.config.label_dropout).to(self.device)
        labels = torch.where(drop, torch.full_like(labels, self.model.null_class), labels)
        denoised = self.denoise(block, z, sigma, labels)
        l2 = (denoised - target).square().flatten(1).mean(1)  # (N,)
        c = self.config
        loss = weighted_loss(l2, sigma, c.weighting, c.sigma_data, c.weight_clamp)
        return loss, {"loss": loss.item(), "mse": l2.mean().item()}

    def after_update(self, blocks: list[int]) -> None:
        """``ema``: move the averages of the blocks just updated and of the shared modules."""
        if self.config.ema > 0:
            self.model.update_averages(blocks, self.config.ema)

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def _sample_images(
        self, labels: torch.Tensor, generator: torch.Generator, steps: int | None, cfg: float | None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.generate(labels, generator, steps, cfg)

    def generate(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        steps: int | None = None,
        cfg_scale: float | None = None,
        grid: str | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample one image per label. Returns pixels (N, C, H, W) in [0, 1] and accounting:
        denoiser calls per block and transformer-layer evaluations per image."""
        c = self.config
        steps = c.inference_steps if steps is None else steps
        w = c.cfg_scale if cfg_scale is None else cfg_scale
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if not 0 <= w <= 100:
            raise ConfigError(f"cfg scale must be in [0, 100], got {w}")
        bad = [int(v) for v in labels.tolist() if not 0 <= v < self.data.num_classes]
        if bad:
            raise ConfigError(f"unknown class {bad[0]}: classes are 0..{self.data.num_classes - 1}")
        self.model.eval()
        labels = labels.to(self.device)
        n = len(labels)
        null = torch.full_like(labels, self.model.null_class)
        calls = [0] * len(self.model.blocks)
        layer_evals = 0

        def denoise(z: torch.Tensor, sigma: float, block: int) -> torch.Tensor:
            nonlocal layer_evals
            calls[block] += 1
            s = torch.full((n,), sigma, device=self.device)
            if w == 1.0:
                layer_evals += self.layers_per_call(block)
                return self.denoise(block, z, s, labels)
            layer_evals += 2 * self.layers_per_call(block)
            both = self.denoise(
                block, torch.cat([z, z]), torch.cat([s, s]), torch.cat([labels, null])
            )
            cond, uncond = both.chunk(2)
            return uncond + w * (cond - uncond)

        shape = (n, *self.data.image_shape)
        z = self.schedule.sigma_max * torch.randn(shape, generator=generator)
        levels = chain_levels(steps, self.schedule, grid or c.grid)
        with self.model.averaged_weights():  # the EMA weights, with ``ema`` > 0
            z = chain(denoise, z.to(self.device), levels, self.route)  # the last call's D
        self.model.train()
        # "calls_per_unit" ("unit": a block's old name): saved key, kept for old results
        info = {"steps": steps, "cfg_scale": w, "calls_per_unit": calls,
                "layer_evals_per_image": layer_evals}  # fmt: skip
        return self.to_pixels(z).cpu(), info

    def generate_balanced(
        self, n: int, generator: torch.Generator, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """n samples, classes in turn (0, 1, ..., K-1, 0, ...), in batches of eval_batch_size."""
        labels = torch.arange(n) % self.data.num_classes
        images: list[torch.Tensor] = []
        info: dict[str, Any] = {}
        with self.model.averaged_weights():  # swapped in once for every batch
            for start in range(0, n, self.config.eval_batch_size):
                out, info = self.generate(labels[start : start + self.config.eval_batch_size],
                                          generator, **kwargs)  # fmt: skip
                images.append(out)
        return torch.cat(images), labels, info

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def heldout_mse(
        self, generator: torch.Generator, limit: int | None = None, split: str = "test"
    ) -> dict[str, Any]:
        """Held-out denoising MSE of every block on its own noise range (fixed draws), on the
        first ``limit`` images of ``split``."""
        x, y = split_images(self.data, split)
        if limit:
            x, y = x[:limit], y[:limit]
        out = []
        with evaluating(self.model), self.model.averaged_weights():  # the weights sampling uses
            for block in range(len(self.model.blocks)):
                total, count = 0.0, 0
                for start in range(0, len(y), self.config.eval_batch_size):
                    target = self.to_target(x[start : start + self.config.eval_batch_size])
                    labels = y[start : start + self.config.eval_batch_size].to(self.device)
                    sigma = self.sample_sigma(block, len(labels), generator)
                    noise = torch.randn(target.shape, generator=generator).to(self.device)
                    z = target + sigma[:, None, None, None] * noise
                    err = (self.denoise(block, z, sigma, labels) - target).square()
                    total += float(err.flatten(1).mean(1).sum())
                    count += len(labels)
                out.append(total / count)
        return {"heldout_mse_per_unit": out}  # saved key, kept for old results

    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        fid_samples: int | None = None,
        inception: bool = False,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Held-out denoising MSE per block and (not ``quick``) the Frechet distance of
        ``fid_samples`` samples for each step count, on ``split``: ``test`` (default; the whole
        test split is the reference) or ``val`` (the validation images are the reference).
        Quick evaluations during training read the validation split when there is one."""
        if self.from_card:
            raise DataError(CARD_ONLY)
        if options:
            raise ConfigError(f"generation evaluation has no option {', '.join(options)}")
        c = self.config
        split = split or ("val" if quick and "val" in self.splits else "test")
        gen = torch.Generator().manual_seed(c.seed + 1_000_003)
        result: dict[str, Any] = {
            "split": split,
            **self.heldout_mse(gen, c.eval_subset if quick else None, split),
        }
        n = c.fid_samples if fid_samples is None else fid_samples
        if quick or n == 0:
            return result
        from ..eval import fid

        why = fid.unsupported(self.reference.name, self.data.image_shape)
        if why:
            if fid_samples is not None:  # asked for explicitly (dblocks eval --fid N)
                raise fid.EvaluatorError(why)
            result["fid_skipped"] = why  # the end of training never fails on it
            return result
        evaluator = fid.EvaluatorFeatures(self.device)
        ref = split_images(self.reference if split == "test" else self.data, split)[0]
        ref_stats = fid.feature_stats(fid.extract(evaluator, ref))
        for s in sorted({c.inference_steps, *(steps or [])}):
            samples, labels, info = self.generate_balanced(
                n, torch.Generator().manual_seed(c.seed + 7), steps=s
            )
            score = fid.frechet_distance(
                *fid.feature_stats(fid.extract(evaluator, samples)), *ref_stats
            )
            predicted = torch.cat([evaluator.predict(samples[i : i + 1000])
                                   for i in range(0, n, 1000)])  # fmt: skip
            counts = torch.bincount(predicted, minlength=self.data.num_classes).tolist()
            entry = {
                "fid": score,
                "samples": n,
                "class_counts": counts,
                "class_agreement": float((predicted == labels).float().mean()),
                **info,
            }
            if inception:
                entry["fid_inception"] = fid.fid_against(fid.InceptionFeatures(self.device),
                                                         samples, ref)  # fmt: skip
            if s == c.inference_steps:
                result.update(entry)
            result.setdefault("steps_sweep", {})[str(s)] = entry
        return result

    def trivial_baseline(self, split: str = "test") -> dict[str, float]:
        """The FID (``fid``) of ``fid_samples`` (0: 1000) images of uniform noise, seed 0, against
        the split's reference (test: the full test split; val: the validation images) in the
        evaluator's feature space: what a generator that learned nothing scores
        (:func:`~diffusionblocks.eval.fid.noise_fid`)."""
        from ..eval import fid

        if self.from_card:
            raise DataError(CARD_ONLY)
        why = fid.unsupported(self.reference.name, self.data.image_shape)
        if why:
            raise fid.EvaluatorError(why)
        ref = split_images(self.reference if split == "test" else self.data, split)[0]
        n = self.config.fid_samples or 1000
        return {"fid": fid.noise_fid(fid.EvaluatorFeatures(self.device), ref, n)}


class EndToEndGeneration(_ImageGeneration):
    """The baseline: the whole DiT is one EDM denoiser over the full noise range."""

    def sample_sigma(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.schedule.sample(n, generator, device=self.device)

    def network(
        self, block: int, x: torch.Tensor, scalar: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return self.model.run_all(x, scalar, labels)

    def route(self, sigma: float) -> int:
        return 0

    def layers_per_call(self, block: int) -> int:
        return self.config.model_depth


class BlockwiseGeneration(_ImageGeneration):
    """DiffusionBlocks: block b denoises over its own sigma interval; sampling runs one block per
    step, the one that owns the step's sigma."""

    def __init__(self, config: GenerationConfig, device: torch.device):
        super().__init__(config, device)
        self.partition = config.block_partition()

    def sample_sigma(self, block: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.partition.sample_sigma(block, n, generator, self.device)

    def network(
        self, block: int, x: torch.Tensor, scalar: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return self.model.run_block(block, x, scalar, labels)

    def route(self, sigma: float) -> int:
        return int(self.partition.block_of(sigma))

    def layers_per_call(self, block: int) -> int:
        return len(cast(LayerGroup, self.model.blocks[block]))


# Presets of this task: name -> (config overrides, one-line description); the registry gathers
# every task's presets (`dblocks presets`).
# fmt: off
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    # Sized on 2026-11-29 on the validation split (docs/results/generation/sizing/): end to end,
    # its samples agree with the requested class 0.82 of the time (patch 7: 0.64), in about
    # 15 CPU minutes of training; the Karras grid beat the CDF grid, an EMA (0.999) lost.
    "dit-fmnist": (
        dict(data="fashion-mnist", depth=6, hidden=64, heads=4, patch_size=4, num_blocks=3,
             epochs=8, batch_size=128, lr=1e-3, overlap=0.05, inference_steps=32, grid="karras",
             cfg_scale=2.0, fid_samples=1000, log_every=50),
        "class-conditional DiT on Fashion-MNIST sized for a CPU: 6 layers (hidden 64, patch 4), "
        "B=3, 8 epochs per block, 32 calls on the Karras grid, CFG 2",
    ),
    "dit-tiny": (
        dict(data="fashion-mnist", train_subset=512, test_subset=200, depth=2, hidden=32, heads=2,
             patch_size=7, num_blocks=2, epochs=1, batch_size=64, lr=1e-3, inference_steps=6,
             fid_samples=100, eval_batch_size=100, log_every=4),
        "smoke test (seconds on a CPU; its samples mean nothing): 512 Fashion-MNIST images, "
        "2-layer DiT, B=2",
    ),
}
# fmt: on
