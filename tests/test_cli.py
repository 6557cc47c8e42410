"""The dblocks command line, end to end on the tiny preset, and its errors."""

import json
import re

import pytest

from diffusionblocks.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_json(capsys):
    code, out, _ = run(capsys, "schedule", "--blocks", "3", "--overlap", "0.05", "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["boundaries"]) == 4
    assert [round(b, 4) for b in data["boundaries"]] == [0.002, 0.1796, 0.505, 80.0]
    assert len(data["blocks"]) == 3
    assert data["blocks"][2]["train_hi"] == pytest.approx(0.225, rel=3e-3)
    code, out, _ = run(capsys, "schedule", "--blocks", "4", "--partition", "uniform-log")
    assert code == 0 and "uniform-log" in out


def test_train_then_eval_on_tiny(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--preset", "tiny", "--out", str(run_dir), "--no-progress"
    )
    assert code == 0, err
    assert "test accuracy" in out
    for name in ("config.json", "metrics.jsonl", "results.json", "loss.png"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_block_0" in r for r in records) and any("loss_block_1" in r for r in records)
    results = json.loads((run_dir / "results.json").read_text())
    assert 0 <= results["eval"]["accuracy"] <= 1
    assert results["accounting"]["steps"] == results["accounting"]["total_steps"]

    code, out, err = run(capsys, "eval", "--run", str(run_dir), "--steps", "1", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert 0 <= data["accuracy"] <= 1
    assert set(data["steps_sweep"]) == {"1", "2", "3"}
    assert len(data["per_block"]) == 2

    # A second train into the same folder is refused; --resume of a finished run is a no-op.
    code, _, err = run(capsys, "train", "--preset", "tiny", "--out", str(run_dir))
    assert code == 2 and "already holds a run" in err
    code, out, err = run(capsys, "train", "--out", str(run_dir), "--resume", "--no-progress")
    assert code == 0, err


def test_cli_resume_after_interruption(tmp_path, capsys):
    """Train to completion in one go vs. stop half way (via a small budget) and resume."""
    from diffusionblocks.registry import make_config, make_task
    from diffusionblocks.runs import prepare_run_dir
    from diffusionblocks.training.trainer import Trainer

    config = make_config("tiny", {"device": "cpu"})
    prepare_run_dir(config, tmp_path / "a", resume=False)
    trainer = Trainer(make_task(config), tmp_path / "a", progress=False)
    trainer.fit(stop_at=7)
    trainer.save()
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "a"), "--resume", "--no-progress")
    assert code == 0, err
    code, _, err = run(
        capsys,
        "train",
        "--preset",
        "tiny",
        "--set",
        "device=cpu",
        "--out",
        str(tmp_path / "b"),
        "--no-progress",
    )
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["eval"] == b["eval"]


def test_dry_run_prints_config_and_writes_nothing(tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "train",
        "--preset",
        "vit-fmnist",
        "--set",
        "num_blocks=2",
        "--dry-run",
        "--out",
        str(tmp_path / "x"),
    )
    assert code == 0
    assert re.search(r"^\s*num_blocks = 2\s", out, re.M), out
    assert "block 0 = noisiest" in out
    assert not (tmp_path / "x").exists()


def test_presets_listed(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0 and "tiny" in out and "vit-fmnist" in out


BAD = [
    (["train", "--preset", "tiny", "--set", "lr=-1"], "invalid value for 'lr'"),
    (
        ["train", "--preset", "tiny", "--set", "batchsize=1"],
        "unknown config key 'batchsize'.*did you mean 'batch_size'",
    ),
    (["train", "--preset", "tiny", "--set", "method=sgd"], "invalid value for 'method'"),
    (["train", "--preset", "tiny", "--set", "num_blocks=3"], "must divide depth=4"),
    (["train", "--preset", "tiny", "--set", "blocks=0,5"], "invalid value for 'blocks'"),
    (["train", "--preset", "tiny", "--set", "epochs=abc"], "invalid value for 'epochs'"),
    (["train", "--preset", "tiny", "--set", "batch_size=1.5"], "invalid value for 'batch_size'"),
    (["train", "--preset", "tiny", "--set", "weighting=sqrt"], "invalid value for 'weighting'"),
    (["train", "--preset", "tiny", "--set", "lr"], "expects key=value"),
    (["train", "--preset", "tiny", "--set", "overlap=nan"], "invalid value for 'overlap'"),
    (
        ["train", "--preset", "tiny", "--set", "method=e2e", "--set", "blocks=0"],
        "needs method=dblocks",
    ),
    (["train", "--preset", "tiny", "--set", "sigma_max=0.001"], "invalid value for 'sigma_max'"),
    (["train", "--preset", "tiny", "--set", "device=cuda:7"], "device"),
    (["train", "--preset", "tiny", "--set", "data=/no/such.npz"], "does not exist"),
    (["train", "--preset", "tiny", "--set", "data=mnist-1d"], "unknown dataset"),
    (["train", "--preset", "tiny", "--set", "batch_size=5000"], "larger than the"),
    (["train", "--preset", "tiny", "--set", "patch_size=3"], "must divide the 8x8"),
    (
        ["train", "--preset", "tiny", "--set", "data_dir=/nowhere", "--set", "data=fashion-mnist"],
        "apt-get install",
    ),
    (["train"], "--preset is required"),
    (["train", "--resume"], "--resume needs --out"),
    (["eval", "--run", "/no/such/run"], "does not exist"),
    (["schedule", "--blocks", "0"], "--blocks must be >= 1"),
    (["schedule", "--blocks", "3", "--overlap", "2"], "--overlap"),
    (["schedule", "--blocks", "3", "--sigma-min", "100"], "sigma_min < sigma_max"),
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_input_is_a_named_error(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert __import__("re").search(message, err), err
    assert "Traceback" not in err
    # Refused before anything was written: the same command, corrected, can reuse its --out.
    assert not (tmp_path / "runs").exists()


def test_resume_with_changed_config_is_refused(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert run(capsys, "train", "--preset", "tiny", "--out", out, "--no-progress")[0] == 0
    code, _, err = run(
        capsys, "train", "--preset", "tiny", "--set", "lr=0.1", "--out", out, "--resume"
    )
    assert code == 2 and "lr" in err and "differs" in err


def test_eval_of_a_folder_without_checkpoint(tmp_path, capsys):
    from diffusionblocks.registry import make_config
    from diffusionblocks.runs import prepare_run_dir

    prepare_run_dir(make_config("tiny"), tmp_path / "r", resume=False)
    code, _, err = run(capsys, "eval", "--run", str(tmp_path / "r"))
    assert code == 2 and "no checkpoint" in err


def test_compare_trains_each_method_in_its_own_process_and_writes_one_table(tmp_path, capsys):
    """The README's main job (`dblocks compare`), on the tiny preset."""
    out = tmp_path / "cmp"
    code, stdout, _ = run(capsys, "compare", "--preset", "tiny", "--out", str(out),
                          "--no-progress", "--set", "device=cpu")  # fmt: skip
    assert code == 0
    table = json.loads((out / "comparison.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["e2e", "dblocks"]
    e2e, db = table["rows"]
    assert e2e["step_time_vs_e2e"] == 1.0 and db["num_blocks"] == 2
    assert all(
        0 <= r["accuracy"] <= 1 and r["command"].startswith("dblocks train") for r in table["rows"]
    )
    assert (out / "comparison.md").read_text().strip() in stdout
    # the tiny preset trains 20 steps per block: the table says its numbers mean nothing
    assert "warning (dblocks): only 20 optimizer steps per block" in stdout
    assert db["warnings"] and e2e["warnings"]
    assert (out / "e2e" / "results.json").is_file() and (out / "dblocks" / "results.json").is_file()
    code, _, err = run(capsys, "compare", "--preset", "tiny", "--out", str(out))
    assert code == 2 and "already holds a comparison" in err


def test_compare_works_for_a_language_model(tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, _ = run(capsys, "compare", "--preset", "mdm-tiny", "--out", str(out),
                          "--no-progress", "--set", "device=cpu")  # fmt: skip
    assert code == 0
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["metric"] for r in rows] == ["held-out BPC"] * 2
    assert all(r["bpc"] > 0 for r in rows) and "| held-out BPC |" in stdout
