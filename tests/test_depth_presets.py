"""The presets built to show depth (docs/protocol.md, section 2): the image one trains and
evaluates (on a small sample of its data), and the published depth check backs the gap their
descriptions state (full depth ahead of depth L/B clearly: at
least 3 accuracy points, or 0.1 bits per character, on val, beyond seed noise over 3 seeds)."""

import json
import math
import re
from pathlib import Path

import pytest

import diffusionblocks.data.images as images
from diffusionblocks.cli import main
from diffusionblocks.registry import PRESETS, make_config

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {  # preset -> (published comparison, the clear gap in the metric's own unit)
    "vit-mnist1d": ("docs/results/classification/depth-check/vit-mnist1d", 0.03),
    "ar-shakespeare-small": (
        "docs/results/autoregressive/depth-check/ar-shakespeare-small",
        0.1 * math.log(2),
    ),  # 0.1 bits per character, as nats  # fmt: skip
}


@pytest.mark.parametrize("preset", sorted(CHECKS))
def test_published_depth_check_backs_the_preset(preset):
    folder, clear = CHECKS[preset]
    saved = json.loads((ROOT / folder / "comparison.json").read_text())
    assert saved["preset"] == preset and saved["protocol"]["seeds"] >= 3
    check = saved["depth_check"]
    assert check["split"] == "val" and check["beyond_noise"] is True
    assert check["gap"] >= clear
    full, shallow = (next(r for r in saved["rows"] if r["method"] == m)
                     for m in ("e2e", "e2e-shallow"))  # fmt: skip
    assert shallow["depth"] * make_config(preset).num_blocks == full["depth"]  # depth L/B
    sign = 1 if full["higher_is_better"] else -1
    assert math.isclose(check["gap"], sign * (full["val_mean"] - shallow["val_mean"]))
    assert check["gap"] > full["val_sd"] + shallow["val_sd"]  # beyond seed noise, recomputed
    # the description's number is the published one
    text = PRESETS[preset][2]
    stated = float(re.search(r"by ([0-9.]+) (points|bits)", text).group(1))
    shown = check["gap"] * 100 if "points" in text else check["gap"] / math.log(2)
    assert abs(stated - shown) < 0.05 if "points" in text else abs(stated - shown) < 0.005
    assert f"{Path(folder).parent}/" in text  # it names where the check is published


def test_mnist1d_preset_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(images, "MNIST1D_SAMPLES", 600)  # 480 train (48 val), 120 test
    run = tmp_path / "run"
    assert main(["train", "--preset", "vit-mnist1d", "--set", "epochs=0.5", "--set", "depth=3",
                 "--set", "log_every=1000", "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["data"] == "mnist1d"
    assert results["eval"]["split"] == "test" and results["eval_val"]["split"] == "val"
    assert results["eval"]["examples"] == 120 and results["eval_val"]["examples"] == 48
    assert 0.0 <= results["eval_val"]["accuracy"] <= 1.0
