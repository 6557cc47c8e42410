"""A new user's first hour with their own data (issue 14), played through the CLI and the
documented Python calls on small files made here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusionblocks as db
from diffusionblocks.cli import format_comparison, headline_metric, main
from diffusionblocks.config import ConfigError
from diffusionblocks.data import DataError
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer
from diffusionblocks.training.metrics import read_metrics


def quadrant_images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) uint8 images of 4 classes: a bright square in one quadrant, on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    h = size // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * h + 2 : r * h + h - 2, c * h + 2 : c * h + h - 2] = 230
    return x, y


@pytest.fixture(scope="module")
def user_npz(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    x, y = quadrant_images(2000)
    np.savez(folder / "my16x16.npz", x=x, y=y)
    return folder / "my16x16.npz"


@pytest.fixture(scope="module")
def images_run(user_npz, tmp_path_factory) -> Path:
    """`dblocks train --preset images --set data=my16x16.npz`, typed with a relative path."""
    out = tmp_path_factory.mktemp("runs") / "mine"
    cwd = os.getcwd()
    os.chdir(user_npz.parent)
    try:
        rc = main(["train", "--preset", "images", "--set", "data=my16x16.npz", "--set",
                   "epochs=4", "--out", str(out), "--no-progress"])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert rc == 0
    return out


def test_the_images_preset_learns_a_users_images(images_run):
    results = json.loads((images_run / "results.json").read_text())
    assert results["task"]["patch_size"] == 4  # sized to 16x16: a 4x4 grid of patches
    assert results["config"]["p_mean"] == 1.0 and results["config"]["weighting"] == "none"
    # 4 balanced classes: chance is 0.25; the task is easy, a working preset is far above it
    assert results["eval"]["accuracy"] > 0.9
    assert results["eval_val"]["accuracy"] > 0.9


def test_tiny_presets_say_they_are_smoke_tests(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny", "dit-tiny", "mdm-tiny", "ar-tiny", "recurrent-tiny"):
        line = next(li for li in out.splitlines() if li.split()[0] == name)
        assert "smoke test" in line and ("means nothing" in line or "mean nothing" in line)
    for name in ("images", "mdm-text", "ar-text", "recurrent-text"):
        line = next(li for li in out.splitlines() if li.split()[0] == name)
        assert "your own" in line


def test_presets_for_users_data_ask_for_it(capsys):
    for preset in ("images", "ar-text", "mdm-text", "recurrent-text"):
        assert main(["train", "--preset", preset, "--dry-run"]) == 2
        assert "missing value for 'data'" in capsys.readouterr().err


def test_too_few_steps_per_block_are_flagged(user_npz, tmp_path, capsys):
    # 2000 images: 200 test, 180 validation, 1620 training = 25 batches of 64 per epoch
    argv = ["train", "--preset", "images", "--set", f"data={user_npz}", "--set", "epochs=1"]
    assert main([*argv, "--dry-run"]) == 0
    assert "warning: only 25 optimizer steps per block" in capsys.readouterr().out
    assert main([*argv, "--set", "depth=3", "--set", "hidden=16", "--set", "heads=2",
                 "--out", str(tmp_path / "short"), "--no-progress"]) == 0  # fmt: skip
    assert "warning: only 25 optimizer steps per block" in capsys.readouterr().out
    results = json.loads((tmp_path / "short" / "results.json").read_text())
    assert any("at chance or unstable" in w for w in results["warnings"])


def test_training_logs_a_heldout_curve_and_names_its_numbers(images_run):
    records = read_metrics(images_run / "metrics.jsonl")
    steps = [r for r in records if "block" in r]
    for b in range(3):
        curve = [r[f"val_ce_block_{b}"] for r in steps if f"val_ce_block_{b}" in r]
        assert len(curve) >= 2 and curve[-1] < curve[0]  # the held-out loss falls
    assert all("acc" not in r for r in steps)  # the noisy-label accuracy is named as such
    assert any("noisy_label_acc" in r for r in steps)
    final = records[-1]
    assert "val_accuracy" in final and "test_accuracy" in final
    legend = json.loads((images_run / "results.json").read_text())["metrics_legend"]
    for key in ("epoch", "val_<key>_block_<b>", "noisy_label_acc", "ce_block_<b>"):
        assert key in legend
    assert "NOT a classification accuracy" in legend["noisy_label_acc"]


def test_classify_from_python_takes_uint8_floats_and_channels_last(images_run, user_npz):
    model = db.load(images_run)
    with np.load(user_npz) as npz:
        x, y = npz["x"][:300], npz["y"][:300]
    labels = model.classify(x)  # uint8 (N, H, W)
    assert float((labels.numpy() == y).mean()) > 0.9
    assert torch.equal(model.classify(x.astype(np.float32) / 255), labels)  # floats in [0, 1]
    assert torch.equal(model.classify(x[..., None]), labels)  # channels-last (N, H, W, 1)
    assert torch.equal(model.classify(torch.from_numpy(x)[:, None]), labels)  # (N, C, H, W)
    assert torch.equal(model.classify(x.astype(np.int64)), labels)  # other integer pixels
    assert model.classify(x[0]).shape == (1,)  # one image
    probs = model.probabilities(x[:5])
    assert probs.shape == (5, 4) and torch.allclose(probs.sum(-1), torch.ones(5))
    with pytest.raises(ConfigError, match="readout=ensemble"):  # steps belong to the chain
        model.probabilities(x[:5], steps=2)
    chain = db.load(images_run, readout="chain")
    assert chain.probabilities(x[:5], steps=2).shape == (5, 4)
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        model.classify(x.astype(np.float32))  # 0..255 floats: the old silent wrong answer
    with pytest.raises(DataError, match="do not fit this model's 1x16x16 images"):
        model.classify(np.zeros((2, 8, 8), np.uint8))


def test_python_and_cli_evaluation_agree(images_run, capsys):
    model = db.load(images_run)
    py = model.evaluate(split="test")
    assert main(["eval", "--run", str(images_run), "--split", "test", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert py["accuracy"] == cli["accuracy"] and py["steps_sweep"] == cli["steps_sweep"]


def test_a_run_survives_moving_its_data(images_run, user_npz, tmp_path, capsys):
    config = json.loads((images_run / "config.json").read_text())
    assert config["config"]["data"] == str(user_npz.resolve())  # typed relative, stored absolute
    assert config["data_sha256"]
    before = db.load(images_run).evaluate(split="test")["accuracy"]
    moved = tmp_path / "elsewhere.npz"
    shutil.move(user_npz, moved)
    try:
        assert main(["eval", "--run", str(images_run)]) == 2
        err = capsys.readouterr().err
        assert "does not exist" in err and "--set data=PATH" in err
        assert main(["eval", "--run", str(images_run), "--split", "test", "--json", "--set",
                     f"data={moved}"]) == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["accuracy"] == before
        other = tmp_path / "other.npz"
        x, y = quadrant_images(100, seed=5)
        np.savez(other, x=x, y=y)
        assert main(["eval", "--run", str(images_run), "--set", f"data={other}"]) == 2
        assert "not the file this run was trained on" in capsys.readouterr().err
        assert db.load(images_run, data=moved).evaluate(split="test")["accuracy"] == before
        shutil.copy(other, user_npz)  # another file where the run's data was
        assert main(["eval", "--run", str(images_run)]) == 2
        assert "has changed since this run was trained on it" in capsys.readouterr().err
    finally:
        shutil.move(moved, user_npz)


def test_resume_takes_the_runs_saved_config(images_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(images_run, run)  # the module's run stays as it was for the other tests
    argv = ["train", "--out", str(run), "--resume"]
    assert main([*argv, "--set", "log_every=7"]) == 2  # a change needs the flag
    assert "--allow-safe-changes" in capsys.readouterr().err
    assert main([*argv, "--set", "epochs=40", "--allow-safe-changes"]) == 2
    err = capsys.readouterr().err
    assert "'epochs' sets each block's learning-rate schedule" in err
    assert main([*argv, "--set", "log_every=7", "--allow-safe-changes", "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["log_every"] == 7 and saved["config"]["patch_size"] == 0


def test_suspicious_labels_are_refused_or_flagged(tmp_path, capsys):
    x, y = quadrant_images(200)
    sparse = y.copy()
    sparse[sparse == 3] = 1000
    np.savez(tmp_path / "sparse.npz", x=x, y=sparse)
    base = ["train", "--preset", "tiny", "--set", "patch_size=4", "--dry-run"]
    assert main([*base, "--set", f"data={tmp_path / 'sparse.npz'}"]) == 2
    assert "sparse_labels" in capsys.readouterr().err
    assert main([*base, "--set", f"data={tmp_path / 'sparse.npz'}", "--set",
                 "sparse_labels=true"]) == 0  # fmt: skip
    capsys.readouterr()
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros_like(y))
    assert main([*base, "--set", f"data={tmp_path / 'one.npz'}"]) == 2
    assert "at least two classes" in capsys.readouterr().err
    x_test, y_test = quadrant_images(40, seed=3)
    train = y != 2
    np.savez(tmp_path / "unseen.npz", x=x[train], y=y[train], x_test=x_test, y_test=y_test)
    assert main([*base, "--set", f"data={tmp_path / 'unseen.npz'}"]) == 0
    err = capsys.readouterr().err  # one plain line, not Python's warning with a source line
    assert "dblocks train: warning: " in err and "test labels 2 have no training example" in err
    assert "load_npz(" not in err


def test_a_python_trainer_writes_a_run_folder(tmp_path, capsys):
    config = make_config("tiny", {"epochs": 0.2})
    task = make_task(config)
    trainer = Trainer(task, run_dir=tmp_path / "api", progress=False)
    trainer.fit()
    trainer.prepare_evaluation()
    python = task.evaluate(split="test")["accuracy"]
    assert main(["eval", "--run", str(tmp_path / "api"), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == python
    assert db.load(tmp_path / "api").evaluate(split="test")["accuracy"] == python


def test_dit_on_users_images_skips_the_fashion_mnist_fid(tmp_path, capsys):
    x, y = quadrant_images(256)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    assert main(["train", "--preset", "dit-tiny", "--set", f"data={tmp_path / 'mine.npz'}",
                 "--set", "patch_size=4", "--out", str(tmp_path / "dit"),
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "note: no Frechet distance" in out
    results = json.loads((tmp_path / "dit" / "results.json").read_text())
    assert "fid_skipped" in results["eval"] and "fid" not in results["eval"]
    model = db.load(tmp_path / "dit")
    images = model.generate(labels=[0, 3], steps=2)
    assert images.shape == (2, 1, 16, 16) and images.min() >= 0 and images.max() <= 1


def test_compare_never_puts_a_chain_ce_beside_a_likelihood():
    e2e = {"heldout_ce": 2.0, "ce_is_likelihood": True}
    blocks = {"heldout_ce": 1.5, "ce_is_likelihood": False, "sigma_max_call": {"heldout_ce": 2.4}}
    rows = []
    for method, ev in (("e2e", e2e), ("dblocks", blocks)):
        rows.append({"method": method, "num_blocks": 1, **headline_metric(ev), "steps": 1,
                     "layer_evaluations": 1, "median_step_ms": 1.0, "train_seconds": 1.0,
                     "train_peak_mib": 1.0})  # fmt: skip
    assert [r["value"] for r in rows] == [2.0, 2.4]  # both likelihoods
    assert all(r["metric"] == "held-out CE (likelihood)" for r in rows)
    table = format_comparison(rows)
    assert "chain's final-step CE (not a likelihood)" in table and "| 1.5000 |" in table


def test_text_presets_take_a_users_text_and_sample_from_python(tmp_path, capsys):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400))
    corpus = tmp_path / "my_corpus.txt"
    corpus.write_text(text)
    for preset in ("ar-text", "mdm-text", "recurrent-text"):
        assert main(["train", "--preset", preset, "--set", f"data={corpus}", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "# checked: data and model build (dataset my_corpus" in out, preset
    model = db.train("ar-tiny", out=tmp_path / "lm", progress=False, data=str(corpus))
    sample = model.sample_text(20, temperature=0)  # no prompt: starts after a newline
    assert len(sample) == 20 and set(sample) <= set(text)
    assert model.sample_text(5, prompt="line") != ""
    with pytest.raises(ConfigError, match="needs a classification run"):
        model.classify(np.zeros((1, 8, 8), np.uint8))


def test_resume_follows_moved_data_and_refuses_changed_data(tmp_path, capsys):
    x, y = quadrant_images(300)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    run = tmp_path / "run"
    base = ["--set", "patch_size=4", "--set", "epochs=2", "--set", "checkpoint_every=5"]
    assert main(["train", "--preset", "tiny", "--set", f"data={tmp_path / 'a.npz'}", *base,
                 "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    (tmp_path / "a.npz").rename(tmp_path / "b.npz")
    resume = ["train", "--out", str(run), "--resume", "--no-progress"]
    assert main(resume) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*resume, "--set", f"data={tmp_path / 'b.npz'}", "--allow-safe-changes"]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["data"] == str(
        tmp_path / "b.npz"
    )
    np.savez(tmp_path / "b.npz", x=x[::-1], y=y[::-1])  # other bytes at the same path
    assert main(resume) == 2
    assert "has changed since this run was trained on it" in capsys.readouterr().err


def test_the_heldout_curve_covers_every_block_and_leaves_training_unchanged(tmp_path):
    def train(log_every: int):
        task = make_task(make_config("tiny", {"log_every": log_every, "epochs": 2}))
        trainer = Trainer(task, run_dir=tmp_path / f"log{log_every}", progress=False)
        trainer.fit()
        return task, read_metrics(tmp_path / f"log{log_every}" / "metrics.jsonl")

    dense, records = train(5)
    sparse, _ = train(1000)
    for a, b in zip(dense.model.state_dict().values(), sparse.model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)  # the held-out passes draw nothing from training's generators
    steps = [r for r in records if "block" in r]
    assert len(steps) >= 4
    for r in steps:  # random order, 2 blocks: both trained within 5 steps of every record
        assert "val_ce_block_0" in r and "val_ce_block_1" in r


@pytest.mark.parametrize(
    "preset, method",
    [("tiny", "dblocks"), ("tiny", "e2e"), ("ar-tiny", "dblocks"), ("ar-tiny", "e2e"),
     ("mdm-tiny", "dblocks"), ("recurrent-tiny", "bptt"), ("recurrent-tiny", "dblocks"),
     ("dit-tiny", "dblocks")],
)  # fmt: skip
def test_every_logged_key_is_in_the_legend(preset, method, tmp_path):
    from diffusionblocks.runs import legend_entry, metrics_legend

    task = make_task(make_config(preset, {"method": method, "log_every": 1, "epochs": 0.3}))
    Trainer(task, run_dir=tmp_path, progress=False).fit()
    legend = metrics_legend(task)
    keys = {k for r in read_metrics(tmp_path / "metrics.jsonl") for k in r}
    assert keys and not [k for k in keys if legend_entry(legend, k) is None]


@pytest.mark.parametrize("readout", ["refine", pytest.param("chain", marks=pytest.mark.slow)])
def test_compare_on_recurrent_depth_keeps_likelihoods_apart(tmp_path, capsys, readout):
    """The default readout (refine, no draw) is a likelihood and the headline; the paper's
    chain is not: it gets its own column and no headline."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"{i} to be or not to be, that is it.\n" for i in range(300)))
    out = tmp_path / "cmp"
    assert main(["compare", "--preset", "recurrent-tiny", "--set", f"data={corpus}", "--set",
                 f"readout={readout}", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    bptt, blocks = rows
    assert bptt["method"] == "bptt" and bptt["value"] == bptt["heldout_ce"] > 0
    assert "chain_ce_not_likelihood" not in bptt
    printed = capsys.readouterr().out
    if readout == "refine":
        assert blocks["value"] == blocks["heldout_ce"] > 0
        assert "chain_ce_not_likelihood" not in blocks
    else:
        assert blocks["chain_ce_not_likelihood"] > 0
        assert blocks["value"] != blocks["value"]  # NaN: this task has no one-call likelihood
        assert "chain's final-step CE (not a likelihood)" in printed


def test_text_sampling_defaults_to_one_context_and_goes_past_it(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"{i} the quick brown fox.\n" for i in range(300)))
    assert main(["train", "--preset", "ar-tiny", "--set", f"data={corpus}", "--out",
                 str(tmp_path / "lm"), "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sample", "--run", str(tmp_path / "lm"), "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out) == 33  # seq_len 32: 32 generated, then the newline
    assert main(["sample", "--run", str(tmp_path / "lm"), "--length", "40"]) == 0
    assert len(capsys.readouterr().out) == 41  # past the context: the window rolls
    model = db.load(tmp_path / "lm")
    assert len(model.sample_text(temperature=0)) == 32
    assert len(model.sample_text(prompt="12 the")) == 32
    assert len(model.sample_text(prompt="12 the", length=50)) == 50


def test_images_of_odd_sizes_and_dtypes(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 255, (60, 46, 46), dtype=np.uint8)
    np.savez(tmp_path / "p46.npz", x=x, y=np.arange(60) % 3)
    assert main(["train", "--preset", "images", "--set", f"data={tmp_path / 'p46.npz'}",
                 "--dry-run"]) == 2  # fmt: skip
    assert "gives 23x23 = 529 tokens" in capsys.readouterr().err
    from diffusionblocks.api import as_images

    pixels = np.full((2, 12, 12), 7, np.uint16)
    assert torch.equal(as_images(pixels, (1, 12, 12)), torch.full((2, 1, 12, 12), 7 / 255))
    with pytest.raises(DataError, match=r"0\.\.255 \(found 0\.\.300\)"):
        as_images(np.array([[[0, 300]]], np.uint16).repeat(2, 1), (1, 2, 2))


def test_shared_init_reads_run_and_model_folders_without_the_runs_layer(tmp_path):
    """shared_init from a single-process run folder and from its assembled model folder: the
    trainer reads the files itself (training never imports runs.py) and gets the same tensors."""
    from diffusionblocks.assemble import assemble
    from diffusionblocks.training.weights import shared_state_of

    config = make_config("tiny", {"epochs": 0.2})
    task = make_task(config)
    Trainer(task, run_dir=tmp_path / "src", progress=False).fit()
    want = {k: v for k, v in task.model.state_dict().items() if not k.startswith("blocks.")}
    model_dir = assemble(tmp_path / "src", tmp_path / "assembled")
    for folder in (tmp_path / "src", model_dir):
        got = shared_state_of(folder)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
        other = make_task(make_config("tiny", {"seed": 5, "shared": "frozen",
                                               "shared_init": str(folder)}))  # fmt: skip
        Trainer(other, run_dir=None, progress=False)
        for k, v in want.items():
            assert torch.equal(other.model.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="holds no checkpoint and no model folder"):
        shared_state_of(tmp_path)


def test_a_judge_is_loaded_above_the_task(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"{i} the quick brown fox.\n" for i in range(300)))
    judge = db.train("ar-tiny", out=tmp_path / "judge", progress=False, data=str(corpus),
                     method="e2e")  # fmt: skip
    model = db.train("ar-tiny", out=tmp_path / "lm", progress=False, data=str(corpus),
                     judge=str(tmp_path / "judge"))  # fmt: skip
    assert model.results["eval"]["judge_perplexity"] > 1  # the runs layer loaded the judge
    assert model.evaluate(judge=str(tmp_path / "judge"))["judge_perplexity"] > 1
    scored = model.task.evaluate(judge=judge.task)  # a loaded judge, directly on the task
    assert scored["judge_perplexity"] > 1 and scored["judge"] == str(tmp_path / "judge")
    with pytest.raises(ConfigError, match="pass the loaded run"):
        model.task.evaluate(judge=str(tmp_path / "judge"))
    assert "judge_skipped" in model.task.evaluate()  # the config's path is not read down here


def test_steps_on_an_end_to_end_classifier_is_refused_for_what_it_is(tmp_path):
    """An e2e model has no chain: the refusal says so, not the DiffusionBlocks readout."""
    model = db.train("tiny", out=tmp_path / "e2e", progress=False, method="e2e", epochs=0.2)
    x = np.zeros((2, 8, 8), np.uint8)
    assert model.probabilities(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="steps applies to DiffusionBlocks runs"):
        model.probabilities(x, steps=2)
