"""`dblocks compare --seeds N --json FILE`: each (method, seed) in its own process, one row per
method with mean and sample s.d. over seeds of the test and validation metric, measured FLOPs,
time and peak memory (the schema documented in diffusionblocks/comparison.py)."""

import json
import shlex
import statistics

from diffusionblocks.cli import main
from diffusionblocks.comparison import beats, depth_check, method_row

SCHEMA = {"method", "depth", "num_blocks", "seeds", "metric", "key", "higher_is_better",
          "val_mean", "val_sd", "test_mean", "test_sd", "val_values", "test_values",
          "peak_memory_bytes", "train_flops", "train_seconds", "command", "runs"}  # fmt: skip


def test_compare_with_seeds_writes_the_documented_rows(tmp_path, capsys):
    out, rows_file = tmp_path / "cmp", tmp_path / "rows.json"
    assert main(["compare", "--preset", "tiny", "--seeds", "2", "--out", str(out),
                 "--json", str(rows_file), "--no-progress", "--set", "device=cpu",
                 "--set", "epochs=0.3", "--caveat", "a value's caveat"]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    rows = json.loads(rows_file.read_text())
    assert [r["method"] for r in rows] == ["e2e", "dblocks"]
    for r in rows:
        assert set(r) >= SCHEMA, SCHEMA - set(r)
        assert r["seeds"] == [0, 1] and len(r["runs"]) == 2
        assert r["metric"] == "test acc" and r["key"] == "accuracy" and r["higher_is_better"]
        tests = [run["value"] for run in r["runs"]]
        vals = [run["val_value"] for run in r["runs"]]
        assert r["test_values"] == tests and r["val_values"] == vals
        assert r["test_mean"] == statistics.fmean(tests)
        assert r["test_sd"] == statistics.stdev(tests)
        assert r["val_mean"] == statistics.fmean(vals) and r["val_sd"] == statistics.stdev(vals)
        assert r["train_flops"] > 0 and r["peak_memory_bytes"] > 0
        for seed in (0, 1):
            results = json.loads((out / r["method"] / f"seed-{seed}" / "results.json").read_text())
            assert results["config"]["seed"] == seed
    e2e, db = rows
    assert e2e["depth"] == db["depth"] == 4 and (e2e["num_blocks"], db["num_blocks"]) == (1, 2)
    assert db["train_flops"] != e2e["train_flops"]
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["rows"] == rows
    assert saved["protocol"]["seeds"] == 2 and saved["protocol"]["baselines"] == ["e2e"]
    assert saved["depth_check"] is None  # no e2e-shallow row compared
    assert saved["protocol"]["command"].startswith("dblocks compare --preset tiny --seeds 2")
    # recorded commands are shell-quoted: they split back into the arguments given
    assert shlex.split(saved["protocol"]["command"])[-2:] == ["--caveat", "a value's caveat"]
    assert saved["protocol"]["caveats"] == ["a value's caveat"]
    assert shlex.split(rows[0]["command"])[:4] == ["dblocks", "train", "--preset", "tiny"]
    assert "| method | depth | B | seeds | test acc |" in stdout and " ± " in stdout
    # the reference row: the majority class of the training labels on test and val
    from diffusionblocks.registry import make_config, make_task

    task = make_task(make_config("tiny", {"epochs": 0.3}))
    majority = int(task.data.train_y.bincount().argmax())
    for split in ("test", "val"):
        _, labels = task.data.split(split)
        assert saved["trivial"][f"{split}_mean"] == float((labels == majority).double().mean())
    assert f"| trivial | - | - | - | {saved['trivial']['test_mean']:.4f} |" in stdout
    table = (out / "comparison.md").read_text().splitlines()
    header = table[0]
    trivial = next(line for line in table if line.startswith("| trivial"))
    assert trivial.count("|") == header.count("|")  # one cell per column


def _run(method, seed, test, val=None):
    return {"method": method, "seed": seed, "depth": 4, "num_blocks": 1, "metric": "acc",
            "shallow": method == "e2e-shallow",
            "key": "accuracy", "higher_is_better": True, "value": test, "accuracy": test,
            "val_value": val, "steps": 1, "layer_evaluations": 1, "train_flops": 10.0,
            "median_step_ms": 1.0, "train_seconds": 1.0, "peak_memory_bytes": 2**20,
            "train_peak_mib": 1.0, "device": "cpu", "command": "c", "warnings": []}  # fmt: skip


def test_beyond_seed_noise_means_a_gap_larger_than_both_deviations():
    full = method_row([_run("e2e", 0, 0.90), _run("e2e", 1, 0.92)])  # 0.91 ± 0.0141
    close = method_row([_run("e2e-shallow", 0, 0.89), _run("e2e-shallow", 1, 0.91)])
    far = method_row([_run("e2e-shallow", 0, 0.80), _run("e2e-shallow", 1, 0.82)])
    assert full["val_mean"] is None  # no validation split in these rows
    assert beats(full, far) is True and beats(full, close) is False and beats(far, full) is False
    assert "does NOT beat" in depth_check([full, close])["text"]
    verdict = depth_check([full, far])["text"]
    assert "beats e2e-shallow by 0.1000 accuracy (test), beyond seed noise" in verdict
    check = depth_check([full, far])
    assert check["split"] == "test" and check["beyond_noise"] is True
    assert abs(check["gap"] - 0.1) < 1e-12
    one = method_row([_run("e2e", 0, 0.9)])
    assert one["test_sd"] is None and beats(one, far) is None
    assert "needs two or more seeds" in depth_check([one, far])["text"]
    lower = {**_run("x", 0, 2.0), "higher_is_better": False}
    small = method_row([lower, {**lower, "value": 2.2}])
    large = method_row([{**lower, "value": 3.0}, {**lower, "value": 3.2}])
    assert beats(small, large) is True  # a loss: lower is better
    deep, shallow = ({**small, "method": "e2e"}, {**large, "method": "s", "shallow": True})
    assert abs(depth_check([deep, shallow])["gap"] - 1.0) < 1e-12  # positive: full depth lower
    assert depth_check([deep]) is None


def test_compare_refuses_bad_methods_and_a_json_folder_before_training(tmp_path, capsys):
    for methods in (",", "e2e,e2e"):
        assert main(["compare", "--preset", "tiny", "--methods", methods,
                     "--out", str(tmp_path / "x")]) == 2  # fmt: skip
        assert "--methods needs distinct method names" in capsys.readouterr().err
    assert main(["compare", "--preset", "tiny", "--json", str(tmp_path / "no" / "rows.json"),
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "its folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_language_models_rows_carry_its_metric_and_trivial_row():
    """The autoregressive headline names its key and direction, so the unigram row appears."""
    from diffusionblocks.comparison import run_row, trivial_row

    ev = {"heldout_ce": 2.0, "ce_is_likelihood": True}
    results = {"config": {"task": "autoregressive", "num_blocks": 1, "seed": 0},
               "memory": {"train_peak_rss_bytes": 2**20}, "eval": ev, "eval_val": ev,
               "accounting": {"steps": 1, "layer_evaluations": 1},
               "timing": {"median_step_seconds": 0.001, "train_seconds": 1.0},
               "environment": {"device": "cpu"},
               "trivial": {"test": {"heldout_ce": 3.25}, "val": {"heldout_ce": 3.3}}}  # fmt: skip
    row = method_row([run_row("e2e", results, "dblocks train")])
    assert row["key"] == "heldout_ce" and row["higher_is_better"] is False
    assert trivial_row([row]) == {
        "method": "trivial",
        "metric": row["metric"],
        "key": "heldout_ce",
        "higher_is_better": False,
        "test_mean": 3.25,
        "val_mean": 3.3,
    }
