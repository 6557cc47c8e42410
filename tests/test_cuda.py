"""What needs a CUDA GPU: training and evaluation of every task on the device, the bf16 and
compile paths, the CUDA memory cap and the CUDA memory probe. Marked ``cuda``: excluded from the
default run and run by ``scripts/device_check.sh`` (``pytest -m cuda``), where a machine without
CUDA fails them instead of skipping. ``FASHION_MNIST_DIR`` (set by the script) names the
Fashion-MNIST folder where it is not the Debian package's."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import tiny_config

from diffusionblocks.cli import main
from diffusionblocks.runs import train_run

pytestmark = pytest.mark.cuda


def test_cuda_is_there():
    assert torch.cuda.is_available(), "pytest -m cuda needs a CUDA GPU"


@pytest.mark.parametrize("preset", ["tiny", "dit-tiny", "mdm-tiny", "ar-tiny", "recurrent-tiny"])
def test_every_task_trains_and_evaluates_on_cuda(tmp_path, preset):
    out = tmp_path / "run"
    data = ["--set", f"data_dir={os.environ['FASHION_MNIST_DIR']}"] if (
        preset == "dit-tiny" and os.environ.get("FASHION_MNIST_DIR")) else []  # fmt: skip
    assert main(["train", "--preset", preset, "--set", "device=cuda", *data, "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["device"].startswith("cuda")
    assert results["environment"]["gpu"]
    assert results["memory"]["cuda_peak_bytes"] > 0  # the CUDA memory probe read the device
    assert main(["eval", "--run", str(out), "--json"]) == 0


def test_block_resident_training_on_cuda_holds_one_block(tmp_path):
    r = train_run(tiny_config(device="cuda", schedule="sequential"), tmp_path / "run",
                  progress=False, log=lambda s: 0)  # fmt: skip
    assert r["resolved"]["block_resident"] and 0 <= r["eval"]["accuracy"] <= 1
    full = train_run(tiny_config(device="cuda"), tmp_path / "full", progress=False,
                     log=lambda s: 0)  # fmt: skip
    # One block's weights and optimizer state at a time: less state than all of them.
    assert r["memory"]["peak_state_bytes"] < full["memory"]["peak_state_bytes"]


def test_bf16_on_cuda_trains_close_to_fp32(tmp_path):
    a = train_run(tiny_config(device="cuda", precision="bf16", epochs=3), tmp_path / "a",
                  progress=False, log=lambda s: 0)  # fmt: skip
    b = train_run(tiny_config(device="cuda", epochs=3), tmp_path / "b", progress=False,
                  log=lambda s: 0)  # fmt: skip
    assert abs(a["eval"]["accuracy"] - b["eval"]["accuracy"]) < 0.1


def test_compile_on_cuda_trains(tmp_path):
    r = train_run(tiny_config(device="cuda", compile=True), tmp_path / "run", progress=False,
                  log=lambda s: 0)  # fmt: skip
    assert 0 <= r["eval"]["accuracy"] <= 1


def test_bench_cap_on_cuda_uses_the_allocators_fraction(tmp_path):
    out_json = tmp_path / "cap.json"
    assert main(["bench", "cap", "--preset", "tiny", "--set", "device=cuda", "--cap", "2G",
                 "--out", str(tmp_path / "runs"), "--json", str(out_json)]) == 0  # fmt: skip
    data = json.loads(out_json.read_text())
    assert data["dblocks_status"] == "ok"
