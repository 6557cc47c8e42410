"""Run folders written by an earlier version (tests/fixtures/run-8fb84a3: `tiny`, hidden 16, depth
2, interrupted at step 12 of 40 by the code at commit 8fb84a3, before the config gained keys and
the checkpoint hash left out the data path) still evaluate and resume, and the resumed run ends
where an uninterrupted run of today's code ends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from diffusionblocks.cli import main
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.runs import load_run
from diffusionblocks.training import Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "run-8fb84a3"


def test_an_old_run_folder_evaluates_and_resumes_to_the_same_weights(tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    assert main(["eval", "--run", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["checkpoint_step"] == 12
    assert evaluated["readout"] == "chain"  # saved before readout existed: predicts as it did
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "resumed" in capsys.readouterr().out
    resumed, ckpt = load_run(run)
    assert ckpt.step == 40
    saved = json.loads((FIXTURE / "config.json").read_text())["config"]
    keys = ("epochs", "hidden", "heads", "depth", "log_every", "device")
    fresh = make_task(make_config("tiny", {k: saved[k] for k in keys}))
    trainer = Trainer(fresh, None, progress=False)
    # Bitwise where this machine computes the fixture's first 12 steps bitwise (its float
    # kernels are those of the machine that wrote it); elsewhere the last bits differ from the
    # first step on (measured on an AVX-512 machine: 4.4e-7 at most at step 12, the same at 40),
    # and the resumed run must end within a tolerance well above that.
    trainer.fit(stop_at=12)
    old = load_run(FIXTURE)[0].model.state_dict()
    same_start = all(torch.equal(a, old[k]) for k, a in fresh.model.state_dict().items())
    trainer.fit()
    for (k, a), b in zip(fresh.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):  # fmt: skip
        if same_start:
            assert torch.equal(a, b), k
        else:
            assert torch.allclose(a, b, rtol=0, atol=1e-5), (k, float((a - b).abs().max()))
