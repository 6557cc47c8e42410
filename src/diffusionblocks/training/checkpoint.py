"""Checkpoints: one folder per save, written atomically.

Layout of ``checkpoints/step-00001234/``:

- ``shared.safetensors``: parameters outside the blocks (stem, embeddings, head);
- ``block-{b}.safetensors``: the parameters of block b (one file per block, so a block can be
  saved, loaded or shipped alone);
- ``optimizer-*.pt``, ``trainer.pt``: optimizer and trainer state (plain tensors and numbers,
  loaded with ``weights_only=True``);
- ``meta.json``: format version, config hash, step, and the sha256 of every file.

A save writes into a hidden temporary folder, fsyncs every file, renames the folder into place and
then atomically replaces the ``latest`` pointer, so a crash at any moment leaves either the old or
the new checkpoint, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT_VERSION = 1
LATEST = "latest"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to another run; the message names the file."""


# ---------------------------------------------------------------------- atomic files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux:
    /proc/self/status); elsewhere set and restored at once under a lock."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` (0o666) or ``mkdir()`` (0o777) gives a new file or folder under the
    current umask. ``tempfile`` creates private ones (0o600 / 0o700) instead."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename.
    The file gets the mode a plain ``open(path, "wb")`` would give it: that of the file it
    replaces, else 0o666 less the umask."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _chmod_fd(fd, tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _chmod_fd(fd: int, path: str, mode: int) -> None:
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # pragma: no cover - Windows
            os.chmod(path, mode)
    except OSError:  # a file system without modes: keep what it gave
        pass


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- encoding
def encode_tensors(state: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})


def encode_object(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------- save / load
def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    objects: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 2,
    links: dict[str, Path] | None = None,
) -> Path:
    """Save one checkpoint under ``root`` and point ``root/latest`` at it.

    ``tensors`` maps a file stem to a state dict (written as safetensors), ``objects`` a file stem
    to an object of tensors and numbers (written with ``torch.save``), ``links`` a file name
    (``block-0.safetensors``, ``optimizer-block-0.pt``) to an existing file that goes in as it is
    (hard-linked where possible, else copied; a block or optimizer state that lives on disk is
    never loaded to be saved). Older checkpoints beyond the ``keep`` most recent are removed.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's folder is private (0o700)
        files: dict[str, str] = {}
        for stem, state in tensors.items():
            data = encode_tensors(state)
            _write_synced(tmp / f"{stem}.safetensors", data)
            files[f"{stem}.safetensors"] = sha256_bytes(data)
        for filename, source in (links or {}).items():
            dest = tmp / filename
            try:
                os.link(source, dest)
            except OSError:
                shutil.copyfile(source, dest)
            files[dest.name] = sha256_file(dest)
        for stem, obj in objects.items():
            data = encode_object(obj)
            _write_synced(tmp / f"{stem}.pt", data)
            files[f"{stem}.pt"] = sha256_bytes(data)
        full_meta = {"format_version": FORMAT_VERSION, "step": step, **meta, "files": files}
        _write_synced(tmp / "meta.json", (json.dumps(full_meta, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        final = root / name
        if final.exists():  # a stale save of the same step (e.g. after a crash): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, name + "\n")
    _prune(root, keep, protect=name)
    return final


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _prune(root: Path, keep: int, protect: str) -> None:
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):  # temporary folders left by a killed save
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The folder ``root/latest`` points to, or None when there is no checkpoint."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = root / name
    if not name.startswith("step-") or not path.is_dir():
        raise CheckpointError(f"{pointer} points to {name!r}, which is not a checkpoint folder")
    return path


class Checkpoint:
    """A verified checkpoint folder: metadata read, every file's checksum checked on load."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{meta_path} is missing: not a checkpoint folder") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{meta_path} is corrupt: {err}") from None
        if not isinstance(self.meta, dict) or "files" not in self.meta:
            raise CheckpointError(f"{meta_path} has no file list: not a checkpoint of this tool")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{meta_path}: format version {self.meta.get('format_version')} is not "
                f"supported (expected {FORMAT_VERSION})"
            )

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def has(self, filename: str) -> bool:
        return filename in self.meta["files"]

    def _read(self, filename: str) -> bytes:
        if filename not in self.meta["files"]:
            raise CheckpointError(f"{self.path} has no {filename}")
        path = self.path / filename
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path} is missing") from None
        if sha256_bytes(data) != self.meta["files"][filename]:
            raise CheckpointError(f"{path} is corrupt (checksum mismatch)")
        return data

    def tensors(self, stem: str) -> dict[str, torch.Tensor]:
        data = self._read(f"{stem}.safetensors")
        try:
            return st_load(data)
        except Exception as err:
            raise CheckpointError(f"{self.path / stem}.safetensors is unreadable: {err}") from None

    def obj(self, stem: str) -> Any:
        data = self._read(f"{stem}.pt")
        try:
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as err:
            raise CheckpointError(f"{self.path / stem}.pt is unreadable: {err}") from None

    def export(self, stem: str, dest: str | os.PathLike) -> Path:
        """Place a verified copy (hard link where possible) of ``stem.safetensors`` (or of the
        file ``stem`` when it has a suffix) at ``dest``."""
        filename = stem if "." in stem else f"{stem}.safetensors"
        if filename not in self.meta["files"]:
            raise CheckpointError(f"{self.path} has no {filename}")
        src, dest = self.path / filename, Path(dest)
        if not src.is_file():
            raise CheckpointError(f"{src} is missing")
        if sha256_file(src) != self.meta["files"][filename]:
            raise CheckpointError(f"{src} is corrupt (checksum mismatch)")
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest

    def verify(self) -> None:
        """Check every file's checksum."""
        for filename in self.meta["files"]:
            self._read(filename)
