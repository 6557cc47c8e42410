"""The command line and the run plumbing never ask which task they hold: what differs between
tasks (reporting, headline metric, default sweep, what `sample` makes, the baseline method, what
the blocks split) is asked of the task or its config class."""

import ast
import math
from pathlib import Path

import pytest

import diffusionblocks
from diffusionblocks.registry import TASKS
from diffusionblocks.reporting import headline_metric, print_evaluation, report_classes

PACKAGE = Path(diffusionblocks.__file__).parent
TASK_NAMES = set(TASKS)


TOP_MODULES = sorted(
    str(p.relative_to(PACKAGE))
    for pattern in ("*.py", "commands/*.py", "bench/*.py")
    for p in PACKAGE.glob(pattern)
    if p.name not in ("registry.py", "__main__.py")  # the registry maps names to classes
)


@pytest.mark.parametrize("module", TOP_MODULES)
def test_no_comparison_with_a_task_name(module):
    tree = ast.parse((PACKAGE / module).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            for part in parts:
                values = part.elts if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [part]
                for v in values:
                    if isinstance(v, ast.Constant) and v.value in TASK_NAMES:
                        found.append(f"line {node.lineno}: {v.value!r}")
        if isinstance(node, ast.Call):  # e.g. a helper handed the name to compare with
            for v in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(v, ast.Constant) and v.value in TASK_NAMES:
                    found.append(f"line {node.lineno}: {v.value!r} passed to a call")
    assert not found, f"{module} switches on task names: {found}"


def test_every_task_reports_and_headlines_its_own_evaluation():
    examples = {
        "classification": ({"accuracy": 0.5, "examples": 10}, "test acc", "test accuracy"),
        "generation": ({"fid": 3.0, "steps_sweep": {"50": {"fid": 3.0, "samples": 10,
                                                              "cfg_scale": 2.0,
                                                              "layer_evals_per_image": 4,
                                                              "calls_per_unit": [2],
                                                              "class_agreement": 0.5,
                                                              "class_counts": [5, 5]}}},
                       "Frechet distance (classifier features)",
                       "Frechet distance in the shipped classifier's feature space (not Inception"),
        "masked-lm": ({"bpc": 2.0, "bpc_stderr": 0.1, "sequences": 2, "draws_per_sequence": 1,
                       "held_out": "tail"}, "held-out BPC", "held-out BPC"),  # fmt: skip
        "autoregressive": ({"heldout_ce": 1.5, "ce_is_likelihood": True, "heldout_accuracy": 0.4,
                            "heldout_characters": 9}, "held-out CE (likelihood)", "next-char CE"),
        "recurrent": ({"heldout_ce": 1.5, "ce_is_likelihood": False, "heldout_accuracy": 0.4,
                       "heldout_characters": 9}, "held-out CE (likelihood)", "not a likelihood"),
        "stack": ({"task": "stack", "accuracy": 0.5, "examples": 10}, "test acc",
                  "test accuracy"),
    }  # fmt: skip
    assert set(examples) == TASK_NAMES
    for name, (ev, metric, line) in examples.items():
        (cls,) = report_classes(name)
        head = headline_metric(ev, name)
        assert head["metric"] == metric, name
        if name == "recurrent":  # the chain's CE is never the headline
            assert math.isnan(head["value"]) and head["chain_ce_not_likelihood"] == 1.5
        else:
            assert head["value"] == next(v for v in ev.values() if isinstance(v, float))
        if line is not None:
            assert any(line in text for text in cls.report(ev)), name
        for other in TASK_NAMES - {name}:  # other tasks do not claim this evaluation
            if report_classes(other) != [cls]:
                assert report_classes(other)[0].headline(ev) is None, (name, other)


def test_print_evaluation_with_and_without_the_task_name(capsys):
    ev = {"accuracy": 0.75, "examples": 4, "split": "val"}
    print_evaluation(ev, "classification")
    named = capsys.readouterr().out
    print_evaluation(ev)
    assert capsys.readouterr().out == named and "val accuracy" in named


def test_task_classes_declare_what_differs():
    from diffusionblocks.registry import make_config

    assert make_config("recurrent-tiny").baseline_method == "bptt"
    assert make_config("tiny").baseline_method == "e2e"
    assert make_config("mdm-tiny").block_variable != "sigma"
    assert make_config("ar-tiny").block_variable == "sigma"
    kinds = {name: {cls.generates for cls in methods.values()} for name, (_, methods) in
             TASKS.items()}  # fmt: skip
    predicts = {name for name, (_, methods) in TASKS.items()
                if {cls.predicts for cls in methods.values()} == {"classes"}}  # fmt: skip
    assert predicts == {"classification"}
    assert kinds == {"classification": {None}, "generation": {"images"}, "masked-lm": {"text"},
                     "autoregressive": {"text"}, "recurrent": {"text"},
                     "stack": {None}}  # fmt: skip
    sweeps = {name: next(iter(methods.values())).default_sweep for name, (_, methods) in
              TASKS.items()}  # fmt: skip
    assert sweeps["classification"] == (1, 2, 4, 8)
    assert all(v is None for k, v in sweeps.items() if k != "classification")


def test_every_task_names_the_block_it_trains():
    import inspect

    for _, methods in TASKS.values():
        for cls in methods.values():
            params = list(inspect.signature(cls.loss).parameters)
            assert params[:2] == ["self", "block"], (cls.__name__, params)
            assert "block" in inspect.signature(cls.layers_in_block).parameters
            assert "block" in inspect.signature(cls.block_parameters).parameters


def test_one_sample_call_for_every_task():
    """Task.sample is the one way to sample: it gives what generate / generate_text give for the
    same draws, refuses options that do not apply by name, and tasks that generate nothing
    refuse it."""
    import torch

    from diffusionblocks.config import ConfigError
    from diffusionblocks.registry import make_config, make_task

    def gen():
        return torch.Generator().manual_seed(3)

    images = make_task(make_config("dit-tiny", {"fid_samples": "0"}))
    labels = torch.tensor([0, 1])
    a, info = images.sample(gen(), labels=labels, steps=3, cfg=1.5)
    b, _ = images.generate(labels, gen(), 3, 1.5)
    assert isinstance(a, torch.Tensor) and torch.equal(a, b) and info["steps"] == 3
    with pytest.raises(ConfigError, match="takes no length, temperature"):
        images.sample(gen(), labels=labels, length=4, temperature=0.5)
    with pytest.raises(ConfigError, match="readout=chain"):  # the AR ensemble has no steps
        make_task(make_config("ar-tiny")).sample(gen(), length=5, steps=2)
    for preset in ("ar-tiny", "mdm-tiny", "recurrent-tiny"):
        text = make_task(make_config(preset, {"readout": "chain"} if preset == "ar-tiny" else {}))
        s, _ = text.sample(gen(), length=5, prompt="the ", steps=2, temperature=0.7)
        t, _ = text.generate_text(5, gen(), "the ", 2, 0.7)
        assert s == t and len(s) == 5, preset
        with pytest.raises(ConfigError, match="takes no labels"):
            text.sample(gen(), length=5, labels=labels)
    with pytest.raises(ConfigError, match="generate nothing"):
        make_task(make_config("tiny")).sample(gen(), labels=labels)


def test_every_task_answers_its_layer_evaluations():
    """The compute accounting asks the task (``layer_evals``, ``backward_layer_evals``) what the
    latest loss call on a block ran; no task hides the counts in its loss logs any more. Only the
    truncated-BPTT baseline's cost varies from step to step (the drawn number of iterations)."""
    import torch
    from helpers import stack_config

    from diffusionblocks.registry import make_config, make_task

    presets = {"classification": ("tiny", {}), "generation": ("dit-tiny", {"fid_samples": "0"}),
               "masked-lm": ("mdm-tiny", {}), "autoregressive": ("ar-tiny", {}),
               "recurrent": ("recurrent-tiny", {}),
               "stack": ("your-model", {"data": stack_config().data, "num_blocks": 2,
                                        "model": stack_config().model})}  # fmt: skip
    assert set(presets) == TASK_NAMES
    for name, (preset, overrides) in presets.items():
        for method, cls in TASKS[name][1].items():
            task = make_task(make_config(preset, {**overrides, "method": method, "device": "cpu"}))
            assert type(task) is cls
            batch = task.train_batch(torch.arange(4))
            for block in range(len(task.model.blocks)):
                for seed in range(3):
                    _, logs = task.loss(block, batch, torch.Generator().manual_seed(seed))
                    assert not {"layer_evals", "backward_layer_evals"} & set(logs), (name, method)
                    forward = task.layer_evals(block)
                    backward = task.backward_layer_evals(block)
                    if method == "bptt":
                        c, k = task.config, logs["iterations"]
                        assert forward == c.prelude + k * c.core + c.coda
                        assert backward == c.prelude + min(k, c.truncation) * c.core + c.coda
                    else:
                        assert forward == backward == task.layers_in_block(block), (name, method)
