"""Your own residual network trained with DiffusionBlocks (``docs/your-model.md``): the ``stack``
task. The config's ``model`` names a function (``FILE.py:NAME`` or ``package.module:NAME``) that
returns a :class:`~diffusionblocks.networks.stack.ResidualStack`; the data is an ``.npz`` of
inputs ``x`` and targets ``y`` (:mod:`diffusionblocks.data.arrays`).

DiffusionBlocks (docs/method.md §2; the one path of :mod:`diffusionblocks.tasks.slot`, shared with
the built-in image classification): block b is the denoiser ``D = c_skip * z + c_out * F(c_in *
z, c_noise)`` of the target over its noise interval, given the input. Class targets: the
clean target is the unit-norm label embedding, F is the block's output at the slot, and the
user's head turns D into logits; loss: cross-entropy weighted over sigma (as the paper's
classification). Continuous targets (standardised, scaled to sigma_data): F is the head's output
and the loss the weighted L2 of D (as the paper's image generation). Inference (``readout``):
"ensemble" (every block once at sigma_max on z = 0, their estimates averaged: log-probabilities,
or values) or "chain" (the paper's Euler sampler, Eqs. 3-5, from sigma_max to sigma_min through
the blocks that own each level; classes: the soft bridge between calls). End to end: the same
network, all layers one block, fed z = 0 and c_noise = 0, trained with plain cross-entropy or MSE.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from ..config import ConfigError, RunConfig, _check, _choice
from ..data.arrays import TARGETS, ArrayDataset, load_arrays
from ..diffusion import weighted_loss
from ..networks.layers import evaluating, seeded
from ..networks.placement import to_device
from ..networks.stack import ResidualStack, StackNetwork, StackShape, load_function
from .base import Task, refuse_options
from .images import majority_baseline, split_batches, split_images, validation_images
from .slot import SlotDenoiser, SlotEndToEnd

READOUTS = ("auto", "ensemble", "chain")


@dataclass
class StackConfig(RunConfig):
    """A user's residual network (``model``) on a user's ``.npz`` (``data``)."""

    task: str = "stack"  # fixed
    # Keys without a usable default, each with an example value (the refusal of a missing one
    # names it; tests fill them in to check the other keys alone)
    required: ClassVar[dict[str, str]] = {"data": "xy.npz", "model": "my_net.py:build"}
    task_groups = {
        "data": ("data", "train_subset", "test_subset", "test_fraction", "val_fraction"),
        "model": ("model", "target"),
        "eval": ("readout", "eval_batch_size", "eval_subset"),
    }

    data: str = ""  # an .npz with x (inputs) and y (targets), optional x_test, y_test
    # The function that builds the network: FILE.py:NAME or package.module:NAME, returning a
    # diffusionblocks.ResidualStack (docs/your-model.md)
    model: str = ""
    target: str = "classes"  # classes (integer labels y) | continuous (numbers y)
    # How DiffusionBlocks predicts: ensemble (every block at sigma_max, estimates averaged) or
    # chain (the paper's Euler sampler); auto: ensemble for classes (as the built-in
    # classification chose on validation sets), chain for continuous targets (blocks never
    # trained at sigma_max pull the average away; docs/your-model.md). The final evaluation
    # reports both.
    readout: str = "auto"
    train_subset: int = 0  # use only the first N training examples (0 = all)
    test_subset: int = 0  # use only the first N test examples (0 = all)
    test_fraction: float = 0.1  # held-out fraction for an .npz without x_test/y_test
    val_fraction: float = 0.1  # last fraction of the training examples held out for validation
    eval_batch_size: int = 500  # examples per evaluation batch
    eval_subset: int = 1000  # validation examples of quick evaluations during training

    def validate(self) -> None:
        if not self.data:
            raise ConfigError(
                "missing value for 'data': pass --set data=PATH, an .npz with x (inputs) and y "
                "(targets) (docs/your-model.md)"
            )
        super().validate()
        if not self.model:
            raise ConfigError(
                "missing value for 'model': name the function that builds your network, "
                "--set model=FILE.py:NAME (docs/your-model.md)"
            )
        _check(self, "model", ":" in self.model, "FILE.py:NAME or package.module:NAME")
        _choice(self, "target", TARGETS)
        _choice(self, "readout", READOUTS)
        _check(self, "shared", self.shared != "per-block" or self.target == "continuous",
               "sync or frozen with target=classes: the label embeddings are the targets, so all "
               "blocks must share them")  # fmt: skip
        _check(self, "train_subset", self.train_subset >= 0, "an integer >= 0 (0 = all)")
        _check(self, "test_subset", self.test_subset >= 0, "an integer >= 0 (0 = all)")
        _check(self, "test_fraction", 0 < self.test_fraction < 1, "a fraction in (0, 1)")
        _check(self, "val_fraction", 0 <= self.val_fraction < 1, "a fraction in [0, 1)")
        _check(self, "eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1")
        _check(self, "eval_subset", self.eval_subset >= 1, "an integer >= 1")


def load_stack(reference: str) -> ResidualStack:
    """Call the function ``reference`` names (``FILE.py:NAME`` or ``package.module:NAME``) and
    return its :class:`ResidualStack`; every failure is one sentence naming ``model``."""
    stack = load_function(reference, "model")()
    if not isinstance(stack, ResidualStack):
        raise ConfigError(
            f"invalid value for 'model': {reference} returned a {type(stack).__name__}, not a "
            "diffusionblocks.ResidualStack"
        )
    return stack


class _StackTask(Task):
    """Data, network and evaluation loop shared by both methods."""

    config: StackConfig
    model: StackNetwork
    splits: tuple[str, ...] = ("val", "test")
    predicts = "targets"  # Model.predict: class indices or values, from inputs of any shape
    evaluation_tag = "stack"  # its evaluations say "task": "stack"

    def __init__(self, config: StackConfig, device: torch.device):
        super().__init__(config, device)
        full = load_arrays(config.data, config.target, config.test_fraction)
        held = full.hold_out(config.val_fraction).subset(config.train_subset, config.test_subset)
        self.data = data = cast(ArrayDataset, held)  # the split keeps the dataset's class
        self.splits = ("val", "test") if data.val_y is not None else ("test",)
        if config.batch_size > len(data.train_y) and not data.card:
            raise ConfigError(f"invalid value for 'batch_size': {config.batch_size} (larger than "
                              f"the {len(data.train_y)} training examples)")  # fmt: skip
        self.classes = config.target == "classes"
        self.per_block_shared = not self.classes  # class targets: every block shares the table
        # Inputs standardised with the training set's mean and std; continuous targets per value,
        # then scaled to std sigma_data (the preconditioning's assumption).
        # (a data card's stand-in: the statistics it recorded)
        if data.pixel_stats is not None:
            self.x_mean, self.x_std = data.pixel_stats
        else:
            self.x_mean, self.x_std = float(data.train_x.mean()), float(data.train_x.std()) or 1.0
        self.y_mean: torch.Tensor | None = None
        self.y_std: torch.Tensor | None = None
        if not self.classes and data.target_stats is not None:
            self.y_mean, self.y_std = (torch.tensor(v) for v in data.target_stats)
        elif not self.classes:
            flat = data.train_y.reshape(len(data.train_y), -1).float()
            self.y_mean, self.y_std = flat.mean(0), flat.std(0).clamp_min(1e-8)
        with seeded(config.seed):  # the user's stem and head, then every block from its seed
            stack = load_stack(config.model)
            if stack.target != config.target:
                hint = (" (a language model: train it with a masked-diffusion or autoregressive "
                        "preset, e.g. mdm-text or ar-text)" if stack.target == "tokens"
                        else "")  # fmt: skip
                raise ConfigError(
                    f"invalid value for 'target': {config.target!r} (your stack {config.model} "
                    f"says target={stack.target!r}; set the same target{hint})"
                )
            depth = int(stack.depth or 0)
            if config.shallow:
                depth //= config.num_blocks
            lpb = config.layers_per_block
            if not config.end_to_end and lpb is None and depth % config.num_blocks:
                raise ConfigError(
                    f"invalid value for 'num_blocks': {config.num_blocks} (your stack has "
                    f"{depth} layers, which do not split into {config.num_blocks} equal blocks; "
                    "choose a divisor, or set layers_per_block)"
                )
            if not config.end_to_end and lpb is not None and sum(lpb) != depth:
                raise ConfigError(
                    f"invalid value for 'layers_per_block': {','.join(map(str, lpb))} (sums to "
                    f"{sum(lpb)}; your stack has {depth} layers)"
                )
            if depth < 1:
                raise ConfigError(f"invalid value for 'method': {config.method} (your stack's "
                                  f"{stack.depth} layers leave none per block)")  # fmt: skip
            shape = StackShape(
                num_classes=data.num_classes,
                target_size=0 if self.classes else math.prod(data.target_shape),
                depth=depth,
                num_blocks=config.num_model_blocks,
                layers_per_block=config.block_sizes,
                seed=config.seed,
            )
            inputs = data.train_x[:2] if not data.card else torch.zeros(2, *data.input_shape)
            example = self._prepare(inputs).cpu()
            self.model = StackNetwork(stack, shape, example, not config.block_resident)
            to_device(self.model, device)
        self.depth = depth
        self.model.set_checkpointing(config.activation_checkpointing)
        self.positions = self.model.positions

    # -- data -------------------------------------------------------------------------------
    def train_size(self) -> int:
        return len(self.data.train_y)

    def _prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        return ((inputs - self.x_mean) / self.x_std).to(self.device, non_blocking=True)

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        """Class labels as they are; continuous targets standardised and scaled (N, D)."""
        if self.classes:
            return y.to(self.device)
        assert self.y_mean is not None and self.y_std is not None
        scaled = (y.reshape(len(y), -1) - self.y_mean) / self.y_std * self.config.sigma_data
        return scaled.to(self.device)

    def _values(self, scaled: torch.Tensor) -> torch.Tensor:
        """Continuous predictions back in the data's units (N, D)."""
        assert self.y_mean is not None and self.y_std is not None
        return scaled.float().cpu() / self.config.sigma_data * self.y_std + self.y_mean

    def train_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._prepare(self.data.train_x[indices]), self._targets(self.data.train_y[indices])

    def _eval_batches(
        self, split: str, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in split_batches(self.data, split, self.config.eval_batch_size, limit):
            yield self._prepare(x), y

    def heldout_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        val = validation_images(self.data, self.config.batch_size)
        return None if val is None else (self._prepare(val[0]), self._targets(val[1]))

    def default_split(self, quick: bool) -> str:
        return "val" if quick and self.data.val_y is not None else "test"

    def target_prefixes(self) -> tuple[str, ...]:
        return ("label_embed.",) if self.classes else ()

    def trivial_baseline(self, split: str = "test") -> dict[str, float]:
        """Classes: the majority training class and chance; continuous: the training targets'
        mean predicted for every example (``mse``, and ``r2`` = 0 by construction up to the
        split's own mean)."""
        if self.classes:
            return majority_baseline(self.data, split)
        _, y = split_images(self.data, split)
        y = y.reshape(len(y), -1).float()
        assert self.y_mean is not None
        return self._regression_scores(self.y_mean.expand_as(y), y)

    @staticmethod
    def _regression_scores(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        mse = float((pred - y).square().mean())
        var = float((y - y.mean(0)).square().mean())
        return {"mse": mse, "r2": 1.0 - mse / var if var > 0 else 0.0}

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {
            "dataset": d.name,
            "model": self.config.model,
            "target": self.config.target,
            "train_examples": len(d.train_y),
            "val_examples": 0 if d.val_y is None else len(d.val_y),
            "test_examples": len(d.test_y),
            "input_shape": list(d.input_shape),
            "target_shape": list(d.target_shape),
            "num_classes": d.num_classes,
            "depth": self.depth,
            "layers_per_block": [self.layers_in_block(b) for b in range(len(self.model.blocks))],
            "hidden": self.model.hidden,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    plot_key = "loss"
    plot_label = "training loss"

    # -- reporting ----------------------------------------------------------------------------
    @classmethod
    def report(cls, ev: dict[str, Any]) -> list[str]:
        if not cls.claims(ev):
            return []
        split = ev.get("split", "test")
        key = "accuracy" if "accuracy" in ev else "mse"
        lines = [f"{split} {key} {ev[key]:.4f}  ({ev['examples']} {split} examples)"]
        if "r2" in ev:
            lines.append(f"  R^2 {ev['r2']:.4f} (1 - MSE / variance of the {split} targets)")
        for name, value in ev.get("readouts", {}).items():
            lines.append(f"  readout {name}: {key} {value:.4f}")
        return lines

    @classmethod
    def headline(cls, ev: dict[str, Any]) -> dict[str, Any] | None:
        if not cls.claims(ev):
            return None
        key, label, higher = (("accuracy", "test acc", True) if "accuracy" in ev
                              else ("mse", "test MSE", False))  # fmt: skip
        return {"metric": label, "value": ev[key], key: ev[key], "key": key,
                "higher_is_better": higher}  # fmt: skip

    def _score(self, split: str, predict: Any, limit: int | None) -> dict[str, Any]:
        """Scores of ``predict(inputs)`` (logits or scaled values) on ``split``."""
        correct = total = 0
        ce = 0.0
        preds, ys = [], []
        for x, y in self._eval_batches(split, limit):
            out = predict(x)
            total += len(y)
            if self.classes:
                out = out.float().cpu()
                correct += int((out.argmax(-1) == y).sum())
                ce += float(F.cross_entropy(out, y, reduction="sum"))
            else:
                preds.append(self._values(out))
                ys.append(y.reshape(len(y), -1).float())
        if self.classes:
            return {"accuracy": correct / total, "ce": ce / total, "examples": total}
        return {**self._regression_scores(torch.cat(preds), torch.cat(ys)), "examples": total}


class EndToEndStack(_StackTask, SlotEndToEnd):
    """The baseline: the same network, all layers one block, plain cross-entropy or MSE."""

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (N, K), or scaled values (N, D)."""
        return self.end_to_end(inputs)

    def loss(
        self, block: int, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs, targets = batch
        out = self.predict(inputs)
        if self.classes:
            loss = F.cross_entropy(out, targets)
            acc = (out.argmax(-1) == targets).float().mean()
            return loss, {"loss": loss.item(), "acc": acc.item()}
        loss = (out - targets).square().mean()
        return loss, {"loss": loss.item()}

    log_legend = {"loss": "cross-entropy (classes) or MSE of the scaled targets (continuous)",
                  "acc": "accuracy on the training batch (classes)"}  # fmt: skip

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        refuse_options("stack", options)
        split = split or self.default_split(quick)
        with evaluating(self.model):
            scores = self._score(split, self.predict, self.config.eval_subset if quick else None)
        return {"task": "stack", "split": split, **scores, "layer_evals_per_example": self.depth}


class BlockwiseStack(_StackTask, SlotDenoiser):
    """DiffusionBlocks: every block a denoiser of the target over its sigma interval (the one
    path of :class:`~diffusionblocks.tasks.slot.SlotDenoiser`)."""

    def __init__(self, config: StackConfig, device: torch.device):
        super().__init__(config, device)
        self.partition = config.block_partition()
        self.schedule = self.partition.schedule

    @property
    def target_width(self) -> int:
        return self.model.hidden if self.classes else self.model.stack_shape.target_size

    def loss(
        self, block: int, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs, targets = batch
        sigma, clean, out = self.denoise(block, inputs, targets, generator)
        c = self.config
        if self.classes:
            per_example = F.cross_entropy(out, targets, reduction="none")
        else:
            per_example = (out - clean).square().mean(1)
        loss = weighted_loss(per_example, sigma, c.weighting, c.sigma_data, c.weight_clamp)
        return loss, {"loss": loss.item(), "unweighted": per_example.mean().item()}

    log_legend = {
        "loss": "the block's objective: cross-entropy (classes) or L2 (continuous) of its "
        "denoised target at a sigma of its interval, weighted over sigma (weighting)",
        "unweighted": "the same, unweighted",
    }

    def chain_output(self, inputs: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """The chain's prediction (:meth:`SlotDenoiser.chain`, its default generator)."""
        return self.chain(inputs, steps)[0]

    @property
    def readout(self) -> str:
        """The readout ``readout=auto`` resolves to: ensemble for classes, chain otherwise."""
        if self.config.readout != "auto":
            return self.config.readout
        return "ensemble" if self.classes else "chain"

    def predict(self, inputs: torch.Tensor, readout: str | None = None) -> torch.Tensor:
        """Logits (N, K) or scaled values (N, D) by ``readout`` (default: the config's)."""
        if (readout or self.readout) == "ensemble":
            return self.ensemble(inputs)[0]
        return self.chain_output(inputs)

    @torch.no_grad()
    def evaluate(
        self,
        quick: bool = False,
        steps: list[int] | None = None,
        split: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        refuse_options("stack", options)
        split = split or self.default_split(quick)
        c = self.config
        limit = c.eval_subset if quick else None
        with evaluating(self.model):
            scores = self._score(split, self.predict, limit)
            result: dict[str, Any] = {"task": "stack", "split": split, **scores,
                                      "readout": self.readout,
                                      "layer_evals_per_example": self.depth}  # fmt: skip
            if not quick:  # both readouts, and the chain at other step counts if asked
                key = "accuracy" if self.classes else "mse"
                other = "chain" if self.readout == "ensemble" else "ensemble"
                scored = self._score(split, lambda x: self.predict(x, other), None)
                result["readouts"] = {self.readout: scores[key], other: scored[key]}
                if steps:
                    sweep = {s: partial(self.chain_output, steps=s) for s in steps}
                    result["steps_sweep"] = {str(s): self._score(split, run, None)[key]
                                             for s, run in sweep.items()}  # fmt: skip
        return result


# fmt: off
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "your-model": (
        dict(data="", model="", num_blocks=3, epochs=10, batch_size=64, lr=1e-3),
        "start here for your own network (--set model=FILE.py:NAME --set data=PATH.npz): B=3, "
        "10 epochs per block, the paper's noise settings (docs/your-model.md)",
    ),
}
# fmt: on
