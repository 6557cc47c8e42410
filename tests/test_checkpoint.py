"""Checkpoints: atomic layout, checksums, refusal of corrupt or foreign files."""

import json

import pytest
import torch
from helpers import same_state, snapshot, tiny_task

from diffusionblocks.training import Checkpoint, CheckpointError, Trainer, latest_checkpoint
from diffusionblocks.training.checkpoint import save_checkpoint
from diffusionblocks.training.trainer import load_model_weights


def _trained(tmp_path, **kw):
    task = tiny_task(**kw)
    trainer = Trainer(task, tmp_path, progress=False)
    trainer.fit()
    return task, trainer


def test_layout_has_one_file_per_block_and_checksums(tmp_path):
    task, trainer = _trained(tmp_path, num_blocks=2)
    path = latest_checkpoint(tmp_path / "checkpoints")
    names = {p.name for p in path.iterdir()}
    assert {
        "shared.safetensors",
        "block-0.safetensors",
        "block-1.safetensors",
        "meta.json",
        "trainer.pt",
    } <= names
    meta = json.loads((path / "meta.json").read_text())
    assert set(meta["files"]) == names - {"meta.json"}
    Checkpoint(path).verify()
    assert not list((tmp_path / "checkpoints").glob(".step-*"))  # no temporary folder left


def test_round_trip_loads_identical_weights(tmp_path):
    task, _ = _trained(tmp_path)
    other = tiny_task()
    load_model_weights(other.model, Checkpoint(latest_checkpoint(tmp_path / "checkpoints")))
    assert same_state(snapshot(task.model), snapshot(other.model))


def test_corrupt_file_is_refused_with_its_name(tmp_path):
    _trained(tmp_path)
    path = latest_checkpoint(tmp_path / "checkpoints")
    target = path / "block-1.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="block-1.safetensors is corrupt"):
        load_model_weights(tiny_task().model, Checkpoint(path))


def test_missing_meta_and_bad_pointer(tmp_path):
    _trained(tmp_path)
    root = tmp_path / "checkpoints"
    path = latest_checkpoint(root)
    (root / "latest").write_text("step-99999999\n")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        latest_checkpoint(root)
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        Checkpoint(path)


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    _trained(tmp_path, num_blocks=2, depth=4)
    ckpt = Checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_model_weights(tiny_task(num_blocks=2, depth=4, hidden=16).model, ckpt)


def test_resume_refuses_a_different_config(tmp_path):
    _trained(tmp_path)
    trainer = Trainer(tiny_task(lr=0.5), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        trainer.resume()


def test_keep_prunes_old_checkpoints(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, {"w": {"a": torch.ones(2) * step}}, {}, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000003", "step-00000004"]
    assert Checkpoint(latest_checkpoint(tmp_path)).tensors("w")["a"][0] == 4


def test_assemble_replaces_a_model_atomically(tmp_path, monkeypatch):
    """The old model folder stays whole until the new one is in place: a failure of the final
    rename leaves the old model intact (it used to be deleted first)."""
    import os

    from helpers import tiny_config

    from diffusionblocks import assemble as assemble_module
    from diffusionblocks.runs import prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(tiny_config(), run, resume=False)
    Trainer(tiny_task(), run, progress=False).fit()
    model = assemble_module.assemble(run)
    before = (model / "model.safetensors").read_bytes()
    real = os.replace

    def failing(src, dst):
        if str(src).startswith(str(model.parent / ".model.")) and "old" not in str(src):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(assemble_module.os, "replace", failing)
    with pytest.raises(OSError):
        assemble_module.assemble(run)
    assert (model / "model.safetensors").read_bytes() == before
    assert [p.name for p in model.parent.iterdir() if p.name.startswith(".model")] == []
    monkeypatch.setattr(assemble_module.os, "replace", real)
    assert assemble_module.assemble(run) == model and (model / "config.json").exists()


def test_rss_reading_warns_when_it_falls_back_to_the_peak(tmp_path):
    from diffusionblocks.training.metrics import current_rss_bytes, peak_rss_bytes

    with pytest.warns(RuntimeWarning, match="under-count"):
        value = current_rss_bytes(str(tmp_path / "no-statm"))
    assert value >= peak_rss_bytes() // 2
