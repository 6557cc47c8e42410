"""Run configuration: dataclasses validated at construction, and ``key=value`` parsing.

Every task has one config class that extends :class:`RunConfig` with its own data and model
fields. Field comments are the documentation: ``dblocks train --preset P --dry-run`` prints them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .diffusion import GRIDS, PARTITIONS, WEIGHTINGS, BlockPartition, NoiseSchedule

METHODS = ("dblocks", "e2e")
SCHEDULES = ("random", "cycle", "sequential", "synchronous")
SHARED_POLICIES = ("auto", "sync", "frozen", "first-block", "block-copies", "per-block")
NAN_POLICIES = ("skip", "abort")
# Keys a resumed run may change (with --allow-safe-changes): bookkeeping, evaluation and
# inference. Everything else would make the checkpoint describe another run; ``epochs`` too, since
# it sets every block's learning-rate schedule (a changed resume would equal no fresh run).
SAFE_RESUME_KEYS = (
    "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "device",
    "nan_policy", "nan_max_skips", "eval_batch_size", "eval_subset", "eval_sequences",
    "eval_draws", "fid_samples", "inference_steps", "grid", "bridge_temperature", "cfg_scale",
    "temperature", "judge", "gen_prompts", "gen_prompt_len", "gen_length", "test_subset",
)  # fmt: skip


def dict_hash(data: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) of the canonical JSON of ``data`` minus the ``ignore`` keys: the
    hash checkpoints carry of the config that wrote them."""
    kept = {k: v for k, v in data.items() if k not in ignore}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A configuration key or value is invalid. The message names the key."""


@dataclass
class RunConfig:
    """Fields every task shares: method, blocks, optimisation, noise, bookkeeping."""

    # The method a user would otherwise train (``dblocks compare`` measures against it).
    baseline_method: ClassVar[str] = "e2e"
    # What the blocks split: "sigma" (noise levels, the partition of ``dblocks schedule``) or
    # another variable named in ``resolved()`` (masked LM: the masking time t).
    block_variable: ClassVar[str] = "sigma"

    task: str = ""  # task name (set by the task's config class)
    method: str = "dblocks"  # dblocks (block-wise denoisers) or e2e (plain end-to-end baseline)
    num_blocks: int = 3  # B: number of blocks the layers are split into (dblocks only)
    schedule: str = "random"  # block order: random (paper) | cycle | sequential | synchronous
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
        _check(self, "nan_max_skips", 0 <= self.nan_max_skips <= 1_000_000, "an integer >= 0")
        if self.schedule == "synchronous" and self.method != "dblocks":
            raise ConfigError(
                "schedule=synchronous trains blocks side by side; it needs method=dblocks"
            )
        if self.parallel and self.schedule not in ("random", "synchronous"):
            raise ConfigError(
                f"parallel training is synchronous (every block steps at once); schedule="
                f"{self.schedule} does not apply"
            )
        if self.parallel and self.method != "dblocks":
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
        if self.resident and self.method != "dblocks":
            raise ConfigError(
                f"invalid value for 'resident': true (keeps one DiffusionBlocks block in memory; "
                f"method {self.method!r} trains all layers together)"
            )
        _check(self, "cycle_steps", 1 <= self.cycle_steps <= 1 << 30, "an integer >= 1")
        if self.cycle_steps != 1 and self.schedule != "cycle":
            raise ConfigError(
                f"invalid value for 'cycle_steps': {self.cycle_steps} (steps per visit of the "
                f"cycle schedule; schedule={self.schedule} does not use it)"
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
            if self.method == "e2e":
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
        """Values ``method`` may take for this task."""
        return METHODS

    # ------------------------------------------------------------------ derived objects
    @property
    def units(self) -> int:
        """How many separately trained units the network has (B for dblocks, 1 for e2e)."""
        return self.num_blocks if self.method == "dblocks" else 1

    @property
    def block_resident(self) -> bool:
        """Whether only the active block lives in memory: DiffusionBlocks trained one block at a
        time (``schedule=sequential``, ``blocks`` naming a single block, one process per block),
        or any schedule with ``resident=true`` (a block that is swapped out takes its optimizer
        state to disk with it)."""
        return self.method == "dblocks" and (
            self.one_after_another or self.parallel or self.resident
        )

    @property
    def one_after_another(self) -> bool:
        """Whether blocks train one after another in this process (each to its whole budget)."""
        return (
            self.method == "dblocks"
            and not self.parallel
            and (self.schedule == "sequential" or len(self.trained_units) == 1)
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
    def trained_units(self) -> tuple[int, ...]:
        return tuple(sorted(self.blocks)) if self.blocks is not None else tuple(range(self.units))

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
        out: dict[str, Any] = {
            "units": self.units,
            "trained_units": list(self.trained_units),
            "block_resident": self.block_resident,
            "shared_policy": self.shared_policy,
            "inference_calls": self.steps_at_inference,
        }
        if self.method == "dblocks" and self.units > 1:
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


# ---------------------------------------------------------------------- helpers
def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_transformer(cfg: Any) -> None:
    """The shape keys every transformer config has: ``depth``, ``hidden``, ``heads``,
    ``mlp_ratio`` (each refusal names its key)."""
    _check(cfg, "depth", 1 <= cfg.depth <= 256, "an integer in [1, 256]")
    _check(cfg, "hidden", 1 <= cfg.hidden <= 65536, "an integer >= 1")
    _check(cfg, "heads", 1 <= cfg.heads <= cfg.hidden, f"an integer in [1, hidden={cfg.hidden}]")
    _check(cfg, "mlp_ratio", 0 < cfg.mlp_ratio <= 64, "a number in (0, 64]")


def check_layer_split(cfg: Any) -> None:
    """A transformer config's heads must divide its width, and (DiffusionBlocks) its blocks its
    depth, so that every block has the same number of layers."""
    if cfg.hidden % cfg.heads:
        raise ConfigError(
            f"invalid value for 'heads': {cfg.heads} (must divide hidden={cfg.hidden})"
        )
    if cfg.method == "dblocks" and cfg.depth % cfg.num_blocks:
        raise ConfigError(
            f"invalid value for 'num_blocks': {cfg.num_blocks} (must divide "
            f"depth={cfg.depth} so that every block has the same number of layers)"
        )


def _check(cfg: Any, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(
            f"invalid value for '{name}': {_show(getattr(cfg, name))} (must be {allowed})"
        )


def _choice(cfg: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ConfigError(
            f"invalid value for '{name}': {_show(value)} (choose one of {', '.join(allowed)})"
        )


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_int(text: str) -> int:
    t = text.strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", t):
        raise ValueError("expected an integer")
    return int(t)


def _parse_float(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_int_tuple(text: str) -> tuple[int, ...] | None:
    t = text.strip().lower()
    if t in ("", "none", "all", "null"):
        return None
    return tuple(_parse_int(part) for part in t.strip("[]()").split(",") if part.strip())


def coerce(cls: type, key: str, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a JSON value) to the type of field
    ``key`` of config class ``cls``. Raises :class:`ConfigError` naming the key."""
    hint = _field_types(cls)[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        base = next(a for a in args if a is not type(None))
    try:
        if value is None:
            if optional:
                return None
            raise ValueError("a value is required")
        if typing.get_origin(base) is tuple:
            if isinstance(value, str):
                return _parse_int_tuple(value)
            if isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                return tuple(value)
            raise ValueError("expected a comma-separated list of integers")
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return _parse_bool(value)
            raise ValueError("expected true or false")
        if base is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return _parse_int(value)
            raise ValueError("expected an integer")
        if base is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            if isinstance(value, (int, float)):
                if not math.isfinite(value):
                    raise ValueError("expected a finite number")
                return float(value)
            if isinstance(value, str):
                return _parse_float(value)
            raise ValueError("expected a number")
        if base is str:
            if isinstance(value, str):
                if optional and value.strip().lower() in ("", "none", "null"):
                    return None
                return value.strip()
            raise ValueError("expected a string")
    except ValueError as err:
        raise ConfigError(f"invalid value for '{key}': {_show(value)} ({err})") from None
    raise ConfigError(f"field '{key}' has an unsupported type {hint}")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "blocks=0,2"]`` -> ``{"lr": "1e-3", "blocks": "0,2"}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ConfigError(f"--set key {key!r} is not a valid config key name")
        out[key] = value
    return out


def build_config(cls: type[RunConfig], values: dict[str, Any]) -> RunConfig:
    """Build and validate ``cls`` from ``values``; unknown keys are rejected with a suggestion."""
    names = [f.name for f in fields(cls) if f.init and f.name != "task"]
    for key in values:
        if key == "task":
            if values[key] != cls().task:
                raise ConfigError(
                    f"'task' is fixed by the preset ({cls().task!r}); pick another preset instead"
                )
            continue
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}' for task '{cls().task}'{hint}")
    typed = {k: coerce(cls, k, v) for k, v in values.items() if k != "task"}
    try:
        return cls(**typed)
    except TypeError as err:  # pragma: no cover - guarded by the name check above
        raise ConfigError(str(err)) from None


def config_from_dict(cls: type[RunConfig], data: dict[str, Any]) -> RunConfig:
    """Rebuild a config saved with :meth:`RunConfig.to_dict`."""
    task = data.get("task", "")
    if task and task != cls().task:
        raise ConfigError(f"config is for task '{task}', not '{cls().task}'")
    return build_config(cls, {k: v for k, v in data.items() if k != "task"})


def config_diff(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs of the same class."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in da if da[k] != db.get(k)}


__all__ = [
    "METHODS",
    "SCHEDULES",
    "ConfigError",
    "SAFE_RESUME_KEYS",
    "RunConfig",
    "build_config",
    "coerce",
    "config_diff",
    "config_from_dict",
    "parse_assignments",
]
