"""Every published results file says how its numbers were made (docs/protocol.md §5): a top-level
``protocol`` object with ``selected_on``, ``reported_on``, ``seeds``, ``baselines`` and
``command``. (a) Each JSON under docs/results that README.md or a page under docs/ names carries
one; (b) the scripts that write results JSON build it themselves (scripts/experiments/protocol.py,
``dblocks bench``), so regenerating a file keeps it. Nothing is trained here."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SCRIPTS = ROOT / "scripts" / "experiments"
KEYS = ("selected_on", "reported_on", "seeds", "baselines", "command")

# Published JSON files (by name) that are named in the docs but are not results of their own.
NOT_RESULTS = {
    "rows.json": "`dblocks compare --json`'s copy of the method rows of the comparison.json "
    "beside it, a bare list; that comparison.json carries the protocol (checked below)",
}

# Scripts in scripts/experiments/ that write JSON without a protocol object, and why.
NO_PROTOCOL_SCRIPTS = {
    "resolve_configs.py": "rewrites published files in place, adding each row's resolved config; "
    "it keeps every other key, the protocol included",
}


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def referenced_results() -> dict[Path, list[str]]:
    """JSON files under docs/results named by README.md or a Markdown page under docs/: by their
    path from the repository root, from docs/results, or from the page's folder; or, in a page
    template beside them, as ``{{STEM}}`` (memory_report.py fills those in from the file)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts = {page: page.read_text() for page in pages}
    found: dict[Path, list[str]] = {}
    for path in sorted(RESULTS.rglob("*.json")):
        names = {path.relative_to(ROOT).as_posix(), path.relative_to(RESULTS).as_posix()}
        for page, text in texts.items():
            here = {*names, Path(os.path.relpath(path, page.parent)).as_posix()}
            if page.parent == path.parent:
                here.add("{{" + path.stem + "}}")
            if any(name in text for name in here):
                found.setdefault(path, []).append(page.relative_to(ROOT).as_posix())
    return found


def test_every_results_file_the_docs_name_carries_a_protocol():
    referenced = referenced_results()
    assert len(referenced) > 30  # the matching finds the published files at all
    missing = []
    for path, pages in referenced.items():
        rel = path.relative_to(ROOT).as_posix()
        data = json.loads(path.read_text())
        if path.name in NOT_RESULTS:
            beside = json.loads((path.parent / "comparison.json").read_text())
            assert isinstance(beside.get("protocol"), dict), rel
            continue
        protocol = data.get("protocol") if isinstance(data, dict) else None
        if not isinstance(protocol, dict):
            missing.append(f"{rel} (named in {', '.join(pages)})")
            continue
        assert [k for k in KEYS if k not in protocol] == [], rel
        assert isinstance(protocol["seeds"], int) and protocol["seeds"] >= 1, rel
        assert isinstance(protocol["baselines"], list), rel
        assert isinstance(protocol["command"], str) and protocol["command"], rel
        assert isinstance(protocol.get("caveats", []), list), rel
    assert missing == []


def test_protocol_helper_records_the_scripts_own_command_line():
    p = load("protocol")
    out = p.protocol(selected_on="val", reported_on="val", seeds=3, baselines=("e2e",),
                     caveats=["a caveat"], argv=["/tmp/a b", "--json", "out.json"],
                     script="/somewhere/scripts/experiments/chain_readouts.py")  # fmt: skip
    assert list(out) == [*KEYS, "caveats"]
    assert out["command"] == (
        "python scripts/experiments/chain_readouts.py '/tmp/a b' --json out.json"
    )
    assert shlex.split(out["command"])[2] == "/tmp/a b"
    assert out["baselines"] == ["e2e"] and out["caveats"] == ["a caveat"]
    assert p.command("x.py", [], preceded_by="bash s.sh") == (
        "bash s.sh && python scripts/experiments/x.py"
    )
    parser = argparse.ArgumentParser()
    p.add_caveat_argument(parser)
    assert parser.parse_args([]).caveat == []
    assert parser.parse_args(["--caveat", "a", "--caveat", "b"]).caveat == ["a", "b"]


def writes_json(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("dump", "dumps")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "json"
        for node in ast.walk(tree)
    )


def builds_protocol(tree: ast.AST) -> bool:
    """Calls protocol(...) (scripts/experiments/protocol.py) or writes a "protocol" key."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "protocol":
            return True
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value == "protocol" for k in node.keys
        ):
            return True
    return False


def test_every_script_that_writes_results_json_builds_its_protocol():
    offenders = []
    for script in sorted(SCRIPTS.glob("*.py")):
        tree = ast.parse(script.read_text())
        allowed = script.name in NO_PROTOCOL_SCRIPTS
        if writes_json(tree) and not builds_protocol(tree) and not allowed:
            offenders.append(script.name)
    assert offenders == []
    for name in NO_PROTOCOL_SCRIPTS:  # each exception still exists and still writes JSON
        assert writes_json(ast.parse((SCRIPTS / name).read_text())), name


def fake_run(folder: Path, method: str, seed: int, chain: list[float]) -> Path:
    """A run folder as the scripts read it: results.json (eval, eval_val with both readouts and
    the chain per block, accounting, timing) and config.json."""
    folder.mkdir(parents=True)
    per_block = [{"block": b, "sigma_interval": [b, b + 1], "chain_accuracy": acc}
                 for b, acc in enumerate(chain)]  # fmt: skip
    config = {"method": method, "num_blocks": len(chain), "seed": seed, "epochs": 1,
              "weighting": "none", "p_mean": 1.0, "overlap": 0.05}  # fmt: skip
    results = {
        "config": config,
        "eval": {"accuracy": chain[-1]},
        "eval_val": {"per_block": per_block,
                     "readouts": {"chain": chain[-1], "ensemble": max(chain)}},
        "accounting": {"layers_per_unit": [2] * len(chain), "layer_evaluations": 10},
        "timing": {"train_seconds": 1.0, "median_step_seconds": 0.01},
        "command": f"dblocks train --preset tiny --set seed={seed}",
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "config.json").write_text(json.dumps({"config": config}))
    return folder


def test_chain_by_block_writes_its_protocol_and_rows(tmp_path):
    folder = tmp_path / "cmp"
    for seed, chain in enumerate([[0.5, 0.6], [0.7, 0.8], [0.9, 0.7]]):
        fake_run(folder / "dblocks" / f"seed-{seed}", "dblocks", seed, chain)
    out = tmp_path / "chain-by-block.json"
    argv = [str(folder), "--json", str(out), "--caveat", "a pilot"]
    load("chain_by_block").main(argv)
    data = json.loads(out.read_text())
    assert list(data) == ["protocol", "rows"] and len(data["rows"]) == 2
    protocol = data["protocol"]
    assert protocol["seeds"] == 3 and protocol["reported_on"] == "val"
    assert protocol["selected_on"].startswith("none (")
    assert protocol["command"] == "python scripts/experiments/chain_by_block.py " + shlex.join(argv)
    assert protocol["caveats"][-1] == "a pilot"


def test_readout_sweep_and_collect_write_their_protocol(tmp_path):
    for name, seeds in (("base", 3), ("other", 2)):
        for seed in range(seeds):
            fake_run(tmp_path / name / f"seed-{seed}", "dblocks", seed, [0.8, 0.9])
    out = tmp_path / "sweep.json"
    load("readout_sweep").main([f"base={tmp_path / 'base'}", f"other={tmp_path / 'other'}",
                                "--json", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert list(data) == ["protocol", "rows"] and [r["setting"] for r in data["rows"]] == [
        "base",
        "other",
    ]
    assert data["protocol"]["seeds"] == 3 and data["protocol"]["selected_on"] == "val"
    assert data["protocol"]["baselines"][0].startswith("base ")
    assert "other: 2 seeds" in data["protocol"]["caveats"]

    e2e = fake_run(tmp_path / "e2e-s0", "e2e", 0, [0.95])
    dbl = tmp_path / "base" / "seed-1"
    assert load("collect").main([str(tmp_path / "table"), str(e2e), str(dbl)]) == 0
    data = json.loads((tmp_path / "table.json").read_text())
    assert list(data) == ["protocol", "rows"] and len(data["rows"]) == 2
    assert data["protocol"]["baselines"] == ["e2e"] and data["protocol"]["seeds"] == 1
    assert data["protocol"]["reported_on"].startswith("test")


def test_bench_and_data_parallel_protocols_say_repeats_are_not_seeds():
    from diffusionblocks.bench import SPEED_CONFIGS
    from diffusionblocks.commands.bench import bench_protocol

    speed = bench_protocol("speed", "bench", SPEED_CONFIGS, 15, "dblocks bench speed --json s.json")
    assert speed["baselines"] == ["e2e", "e2e+ckpt"] and speed["seeds"] == 1
    assert speed["selected_on"] == "none" and speed["reported_on"].startswith("none:")
    assert "15 interleaved timing repeats, not seeds" in speed["caveats"][0]
    assert speed["command"] == "dblocks bench speed --json s.json"
    memory = bench_protocol("memory", "bench", ("e2e", "dblocks"), 1, "dblocks bench memory")
    assert memory["baselines"] == ["e2e"] and "memory" in memory["reported_on"]

    args = argparse.Namespace(preset="bench", epochs=1.0, repeats=2, caveat=["shared machine"])
    dp = load("data_parallel").dp_protocol(args, ["--repeats", "2"])
    assert dp["seeds"] == 1 and dp["repeats"] == 2 and dp["caveats"][-1] == "shared machine"
    assert "timing repeats, not seeds" in dp["caveats"][0]
    assert dp["command"] == "python scripts/experiments/data_parallel.py --repeats 2"


def test_bench_json_carries_the_protocol_first(tmp_path, monkeypatch, capsys):
    """``dblocks bench speed --json`` writes protocol, command, records (the timings faked)."""
    from diffusionblocks import bench
    from diffusionblocks.cli import main

    def fake_speed(preset, blocks, overrides, repeats):
        return [{"config": name, "blocks": b, "median_step_seconds": 0.01 / b,
                 "step_ratio_to_e2e": 1 / b, "median_paired_step_ratio": 1 / b,
                 "equal_compute_ratio": 1.0}
                for name, b in (("e2e", 1), ("e2e+ckpt", 1), ("dblocks", 2))]  # fmt: skip

    monkeypatch.setattr(bench, "run_speed_bench", fake_speed)
    out = tmp_path / "s.json"
    argv = ["bench", "speed", "--preset", "tiny", "--blocks", "2", "--repeats", "3", "--json",
            str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert list(data) == ["protocol", "command", "records"]
    assert data["protocol"]["command"] == data["command"] == shlex.join(["dblocks", *argv])
    assert "3 interleaved timing repeats" in data["protocol"]["caveats"][0]
