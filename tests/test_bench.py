"""Memory/speed benchmark: exact activation accounting, residency, and the command end to end."""

import json

import pytest
import torch
from helpers import tiny_task

from diffusionblocks.bench import SavedTensorCounter, config_overrides, predicted_bytes
from diffusionblocks.cli import main


def _activation_bytes(task, unit):
    counter = SavedTensorCounter(list(task.model.parameters()))
    batch = task.train_batch(torch.arange(64))
    with counter.counting():
        loss, _ = task.loss(unit, batch, torch.Generator().manual_seed(0))
    loss.backward()
    return counter.bytes


def test_counter_sees_saved_activations_not_parameters():
    lin = torch.nn.Linear(100, 100)
    x = torch.randn(32, 100, requires_grad=True)
    counter = SavedTensorCounter(list(lin.parameters()))
    with counter.counting():
        y = lin(x).relu()
    # Linear saves its input x (32x100 floats); relu saves its output (32x100); the weight is a
    # parameter and does not count.
    assert counter.bytes == 2 * 32 * 100 * 4
    y.sum().backward()


@pytest.mark.parametrize("blocks", [2, 4])
def test_one_block_saves_about_one_over_b_of_the_network(blocks):
    """Saved-activation bytes of one block's step ~ 1/B of the whole network's at equal batch."""
    e2e = _activation_bytes(tiny_task(method="e2e", depth=8, hidden=64, heads=4), 0)
    task = tiny_task(num_blocks=blocks, depth=8, hidden=64, heads=4)
    one = _activation_bytes(task, 0)
    assert one / e2e == pytest.approx(1 / blocks, rel=0.15)


def test_checkpointing_keeps_only_layer_inputs():
    plain = _activation_bytes(tiny_task(method="e2e", depth=8), 0)
    ckpt = _activation_bytes(tiny_task(method="e2e", depth=8, checkpointing=True), 0)
    assert ckpt < plain / 3


def test_checkpointing_gives_the_same_gradients():
    grads = []
    for flag in (False, True):
        task = tiny_task(method="e2e", checkpointing=flag)
        loss, _ = task.loss(0, task.train_batch(torch.arange(32)), torch.Generator())
        loss.backward()
        grads.append([p.grad.clone() for p in task.model.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_paper_formula():
    P, A, L = 10, 100, 12
    assert predicted_bytes("e2e", 1, L, P, A, 0) == (4 * P + A) * L
    assert predicted_bytes("dblocks-resident", 4, L, P, A, 0) == (4 * P + A) * L // 4
    assert predicted_bytes("dblocks", 4, L, P, A, 0) == 4 * P * L + A * L // 4
    assert predicted_bytes("e2e+ckpt", 1, L, P, A, 5) == 4 * P * L + A + 20
    assert config_overrides("dblocks-resident+ckpt", 3)["schedule"] == "sequential"


def test_bench_memory_end_to_end(tmp_path, capsys):
    out_json, out_png = tmp_path / "m.json", tmp_path / "m.png"
    code = main(
        [
            "bench",
            "memory",
            "--preset",
            "tiny",
            "--blocks",
            "2",
            "--steps",
            "2",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads(out_json.read_text())
    records = data["records"]
    assert {r["config"] for r in records} == {
        "e2e",
        "e2e+ckpt",
        "dblocks",
        "dblocks-resident",
        "dblocks-swap",
        "dblocks-resident+ckpt",
    }
    for r in records:
        for key in (
            "config",
            "blocks",
            "peak_bytes",
            "activation_bytes",
            "param_bytes",
            "grad_bytes",
            "optimizer_bytes",
            "predicted_bytes",
        ):
            assert key in r, key
    by = {r["config"]: r for r in records}
    # Resident: only one block's weights and optimizer state exist; all-resident keeps them all.
    assert by["dblocks-resident"]["param_bytes"] < by["dblocks"]["param_bytes"]
    assert by["dblocks-resident"]["optimizer_bytes"] < by["dblocks"]["optimizer_bytes"]
    # swapping blocks in and out holds one block like the sequential order
    assert by["dblocks-swap"]["param_bytes"] == by["dblocks-resident"]["param_bytes"]
    assert by["dblocks-swap"]["optimizer_bytes"] < by["dblocks"]["optimizer_bytes"]
    assert by["dblocks"]["activation_bytes"] < by["e2e"]["activation_bytes"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_speed_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "s.json"
    code = main(
        [
            "bench",
            "speed",
            "--preset",
            "tiny",
            "--blocks",
            "2",
            "--repeats",
            "2",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = json.loads(out_json.read_text())["records"]
    assert [r["config"] for r in records] == ["e2e", "e2e+ckpt", "dblocks", "dblocks+ckpt"]
    assert all(r["median_step_seconds"] > 0 for r in records)
    assert records[0]["step_ratio_to_e2e"] == 1.0
    assert "inference_ratio_to_e2e" in records[2]
    # Both DiffusionBlocks readouts are timed, the run's own (the ensemble) first, B calls each.
    whats = [case["what"] for case in records[2]["inference"]]
    assert whats == ["ensemble readout, 2 calls", "chain readout, 2 calls"]
    assert records[0]["inference"][0]["unit"] == "images/s"


@pytest.mark.parametrize(
    "preset,blocks,unit",
    [("dit-tiny", "2", "images/s"), ("mdm-tiny", "2", "characters/s"),
     ("ar-tiny", "2", "characters/s"), ("recurrent-tiny", "1", "characters/s")],
)  # fmt: skip
def test_bench_speed_times_generation_per_image_and_character(tmp_path, preset, blocks, unit):
    out_json = tmp_path / "s.json"
    argv = ["bench", "speed", "--preset", preset, "--blocks", blocks, "--repeats", "1",
            "--json", str(out_json)]  # fmt: skip
    assert main(argv) == 0
    records = json.loads(out_json.read_text())["records"]
    timed = [r for r in records if "inference" in r]
    assert [r["config"] for r in timed] == ["e2e", "dblocks"]  # recurrent's e2e row: bptt
    for r in timed:
        (case,) = r["inference"]
        assert case["unit"] == unit and case["items"] >= 1
        assert case["items_per_second"] == pytest.approx(case["items"] / case["median_seconds"])


def test_bench_threads_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "t.json"
    argv = ["bench", "threads", "--preset", "tiny", "--threads", "1", "--processes", "1,2",
            "--steps", "3", "--warmup", "1", "--json", str(out_json)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out_json.read_text())
    assert data["protocol"]["command"].startswith("dblocks bench threads")
    one, two = data["records"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len(two["workers"]) == 2 and all(w["threads"] == 1 for w in two["workers"])
    assert all(len(w["step_seconds"]) == 3 for w in two["workers"])
    assert two["steps_per_second_total"] == pytest.approx(
        sum(1 / m for m in two["median_step_seconds_by_process"])
    )
    assert one["total_vs_1x1"] == 1.0
    assert "| 2 x 1 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--set", "threads=2"], "--set threads"),
        (["--steps", "0"], "--steps"),
        (["--warmup", "-1"], "--warmup"),
        (["--threads", "x"], "--threads"),
        (["--processes", "0"], "--processes"),
    ],
)
def test_bench_threads_refusals_name_their_option(capsys, argv, message):
    assert main(["bench", "threads", "--preset", "tiny", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["bench", "memory", "--preset", "tiny", "--blocks", "3"], "must divide depth"),
        (["bench", "memory", "--preset", "tiny", "--blocks", "x"], "comma-separated integers"),
        (["bench", "speed", "--preset", "tiny", "--repeats", "0"], "--repeats"),
        (["bench", "memory", "--preset", "tiny", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bench_bad_input(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
