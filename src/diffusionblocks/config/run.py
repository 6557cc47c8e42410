"""The fields every run has (:class:`RunConfig`), validated at construction, and what they
resolve to (block residency, the shared-module policy, the noise partition).

Every task has one config class that extends :class:`RunConfig` with its own data and model
fields. Field comments are the documentation: ``dblocks train --preset P --dry-run`` prints them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..diffusion import GRIDS, PARTITIONS, WEIGHTINGS, BlockPartition, NoiseSchedule
from .checks import ConfigError, _check, _choice, _show
from .training import TrainingSettings

METHODS = ("dblocks", "e2e", "e2e-shallow", "e2e-ckpt")
# Every task's end-to-end baseline (``baseline_method``) in the two forms a user would otherwise
# pick to save memory: at depth L/B, the memory of one block (``e2e-shallow``), and at full depth
# with activation checkpointing (``e2e-ckpt``).
BASELINE_VARIANTS = ("e2e-shallow", "e2e-ckpt")
SCHEDULES = ("random", "cycle", "sequential", "synchronous")
SHARED_POLICIES = ("auto", "sync", "frozen", "first-block", "block-copies", "per-block")
NAN_POLICIES = ("skip", "abort")
PRECISIONS = ("fp32", "bf16")
# Keys a resumed run may change (with --allow-safe-changes): bookkeeping, evaluation and
# inference. Everything else would make the checkpoint describe another run; ``epochs`` too, since
# it sets every block's learning-rate schedule (a changed resume would equal no fresh run).
SAFE_RESUME_KEYS = (
    "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "device", "threads",
    "compile",
    "nan_policy", "nan_max_skips", "eval_batch_size", "eval_subset", "eval_sequences",
    "eval_draws", "fid_samples", "inference_steps", "grid", "bridge_temperature", "readout",
    "final_eval",
    "cfg_scale",
    "temperature", "judge", "gen_prompts", "gen_prompt_len", "gen_length", "test_subset",
)  # fmt: skip


def dict_hash(data: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) of the canonical JSON of ``data`` minus the ``ignore`` keys: the
    hash checkpoints carry of the config that wrote them."""
    kept = {k: v for k, v in data.items() if k not in ignore}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class RunConfig:
    """Fields every task shares: method, blocks, optimisation, noise, bookkeeping."""

    # The method a user would otherwise train (``dblocks compare`` measures against it).
    baseline_method: ClassVar[str] = "e2e"
    # What the blocks split: "sigma" (noise levels, the partition of ``dblocks schedule``) or
    # another variable named in ``resolved()`` (masked LM: the masking time t).
    block_variable: ClassVar[str] = "sigma"
    # Keys by group: ``--set noise.p_mean=1`` names a key with its group, ``--set p_mean=1`` is
    # the same key (flat names stay valid everywhere). Task configs add their ``data``, ``model``
    # and ``eval`` groups in ``task_groups`` (and may add keys to these groups).
    groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "training": ("method", "num_blocks", "layers_per_block", "schedule", "cycle_steps",
                     "resident", "blocks", "epochs", "batch_size", "lr", "weight_decay",
                     "warmup", "min_lr_ratio", "grad_clip", "seed", "checkpointing",
                     "nan_policy", "nan_max_skips", "shared", "shared_init"),
        "noise": ("partition", "overlap", "weighting", "weight_clamp", "p_mean", "p_std",
                  "sigma_min", "sigma_max", "sigma_data", "inference_steps", "grid"),
        "run": ("device", "threads", "precision", "compile", "log_every", "eval_every",
                "checkpoint_every", "keep_checkpoints"),
        "parallel": ("parallel",),
    }  # fmt: skip
    task_groups: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Other names of keys, accepted wherever a key is: ``block_order`` is the order in which
    # blocks train (saved as ``schedule``, so run folders and config hashes keep their meaning;
    # "schedule" also names the noise and learning-rate schedules).
    key_aliases: ClassVar[dict[str, str]] = {"block_order": "schedule"}
    # The value a key takes when a saved config lacks it (a run folder written before the key
    # existed): the value that reproduces what that run did, so that it evaluates and resumes on
    # its own data (``val_fraction``: 0, no validation split). A key not named here gets its
    # field default. Only ``config_from_dict`` (saved configs) reads this; new configs never do.
    saved_defaults: ClassVar[dict[str, Any]] = {}

    task: str = ""  # task name (set by the task's config class)
    method: str = "dblocks"  # dblocks | e2e (baseline) | e2e-shallow (depth L/B) | e2e-ckpt
    num_blocks: int = 3  # B: number of blocks the layers are split into (dblocks only)
    # Layers in each block, e.g. "3,6,3" (the paper's Table 7; sums to depth); none: equal blocks
    layers_per_block: tuple[int, ...] | None = None
    schedule: str = "random"  # block_order: random (paper) | cycle | sequential | synchronous
    cycle_steps: int = 1  # schedule=cycle: consecutive steps per visit of a block
    resident: bool = False  # keep only the active block in memory (implied by sequential)
    blocks: tuple[int, ...] | None = None  # train only these blocks, e.g. "0,2" (None = all)
    epochs: float = 1.0  # epochs of updates per block (= end-to-end epochs at equal compute)
    batch_size: int = 128  # examples per optimizer step
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.05  # AdamW weight decay (matrices only)
    warmup: float = 0.05  # fraction of each block's steps spent in linear warm-up
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max gradient norm per step (0 = no clipping)
    seed: int = 0  # seed for initialisation, data order, block order and noise
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads (0 = auto: OMP_NUM_THREADS if set, else by model size)
    precision: str = "fp32"  # fp32 | bf16 (autocast: matrix products in bfloat16)
    compile: bool = False  # torch.compile (inductor) each block before it trains
    checkpointing: bool = False  # activation checkpointing per layer (recompute in backward)
    # Noise (docs/method.md §2-3)
    partition: str = "equi-probability"  # equi-probability | uniform-log | uniform
    overlap: float = 0.05  # gamma: interval widening in ln sigma on each side
    weighting: str = "batch"  # loss weighting over sigma: edm | batch | clamped | none
    weight_clamp: float = 100.0  # cap on w(sigma) for weighting=clamped
    p_mean: float = -1.2  # mean of ln sigma
    p_std: float = 1.2  # std of ln sigma
    sigma_min: float = 0.002  # smallest noise level
    sigma_max: float = 80.0  # largest noise level
    sigma_data: float = 0.5  # std of the clean target assumed by the preconditioning
    inference_steps: int = 0  # Euler steps at inference (0 = num_blocks)
    grid: str = "cdf"  # inference noise grid: cdf | karras
    # Bookkeeping
    log_every: int = 50  # steps between metrics.jsonl records
    eval_every: int = 0  # steps between quick evaluations (0 = only at the end)
    checkpoint_every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # how many recent checkpoints to keep
    # Faults
    nan_policy: str = "skip"  # a non-finite loss or gradient: skip the update, or abort
    nan_max_skips: int = 10  # abort after this many skipped steps
    # Block-parallel training (torchrun; see docs/parallel.md)
    parallel: bool = False  # one process per block (x data-parallel degree), torch.distributed
    # Shared modules (stem, label/token embeddings, sigma embedder, head; docs/block-resident.md)
    shared: str = "auto"  # auto | sync | frozen | first-block | block-copies | per-block
    shared_init: str | None = None  # run folder whose shared modules start (and, frozen, stay)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        if getattr(self, "data", None) == "":  # presets for users' data leave it to them
            raise ConfigError(
                "missing value for 'data': this preset trains on your data; pass --set "
                "data=PATH (an .npz of images or a UTF-8 text file; formats in docs/data.md)"
            )
        _choice(self, "method", self.methods())
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "partition", PARTITIONS)
        _choice(self, "weighting", WEIGHTINGS)
        _choice(self, "grid", GRIDS)
        _choice(self, "shared", SHARED_POLICIES)
        _choice(self, "nan_policy", NAN_POLICIES)
        _choice(self, "precision", PRECISIONS)
        _check(self, "threads", 0 <= self.threads <= 4096, "an integer >= 0 (0 = auto)")
        _check(self, "nan_max_skips", 0 <= self.nan_max_skips <= 1_000_000, "an integer >= 0")
        if self.schedule == "synchronous" and self.end_to_end:
            raise ConfigError(
                "schedule=synchronous trains blocks side by side; it needs method=dblocks"
            )
        if self.parallel and self.schedule not in ("random", "synchronous"):
            raise ConfigError(
                f"parallel training is synchronous (every block steps at once); schedule="
                f"{self.schedule} does not apply"
            )
        if self.parallel and self.end_to_end:
            raise ConfigError(
                f"parallel=true trains DiffusionBlocks blocks in separate processes; method "
                f"{self.method!r} has no blocks to spread"
            )
        if self.shared in ("first-block", "block-copies") and not self.one_after_another:
            raise ConfigError(
                f"invalid value for 'shared': {self.shared!r} (a policy for blocks trained one "
                "after another) needs schedule=sequential or blocks naming one block, without "
                "parallel=true"
            )
        if self.resident and self.end_to_end:
            raise ConfigError(
                f"invalid value for 'resident': true (keeps one DiffusionBlocks block in memory; "
                f"method {self.method!r} trains all layers together)"
            )
        _check(self, "cycle_steps", 1 <= self.cycle_steps <= 1 << 30, "an integer >= 1")
        sizes = self.layers_per_block
        _check(self, "layers_per_block",
               sizes is None or (len(sizes) == self.num_blocks and min(sizes) >= 1),
               f"{self.num_blocks} sizes >= 1, one per block "
               f"(num_blocks={self.num_blocks})")  # fmt: skip
        if self.cycle_steps != 1 and self.schedule != "cycle":
            raise ConfigError(
                f"invalid value for 'cycle_steps': {self.cycle_steps} (steps per visit of the "
                f"cycle schedule; schedule={self.schedule} does not use it)"
            )
        if self.compile and self.resident and self.schedule in ("random", "cycle"):
            raise ConfigError(
                f"invalid value for 'compile': true (with resident=true and schedule="
                f"{self.schedule} a block is rebuilt at every swap and compiled again; use "
                "schedule=sequential, or resident=false)"
            )
        if self.resident and self.schedule == "synchronous" and not self.parallel:
            raise ConfigError(
                "invalid value for 'resident': true (schedule=synchronous trains every block at "
                "each step, so all of them are in memory; use parallel=true for one block per "
                "process)"
            )
        if self.eval_every and self.block_resident:
            raise ConfigError(
                f"invalid value for 'eval_every': {self.eval_every} (evaluating the chain needs "
                "every block in memory; block-resident runs evaluate when training ends)"
            )
        if self.shared == "per-block" and not self.parallel:
            raise ConfigError(
                "invalid value for 'shared': 'per-block' gives each block-parallel process its "
                "own copy of the shared modules; it needs parallel=true"
            )
        _check(self, "num_blocks", 1 <= self.num_blocks <= 64, "an integer in [1, 64]")
        _check(self, "epochs", 0 < self.epochs <= 1e6, "a number in (0, 1e6]")
        _check(self, "batch_size", 1 <= self.batch_size <= 1 << 20, "an integer >= 1")
        _check(self, "lr", 0 < self.lr <= 10, "a number in (0, 10]")
        _check(self, "weight_decay", 0 <= self.weight_decay <= 10, "a number in [0, 10]")
        _check(self, "warmup", 0 <= self.warmup < 1, "a fraction in [0, 1)")
        _check(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "a fraction in [0, 1]")
        _check(self, "grad_clip", self.grad_clip >= 0, "a number >= 0 (0 = off)")
        _check(self, "seed", 0 <= self.seed < 2**63, "an integer >= 0")
        _check(
            self,
            "device",
            re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None,
            "auto, cpu, cuda, cuda:N or mps",
        )
        _check(self, "overlap", 0 <= self.overlap <= 1, "a number in [0, 1]")
        _check(self, "weight_clamp", self.weight_clamp > 0, "a number > 0")
        _check(self, "p_std", self.p_std > 0, "a number > 0")
        _check(self, "sigma_min", self.sigma_min > 0, "a number > 0")
        _check(
            self,
            "sigma_max",
            self.sigma_max > self.sigma_min,
            f"a number > sigma_min={self.sigma_min}",
        )
        _check(self, "sigma_data", self.sigma_data > 0, "a number > 0")
        _check(self, "inference_steps", 0 <= self.inference_steps <= 10_000, "in [0, 10000]")
        _check(self, "log_every", self.log_every >= 1, "an integer >= 1")
        _check(self, "eval_every", self.eval_every >= 0, "an integer >= 0")
        _check(self, "checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0")
        _check(self, "keep_checkpoints", self.keep_checkpoints >= 1, "an integer >= 1")
        if self.blocks is not None:
            if self.end_to_end:
                raise ConfigError(
                    "'blocks' selects DiffusionBlocks blocks; it needs method=dblocks"
                )
            bad = [b for b in self.blocks if not 0 <= b < self.num_blocks]
            if bad or not self.blocks or len(set(self.blocks)) != len(self.blocks):
                raise ConfigError(
                    f"invalid value for 'blocks': {_show(self.blocks)} (need distinct block "
                    f"indices in 0..{self.num_blocks - 1})"
                )

    @classmethod
    def methods(cls) -> tuple[str, ...]:
        """Values ``method`` may take for this task: ``dblocks``, the task's end-to-end baseline
        (``baseline_method``) and that baseline's variants (``BASELINE_VARIANTS``)."""
        return ("dblocks", cls.baseline_method, *BASELINE_VARIANTS)

    # ------------------------------------------------------------------ the method, resolved
    # Code outside this class asks these properties, never compares method names.
    @property
    def end_to_end(self) -> bool:
        """Whether this run trains the task's end-to-end baseline (any method but dblocks): all
        layers in one block, no noise partition."""
        return self.method != "dblocks"

    @property
    def base_method(self) -> str:
        """The method whose task class builds this run: ``dblocks``, or the task's
        ``baseline_method`` for the baseline and each of its variants."""
        return self.baseline_method if self.end_to_end else "dblocks"

    @property
    def shallow(self) -> bool:
        """Whether this run is the baseline sized to the training memory of one DiffusionBlocks
        block (``e2e-shallow``): depth L/B (the recurrent-depth task: truncation 1)."""
        return self.method == "e2e-shallow"

    @property
    def model_depth(self) -> int:
        """The transformer layers the network is built with: ``depth``, or ``depth //
        num_blocks`` for ``e2e-shallow`` (0 for a config without a ``depth`` key)."""
        depth = int(getattr(self, "depth", 0))
        return depth // self.num_blocks if self.shallow else depth

    @property
    def activation_checkpointing(self) -> bool:
        """Whether layers recompute their activations in the backward pass: the
        ``checkpointing`` key, always on for ``e2e-ckpt``."""
        return self.checkpointing or self.method == "e2e-ckpt"

    # ------------------------------------------------------------------ derived objects
    @property
    def num_model_blocks(self) -> int:
        """How many separately trained blocks the network is built with, ``len(model.blocks)``
        (B for dblocks, 1 end to end: all layers in one block)."""
        return 1 if self.end_to_end else self.num_blocks

    @property
    def block_sizes(self) -> tuple[int, ...] | None:
        """The layers of each block the network is built with: ``layers_per_block`` for
        DiffusionBlocks, None (equal blocks; one block end to end) otherwise."""
        return None if self.end_to_end else self.layers_per_block

    @property
    def units(self) -> int:
        """Old name of :attr:`num_model_blocks`, kept for code written against it."""
        return self.num_model_blocks

    @property
    def block_resident(self) -> bool:
        """Whether only the active block lives in memory: DiffusionBlocks trained one block at a
        time (``schedule=sequential``, ``blocks`` naming a single block, one process per block),
        or any schedule with ``resident=true`` (a block that is swapped out takes its optimizer
        state to disk with it)."""
        return not self.end_to_end and (self.one_after_another or self.parallel or self.resident)

    @property
    def one_after_another(self) -> bool:
        """Whether blocks train one after another in this process (each to its whole budget)."""
        return (
            not self.end_to_end
            and not self.parallel
            and (self.schedule == "sequential" or len(self.trained_blocks) == 1)
        )

    @property
    def shared_policy(self) -> str:
        """The policy for the shared modules, with ``auto`` resolved: ``block-copies`` when blocks
        train one after another in one process (sequential), ``sync`` otherwise.

        - ``sync``: updated at every step by whichever block trains (random/cycle schedules; the
          gradients are averaged over blocks in synchronous and parallel runs);
        - ``first-block``: trained together with the first trained block, then frozen, so every
          block trains and is evaluated against the same shared weights and targets;
        - ``block-copies``: each block trains its own copy (started from the previous block's),
          except the target table, which trains with the first block and then stays frozen;
        - ``frozen``: never updated (their initial weights, or those of ``shared_init``);
        - ``per-block``: each block-parallel process trains its own copy.
        """
        if self.shared != "auto":
            return self.shared
        return "block-copies" if self.one_after_another else "sync"

    @property
    def trained_blocks(self) -> tuple[int, ...]:
        """The indices of the blocks this run trains: ``blocks``, sorted, or all of them."""
        if self.blocks is not None:
            return tuple(sorted(self.blocks))
        return tuple(range(self.num_model_blocks))

    @property
    def trained_units(self) -> tuple[int, ...]:
        """Old name of :attr:`trained_blocks`, kept for code and tests written against it."""
        return self.trained_blocks

    @property
    def steps_at_inference(self) -> int:
        return self.inference_steps or self.num_blocks

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(
            self.p_mean, self.p_std, self.sigma_min, self.sigma_max, self.sigma_data
        )

    def block_partition(self) -> BlockPartition:
        return BlockPartition.create(
            self.num_blocks, self.noise_schedule(), self.partition, self.overlap
        )

    # ------------------------------------------------------------------ groups
    @classmethod
    def key_groups(cls) -> dict[str, tuple[str, ...]]:
        """Group name -> its keys, for this task (every key but ``task`` in exactly one)."""
        out = dict(cls.groups)
        for name, keys in cls.task_groups.items():
            out[name] = out.get(name, ()) + keys
        return out

    def training_settings(self) -> TrainingSettings:
        """The training and run groups, resolved: what the trainer gets."""
        return TrainingSettings(
            method=self.method, seed=self.seed, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, weight_decay=self.weight_decay, warmup=self.warmup,
            min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, block_order=self.schedule,
            cycle_steps=self.cycle_steps, nan_policy=self.nan_policy,
            nan_max_skips=self.nan_max_skips, shared_init=self.shared_init,
            log_every=self.log_every, eval_every=self.eval_every,
            checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
            precision=self.precision, compile=self.compile,
            trained_blocks=self.trained_blocks, shared_policy=self.shared_policy,
            block_resident=self.block_resident,
        )  # fmt: skip

    @property
    def block_order(self) -> str:
        """The order in which blocks train (the ``schedule`` key's other name)."""
        return self.schedule

    @classmethod
    def group_of(cls, key: str) -> str | None:
        return next((g for g, keys in cls.key_groups().items() if key in keys), None)

    def group(self, name: str) -> dict[str, Any]:
        """The values of one group, e.g. ``config.group("noise")``."""
        groups = self.key_groups()
        if name not in groups:
            raise ConfigError(f"unknown config group {name!r}; choose one of {', '.join(groups)}")
        values = self.to_dict()
        return {k: values[k] for k in groups[name]}

    def to_nested(self) -> dict[str, Any]:
        """The config as ``{"task": ..., group: {key: value}}``: the layout ``--dry-run`` prints
        (``config_from_dict`` reads it back as well as the flat one)."""
        return {"task": self.task, **{g: self.group(g) for g in self.key_groups()}}

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def resolved(self) -> dict[str, Any]:
        """What the config's automatic values and derived settings came to: recorded beside the
        config in ``results.json`` so that a result says exactly what ran."""
        out: dict[str, Any] = {  # "units", "trained_units": saved keys, kept for old results
            "units": self.num_model_blocks,
            "trained_units": list(self.trained_blocks),
            "block_resident": self.block_resident,
            "shared_policy": self.shared_policy,
            "inference_calls": self.steps_at_inference,
            "model_depth": self.model_depth,  # the layers built (e2e-shallow: depth // B)
            "activation_checkpointing": self.activation_checkpointing,
            "end_to_end": self.end_to_end,
            "shallow": self.shallow,  # sized to one block's training memory (e2e-shallow)
        }
        if not self.end_to_end and self.num_model_blocks > 1:
            try:
                p = self.block_partition()
                out["block_intervals"] = [list(p.interval(b)) for b in range(self.num_blocks)]
                out["block_train_intervals"] = [
                    list(p.train_interval(b)) for b in range(self.num_blocks)
                ]
            except (AttributeError, ValueError):  # tasks with their own partition (masked LM)
                pass
        return out

    def config_hash(self, ignore: tuple[str, ...] = ()) -> str:
        """sha256 (16 hex digits) of the canonical JSON of the config, minus ``ignore`` keys."""
        return dict_hash(self.to_dict(), ignore)

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Field name -> its one-line comment from the source (for --help and --dry-run)."""
        import inspect

        docs: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if not dataclasses.is_dataclass(klass):
                continue
            try:
                src = inspect.getsource(klass)
            except (OSError, TypeError):
                continue
            for m in re.finditer(r"^\s+(\w+): [^=\n]+= [^#\n]+#\s*(.+)$", src, re.M):
                docs[m.group(1)] = m.group(2).strip()
        return docs
