"""Reliability: kills, signals, numerical faults, disk errors, config changes on resume."""

import errno
import json
import math
import random
import signal
import time

import pytest
import torch
from faults import TRAIN, dblocks, final_weights, kill_and_resume
from helpers import tiny_config

from diffusionblocks.cli import main
from diffusionblocks.registry import make_task
from diffusionblocks.training import Checkpoint, CheckpointError, Trainer, latest_checkpoint
from diffusionblocks.training.trainer import NumericalFault


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = dblocks("train", *TRAIN, "--out", str(run))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return final_weights(run)


# One random kill in the default run (plus the kill inside a checkpoint write below); more with
# `pytest -m slow` and, at scale, scripts/experiments/fault_campaign.py.
@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_sigkill_at_a_random_moment_then_the_run_completes_bit_exact(tmp_path, reference, seed):
    """Wherever the kill lands (before the first checkpoint: the command is run again; later:
    --resume), the finished run equals an uninterrupted one. Resuming from a mid-training
    checkpoint specifically: the next test."""
    record = kill_and_resume(tmp_path / "run", reference, random.Random(seed))
    assert record["ok"], record


def test_sigkill_mid_training_then_resume_from_that_checkpoint_is_bit_exact(tmp_path, reference):
    """Killed right after the first checkpoint: the resume really starts mid-training."""
    record = kill_and_resume(tmp_path / "run", reference, None)
    assert record["phase"] == "mid-training" and record["resumed_from"], record
    assert record["ok"], record


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, reference):
    run = tmp_path / "run"
    proc = dblocks("train", *TRAIN, "--set", "checkpoint_every=0", "--out", str(run))
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    # no skip: a run that finished before the signal arrived is a failure of this test's setup
    assert proc.returncode == 128 + signal.SIGTERM, f"exit {proc.returncode}: {err[-2000:]}"
    assert "SIGTERM at step" in err and "--resume" in err
    assert latest_checkpoint(run / "checkpoints") is not None
    resumed = dblocks("train", "--out", str(run), "--resume", "--no-progress")
    assert resumed.wait(timeout=600) == 0
    assert final_weights(run) == reference


def _nan_at(task, bad_steps):
    original = task.loss
    calls = {"n": 0}

    def loss(unit, batch, gen):
        value, logs = original(unit, batch, gen)
        calls["n"] += 1
        if calls["n"] in bad_steps:
            value = value * math.nan
        return value, logs

    task.loss = loss


def test_nan_step_is_skipped_and_reported(tmp_path):
    task = make_task(tiny_config(nan_policy="skip"))
    _nan_at(task, {5})
    trainer = Trainer(task, tmp_path, progress=False)
    out = trainer.fit()
    assert out["accounting"]["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    faults = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "fault" in l]  # fmt: skip
    assert len(faults) == 1 and "non-finite loss at step 4 on block" in faults[0]["fault"]
    assert "noise interval" in faults[0]["fault"]


def test_nan_abort_names_block_sigma_step_and_keeps_last_good_checkpoint(tmp_path):
    task = make_task(tiny_config(nan_policy="abort", checkpoint_every=4))
    _nan_at(task, {10})
    trainer = Trainer(task, tmp_path, progress=False)
    with pytest.raises(NumericalFault, match=r"non-finite loss at step 9 on block \d"):
        trainer.fit()
    ckpt = Checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ckpt.step == 8
    assert all(torch.isfinite(t).all() for t in ckpt.tensors("block-0").values())


def test_too_many_skips_abort(tmp_path):
    task = make_task(tiny_config(nan_policy="skip", nan_max_skips=2))
    _nan_at(task, {2, 3, 4})
    with pytest.raises(NumericalFault, match="more than nan_max_skips=2"):
        Trainer(task, tmp_path, progress=False).fit()


def test_never_writes_a_checkpoint_with_non_finite_weights(tmp_path):
    task = make_task(tiny_config())
    trainer = Trainer(task, tmp_path, progress=False)
    with torch.no_grad():
        next(task.model.blocks[0].parameters())[0] = math.inf
    with pytest.raises(NumericalFault, match="non-finite weights"):
        trainer.save()
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_disk_full_during_a_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch):
    from diffusionblocks.training import checkpoint

    task = make_task(tiny_config())
    trainer = Trainer(task, tmp_path, progress=False)
    trainer.fit(stop_at=3)
    first = trainer.save()

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_synced", full)
    with pytest.raises(CheckpointError, match="No space left on device.*is intact"):
        trainer.fit(stop_at=6)  # fit saves when it stops
    assert latest_checkpoint(tmp_path / "checkpoints") == first
    assert not list((tmp_path / "checkpoints").glob(".step-*"))


def test_not_enough_disk_space_fails_before_training(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 1024))
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    assert "not enough free disk space" in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "file" / "run")]) == 2
    assert "cannot write to the run folder" in capsys.readouterr().err


def test_foreign_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TRAIN[:2], "--set", "device=cpu", "--out", str(run),
                 "--no-progress"]) == 0  # fmt: skip
    other = tmp_path / "other"
    assert main(["train", "--preset", "tiny", "--set", "method=e2e", "--set", "device=cpu",
                 "--out", str(other), "--no-progress"]) == 0  # fmt: skip
    # put the e2e run's checkpoint in place of the dblocks run's
    import shutil

    shutil.rmtree(run / "checkpoints")
    shutil.copytree(other / "checkpoints", run / "checkpoints")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/step-00000020 is a checkpoint of task 'classification' with 1 units" in err
    assert "this run is 'classification' with 2" in err


def test_resume_with_changed_config(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--preset", "tiny", "--set", "device=cpu", "--out", run,
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    base = ["train", "--preset", "tiny", "--set", "device=cpu", "--out", run, "--resume"]
    assert main([*base, "--set", "lr=0.1"]) == 2
    assert "lr cannot change in a resumed run" in capsys.readouterr().err
    # epochs sets every block's learning-rate schedule: a resumed run with another value would
    # equal no fresh run, so it is refused like any training key.
    assert main([*base, "--set", "epochs=2"]) == 2
    assert "epochs cannot change in a resumed run" in capsys.readouterr().err
    assert main([*base, "--set", "log_every=7"]) == 2
    assert "--allow-safe-changes" in capsys.readouterr().err
    assert main([*base, "--set", "log_every=7", "--allow-safe-changes", "--no-progress"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["accounting"]["steps"] == 40 and results["config"]["log_every"] == 7
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["changes"][0]["changed"].startswith("log_every")


KILL_IN_WRITE = """
import sys, time
from pathlib import Path
import diffusionblocks.training.checkpoint as ck
marker, target = Path(sys.argv[1]), sys.argv[2]
original = ck._write_synced

def slow(path, data):
    original(path, data)
    if Path(path).parent.name.startswith(target):  # inside the temporary folder of that save
        marker.write_text(str(path))
        time.sleep(120)

ck._write_synced = slow
from diffusionblocks.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path, reference):
    """Stop the second checkpoint's save after its first file, SIGKILL there: the previous
    checkpoint stays the latest and verifies, resume is bit-exact and cleans the half-save."""
    import subprocess
    import sys

    from faults import SRC, check_complete

    run, marker = tmp_path / "run", tmp_path / "marker"
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_IN_WRITE, str(marker), ".step-00000006",
         "train", *TRAIN, "--out", str(run)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".step-00000006")]
    assert half, "the kill did not land inside the save"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    assert check_complete(run) == []
    resumed = dblocks("train", "--out", str(run), "--resume", "--no-progress")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert final_weights(run) == reference
    assert not [p for p in run.rglob(".*")], "temporary files left after the resume"
