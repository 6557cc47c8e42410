"""Image classification with a ViT: DiffusionBlocks (docs/method.md §6.1) and the end-to-end
baseline.

DiffusionBlocks: the clean target is the L2-normalised embedding of the label. Block b sees the
image patches and the noisy label ``c_in * z`` in the slot token, conditioned on c_noise by adaLN;
its slot output F gives ``D = c_skip * z + c_out * F``, and the shared adaLN head turns D into
logits. Loss: cross-entropy, weighted over sigma (``weighting``); with ``label_swap`` > 0 some
noisy labels are built around another class (the loss keeps the true one). Inference
(``readout``): "chain" (the paper) makes B calls from sigma_max down to sigma_min, each through
the block that owns sigma, with the soft bridge ``D = softmax(logits) @ normalize(E)`` between
them, and the last call's logits are the prediction; "ensemble" (the default) calls every block
once at sigma_max and averages their log-probabilities (why: docs/method.md §6.1).

End to end: the same ViT (all layers in one block, the slot token left empty, the conditioning
embedder fed c_noise = 0) trained with plain cross-entropy.

The diffusion itself (one block's denoiser, the training draw, the chain and the ensemble) is
:mod:`diffusionblocks.tasks.slot`, the same code that trains a user's residual stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import ConfigError, _check
from ..data.images import ImageDataset, load_image_dataset
from ..diffusion import weighted_loss
from ..eval.classification import block_diagnostics
from ..networks.layers import drawn_from, evaluating, seeded
from ..networks.placement import to_device
from ..networks.vit import ViT, ViTShape
from .base import Task, refuse_options
from .images import (
    ImageTaskConfig,
    augment_images,
    auto_patch_size,
    fit_images,
    majority_baseline,
    split_batches,
    validation_images,
)
from .slot import SlotDenoiser, SlotEndToEnd

READOUTS = ("chain", "ensemble")
FINAL_EVALS = ("full", "readout")


@dataclass
class ClassificationConfig(ImageTaskConfig):
    """Image classification with a ViT."""

    task: str = "classification"  # fixed

    task_groups = {
        "data": ImageTaskConfig.task_groups["data"],  # val_fraction: ImageTaskConfig
        "model": (*ImageTaskConfig.task_groups["model"], "dropout"),
        "eval": (
            *ImageTaskConfig.task_groups["eval"],
            "bridge_temperature",
            "readout",
            "final_eval",
        ),
        "noise": ("label_swap",),
        "training": ("augment_shift", "augment_flip", "self_condition"),
    }

    hidden: int = 128  # token width (= label embedding size)
    patch_size: int = 4  # square patch side in pixels (0 = auto: 4 to 8 patches along each side)
    bridge_temperature: float = 1.0  # soft bridge softmax(logits / T) @ E at inference (1 = paper)
    # Training only: the probability that an example's noisy label is built around another class
    # (drawn uniformly) while the loss still targets its own, so that a block cannot trust z
    # blindly and learns to read the image at every sigma (docs/method.md §6.1). 0 = the paper,
    # kept as the default: 0.1 gained on every seed but within the protocol's spread
    # (docs/results/classification/chain-research/).
    label_swap: float = 0.0
    # How DiffusionBlocks turns its blocks into a prediction (both cost one forward pass): "chain"
    # (the paper: Euler steps from sigma_max, the last call's logits) or "ensemble" (every block
    # called once at sigma_max on z = 0, the mean of their log-probabilities; docs/method.md §6.1),
    # the default: better on every seed of both validation sets measured
    readout: str = "ensemble"
    # What the evaluation at the end of training and `dblocks eval` compute on each split: "full"
    # (both readouts, the chain at 1, 2, 4 and 8 calls and each block's diagnostics: DiffusionBlocks
    # about ten forward passes per image) or "readout" (the run's readout only: one forward pass)
    final_eval: str = "full"
    # Regularisation (the authors' recipe has dropout 0.1 and augmentation; off by default: neither
    # gained on val, docs/results/classification/chain-research/regularisation/):
    dropout: float = 0.0  # dropout on every layer's attention and MLP outputs while training
    augment_shift: int = 0  # training images shifted by up to N pixels each way (edges: 0 pixels)
    augment_flip: bool = False  # training images mirrored left-right with probability 1/2
    # DiffusionBlocks: the share of training examples whose slot also reads the block's own first
    # estimate of the label embedding (the soft bridge of a first pass, no gradient through it);
    # the others read zeros, as the chain's first call. At inference each call reads the previous
    # call's estimate (self-conditioning; 0 = off, the paper; measured in
    # docs/results/classification/chain-research/self-condition/).
    self_condition: float = 0.0
    # Runs saved before the key existed predicted with the chain.
    saved_defaults = {**ImageTaskConfig.saved_defaults, "readout": "chain"}

    def validate(self) -> None:
        super().validate()
        _check(self, "shared", self.shared != "per-block",
               "sync or frozen for this task: the label embeddings are the targets, so all blocks "
               "must share them")  # fmt: skip
        _check(self, "patch_size", 0 <= self.patch_size <= 1024, "an integer >= 1 (0 = auto)")
        _check(self, "bridge_temperature", 0 <= self.bridge_temperature <= 100, "in [0, 100]")
        _check(self, "label_swap", 0 <= self.label_swap < 1, "a probability in [0, 1)")
        _check(self, "readout", self.readout in READOUTS, " or ".join(READOUTS))
        _check(self, "final_eval", self.final_eval in FINAL_EVALS, " or ".join(FINAL_EVALS))
        _check(self, "dropout", 0 <= self.dropout < 1, "a probability in [0, 1)")
        _check(self, "augment_shift", 0 <= self.augment_shift <= 64, "pixels in [0, 64]")
        for key in ("augment_shift", "augment_flip"):
            _check(self, key, not getattr(self, key) or self.data != "mnist1d",
                   "off for mnist1d (its images lay a 1-D signal out row by row: a shift or a "
                   "mirror of that layout is not the same signal moved)")  # fmt: skip
        _check(self, "self_condition", 0 <= self.self_condition < 1,
               "a probability in [0, 1) (at 1 no training example reads zeros, as every first "
               "call does at inference)")  # fmt: skip
        _check(self, "self_condition",
               self.self_condition == 0 or self.shared_policy not in ("frozen", "first-block"),
               f"0 with shared={self.shared_policy} (its projection is a shared module, which "
               "that policy freezes for all or all but the first block)")  # fmt: skip
        _check(self, "self_condition", self.self_condition == 0 or not self.end_to_end,
               "0 for end-to-end training (a block reads an earlier block's estimate)")  # fmt: skip


class _ImageClassification(Task):
    """Data, network and evaluation loop shared by both methods."""

    config: ClassificationConfig
    model: ViT
    splits: tuple[str, ...] = ("val", "test")
    default_sweep = (1, 2, 4, 8)  # block calls the final evaluation reports
    predicts = "classes"

    @classmethod
    def report(cls, ev: dict[str, Any]) -> list[str]:
        if "accuracy" not in ev or not cls.claims(ev):
            return []
        split = ev.get("split", "test")
        lines = [f"{split} accuracy{' ' * (9 - len(split))}{ev['accuracy']:.4f}  "
                 f"({ev['examples']} {split} examples)"]  # fmt: skip
        if "readouts" in ev:  # final_eval=readout leaves the other readout out (None)
            shown = {k: "-" if v is None else f"{v:.4f}" for k, v in ev["readouts"].items()}
            lines.append(f"  readout {ev['readout']}; chain {shown['chain']}, "
                         f"ensemble {shown['ensemble']}")  # fmt: skip
        for steps, value in ev.get("steps_sweep", {}).items():
            lines.append(f"  {steps:>3} block calls (chain): {value:.4f}")
        for row in ev.get("per_block", []):
            chain = row["chain_accuracy"]
            chain_s = "  -   " if chain is None else f"{chain:.4f}"
            lines.append(
                f"  block {row['block']} sigma [{row['sigma_interval'][0]:.4g}, "
                f"{row['sigma_interval'][1]:.4g}]: chain acc {chain_s}  own-interval CE "
                f"{row['denoise_ce']:.4f}  CE@sigma_max {row['ce_at_sigma_max']:.4f}"
            )
        return lines

    headline_metric, headline_higher_is_better = ("accuracy", "test acc"), True

    def __init__(self, config: ClassificationConfig, device: torch.device):
        super().__init__(config, device)
        full = load_image_dataset(config.data, config.data_dir, config.test_fraction,
                                  allow_sparse_labels=config.sparse_labels)  # fmt: skip
        data = full.hold_out(config.val_fraction).subset(config.train_subset, config.test_subset)
        self.data: ImageDataset = data
        self.splits = ("val", "test") if data.val_y is not None else ("test",)
        c, h, w = data.image_shape
        self.patch_size = config.patch_size or auto_patch_size(h, w)
        grid = (h // self.patch_size, w // self.patch_size)
        self.positions = grid[0] * grid[1]
        if not config.patch_size and max(grid) > 8:
            raise ConfigError(
                f"invalid value for 'patch_size': 0 (auto) finds no patch side giving 4 to 8 "
                f"patches along each side of the {h}x{w} images of {data.name} (the closest, "
                f"{self.patch_size}, gives {grid[0]}x{grid[1]} = {grid[0] * grid[1]} tokens); "
                "set patch_size to a side that divides both, or resize the images"
            )
        # Pixels are standardised with the training set's mean and std.
        self.pixel_mean, self.pixel_std = fit_images(config, data, self.patch_size,
                                                     "; 0 chooses one")  # fmt: skip
        with seeded(config.seed):  # initialisation, global generator untouched
            model = ViT(
                ViTShape(
                    image_channels=c,
                    image_height=h,
                    image_width=w,
                    patch_size=self.patch_size,
                    num_classes=data.num_classes,
                    hidden=config.hidden,
                    depth=config.model_depth,
                    heads=config.heads,
                    mlp_ratio=config.mlp_ratio,
                    num_blocks=config.num_model_blocks,
                    layers_per_block=config.block_sizes,
                    seed=config.seed,
                    dropout=config.dropout,
                    self_condition=config.self_condition > 0,
                ),
                materialize_blocks=not config.block_resident,
            )
            to_device(model, device)  # blocks without storage stay on the meta device
            self.model = model
        self.model.set_checkpointing(config.activation_checkpointing)

    # -- data -------------------------------------------------------------------------------
    def train_size(self) -> int:
        return len(self.data.train_y)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return ((images - self.pixel_mean) / self.pixel_std).to(self.device, non_blocking=True)

    def train_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._prepare(self.data.train_x[indices]), self.data.train_y[indices].to(self.device)

    def _augmented(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A training batch after ``augment_shift`` and ``augment_flip`` (as given when both are
        off, or when the model is in eval mode; uncovered pixels take the value of a 0 pixel)."""
        c = self.config
        if (not c.augment_shift and not c.augment_flip) or not self.model.training:
            return images  # held-out losses (model in eval mode) read the images as they are
        background = -self.pixel_mean / self.pixel_std
        return augment_images(images, c.augment_shift, c.augment_flip, background, generator)

    def _eval_batches(
        self,
        split: str,
        limit: int | None = None,
        shard: tuple[int, int] = (0, 1),
        skipped: Callable[[int], object] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of the ``val`` or ``test`` split (the first ``limit``); with
        ``shard`` (index, count) only batches i with i mod count = index, the size of each other
        batch going to ``skipped`` (to take its random draws)."""
        index, count = shard
        for i, (x, y) in enumerate(split_batches(self.data, split, self.config.eval_batch_size,
                                                 limit)):  # fmt: skip
            if i % count == index:
                yield self._prepare(x), y.to(self.device)
            elif skipped is not None:
                skipped(len(y))

    def target_prefixes(self) -> tuple[str, ...]:
        return ("label_embed.",)

    plot_key = "ce"
    plot_label = "cross-entropy (unweighted)"

    def trivial_baseline(self, split: str = "test") -> dict[str, float]:
        return majority_baseline(self.data, split)

    def heldout_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        val = validation_images(self.data, self.config.batch_size)
        return None if val is None else (self._prepare(val[0]), val[1].to(self.device))

    def default_split(self, quick: bool) -> str:
        """Quick evaluations during training read the validation split when there is one."""
        return "val" if quick and self.data.val_y is not None else "test"

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {
            "dataset": d.name,
            "train_examples": len(d.train_y),
            "val_examples": 0 if d.val_y is None else len(d.val_y),
            "test_examples": len(d.test_y),
            "image_shape": list(d.image_shape),
            "patch_size": self.patch_size,
            "num_classes": d.num_classes,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


class EndToEndClassification(_ImageClassification, SlotEndToEnd):
    """The baseline: all layers in one block, plain cross-entropy."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of the whole network on an empty slot."""
        return self.end_to_end(images)

    def loss(
        self, block: int, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        images = self._augmented(images, generator)
        with drawn_from(generator, self.device, self.config.dropout > 0):
            logits = self.logits(images)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.item(), "ce": loss.item(), "acc": acc.item()}

    log_legend = {
        "loss": "cross-entropy of the batch (the training objective)",
        "ce": "cross-entropy of the batch",
        "acc": "accuracy on the training batch",
    }

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        refuse_options("classification", options,
                       " (--fid and --inception apply to image generation runs)")  # fmt: skip
        split = split or self.default_split(quick)
        with evaluating(self.model):
            correct = total = 0
            ce = 0.0
            limit = self.config.eval_subset if quick else None
            for images, labels in self._eval_batches(split, limit):
                logits = self.logits(images)
                correct += int((logits.argmax(-1) == labels).sum())
                ce += float(F.cross_entropy(logits, labels, reduction="sum"))
                total += len(labels)
        return {
            "split": split,
            "accuracy": correct / total,
            "ce": ce / total,
            "examples": total,
            "layer_evals_per_image": self.config.model_depth,
        }


class BlockwiseClassification(_ImageClassification, SlotDenoiser):
    """DiffusionBlocks: every block a denoiser of the label embedding over its sigma interval
    (the one path of :class:`~diffusionblocks.tasks.slot.SlotDenoiser`)."""

    def __init__(self, config: ClassificationConfig, device: torch.device):
        super().__init__(config, device)
        self.partition = config.block_partition()
        self.schedule = self.partition.schedule

    def loss(
        self, block: int, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        sigma, _, logits = self.denoise(block, images, labels, generator)
        c = self.config
        ce = F.cross_entropy(logits, labels, reduction="none")  # (N,)
        loss = weighted_loss(ce, sigma, c.weighting, c.sigma_data, c.weight_clamp)
        hint_acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.item(), "ce": ce.mean().item(),
                      "noisy_label_acc": hint_acc.item()}  # fmt: skip

    def augmented(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._augmented(inputs, generator)

    def self_condition_share(self) -> float:
        return self.config.self_condition

    def clean_targets(self, targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The label embeddings of :meth:`_centres` (the labels, unless label_swap > 0)."""
        return self.label_table()[self._centres(targets, generator)]

    def _centres(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The classes the noisy labels are built around: the true ones, each swapped with
        probability ``label_swap`` for a uniformly drawn other class (no draws when 0, so runs
        without it keep their random streams)."""
        p = self.config.label_swap
        if p == 0:
            return labels
        n, k = len(labels), self.model.shape.num_classes
        swap = (torch.rand(n, generator=generator) < p).to(labels.device)
        shift = torch.randint(1, k, (n,), generator=generator).to(labels.device)
        return torch.where(swap, (labels + shift) % k, labels)

    log_legend = {
        "loss": "the block's training objective: cross-entropy weighted over sigma (weighting)",
        "ce": "cross-entropy of the block's logits given the image and a noisy label embedding "
        "at a sigma of its interval (unweighted; with label_swap > 0 some noisy labels are built "
        "around another class, on the held-out batch too: the same objective as training)",
        "noisy_label_acc": "accuracy of those logits: NOT a classification accuracy, the noisy "
        "label gives the class away at small sigma; the held-out accuracy of the model's "
        "prediction (its readout: the ensemble by default, or the chain) is "
        "val_accuracy / test_accuracy",
    }

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        grid: str | None = None,
        readout: str | None = None,
    ) -> tuple[torch.Tensor, list[tuple[int, float, torch.Tensor]]]:
        """Classify normalised images by ``readout`` (default: the config's): "chain"
        (:meth:`~diffusionblocks.tasks.slot.SlotDenoiser.chain`: ``steps`` block calls from
        pure noise, the soft bridge between calls) or "ensemble" (every block at sigma_max on
        z = 0; ``steps``, ``generator`` and ``grid`` unused). Returns the prediction's logits
        (N, classes) and, per call, (block, sigma, logits)."""
        if (readout or self.config.readout) == "ensemble":
            return self.ensemble(images)
        return self.chain(images, steps, generator, grid)

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        refuse_options("classification", options,
                       " (--fid and --inception apply to image generation runs)")  # fmt: skip
        split = split or self.default_split(quick)
        tally = self.evaluation_tally(split, quick=quick, steps=steps)
        diagnostics = None
        if not self.shards_evaluation(self.config, quick):  # each block alone, its own generator
            gen = torch.Generator().manual_seed(self.config.seed + 1_000_003)
            with evaluating(self.model):
                diagnostics = block_diagnostics(
                    self, self._eval_batches(split), self.config.num_blocks, gen
                )
        return self._evaluation(split, [tally], quick, steps, diagnostics)

    def _sweep(self, quick: bool, steps: list[int] | None) -> list[int]:
        """The chain's step counts an evaluation scores: quick (the periodic evaluation while
        training) and final_eval=readout score only the readout the run predicts with (and a
        sweep asked for by ``steps``); the full evaluation also the default sweep."""
        c = self.config
        default = c.steps_at_inference
        if quick:
            return [default] if c.readout == "chain" else []
        if self.shards_evaluation(self.config, quick):
            return sorted({*([default] if c.readout == "chain" else []), *(steps or [])})
        return sorted({default, *(steps or [])})

    @classmethod
    def shards_evaluation(cls, config: Any, quick: bool = False) -> bool:
        """The light evaluations (quick, and final_eval=readout) are counts over the examples;
        the full one adds per-block diagnostics, which are not split."""
        return quick or config.final_eval == "readout"

    @torch.no_grad()
    def evaluation_tally(
        self,
        split: str,
        shard: tuple[int, int] = (0, 1),
        quick: bool = False,
        steps: list[int] | None = None,
    ) -> dict[str, Any]:
        c = self.config
        default = c.steps_at_inference
        sweep = self._sweep(quick, steps)
        light = self.shards_evaluation(self.config, quick)
        # One generator per step count, so that a step count's accuracy does not depend on which
        # other step counts are swept with it.
        gens = {s: torch.Generator().manual_seed(c.seed + 1_000_003 + 7919 * s) for s in sweep}
        correct = {str(s): 0 for s in sweep}
        ensemble = 0  # the other readout, scored beside the chain (no draws: fixed z = 0)
        after_block = [0] * c.num_blocks  # chain stopped after block b (default steps)
        called: set[int] = set()
        total = 0

        def skipped(n: int) -> None:  # another shard's batch: only its draws
            for s in sweep:
                self.chain_start(n, gens[s])

        limit = c.eval_subset if quick else None
        with evaluating(self.model):
            for images, labels in self._eval_batches(split, limit, shard, skipped):
                total += len(labels)
                if not light or c.readout == "ensemble":
                    ensemble += int((self.ensemble(images)[0].argmax(-1) == labels).sum())
                for s in sweep:
                    final, calls = self.predict(images, s, gens[s], readout="chain")
                    correct[str(s)] += int((final.argmax(-1) == labels).sum())
                    if s == default:
                        last = {block: logits for block, _, logits in calls}
                        called.update(last)
                        for block, logits in last.items():
                            after_block[block] += int((logits.argmax(-1) == labels).sum())
        return {"examples": total, "correct": correct, "ensemble": ensemble,
                "after_block": after_block, "called": sorted(called)}  # fmt: skip

    def merged_evaluation(
        self,
        split: str,
        tallies: list[dict[str, Any]],
        quick: bool = False,
        steps: list[int] | None = None,
    ) -> dict[str, Any]:
        return self._evaluation(split, tallies, quick, steps, None)

    def _evaluation(
        self,
        split: str,
        tallies: list[dict[str, Any]],
        quick: bool,
        steps: list[int] | None,
        diagnostics: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """The evaluation's result from the tallies of its shards (one: a single process)."""
        c = self.config
        B, default = c.num_blocks, c.steps_at_inference
        sweep = self._sweep(quick, steps)
        light = self.shards_evaluation(self.config, quick)
        total = sum(t["examples"] for t in tallies)
        correct = {s: sum(t["correct"][str(s)] for t in tallies) for s in sweep}
        after_block = [sum(t["after_block"][b] for t in tallies) for b in range(B)]
        called = {b for t in tallies for b in t["called"]}
        chain_acc = correct[default] / total if default in correct else None
        scored = not light or c.readout == "ensemble"
        ensemble_acc = sum(t["ensemble"] for t in tallies) / total if scored else None
        result: dict[str, Any] = {
            "split": split,
            "accuracy": ensemble_acc if c.readout == "ensemble" else chain_acc,
            "readout": c.readout,
            "steps": default,
            "examples": total,
            "layer_evals_per_image": c.depth if c.readout == "ensemble" else default * c.depth // B,
        }
        if not quick:  # final_eval=readout: the readout not computed is None, no diagnostics
            result["final_eval"] = c.final_eval
            result["readouts"] = {"chain": chain_acc, "ensemble": ensemble_acc}
            result["steps_sweep"] = {str(s): correct[s] / total for s in sweep}
        if diagnostics is not None:
            result["per_block"] = [
                {
                    "block": b,
                    "sigma_interval": list(self.partition.interval(b)),
                    "chain_accuracy": after_block[b] / total if b in called else None,
                    **diagnostics[b],
                }
                for b in range(B)
            ]
        return result


# Presets of this task: name -> (config overrides, one-line description); the registry gathers
# every task's presets (`dblocks presets`).
# fmt: off
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "tiny": (
        dict(data="digits", depth=4, hidden=32, heads=2, patch_size=2, num_blocks=2, epochs=1,
             batch_size=64, lr=2e-3, log_every=5, eval_subset=200, eval_batch_size=200),
        "smoke test (seconds on a CPU; its accuracy means nothing): 8x8 digits, 4-layer ViT "
        "(hidden 32), B=2",
    ),
    "images": (
        dict(data="",  # the user's .npz: --set data=PATH
             patch_size=0,  # auto: 4 to 8 patches along each side
             depth=6, hidden=64, heads=4, num_blocks=3, epochs=20, batch_size=64, lr=2e-3,
             p_mean=1.0, weighting="none", log_every=20),
        "start here for your own images (--set data=PATH.npz): 6-layer ViT (hidden 64), patch "
        "sized to the image, B=3, 20 epochs per block; noise setting and epochs chosen on "
        "validation splits (docs/results/user-images/)",
    ),
    "vit-fmnist": (
        dict(data="fashion-mnist", depth=6, hidden=64, heads=4, patch_size=7, num_blocks=3,
             epochs=5, batch_size=128, lr=2e-3, p_mean=1.0, weighting="none", log_every=50),
        "paper-like: Fashion-MNIST (60k), 6-layer ViT (hidden 64, patch 7), B=3, 5 epochs per "
        "block; P_mean=1 and no loss weighting (checked on val: "
        "docs/results/classification/noise-on-val/)",
    ),
    "vit-fmnist-quick": (
        dict(data="fashion-mnist", depth=6, hidden=64, heads=4, patch_size=7, num_blocks=3,
             epochs=3, batch_size=128, lr=2e-3, p_mean=1.0, weighting="none",
             train_subset=20000, log_every=20),
        "a few CPU minutes per method: as vit-fmnist on 20k training images, 3 epochs",
    ),
    "vit-mnist1d": (
        dict(data="mnist1d", depth=6, hidden=64, heads=4, patch_size=1, num_blocks=3, epochs=8,
             batch_size=128, lr=2e-3, p_mean=1.0, weighting="none", log_every=50),
        "images where depth shows, a few CPU minutes per method: MNIST-1D (50k signals generated "
        "offline, 20 tokens of 2 points), 6-layer ViT (hidden 64), B=3, 8 epochs per block; at "
        "equal epochs full depth beats depth L/B = 2 by 5.2 points on val (1.7 when both train "
        "24 epochs; 3 seeds, docs/results/classification/depth-check/)",
    ),
    "bench": (
        dict(data="fashion-mnist", depth=12, hidden=128, heads=4, patch_size=4, num_blocks=3,
             epochs=1, batch_size=128, lr=1e-3, train_subset=2048, test_subset=512,
             log_every=10),
        "memory/speed benchmark: 12-layer ViT (hidden 128, patch 4, 50 tokens), batch 128",
    ),
}
# fmt: on
