"""Join per-block checkpoints into one model, and load a model folder.

``assemble(run_dir, out)`` checks that every block of the run is present exactly once, that all
of them belong to the run's config, and that they trained with one version of the shared
modules; then it writes ``out/model.safetensors`` (every tensor), ``out/config.json`` and a model
card ``out/README.md``: the layout of a Hugging Face Hub model folder. ``dblocks eval`` and
``dblocks sample`` accept the folder; :func:`diffusionblocks.load` (or ``load_pretrained``) loads
it from Python.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .registry import read_run_config
from .training.checkpoint import Checkpoint, CheckpointError, default_mode, latest_checkpoint
from .training.parallel import parallel_hashes
from .training.residency import device_of, materialize
from .training.runfolder import recorded_fingerprint

if TYPE_CHECKING:
    from .config import RunConfig
    from .tasks.base import Task


class AssembleError(CheckpointError):
    """The run's blocks cannot be joined; the message names the blocks and the problem."""


def _collect_parallel(
    run_dir: Path, config: RunConfig
) -> tuple[dict[int, Checkpoint], dict[int, Checkpoint]]:
    units = config.units
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
    extra = sorted(b for b in found if not 0 <= b < units)
    if extra:
        raise AssembleError(f"blocks {extra} do not exist in a {units}-block model")
    missing = sorted(set(range(units)) - set(found))
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
    policy = "per-block" if "per-block" in policies else "sync"
    shared: dict[int, Checkpoint] = {}
    if policy == "per-block":
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
    return found, shared


def assemble(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the assembled model of ``run_dir`` to ``out`` (default ``run_dir/model``)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    out = Path(out) if out is not None else run_dir / "model"
    state: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {}
    if (run_dir / "blocks").is_dir() and any((run_dir / "blocks").glob("block-*/latest")):
        blocks, shared = _collect_parallel(run_dir, config)
        policies = {c.meta["shared_policy"] for c in blocks.values()}
        policy = "per-block" if "per-block" in policies else "/".join(sorted(policies))
        first = shared[0].tensors("shared")
        state.update(first)
        for b in sorted(blocks):
            for k, v in blocks[b].tensors("block").items():
                state[f"blocks.{b}.{k}"] = v
            if policy == "per-block":
                for k, v in shared[b].tensors("shared").items():
                    state[f"shared_per_block.{b}.{k}"] = v
        info = {
            "layout": "per-block checkpoints",
            "shared_policy": policy,
            "shared_version": shared[0].meta["shared_version"],
            "blocks": {
                str(b): {"step": c.step, "noise_interval": c.meta.get("noise_interval")}
                for b, c in sorted(blocks.items())
            },
        }
    else:
        path = latest_checkpoint(run_dir / "checkpoints")
        if path is None:
            raise AssembleError(f"{run_dir} has neither per-block checkpoints nor a checkpoint")
        ckpt = Checkpoint(path)
        state.update(ckpt.tensors("shared"))
        for b in range(config.units):
            for k, v in ckpt.tensors(f"block-{b}").items():
                state[f"blocks.{b}.{k}"] = v
            if ckpt.has("shared-copy-0.safetensors"):  # shared=block-copies
                for k, v in ckpt.tensors(f"shared-copy-{b}").items():
                    state[f"shared_per_block.{b}.{k}"] = v
        info = {"layout": "single-process checkpoint", "step": ckpt.step}
    card = {
        "format": "diffusionblocks-model",
        "version": __version__,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "data_sha256": recorded_fingerprint(run_dir),  # eval/sample check moved data against it
        "assembled_from": str(run_dir),
        "assembled": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **info,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's folder is private (0o700)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "README.md").write_text(_model_card(card))
        # Replace atomically: the old model is renamed aside (one rename), the new one renamed
        # into place (another); at every moment `out` is a complete model or, between the two
        # renames, absent with the old one intact beside it. Only then is the old one deleted.
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _model_card(card: dict[str, Any]) -> str:
    c = card["config"]
    return (
        f"---\nlibrary_name: diffusionblocks\ntags: [diffusionblocks, {c['task']}]\n---\n\n"
        f"# {c['task']} model ({c['method']}, {c['num_blocks']} blocks)\n\n"
        f"Trained with [diffusionblocks](https://github.com/) {card['version']}; assembled from "
        f"`{card['assembled_from']}` ({card.get('layout')}).\n\n"
        "```python\nfrom diffusionblocks import load_pretrained\n"
        "task = load_pretrained('path/to/this/folder')\n```\n"
        "or `dblocks eval --run path/to/this/folder`.\n"
    )


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "model.safetensors").is_file()


def load_model_folder(task: Task, path: str | os.PathLike) -> None:
    """Load ``path/model.safetensors`` into ``task.model`` (blocks materialised)."""
    path = Path(path)
    try:
        state = load_file(path / "model.safetensors", device="cpu")
    except Exception as err:
        raise CheckpointError(f"{path}/model.safetensors is unreadable: {err}") from None
    model: Any = task.model  # duck-typed: blocks, build_block, set_shared_variants
    variants: dict[int, dict[str, torch.Tensor]] = {}
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    shared: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith("blocks."):
            _, index, rest = k.split(".", 2)
            blocks.setdefault(int(index), {})[rest] = v
        elif k.startswith("shared_per_block."):
            _, index, rest = k.split(".", 2)
            variants.setdefault(int(index), {})[rest] = v
        else:
            shared[k] = v
    expected = {k for k in model.state_dict() if not k.startswith("blocks.")}
    if set(shared) != expected or sorted(blocks) != list(range(len(model.blocks))):
        raise CheckpointError(
            f"{path}/model.safetensors does not fit this model (shared keys differ by "
            f"{sorted(set(shared) ^ expected)[:5]}, blocks {sorted(blocks)})"
        )
    model.load_state_dict(shared, strict=False)
    for b, s in blocks.items():
        materialize(model, b, device_of(model), s)
    if variants:
        model.set_shared_variants(variants)
