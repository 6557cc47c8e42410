"""A model's saved weights, read the same way whichever writer left them: one reader for
``dblocks assemble``, ``dblocks eval``/``sample``, :func:`diffusionblocks.load` and
``shared_init``.

Three writers leave weights in a folder:

- a single-process run: ``RUN/checkpoints/step-N/`` holds every block (``block-{b}``), the shared
  modules (``shared``) and, for ``shared=block-copies``, each block's copy of them
  (``shared-copy-{b}``), all saved at one step;
- a block-parallel run: each block's own checkpoints in ``RUN/blocks/block-{b}/step-N/``
  (``block``; written by the rank that trains it, at its own pace) and the shared modules in
  ``RUN/shared/step-N/`` (``shared``; per-block policy: ``RUN/shared-block-{b}/``);
- ``dblocks assemble``: a model folder with every tensor in ``model.safetensors``.

The on-disk layouts differ because a parallel run's blocks are written by different processes,
possibly in different jobs; each is a set of checkpoints in the format of ``checkpoint.py``.
:func:`read_weights` turns any of them into one :class:`SavedWeights` (the shared modules, each
block, each block's copy of the shared modules, where they came from), checked as assembly checks
them (every block present once, all of the run's config, all trained with one version of the
shared modules); :func:`install_weights` loads it into a network; :meth:`SavedWeights.state_dict`
is the flat state an assembled model folder holds. Tensors are read when they are installed, one
block at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..config import SAFE_RESUME_KEYS, ConfigError
from ..networks.placement import device_of
from .blockmodel import BlockModel, block_model
from .checkpoint import Checkpoint, CheckpointError, encode_tensors, latest_checkpoint
from .residency import materialize
from .runfolder import DATA_KEYS, saved_config_hashes

if TYPE_CHECKING:
    from ..config import RunConfig

Tensors = dict[str, torch.Tensor]
MODEL_FILE = "model.safetensors"

# Keys that may differ between the processes that trained the blocks of one model: which blocks a
# process trains, whether it ran under torchrun, and how it treated the shared modules (retraining
# one block against the final shared modules is shared=frozen + shared_init); and what a resumed
# run may change (--allow-safe-changes), including where its data lives (its bytes are checked).
PARALLEL_HASH_IGNORE = ("blocks", "parallel", "shared", "shared_init", *SAFE_RESUME_KEYS,
                        *DATA_KEYS)  # fmt: skip
_LEGACY_PARALLEL_IGNORE = ("blocks", "parallel", "shared", "shared_init")  # before 2026-11-28


class AssembleError(CheckpointError):
    """The run's blocks cannot be joined; the message names the blocks and the problem."""


def parallel_hashes(config: RunConfig, run_dir: str | os.PathLike[str]) -> set[str]:
    """The config hashes a block checkpoint of this run may carry: today's, and those an earlier
    version gave the config saved in ``run_dir/config.json`` (so older runs resume and assemble)."""
    current = config.config_hash(ignore=PARALLEL_HASH_IGNORE)
    older = saved_config_hashes(config, run_dir, PARALLEL_HASH_IGNORE, (_LEGACY_PARALLEL_IGNORE,))
    return {current, *older}


def tensors_version(state: Tensors) -> str:
    """sha256 (16 hex digits) of a state dict's safetensors encoding."""
    return hashlib.sha256(encode_tensors(state)).hexdigest()[:16]


@dataclass
class SavedWeights:
    """The weights of a model as a folder holds them. ``shared`` and the entries of ``blocks``
    and ``variants`` (per-block copies of the shared modules) read their tensors when called."""

    path: Path  # the checkpoint or model folder read (named in messages)
    step: int  # the latest training step of the weights (a parallel run: of its latest block)
    shared: Callable[[], Tensors]
    blocks: dict[int, Callable[[], Tensors]]
    variants: dict[int, Callable[[], Tensors]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # how they were saved (the model card)

    def state_dict(self) -> Tensors:
        """Every tensor under the names of an assembled model: the shared modules' own names,
        ``blocks.{b}.*`` and ``shared_per_block.{b}.*``."""
        state = dict(self.shared())
        for b in sorted(self.blocks):
            state.update({f"blocks.{b}.{k}": v for k, v in self.blocks[b]().items()})
        for b in sorted(self.variants):
            state.update({f"shared_per_block.{b}.{k}": v for k, v in self.variants[b]().items()})
        return state


def checkpoint_weights(ckpt: Checkpoint) -> SavedWeights:
    """The weights of a single-process checkpoint (every block, saved at one step)."""
    # "units": the saved number of blocks (old name, kept for old checkpoints)
    num_blocks = int(ckpt.meta.get("units", 0)) or sum(
        1 for name in ckpt.meta.get("files", {}) if name.startswith("block-")
    )
    copies = ckpt.has("shared-copy-0.safetensors")  # shared=block-copies
    return SavedWeights(
        path=ckpt.path,
        step=ckpt.step,
        shared=partial(ckpt.tensors, "shared"),
        blocks={b: partial(ckpt.tensors, f"block-{b}") for b in range(num_blocks)},
        variants={b: partial(ckpt.tensors, f"shared-copy-{b}") for b in range(num_blocks)}
        if copies
        else {},
        info={"layout": "single-process checkpoint", "step": ckpt.step},
    )


def block_checkpoint_weights(run_dir: Path, config: RunConfig) -> SavedWeights:
    """The weights of a block-parallel run: the latest checkpoint of each block and the shared
    modules it trained with. Refuses a block missing or present twice, a block of another config,
    and blocks that trained with another version of the shared modules than the one saved."""
    num_blocks = config.num_model_blocks
    known = parallel_hashes(config, run_dir)
    expect = min(known)  # for the message
    found: dict[int, Checkpoint] = {}
    for folder in sorted(p for p in (run_dir / "blocks").iterdir() if p.is_dir()):
        path = latest_checkpoint(folder)
        if path is None:
            continue
        ckpt = Checkpoint(path)
        b = ckpt.meta.get("block")
        if not isinstance(b, int):  # a block's identity is its metadata, not its folder name
            raise AssembleError(f"{path} names no block index in its metadata")
        if b in found:
            raise AssembleError(f"block {b} is present more than once ({found[b].path}, {path})")
        if ckpt.meta.get("config_hash") not in known or ckpt.meta.get("task") != config.task:
            raise AssembleError(
                f"block {b} ({path}) belongs to another config (hash "
                f"{ckpt.meta.get('config_hash')}, task {ckpt.meta.get('task')}); the run's config "
                f"is {expect} ({config.task})"
            )
        found[b] = ckpt
    extra = sorted(b for b in found if not 0 <= b < num_blocks)
    if extra:
        raise AssembleError(f"blocks {extra} do not exist in a {num_blocks}-block model")
    missing = sorted(set(range(num_blocks)) - set(found))
    if missing:
        raise AssembleError(
            f"blocks {missing} are missing from {run_dir}/blocks (train them with "
            f"--set blocks={','.join(map(str, missing))})"
        )
    policies: set[Any] = {c.meta.get("shared_policy") for c in found.values()}  # metadata
    if "per-block" in policies and len(policies) > 1:
        raise AssembleError(
            f"blocks mix per-block shared modules with shared ones: {sorted(policies)}"
        )
    per_block = "per-block" in policies
    shared: dict[int, Checkpoint] = {}
    if per_block:
        for b in found:
            path = latest_checkpoint(run_dir / f"shared-block-{b}")
            if path is None:
                raise AssembleError(f"the shared modules of block {b} are missing")
            shared[b] = Checkpoint(path)
    else:
        path = latest_checkpoint(run_dir / "shared")
        if path is None:
            raise AssembleError(f"{run_dir}/shared has no checkpoint of the shared modules")
        shared = dict.fromkeys(found, Checkpoint(path))
    stale = sorted(
        b for b, ckpt in found.items()
        if ckpt.meta.get("shared_version") != shared[b].meta.get("shared_version")
    )  # fmt: skip
    if stale:
        raise AssembleError(
            f"blocks {stale} trained with another version of the shared modules than the one "
            "saved; retrain them with --set shared=frozen, or resume the whole run"
        )
    policy = "per-block" if per_block else "/".join(sorted(policies))
    return SavedWeights(
        path=run_dir / "blocks",
        step=max(c.step for c in found.values()),
        shared=partial(shared[0].tensors, "shared"),
        blocks={b: partial(found[b].tensors, "block") for b in sorted(found)},
        variants={b: partial(shared[b].tensors, "shared") for b in sorted(found)}
        if per_block
        else {},
        info={
            "layout": "per-block checkpoints",
            "shared_policy": policy,
            "shared_version": shared[0].meta["shared_version"],
            "blocks": {
                str(b): {"step": c.step, "noise_interval": c.meta.get("noise_interval")}
                for b, c in sorted(found.items())
            },
        },
    )


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an assembled model folder (it holds ``model.safetensors``)."""
    return (Path(path) / MODEL_FILE).is_file()


def model_folder_weights(path: str | os.PathLike[str]) -> SavedWeights:
    """The weights of an assembled model folder (``model.safetensors`` and its card)."""
    path = Path(path)
    try:
        state = load_file(path / MODEL_FILE, device="cpu")
    except Exception as err:
        raise CheckpointError(f"{path}/{MODEL_FILE} is unreadable: {err}") from None
    blocks: dict[int, Tensors] = {}
    variants: dict[int, Tensors] = {}
    shared: Tensors = {}
    for k, v in state.items():
        if k.startswith(("blocks.", "shared_per_block.")):
            prefix, index, rest = k.split(".", 2)
            (blocks if prefix == "blocks" else variants).setdefault(int(index), {})[rest] = v
        else:
            shared[k] = v
    try:
        card = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        card = {}
    steps = [b["step"] for b in card.get("blocks", {}).values()] or [card.get("step", 0)]

    def const(tensors: Tensors) -> Callable[[], Tensors]:
        return lambda: tensors

    return SavedWeights(
        path=path / MODEL_FILE,
        step=int(max(steps)),
        shared=const(shared),
        blocks={b: const(t) for b, t in sorted(blocks.items())},
        variants={b: const(t) for b, t in sorted(variants.items())},
        info={"layout": "model folder"},
    )


def has_block_checkpoints(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a block-parallel run's per-block checkpoints."""
    return (run_dir / "blocks").is_dir() and any((run_dir / "blocks").glob("block-*/latest"))


def run_weights(run_dir: str | os.PathLike[str], config: RunConfig) -> SavedWeights | None:
    """The latest weights a run folder's checkpoints hold, checked against ``config`` (the
    run's): a block-parallel run's per-block checkpoints, else the single-process run's latest
    checkpoint; None if it has neither."""
    run_dir = Path(run_dir)
    if has_block_checkpoints(run_dir):
        return block_checkpoint_weights(run_dir, config)
    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        return None
    ckpt = Checkpoint(path)
    # "units": the saved number of blocks (old name, kept for old checkpoints)
    if ckpt.meta.get("task") != config.task or ckpt.meta.get("units") != config.num_model_blocks:
        raise CheckpointError(
            f"{path} is for task {ckpt.meta.get('task')!r} with {ckpt.meta.get('units')} units, "
            f"but {run_dir}/config.json describes {config.task!r} with {config.num_model_blocks}"
        )
    return checkpoint_weights(ckpt)


def read_weights(folder: str | os.PathLike[str], config: RunConfig) -> SavedWeights:
    """The weights of any folder ``dblocks eval`` accepts: an assembled model folder, a run
    folder's latest checkpoint(s) (:func:`run_weights`), or a run folder's assembled ``model``
    when it has no checkpoint left."""
    folder = Path(folder)
    if is_model_folder(folder):
        return model_folder_weights(folder)
    weights = run_weights(folder, config)
    if weights is not None:
        return weights
    if is_model_folder(folder / "model"):
        return model_folder_weights(folder / "model")
    hint = " (its blocks have no checkpoint yet)" if (folder / "blocks").is_dir() else ""
    raise CheckpointError(f"{folder} has no checkpoint yet (train it first){hint}")


def shared_state_of(folder: str | os.PathLike[str]) -> Tensors:
    """The shared modules' tensors of any run or model folder (``shared_init``): a block-parallel
    run's latest shared checkpoint (whatever its blocks), a single-process run's latest
    checkpoint, or an assembled model folder (``folder`` or ``folder/model``)."""
    folder = Path(folder)
    for root in (folder / "shared", folder / "checkpoints"):
        path = latest_checkpoint(root)
        if path is not None:
            return Checkpoint(path).tensors("shared")
    for model in (folder, folder / "model"):
        if is_model_folder(model):
            return model_folder_weights(model).shared()
    raise ConfigError(
        f"invalid value for 'shared_init': {folder} holds no checkpoint and no model folder"
    )


def install_shared(model: nn.Module | BlockModel, weights: SavedWeights) -> None:
    """Load the shared modules of ``weights`` into ``model``; every key must match."""
    shared = weights.shared()
    expected = {k for k in model.state_dict() if not k.startswith("blocks.")}
    missing, extra = expected - set(shared), set(shared) - expected
    if missing or extra:
        raise CheckpointError(
            f"{weights.path} does not fit this model: shared tensors missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    expected_shapes = {k: v.shape for k, v in model.state_dict().items()}
    why = shape_mismatch(expected_shapes, shared)
    if why:
        raise CheckpointError(f"{weights.path} does not fit this model (another architecture?): "
                              f"{why}")  # fmt: skip
    try:
        model.load_state_dict(shared, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{weights.path} does not fit this model: {err}") from None


def shape_mismatch(expected: dict[str, torch.Size], saved: dict[str, torch.Tensor]) -> str | None:
    """The first tensor of ``saved`` whose shape differs from ``expected`` (by name), said in
    words; None when every shape fits."""
    for name, tensor in saved.items():
        want = expected.get(name)
        if want is not None and tuple(want) != tuple(tensor.shape):
            return (f"tensor {name} has shape {tuple(tensor.shape)} in the checkpoint "
                    f"and {tuple(want)} in this model")  # fmt: skip
    return None


def install_weights(model: nn.Module | BlockModel, weights: SavedWeights) -> None:
    """Load ``weights`` into ``model``: the shared modules, each block (blocks on the meta device
    are materialised, one at a time) and per-block copies of the shared modules, so that each
    block runs with its own."""
    install_shared(model, weights)
    blocks = block_model(model) if isinstance(model, nn.Module) else model
    if sorted(weights.blocks) != list(range(len(blocks.blocks))):
        raise CheckpointError(
            f"{weights.path} does not fit this model: it holds blocks {sorted(weights.blocks)}, "
            f"the model has {len(blocks.blocks)}"
        )
    if weights.variants:
        blocks.set_shared_variants({b: read() for b, read in weights.variants.items()})
    for b, read in weights.blocks.items():
        state = read()
        # shapes from the block as it is (tensors on the meta device have shapes too)
        layout = {k: v.shape for k, v in blocks.blocks[b].state_dict().items()}
        why = shape_mismatch(layout, state)
        missing = sorted(set(layout) - set(state))
        if why or missing:
            raise CheckpointError(
                f"{weights.path} block {b} does not fit this model (another architecture?): "
                + (why or f"tensors missing from the checkpoint: {', '.join(missing[:3])}")
            )
        try:
            materialize(blocks, b, device_of(blocks), state)
        except RuntimeError as err:
            raise CheckpointError(
                f"{weights.path} block {b} does not fit this model: {err}"
            ) from None


def load_model_weights(model: nn.Module | BlockModel, ckpt: Checkpoint) -> None:
    """Load every tensor of the single-process checkpoint ``ckpt`` into ``model``
    (:func:`install_weights`)."""
    install_weights(model, checkpoint_weights(ckpt))


def load_shared_weights(model: nn.Module | BlockModel, ckpt: Checkpoint) -> None:
    """Load the shared modules of the single-process checkpoint ``ckpt`` into ``model``."""
    install_shared(model, checkpoint_weights(ckpt))
