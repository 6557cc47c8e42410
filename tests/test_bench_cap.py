"""`dblocks bench cap`: a memory cap the operating system enforces (RLIMIT_DATA), the status of
each method under it, the automatic cap, and bad input."""

import json
import sys

import pytest

from diffusionblocks.bench import cap as capmod
from diffusionblocks.cli import main
from diffusionblocks.commands import UsageError
from diffusionblocks.commands.bench import parse_bytes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA and /proc: Linux")


def test_parse_bytes_and_its_refusals_name_the_option():
    assert parse_bytes("600M", "--cap") == 600 * 2**20
    assert parse_bytes("1.5g", "--cap") == int(1.5 * 2**30)
    assert parse_bytes("629145600", "--cap") == 629145600
    for bad in ("abc", "12Q", "100K", "-5M", "inf", "nan", "2000T"):
        with pytest.raises(UsageError, match="--cap"):
            parse_bytes(bad, "--cap")


def test_auto_cap_lies_between_the_two_peaks_on_a_mib():
    e2e, db = 900 * 2**20 + 123, 400 * 2**20 + 7
    cap = capmod.auto_cap(e2e, db)
    assert db < cap < e2e and cap % 2**20 == 0
    assert cap == pytest.approx(db + (e2e - db) / 4, abs=2**20)


def test_the_cap_is_enforced_by_the_kernel_and_reported_as_oom(tmp_path, monkeypatch):
    """A real child process: under a cap halfway between what the process holds before training
    and its uncapped peak, an allocation fails in the allocator (RLIMIT_DATA) after training
    started, and the worker reports "oom" with the allocator's message; without a cap the same
    run trains. A cap below the start is said to be so, not reported as an out-of-memory run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # A large batch, so that training's activations are most of what the run adds after its
    # start and the allocation that fails is PyTorch's (under a cap hit while loading data, a C
    # extension elsewhere may fail without a MemoryError: "SystemError: error return without
    # exception set" on one machine).
    cpu = {"method": "e2e", "device": "cpu", "batch_size": 512, "hidden": 128, "heads": 4}
    ok = capmod.run_cap_worker("tiny", cpu, tmp_path / "free", None)
    assert ok["status"] == "ok" and ok["peak_bytes"] > ok["start_bytes"] > 100 * 2**20, ok
    assert (tmp_path / "free" / "results.json").exists()
    half = ok["start_bytes"] + (ok["peak_bytes"] - ok["start_bytes"]) // 2
    capped = capmod.run_cap_worker("tiny", cpu, tmp_path / "capped", half)
    assert capped["status"] == "oom", capped
    assert "DefaultCPUAllocator: can't allocate memory" in capped["message"], capped["message"]
    assert (tmp_path / "capped" / "config.json").exists()  # the run had started
    assert not (tmp_path / "capped" / "results.json").exists()
    low = capmod.run_cap_worker("tiny", cpu, tmp_path / "low", ok["start_bytes"] // 2)
    assert low["status"] == "error" and "before training" in low["message"], low


def test_is_oom_knows_the_allocators_messages_and_nothing_else():
    assert capmod.is_oom(MemoryError())
    assert capmod.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert capmod.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not capmod.is_oom(RuntimeError("shape mismatch"))
    assert not capmod.is_oom(ValueError("cap"))


def test_bench_cap_command_auto_cap_statuses_and_json(tmp_path, monkeypatch, capsys):
    """The command's logic with the worker replaced: probes choose the cap, every method runs
    under it, the JSON has the three statuses, the cap and a protocol."""
    peaks = {"e2e": 800 * 2**20, "e2e-ckpt": 600 * 2**20, "dblocks": 400 * 2**20}
    calls = []

    def worker(preset, overrides, out, cap, mmap_threshold):
        assert mmap_threshold == 131072  # as dblocks bench memory
        name = {"e2e": "e2e", "e2e-ckpt": "e2e-ckpt", "dblocks": "dblocks"}[overrides["method"]]
        calls.append((name, cap))
        peak = peaks[name]
        status = "ok" if cap is None or peak <= cap else "oom"
        return {"status": status, "message": "", "peak_bytes": peak if status == "ok"
                else None, "peak_rss_bytes": None, "wall_seconds": 1.0}  # fmt: skip

    monkeypatch.setattr(capmod, "run_cap_worker", worker)
    out, js = tmp_path / "runs", tmp_path / "cap.json"
    assert main(["bench", "cap", "--preset", "tiny", "--out", str(out), "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    cap = capmod.auto_cap(peaks["e2e"], peaks["dblocks"])
    assert calls == [("e2e", None), ("e2e-ckpt", None), ("dblocks", None), ("e2e", cap),
                     ("e2e-ckpt", cap), ("dblocks", cap)]  # fmt: skip
    assert (result["e2e_status"], result["e2e_ckpt_status"], result["dblocks_status"]) == (
        "oom",
        "oom",
        "ok",
    )
    assert result["cap_bytes"] == cap and result["cap_chosen"] == "auto"
    assert result["protocol"]["command"].startswith("dblocks bench cap")
    printed = capsys.readouterr().out
    assert "| e2e | **oom** |" in printed and "| dblocks | **ok** |" in printed
    # A given cap: no probes.
    calls.clear()
    js2 = tmp_path / "given.json"
    assert main(["bench", "cap", "--preset", "tiny", "--cap", "600M", "--out",
                 str(tmp_path / "given"), "--json", str(js2)]) == 0  # fmt: skip
    assert [c[1] for c in calls] == [600 * 2**20] * 3
    assert json.loads(js2.read_text())["e2e_ckpt_status"] == "ok"  # 600M fits 600 MiB


def test_bench_cap_says_why_no_cap_can_be_chosen(tmp_path, monkeypatch, capsys):
    """A probe that fails, or a DiffusionBlocks run that needs as much as end to end: one
    sentence, exit code 2, no traceback."""

    def worker(preset, overrides, out, cap, mmap_threshold, peaks=None):
        failed = overrides["method"] == "e2e-ckpt" and peaks is None
        return {"status": "error" if failed else "ok", "message": "killed", "peak_bytes": 500}

    monkeypatch.setattr(capmod, "run_cap_worker", worker)
    assert main(["bench", "cap", "--preset", "tiny", "--out", str(tmp_path / "a")]) == 2
    assert "the uncapped e2e-ckpt run failed (killed)" in capsys.readouterr().err
    monkeypatch.setattr(capmod, "run_cap_worker", lambda *a: worker(*a, peaks=True))
    assert main(["bench", "cap", "--preset", "tiny", "--out", str(tmp_path / "b")]) == 2
    assert "as much memory as end to end" in capsys.readouterr().err


def test_bench_cap_refuses_bad_input_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(capmod, "run_cap_worker", lambda *a: pytest.fail("no run expected"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    for argv, message in (
        (["--cap", "lots"], "--cap"),
        (["--cap", "inf"], "--cap"),
        (["--cap", "1e30G"], "--cap"),
        (["--set", "method=e2e"], "--set method"),
        (["--set", "resident=false"], "--set resident"),
        (["--out", str(tmp_path / "file")], "--out"),
        (["--set", "nosuchkey=1"], "nosuchkey"),
        (["--out", str(tmp_path / "full")], "--out"),
        (["--malloc-mmap-threshold", "-1"], "--malloc-mmap-threshold"),
    ):
        assert main(["bench", "cap", "--preset", "tiny", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_the_command_lines_mmap_threshold_is_the_benchmarks_default():
    from diffusionblocks.bench import DEFAULT_MMAP_THRESHOLD
    from diffusionblocks.cli import build_parser

    for kind in ("cap", "memory"):
        args = build_parser().parse_args(["bench", kind])
        assert args.malloc_mmap_threshold == DEFAULT_MMAP_THRESHOLD
