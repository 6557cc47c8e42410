"""The scripts that publish results (scripts/experiments/): publish_comparison.py copies what a
comparison needs and nothing else; chain_by_block.py reads the val accuracy of the chain stopped
after each block, over the seeds."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "experiments"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_compare(root: Path, chains: list[list[float]]) -> Path:
    """A compare folder with one dblocks run per seed (two blocks of 2 layers) and an e2e run."""
    src = root / "cmp"
    src.mkdir()
    (src / "comparison.json").write_text("{}")
    (src / "comparison.md").write_text("| table |")
    for seed, chain in enumerate(chains):
        run = src / "dblocks" / f"seed-{seed}"
        run.mkdir(parents=True)
        per_block = [{"block": b, "sigma_interval": [b, b + 1], "chain_accuracy": acc}
                     for b, acc in enumerate(chain)]  # fmt: skip
        results = {"eval_val": {"per_block": per_block},
                   "accounting": {"layers_per_unit": [2] * len(chain)}}  # fmt: skip
        (run / "results.json").write_text(json.dumps(results))
        (run / "config.json").write_text("{}")
        (run / "checkpoint.pt").write_bytes(b"weights")
    e2e = src / "e2e" / "seed-0"
    e2e.mkdir(parents=True)
    (e2e / "results.json").write_text("{}")
    (e2e / "config.json").write_text("{}")
    return src


def test_publish_copies_the_tables_rows_and_each_runs_results_but_no_weights(tmp_path):
    src = fake_compare(tmp_path, [[0.5, 0.6], [0.7, 0.8]])
    rows = tmp_path / "rows.json"
    rows.write_text("[]")
    dest = tmp_path / "docs" / "cmp"
    load("publish_comparison").main([str(src), str(dest), "--rows", str(rows)])
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == ["comparison.json", "comparison.md",
                      "rows.json", "runs/dblocks/seed-0/config.json",
                      "runs/dblocks/seed-0/results.json", "runs/dblocks/seed-1/config.json",
                      "runs/dblocks/seed-1/results.json", "runs/e2e/seed-0/config.json",
                      "runs/e2e/seed-0/results.json"]  # fmt: skip
    (src / "comparison.json").unlink()  # an unfinished compare is refused
    with pytest.raises(SystemExit, match="holds no comparison.json"):
        load("publish_comparison").main([str(src), str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()


def test_chain_by_block_is_the_mean_and_sd_over_seeds_of_each_stopping_point(tmp_path):
    src = fake_compare(tmp_path, [[0.5, 0.6], [0.7, 0.8], [0.9, 0.7]])
    rows = load("chain_by_block").chain_by_block(src)
    assert [r["after_block"] for r in rows] == [0, 1]
    assert [r["layers_run"] for r in rows] == [2, 4]
    assert rows[0]["val_values"] == [0.5, 0.7, 0.9]
    assert rows[1]["val_mean"] == statistics.fmean([0.6, 0.8, 0.7])
    assert rows[1]["val_sd"] == statistics.stdev([0.6, 0.8, 0.7])


def test_readout_scripts_agree_with_dblocks_eval(tmp_path, capsys):
    """readout_sweep.py, readout_table.py and chain_readouts.py read one tiny run: each one's
    ensemble and chain numbers are the ones `dblocks eval` reports on val."""
    from diffusionblocks.cli import main

    run = tmp_path / "setting" / "seed-0"
    assert main(["train", "--preset", "tiny", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--split", "val", "--steps", "2", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "tiny-seed-0-val.json").write_text(json.dumps(ev))

    summary = load("readout_sweep").summarise("tiny", tmp_path / "setting", reeval=False)
    assert summary["ensemble"]["values"] == [ev["readouts"]["ensemble"]]
    assert summary["chain"]["values"] == [ev["readouts"]["chain"]]
    assert summary["first_call"]["values"] == [ev["per_block"][0]["chain_accuracy"]]
    table = load("readout_table").table(evals)
    assert table["tiny"]["val"]["ensemble"]["values"] == [ev["readouts"]["ensemble"]]
    assert table["tiny"]["val"]["readout"] == "ensemble"
    readouts = load("chain_readouts").readouts(run)
    key = "every block at sigma_max, z = 0, mean log-prob (readout=ensemble)"
    assert readouts[key] == ev["readouts"]["ensemble"]


def test_text_rows_diagnostics_and_lr_choice_from_recorded_evaluations(tmp_path, monkeypatch):
    """text_rows_table.diagnostics averages the masked-LM readouts over seeds and picks, per
    interval, the block with the lowest ELBO share; lr_sweep_table chooses each method's lr by
    the lowest val BPC."""
    rows = load("text_rows_table")
    runs = []
    for seed, (routed, shares) in enumerate([(3.5, [[1.4, 1.2], [1.3, 0.9]]),
                                              (3.7, [[1.2, 1.1], [1.5, 1.0]])]):  # fmt: skip
        run = tmp_path / f"seed-{seed}"
        run.mkdir()
        ev = {"bpc": routed, "ensemble": {"bpc": routed - 0.1},
              "block_alone": [{"bpc": routed + 0.2}, {"bpc": routed - 0.2}],
              "interval_shares": shares}  # fmt: skip
        (run / "eval-val.json").write_text(json.dumps(ev))
        runs.append(run)
    out = rows.diagnostics(runs)
    assert out["routed"]["mean"] == pytest.approx(3.6) and out["ensemble"]["mean"] == 3.5
    assert out["block_1_alone"]["mean"] == pytest.approx(3.4)
    assert out["best_block_per_interval"] == [[1, 1], [0, 1]]
    assert out["interval_shares_best_block_per_interval"]["values"] == pytest.approx([2.2, 2.2])
    assert rows.diagnostics([]) == {}
    chosen = run_lr_sweep_table(tmp_path, monkeypatch, "bpc", 4.8, [
        ("e2e", 1e-3, 4.0), ("e2e", 2e-3, 4.8), ("dblocks", 1e-3, 3.5),
        ("dblocks", 2e-3, 3.4)])  # fmt: skip
    assert chosen["chosen_lr"] == {"dblocks": 2e-3, "e2e": 1e-3}
    assert chosen["protocol"]["selected_on"] == "val"


def test_text_rows_table_reads_image_generation_runs(tmp_path):
    """For generation runs the table carries class agreement (val and test) and the sampling
    cost from each run's results.json."""
    rows = load("text_rows_table")
    runs = []
    for seed, agreement in enumerate([0.8, 0.9]):
        run = tmp_path / f"seed-{seed}"
        run.mkdir()
        ev = {"fid": 100.0, "class_agreement": agreement, "layer_evals_per_image": 128,
              "calls_per_unit": [21, 3, 8]}  # fmt: skip
        (run / "results.json").write_text(json.dumps({"eval": ev, "eval_val": ev}))
        runs.append(run)
    out = rows.diagnostics(runs)
    assert out["class_agreement_val"]["mean"] == pytest.approx(0.85)
    assert out["layer_evals_per_image"] == 128 and out["calls_per_block"] == [21, 3, 8]


def test_lr_sweep_table_chooses_the_highest_val_accuracy_for_classification(tmp_path, monkeypatch):
    """For a classification sweep the metric is val accuracy, higher is better (BPC is lower)."""
    out = run_lr_sweep_table(tmp_path, monkeypatch, "accuracy", 0.09, [
        ("e2e", 1e-3, 0.90), ("e2e", 2e-3, 0.92), ("e2e", 4e-3, 0.91), ("dblocks", 1e-3, 0.93),
        ("dblocks", 2e-3, 0.89)])  # fmt: skip
    assert out["chosen_lr"] == {"dblocks": 1e-3, "e2e": 2e-3}
    assert out["trivial_val_accuracy"] == 0.09 and "higher" in out["metric"]


def run_lr_sweep_table(tmp_path, monkeypatch, key, trivial, runs):
    """Write one results.json per (method, lr, val metric) as lr_sweep.sh lays them out, run
    lr_sweep_table on them and return the JSON it writes."""
    sweep = tmp_path / "sweep"
    for method, lr, value in runs:
        run = sweep / f"{method}-lr{lr:g}"
        run.mkdir(parents=True)
        ev = {key: value, **({"bpc_stderr": 0.02} if key == "bpc" else {})}
        results = {"eval_val": ev, "config": {"method": method, "lr": lr},
                   "trivial": {"val": {key: trivial}}, "timing": {"train_seconds": 1},
                   "command": "dblocks train ..."}  # fmt: skip
        (run / "results.json").write_text(json.dumps(results))
    monkeypatch.setattr("sys.argv", ["lr_sweep_table.py", str(sweep), "--json",
                                     str(tmp_path / "s.json")])  # fmt: skip
    load("lr_sweep_table").main()
    return json.loads((tmp_path / "s.json").read_text())


def test_the_device_check_is_valid_bash_within_its_time_budget():
    """scripts/device_check.sh runs once, on a lent GPU with little time: its syntax and its
    steps' time limits (under 8 minutes together; the optional compare, indented, not counted)
    are checked here, on every machine."""
    import re
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "device_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    limits = [int(m) for m in re.findall(r"^step \w+ (\d+) ", script.read_text(), re.M)]
    assert len(limits) == 5 and sum(limits) <= 8 * 60
    assert "pytest -q -m cuda" in script.read_text()


def test_text_rows_table_joins_single_seed_comparisons_into_one_row(tmp_path):
    """NAME=F1+F2+F3: the seeds' values joined, FLOPs and time their mean, memory their
    largest (in both units), every command in the protocol; a repeated seed is refused."""
    rows = load("text_rows_table")
    folders, comparisons = [], []
    for seed, (val, mib) in enumerate([(1.0, 100.0), (2.0, 150.0), (3.0, 120.0)]):
        row = {"method": "e2e-ckpt", "metric": "m", "seeds": [seed], "val_values": [val],
               "test_values": [val + 1], "train_flops": 10.0 * (seed + 1),
               "train_seconds": 5.0, "peak_memory_bytes": int(mib * 2**20),
               "train_peak_mib": mib, "command": f"c{seed}", "runs": []}  # fmt: skip
        comparison = {"rows": [row], "protocol": {"command": f"compare {seed}", "seeds": 1}}
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        folders.append(str(folder))
        comparisons.append(comparison)
    ((merged, _runs, comparison),) = rows.rows_of(folders, comparisons)
    assert merged["val_values"] == [1.0, 2.0, 3.0] and merged["seeds"] == [0, 1, 2]
    assert merged["train_flops"] == 20.0 and merged["train_peak_mib"] == 150.0
    assert merged["peak_memory_bytes"] == 150 * 2**20
    assert comparison["protocol"]["seeds"] == 3
    assert comparison["protocol"]["command"] == ["compare 0", "compare 1", "compare 2"]
    with pytest.raises(SystemExit, match="twice"):
        rows.rows_of(folders[:2], [comparisons[0], comparisons[0]])
