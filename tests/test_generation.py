"""Image generation: the DiT, the EDM loss, the block-routed sampler, FID, the sample command."""

import json

import pytest
import torch
from helpers import count_layer_calls, needs_fmnist, same_state, snapshot, synthetic_images

from diffusionblocks.cli import main
from diffusionblocks.diffusion import edm_loss_weight, edm_preconditioning
from diffusionblocks.fid import (
    EvaluatorFeatures,
    extract,
    feature_stats,
    frechet_distance,
)
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer


def dit_task(**overrides):
    return make_task(make_config("dit-tiny", {"device": "cpu", **overrides}), torch.device("cpu"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A synthetic 28x28 image set (no Fashion-MNIST needed): these tests never skip."""
    return synthetic_images(tmp_path_factory.mktemp("synth") / "images.npz")


def synth_task(synth, **overrides):
    return dit_task(data=synth, train_subset=0, test_subset=0, **overrides)


def test_frechet_distance_closed_form():
    # Two Gaussians with diagonal covariances: FID = |mu1-mu2|^2 + sum (s1 - s2)^2 (std devs).
    mu1, mu2 = (
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        torch.tensor([2.0, 1.0], dtype=torch.float64),
    )
    c1 = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    c2 = torch.diag(torch.tensor([1.0, 9.0], dtype=torch.float64))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(4 + (2 - 1) ** 2 + (1 - 3) ** 2)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


@needs_fmnist
class TestWithFashionMNIST:
    def test_fid_of_test_set_against_itself_and_noise(self):
        from diffusionblocks.data.images import load_fashion_mnist

        test = load_fashion_mnist().test_x
        ev = EvaluatorFeatures()
        half_a, half_b = test[:5000], test[5000:]
        stats = feature_stats(extract(ev, test))
        assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)
        between_halves = frechet_distance(
            *feature_stats(extract(ev, half_a)), *feature_stats(extract(ev, half_b))
        )
        noise = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        against_noise = frechet_distance(*feature_stats(extract(ev, noise)), *stats)
        # Measured 2026-11-26 with the shipped evaluator: halves 1.83, noise 901.
        assert between_halves < 5.0
        assert against_noise > 100 * between_halves

    def test_evaluator_card_states_its_accuracy(self):
        from diffusionblocks.fid import EVALUATOR_CARD

        card = json.loads(EVALUATOR_CARD.read_text())
        assert card["test_accuracy"] > 0.9 and "command" in card

    def test_train_sample_and_eval_fid_end_to_end(self, tmp_path, capsys):
        run = str(tmp_path / "run")
        assert main(["train", "--preset", "dit-tiny", "--out", run, "--no-progress"]) == 0
        results = json.loads((tmp_path / "run" / "results.json").read_text())
        assert results["eval"]["fid"] > 0 and sum(results["eval"]["class_counts"]) == 100
        png, npz = tmp_path / "s.png", tmp_path / "s.npz"
        assert main(["sample", "--run", run, "--n", "3", "--out", str(png), "--npz", str(npz)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import numpy as np

        with np.load(npz) as data:
            assert data["x"].shape == (30, 1, 28, 28) and data["x"].dtype == np.uint8
            assert data["y"].tolist() == [c for c in range(10) for _ in range(3)]
        capsys.readouterr()
        assert main(["eval", "--run", run, "--fid", "50", "--steps", "4", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["fid"] > 0 and out["samples"] == 50
        assert set(out["steps_sweep"]) == {"4", "6"}

    @pytest.mark.parametrize(
        "argv,message",
        [
            (["--class", "10"], "unknown class 10"),
            (["--steps", "0"], "--steps must be >= 1"),
            (["--n", "0"], "--n must be >= 1"),
            (["--cfg", "-1"], "--cfg must be in"),
        ],
    )
    def test_sample_bad_input(self, tmp_path, capsys, argv, message):
        run = str(tmp_path / "run")
        assert main(["train", "--preset", "dit-tiny", "--set", "fid_samples=0", "--out", run,
                     "--no-progress"]) == 0  # fmt: skip
        capsys.readouterr()
        code = main(["sample", "--run", run, "--out", str(tmp_path / "x.png"), *argv])
        assert code == 2 and message in capsys.readouterr().err


def test_sample_refuses_a_classification_run(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--preset", "tiny", "--out", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", "--run", run, "--out", str(tmp_path / "x.png")]) == 2
    assert "classification run" in capsys.readouterr().err
    assert main(["eval", "--run", run, "--fid", "10"]) == 2
    assert "apply to image generation" in capsys.readouterr().err


def test_png_writer_round_trip_header():
    from diffusionblocks.png import encode_png, image_grid

    grid = image_grid(torch.rand(6, 1, 5, 5), rows=2, pad=1, scale=1)
    assert grid.shape == (2 * 6 + 1, 3 * 6 + 1) and grid.dtype == torch.uint8
    data = encode_png(grid)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"


def test_evaluator_recipe_runs_and_cli_writes_weights_and_card(tmp_path, capsys):
    """The published recipe on a small synthetic IDX dataset (the real one takes minutes)."""
    from test_data import _fake_fashion

    from diffusionblocks.fid import load_evaluator

    data = _fake_fashion(tmp_path / "fm", n_train=300, n_test=50)
    out = tmp_path / "ev.safetensors"
    code = main(["evaluator", "--out", str(out), "--epochs", "1", "--data-dir", str(data)])
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert 0 <= card["test_accuracy"] <= 1 and card["recipe"]["epochs"] == 1
    assert card["command"].startswith("dblocks evaluator")
    model = load_evaluator(out)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert main(["evaluator", "--out", str(tmp_path / "x.pt")]) == 2


def test_missing_inception_extra_is_a_clear_error(monkeypatch):
    import importlib.util

    from diffusionblocks.fid import EvaluatorError, InceptionFeatures

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EvaluatorError, match=r"diffusionblocks\[inception\]"):
        InceptionFeatures()


def test_block_l2_loss_equals_the_inline_formula(synth):
    task = synth_task(synth)
    target, labels = task.train_batch(torch.arange(8))
    loss, _ = task.loss(1, (target, labels), torch.Generator().manual_seed(3))

    gen = torch.Generator().manual_seed(3)
    sigma = task.partition.sample_sigma(1, 8, gen)
    z = target + sigma[:, None, None, None] * torch.randn(target.shape, generator=gen)
    drop = torch.rand(8, generator=gen) < 0.1
    labels = torch.where(drop, torch.full_like(labels, 10), labels)
    s = sigma[:, None, None, None]
    c_skip, c_out, c_in, c_noise = edm_preconditioning(s, 0.5)
    out = task.model.run_block(1, c_in * z, c_noise.flatten(), labels)
    d = c_skip * z + c_out * out
    per_example = (d - target).square().flatten(1).mean(1)
    expect = (edm_loss_weight(sigma, 0.5) * per_example).mean()
    assert torch.allclose(loss, expect, rtol=1e-5)


def test_targets_have_std_sigma_data(synth):
    task = synth_task(synth)
    assert task.to_target(task.data.train_x).std().item() == pytest.approx(0.5, rel=0.02)
    x = task.data.train_x[:4]
    assert torch.allclose(task.to_pixels(task.to_target(x)), x, atol=1e-6)


def test_sampler_with_an_oracle_denoiser_gives_the_right_statistics(synth):
    """Replace the network by the exact denoiser of Gaussian targets N(0, s^2): the sampled
    targets must have std s, whatever the block routing and the CFG weight."""
    task = synth_task(synth)
    s = 0.5
    task.denoise = lambda unit, z, sigma, labels: (
        s**2 / (s**2 + sigma[:, None, None, None] ** 2) * z
    )
    task.to_pixels = lambda target: target  # look at the targets themselves
    images, info = task.generate(
        torch.zeros(2000, dtype=torch.long), torch.Generator().manual_seed(0), steps=300
    )
    assert images.std().item() == pytest.approx(s, rel=0.02)
    assert info["calls_per_unit"] == [150, 150]


def test_dblocks_sampling_costs_one_over_b_of_e2e(synth):
    labels = torch.arange(4)
    e2e = synth_task(synth, method="e2e", depth=4)
    db = synth_task(synth, num_blocks=4, depth=4)
    with count_layer_calls(e2e.model) as hooks_e2e:
        _, a = e2e.generate(labels, torch.Generator().manual_seed(0), steps=8)
    with count_layer_calls(db.model) as hooks_db:
        _, b = db.generate(labels, torch.Generator().manual_seed(0), steps=8)
    assert hooks_e2e.layers == 8 * 4  # 8 denoiser calls x 4 layers (cond + uncond in one batch)
    assert hooks_db.layers == 8 * 1  # each call runs one block of 1 layer
    assert a["layer_evals_per_image"] == 2 * hooks_e2e.layers  # per image: cond and uncond
    assert b["layer_evals_per_image"] == 2 * hooks_db.layers
    with count_layer_calls(db.model) as hooks:
        _, c = db.generate(labels, torch.Generator().manual_seed(0), steps=8, cfg_scale=1.0)
    assert c["layer_evals_per_image"] == hooks.layers == 8


def test_a_step_on_one_block_moves_nothing_else(synth):
    task = synth_task(synth, num_blocks=2)
    trainer = Trainer(task, None, progress=False)
    batch = task.train_batch(torch.arange(32))
    for u in (0, 1, 0, 1):
        trainer.train_step(u, batch)
    before = snapshot(task.model.blocks[0])
    trainer.train_step(1, batch)
    assert same_state(before, snapshot(task.model.blocks[0]))
