"""The baselines a user would pick instead of DiffusionBlocks, as methods of every task, and the
trivial baseline every task can report.

- ``e2e-shallow``: the task's end-to-end baseline at depth L/B, the training memory of one block
  (recurrent depth: truncated BPTT through one core application, the layers one DiffusionBlocks
  step backpropagates through);
- ``e2e-ckpt``: the full-depth baseline with activation checkpointing. Measured on this CPU
  (2026-11-28, one thread, tiny presets): the final weights equal the baseline's bitwise for
  classification, the language models and recurrent depth; image generation differs by at most
  1.5e-8 (first in the first layer's adaLN modulation, after the second step: floating-point
  order of the recomputed backward);
- ``Task.trivial_baseline``: the headline metric of the trivial predictor, checked against hand
  computations on data written here.
"""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import needs_fmnist

import diffusionblocks
from diffusionblocks.cli import main
from diffusionblocks.config import ConfigError
from diffusionblocks.networks.layers import AdaLNLayer, LayerGroup
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer

PRESETS = ["tiny", "dit-tiny", "ar-tiny", "mdm-tiny", "recurrent-tiny"]
TRANSFORMERS = ["tiny", "dit-tiny", "ar-tiny", "mdm-tiny"]  # depth L split into B blocks
VARIANTS = ["e2e-shallow", "e2e-ckpt"]
# Fewer FID samples keep image generation's evaluation short.
EXTRA = {"dit-tiny": {"fid_samples": 50}}

_trained: dict[tuple[str, str], object] = {}


def trained(preset: str, method: str):
    """The task of ``preset`` trained with ``method`` (once per module)."""
    if (preset, method) not in _trained:
        config = make_config(
            preset, {"method": method, "device": "cpu", "log_every": 1000, **EXTRA.get(preset, {})}
        )
        task = make_task(config, torch.device("cpu"))
        trainer = Trainer(task, None, progress=False)
        trainer.fit()
        trainer.prepare_evaluation()
        _trained[preset, method] = task
    return _trained[preset, method]


def baseline(preset: str) -> str:
    return make_config(preset).baseline_method


def layers(task) -> int:
    return sum(isinstance(m, AdaLNLayer) for m in task.model.modules())


def parameters(task) -> int:
    return sum(p.numel() for p in task.model.parameters())


# ---------------------------------------------------------------------- the methods
@pytest.mark.parametrize("method", VARIANTS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_task_trains_and_evaluates_the_variants(preset, method):
    task = trained(preset, method)
    assert task.config.method == method  # the name the user gave
    assert task.config.end_to_end and task.config.num_model_blocks == 1
    assert len(task.model.blocks) == 1
    # The baseline's task class, its loss and evaluation.
    assert type(task) is type(trained(preset, baseline(preset)))
    ev = task.evaluate()
    head = task.headline(ev)
    assert head is not None and math.isfinite(head["value"]), ev


@pytest.mark.parametrize("preset", TRANSFORMERS)
def test_shallow_builds_depth_over_blocks(preset):
    shallow, full = trained(preset, "e2e-shallow"), trained(preset, baseline(preset))
    c = shallow.config
    assert c.depth % c.num_blocks == 0 and c.num_blocks > 1
    assert layers(shallow) == c.depth // c.num_blocks == c.model_depth
    assert layers(full) == c.depth
    assert parameters(shallow) < parameters(full)
    assert c.resolved()["model_depth"] == c.depth // c.num_blocks
    # One DiffusionBlocks block has as many layers as the shallow network.
    blockwise = make_task(make_config(preset, {"device": "cpu"}), torch.device("cpu"))
    assert blockwise.layers_in_block(0) == layers(shallow)


def test_recurrent_shallow_is_bptt_through_one_core_application():
    shallow = trained("recurrent-tiny", "e2e-shallow")
    c = shallow.config
    assert c.truncation > 1 and c.bptt_truncation == 1
    assert c.resolved()["bptt_truncation"] == 1 and c.model_depth == c.depth
    assert parameters(shallow) == parameters(trained("recurrent-tiny", "bptt"))  # same network
    # Its backward pass runs through the layers of one DiffusionBlocks step: prelude + one core
    # application + coda, whatever number of iterations the step draws.
    blockwise = make_task(make_config("recurrent-tiny", {"device": "cpu"}), torch.device("cpu"))
    batch = shallow.train_batch(torch.arange(4))
    for seed in range(5):
        shallow.loss(0, batch, torch.Generator().manual_seed(seed))
        assert shallow.backward_layer_evals(0) == blockwise.layers_in_block(0) == c.depth
    # It is bptt with truncation 1, bitwise.
    config = make_config("recurrent-tiny", {"method": "bptt", "truncation": 1, "device": "cpu",
                                            "log_every": 1000})  # fmt: skip
    same = make_task(config, torch.device("cpu"))
    Trainer(same, None, progress=False).fit()
    a, b = same.model.state_dict(), shallow.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset", PRESETS)
def test_checkpointed_baseline_equals_the_baseline(preset):
    ckpt, plain = trained(preset, "e2e-ckpt"), trained(preset, baseline(preset))
    assert ckpt.config.activation_checkpointing and not plain.config.activation_checkpointing
    assert ckpt.config.resolved()["activation_checkpointing"] is True
    groups = [m for m in ckpt.model.modules() if isinstance(m, LayerGroup)]
    assert groups and all(g.checkpointing for g in groups)
    a, b = ckpt.model.state_dict(), plain.model.state_dict()
    assert a.keys() == b.keys()
    if preset == "dit-tiny":  # measured: at most 1.5e-8 apart (module docstring)
        assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    else:
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", VARIANTS)
@pytest.mark.parametrize(
    "preset, overrides, key",
    [
        ("tiny", {"schedule": "synchronous"}, "schedule"),
        ("tiny", {"resident": True}, "resident"),
        ("tiny", {"parallel": True}, "parallel"),
        ("tiny", {"blocks": "0"}, "blocks"),
        ("ar-tiny", {"schedule": "synchronous"}, "schedule"),
        ("mdm-tiny", {"resident": True}, "resident"),
        ("recurrent-tiny", {"resident": True}, "resident"),
    ],
)
def test_variants_refuse_what_the_baseline_refuses(method, preset, overrides, key):
    with pytest.raises(ConfigError, match=key):
        make_config(preset, {"method": method, **overrides})


@pytest.mark.parametrize("num_blocks", [3, 8])  # 4 layers: not divisible; L // B = 0
def test_shallow_refuses_blocks_that_do_not_divide_the_depth(num_blocks):
    with pytest.raises(ConfigError, match="'num_blocks'.*e2e-shallow"):
        make_config("tiny", {"method": "e2e-shallow", "num_blocks": num_blocks})
    make_config("tiny", {"method": "e2e-ckpt", "num_blocks": num_blocks})  # full depth: no split
    with pytest.raises(ConfigError, match="'method'"):
        make_config("tiny", {"method": "e2e-deep"})


def test_no_module_compares_method_names():
    """Only the config resolves what a method means (``end_to_end``, ``base_method``,
    ``model_depth``, ``activation_checkpointing``...); nothing else compares method names."""
    package = Path(diffusionblocks.__file__).parent
    names = set(make_config("tiny").methods()) | set(make_config("recurrent-tiny").methods())
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = str(path.relative_to(package))
        if rel == "config/run.py" or rel.startswith("bench/"):  # bench: its own config names
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for part in [node.left, *node.comparators]:
                    values = (
                        part.elts if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [part]
                    )
                    found += [f"{rel}:{node.lineno}" for v in values
                              if isinstance(v, ast.Constant) and v.value in names]  # fmt: skip
    assert not found, found


def test_train_shallow_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--set", "method=e2e-shallow", "--out", str(run),
                 "--no-progress"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "classification/e2e-shallow:" in out
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["method"] == "e2e-shallow"
    assert results["config"]["depth"] == 4 and results["resolved"]["model_depth"] == 2
    assert "(end to end)" in " ".join(results["warnings"])
    # The saved run loads into the shallow network again.
    assert main(["eval", "--run", str(run), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1


# ---------------------------------------------------------------------- the trivial baseline
def test_classification_trivial_baseline_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    train_y = np.array([2, 0, 2, 1, 2, 2, 0, 2, 1, 2, 0, 2])  # 7 of class 2, 3 of 0, 2 of 1
    test_y = np.array([2, 2, 0, 1, 1])  # class 2 is right 2 times out of 5
    path = tmp_path / "small.npz"
    np.savez(path, x=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), y=train_y,
             x_test=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8), y_test=test_y)  # fmt: skip
    for method in ("dblocks", "e2e-shallow"):
        config = make_config("tiny", {"data": str(path), "val_fraction": 0, "batch_size": 4,
                                      "method": method})  # fmt: skip
        task = make_task(config, torch.device("cpu"))
        base = task.trivial_baseline()
        assert task.headline_metric[0] == "accuracy"
        assert base["accuracy"] == pytest.approx(2 / 5)
        assert base["chance_accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="'split'"):
        task.trivial_baseline("val")  # val_fraction 0: no validation split


def test_classification_trivial_baseline_on_the_validation_split():
    task = make_task(make_config("tiny", {"device": "cpu"}), torch.device("cpu"))
    counts: dict[int, int] = {}
    for label in task.data.train_y.tolist():
        counts[label] = counts.get(label, 0) + 1
    majority = min(counts, key=lambda k: (-counts[k], k))
    val = task.data.val_y.tolist()
    assert task.trivial_baseline("val")["accuracy"] == pytest.approx(
        sum(v == majority for v in val) / len(val)
    )
    assert task.trivial_baseline()["chance_accuracy"] == pytest.approx(1 / 10)


@pytest.mark.parametrize("preset", ["ar-tiny", "mdm-tiny", "recurrent-tiny"])
def test_text_trivial_baseline_by_hand(tmp_path, preset):
    train, test = "a" * 30 + "b" * 20 + "c" * 10, "a" * 10 + "b" * 5 + "c" * 5
    path = tmp_path / "abc.txt"
    path.write_text(train + test)  # test_fraction 0.25: the last 20 characters are held out
    overrides = {"data": str(path), "test_fraction": 0.25, "val_fraction": 0, "seq_len": 10,
                 "train_subset": 0,
                 "batch_size": 4, "gen_prompt_len": 2, "gen_length": 4}  # fmt: skip
    if preset == "mdm-tiny":
        overrides = {k: v for k, v in overrides.items() if not k.startswith("gen_")}
    task = make_task(make_config(preset, overrides), torch.device("cpu"))
    # Training counts plus one (add-one smoothing over the 3 characters): a 31, b 21, c 11 of 63.
    p = {"a": 31 / 63, "b": 21 / 63, "c": 11 / 63}
    bits = -(10 * math.log2(p["a"]) + 5 * math.log2(p["b"]) + 5 * math.log2(p["c"])) / 20
    base = task.trivial_baseline()
    assert task.headline_metric[0] in base
    assert base["bpc"] == pytest.approx(bits, rel=1e-12)
    assert base["heldout_ce"] == pytest.approx(bits * math.log(2), rel=1e-12)
    with pytest.raises(ConfigError, match="'split'"):
        task.trivial_baseline("train")


@needs_fmnist
def test_generation_trivial_baseline_is_the_distance_of_noise():
    from diffusionblocks import fid

    task = make_task(make_config("dit-tiny", {"fid_samples": 200}), torch.device("cpu"))
    base = task.trivial_baseline()
    assert list(base) == [task.headline_metric[0]] == ["fid"]
    evaluator = fid.EvaluatorFeatures()
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    reference = fid.feature_stats(fid.extract(evaluator, task.reference.test_x))
    by_hand = fid.frechet_distance(*fid.feature_stats(fid.extract(evaluator, noise)), *reference)
    assert base["fid"] == pytest.approx(by_hand, rel=1e-9)
    # Noise is far from real images: 200 real training images score ~28 against the same
    # reference, the reference against itself ~0 (independent of the value above).
    real = fid.fid_against(evaluator, task.data.train_x[:200], task.reference.test_x)
    assert abs(fid.fid_against(evaluator, task.reference.test_x, task.reference.test_x)) < 1e-3
    assert base["fid"] > 10 * real


def test_generation_trivial_baseline_refuses_data_the_evaluator_cannot_score(tmp_path):
    from helpers import synthetic_images

    from diffusionblocks.eval.fid import EvaluatorError

    data = synthetic_images(tmp_path / "mine.npz")
    task = make_task(make_config("dit-tiny", {"data": data, "train_subset": 0, "test_subset": 0,
                                              "batch_size": 16}), torch.device("cpu"))  # fmt: skip
    with pytest.raises(EvaluatorError, match="Fashion-MNIST evaluator"):
        task.trivial_baseline()
