"""Join a run's checkpoints into one model folder.

``assemble(run_dir, out)`` reads the run's latest weights as every reader does
(:func:`~.training.weights.run_weights`: a block-parallel run's blocks are checked to be present
exactly once, of the run's config, trained with one version of the shared modules); then it
writes ``out/model.safetensors`` (every tensor), ``out/config.json`` (and a subword run's
``tokenizer.json``) and a model card ``out/README.md``: the layout of a Hugging Face Hub model
folder. ``dblocks eval`` and
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
from typing import Any

from safetensors.torch import save_file

from . import __version__
from .data.tokens import TOKENIZER_FILE
from .registry import read_run_config
from .training.checkpoint import default_mode
from .training.runfolder import recorded_fingerprint
from .training.weights import AssembleError, run_weights

__all__ = ["AssembleError", "assemble"]


def assemble(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the assembled model of ``run_dir`` to ``out`` (default ``run_dir/model``)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    out = Path(out) if out is not None else run_dir / "model"
    check_out(run_dir, out)
    weights = run_weights(run_dir, config)
    if weights is None:
        raise AssembleError(f"{run_dir} has neither per-block checkpoints nor a checkpoint")
    state = weights.state_dict()
    card = {
        "data_sha256": recorded_fingerprint(run_dir),  # eval/sample check moved data against it
        "assembled_from": str(run_dir),
        "assembled": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **weights.info,
    }
    tmp = staging_folder(out)
    try:
        card = write_model_files(tmp, state, config, card)
        (tmp / "README.md").write_text(_model_card(card))
        if (run_dir / TOKENIZER_FILE).is_file():  # a subword run's tokenizer travels with it
            shutil.copyfile(run_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_model_files(
    folder: Path, state: dict[str, Any], config: Any, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write a model folder's ``model.safetensors`` (``state``'s tensors, readable as the umask
    allows) and ``config.json`` (the format, version, ``config`` and its hash, then ``extra``);
    returns what config.json holds. ``assemble`` and ``hub.py`` write model folders with it."""
    from .loading import MODEL_FORMAT

    card = {"format": MODEL_FORMAT, "version": __version__, "config": config.to_dict(),
            "config_hash": config.config_hash(), **extra}  # fmt: skip
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    os.chmod(folder / "model.safetensors", default_mode())  # safetensors writes it private
    (folder / "config.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def check_out(run_dir: Path, out: Path) -> None:
    """Refuse an output folder that is the run folder or holds it: replacing it would delete
    the run."""
    run, target = run_dir.resolve(), out.resolve()
    if target == run or target in run.parents:
        where = "the run folder" if target == run else "a folder above the run folder"
        raise AssembleError(f"invalid value for --out: {out} is {where} {run_dir}, which "
                            "writing the model there would replace; give a new folder")  # fmt: skip


def staging_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` (same file system) to write a model folder into."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp's folder is private (0o700)
    return tmp


def replace_folder(tmp: Path, out: Path) -> None:
    """Put the complete folder ``tmp`` at ``out`` atomically: the old ``out`` is renamed aside
    (one rename), ``tmp`` renamed into place (another); at every moment ``out`` is a complete
    folder or, between the two renames, absent with the old one intact beside it. Only then is
    the old one deleted."""
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
