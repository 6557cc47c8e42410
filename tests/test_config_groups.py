"""Config groups: every key belongs to one group (training, noise, run, parallel; per task data,
model, eval), ``--set group.key=v`` is the flat ``key=v``, and a wrong group or key is refused by
name."""

import json
from dataclasses import fields

import pytest

from diffusionblocks.cli import main
from diffusionblocks.config import ConfigError, config_from_dict
from diffusionblocks.registry import TASKS, make_config


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_key_is_in_exactly_one_group(task):
    cls = TASKS[task][0]
    grouped = [k for keys in cls.key_groups().values() for k in keys]
    assert len(grouped) == len(set(grouped)), "a key in two groups"
    assert set(grouped) == {f.name for f in fields(cls)} - {"task"}
    assert {"training", "noise", "run", "parallel", "data", "model", "eval"} <= set(
        cls.key_groups()
    )


def test_a_grouped_key_is_its_flat_alias():
    flat = make_config("tiny", {"p_mean": "1.5", "depth": "2", "eval_subset": "50"})
    grouped = make_config("tiny", {"noise.p_mean": "1.5", "model.depth": "2",
                                   "eval.eval_subset": "50"})  # fmt: skip
    assert grouped.to_dict() == flat.to_dict()
    assert grouped.group("noise")["p_mean"] == 1.5 and grouped.group("model")["depth"] == 2


def test_the_nested_layout_reads_back():
    config = make_config("ar-tiny", {"temperature": "0.5", "seed": "3"})
    nested = config.to_nested()
    assert nested["eval"]["temperature"] == 0.5 and nested["training"]["seed"] == 3
    assert config_from_dict(type(config), nested).to_dict() == config.to_dict()
    json.dumps(nested)  # plain data


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"nois.p_mean": "1"}, ["unknown config group 'nois'", "noise"]),
        ({"noise.lr": "1"}, ["'lr' is not a key of group 'noise'", "in group 'training'"]),
        ({"noise.p_mean": "1", "p_mean": "2"}, ["'p_mean' given twice"]),
        ({"model.depht": "2"}, ["'depht' is not a key of group 'model'"]),
    ],
)
def test_wrong_groups_and_keys_are_refused_by_name(overrides, words):
    with pytest.raises(ConfigError) as err:
        make_config("tiny", overrides)
    for w in words:
        assert w in str(err.value)


def test_group_names_work_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--set", "training.epochs=0.2", "--set",
                 "run.log_every=2", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["epochs"] == 0.2 and saved["log_every"] == 2  # stored flat, as before
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--set", "eval.eval_batch_size=7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] > 0
    assert main(["eval", "--run", str(out), "--set", "training.lr=1", "--json"]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--set", "noise.p_mean=2", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "[noise]" in plan and "[model]" in plan and "GROUP.KEY=V" in plan


def test_block_order_is_the_schedule_key_by_its_own_name():
    by_old = make_config("tiny", {"schedule": "sequential"})
    for name in ("block_order", "training.block_order"):
        config = make_config("tiny", {name: "sequential"})
        assert config.to_dict() == by_old.to_dict() and config.block_order == "sequential"
    assert config.config_hash() == by_old.config_hash()  # saved as before: same hash
    assert make_config("bench", {"block_order": "random"}).schedule == "random"  # over a preset
    with pytest.raises(ConfigError, match="given twice"):
        make_config("tiny", {"block_order": "cycle", "schedule": "random"})
    with pytest.raises(ConfigError, match="did you mean 'block_order'"):
        make_config("tiny", {"block_ordr": "cycle"})


def test_the_trainer_reads_its_own_group():
    """The trainer and its components get the training and run groups (resolved), not the whole
    config; the whole config is only the run's identity (checkpoint metadata)."""
    import inspect
    from dataclasses import fields as dc_fields

    from diffusionblocks.config import TrainingSettings
    from diffusionblocks.registry import make_task
    from diffusionblocks.training import Trainer
    from diffusionblocks.training.accounting import Accounting, ProgressLog
    from diffusionblocks.training.faults import Faults
    from diffusionblocks.training.optimizers import Optimizers
    from diffusionblocks.training.schedule import Plan, make_optimizer

    config = make_config("tiny", {"block_order": "cycle", "seed": "4", "keep_checkpoints": "3"})
    settings = config.training_settings()
    groups = config.key_groups()
    own = set(groups["training"]) | set(groups["run"])
    for f in dc_fields(TrainingSettings):
        key = {"block_order": "schedule"}.get(f.name, f.name)
        if key in own:
            assert getattr(settings, f.name) == getattr(config, key), f.name
        else:  # resolved values
            assert f.name in ("trained_blocks", "shared_policy", "block_resident"), f.name
    assert settings.trained_blocks == config.trained_units and settings.block_order == "cycle"
    for function, name in (
        (Plan.of, "settings"),
        (Optimizers.__init__, "settings"),
        (Faults.__init__, "settings"),
        (ProgressLog.__init__, "settings"),
        (Accounting.report, "settings"),
        (make_optimizer, "settings"),
    ):
        annotation = inspect.signature(function).parameters[name].annotation
        assert "TrainingSettings" in str(annotation), function  # fmt: skip
    trainer = Trainer(make_task(config), None, progress=False)
    assert trainer.settings == settings


def test_commands_that_add_keys_take_grouped_names(capsys):
    """schedule, compare and bench add keys of their own (data, method, batch_size, schedule):
    a grouped or other name of the same key given with --set must not clash with them."""
    from diffusionblocks.registry import preset_overrides

    assert preset_overrides("tiny", ["noise.p_mean=1", "block_order=cycle"]) == {
        "p_mean": "1", "schedule": "cycle"}  # fmt: skip
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_overrides("nope", [])
    assert main(["schedule", "--preset", "images", "--set", "data.data=mine.npz",
                 "--set", "noise.p_mean=0.5"]) == 0  # fmt: skip
    assert "ln sigma ~ N(0.5" in capsys.readouterr().out
    # compare sets each method itself; a --set training.method=... is overridden, not a clash
    assert main(["compare", "--preset", "tiny", "--set", "training.method=e2e",
                 "--methods", "bad"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "invalid value for 'method': 'bad'" in err and "given twice" not in err
    # bench sets the block order of each configuration; a grouped --set must not clash
    # (every configuration is validated first; the bad threshold stops it before any work)
    assert (
        main(
            [
                "bench",
                "memory",
                "--preset",
                "tiny",
                "--blocks",
                "2",
                "--set",
                "training.block_order=random",
                "--malloc-mmap-threshold",
                "-1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--malloc-mmap-threshold" in err and "given twice" not in err
