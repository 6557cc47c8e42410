"""What a new user sees (issue 14): file modes, plots without warnings, words in printed output,
metrics fields, `dblocks schedule --preset`, labelled sample grids, plain progress when piped,
and the keys printed above the benchmark tables."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import struct
import warnings

import pytest
import torch

from diffusionblocks import bench
from diffusionblocks.cli import build_parser, main, print_evaluation, sample_text
from diffusionblocks.png import image_grid, text_mask
from diffusionblocks.registry import make_config
from diffusionblocks.runs import split_record
from diffusionblocks.tasks.base import Task
from diffusionblocks.training.checkpoint import atomic_write_json, atomic_write_text
from diffusionblocks.training.trainer import block_sequence


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny 2-block run with the progress display on and stdout/stderr not terminals (as
    when piped), logged every 2 steps; its folder and what it printed."""
    run_dir = tmp_path_factory.mktemp("user") / "run"
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["train", "--preset", "tiny", "--set", "device=cpu", "--set",
                         "log_every=2", "--out", str(run_dir)])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err.getvalue()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, out.getvalue(), err.getvalue(), records


# ---------------------------------------------------------------------- 1. file modes
def test_run_files_have_the_mode_open_gives(tiny_run, tmp_path):
    run_dir, *_ = tiny_run
    with open(tmp_path / "plain.json", "w") as fh:
        fh.write("{}")
    os.mkdir(tmp_path / "plain-dir")
    for name in ("config.json", "results.json", "metrics.jsonl", "checkpoints/latest"):
        assert mode(run_dir / name) == mode(tmp_path / "plain.json"), name
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert mode(ckpt) == mode(tmp_path / "plain-dir")


def test_atomic_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        assert mode(tmp_path / "a.json") == 0o640
    finally:
        os.umask(old)
    path = tmp_path / "b.txt"
    path.write_text("old")
    os.chmod(path, 0o604)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o604


# ---------------------------------------------------------------------- 2. plots
@pytest.mark.parametrize(
    "records",
    [
        [{"step": s, "loss_block_0": 0.5} for s in range(1, 6)],  # constant
        [{"step": 1, "loss_block_0": 0.5}],  # one point
        [],  # nothing logged
        [{"step": s, "loss_block_0": 0.0, "loss_block_1": 0.0} for s in range(1, 4)],  # 1 class
        [{"step": 1, "loss_block_0": "nan"}, {"step": 2, "eval_accuracy": 1.0}],  # no numbers
        [{"step": 1, "loss_block_0": -0.5}, {"step": 2, "loss_block_0": 0.25}],
    ],
    ids=["constant", "single", "empty", "zero", "nan", "negative"],
)
def test_loss_plot_warns_about_nothing(tmp_path, records):
    pytest.importorskip("matplotlib")
    from diffusionblocks.training.metrics import plot_losses

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_losses(metrics, tmp_path / "loss.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- 3. "block", not "unit"
UNIT = re.compile(r"\bunits?\b")


def test_training_output_says_block(tiny_run):
    _, out, err, _ = tiny_run
    assert not UNIT.search(out) and not UNIT.search(err), out + err
    assert "per block" in out


def test_evaluation_printout_says_block(capsys):
    print_evaluation(
        {
            "heldout_mse_per_unit": [0.1, 0.2],
            "fid": 3.0,
            "steps_sweep": {
                "4": {"samples": 10, "cfg_scale": 1.0, "fid": 3.0, "layer_evals_per_image": 4,
                      "calls_per_unit": [2, 2], "class_agreement": 0.5, "class_counts": [5, 5]}
            },
        }
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "MSE per block" in out and "calls per block" in out and not UNIT.search(out)


# ---------------------------------------------------------------------- 4. test_ prefix
def test_final_metrics_record_is_not_double_prefixed(tiny_run):
    *_, records = tiny_run
    final = records[-1]
    assert "test_examples" in final and "test_accuracy" in final
    assert not any(k.startswith("test_test_") for r in records for k in r)
    assert split_record({"split": "test", "accuracy": 0.5, "test_examples": 3}) == {
        "test_accuracy": 0.5,
        "test_examples": 3,
    }


# ---------------------------------------------------------------------- 5. epoch
def test_logged_epoch_is_the_trained_blocks_own(tiny_run):
    run_dir, *_, records = tiny_run
    config = json.loads((run_dir / "config.json").read_text())["config"]
    acc = json.loads((run_dir / "results.json").read_text())["accounting"]
    spe, budget = acc["steps_per_epoch"], acc["steps_per_unit_budget"]
    seq = block_sequence(config["schedule"], (0, 1), budget, config["seed"],
                         config["cycle_steps"]).tolist()  # fmt: skip
    logged = [r for r in records if "block" in r and "epoch" in r]
    assert logged and {r["block"] for r in logged} == {0, 1}
    for r in logged:
        own = seq[: r["step"]].count(r["block"])
        assert r["epoch"] == pytest.approx(own / spe)
        assert r["data_epochs"] == pytest.approx(r["step"] / spe)
    # One epoch per block (the tiny preset): no block's epoch goes past it, the data twice.
    assert max(r["epoch"] for r in logged) == pytest.approx(budget / spe)
    assert logged[-1]["data_epochs"] == pytest.approx(2 * budget / spe)


# ---------------------------------------------------------------------- 6. schedule --preset
def test_schedule_takes_a_preset_and_flags_override_it(capsys):
    code, out, err = run(capsys, "schedule", "--preset", "tiny", "--json")
    assert code == 0, err
    assert json.loads(out) == make_config("tiny").block_partition().describe()

    code, out, _ = run(capsys, "schedule", "--preset", "tiny", "--blocks", "3", "--json")
    data = json.loads(out)
    assert len(data["blocks"]) == 3 and data["overlap"] == make_config("tiny").overlap

    code, out, _ = run(capsys, "schedule", "--preset", "tiny", "--set", "num_blocks=4",
                       "--set", "overlap=0.1", "--json")  # fmt: skip
    expected = make_config("tiny", {"num_blocks": 4, "overlap": 0.1}).block_partition()
    assert code == 0 and json.loads(out) == expected.describe()

    code, out, _ = run(capsys, "schedule", "--preset", "tiny")
    assert code == 0 and "preset tiny: B=2" in out and "block 0 = noisiest" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "--blocks B is required"),
        (["--blocks", "2", "--set", "overlap=0.1"], "--set needs --preset"),
        (["--preset", "mdm-tiny"], "masking time"),
        (["--preset", "tiny", "--set", "num_blocks=0"], "num_blocks"),
    ],
)
def test_schedule_errors(capsys, argv, message):
    code, _, err = run(capsys, "schedule", *argv)
    assert code == 2 and message in err


# ---------------------------------------------------------------------- 7. memory plot
def _memory_records():
    recs = [{"config": "e2e", "blocks": 1, "peak_with_weights_bytes": 9 << 20,
             "predicted_bytes": 9 << 20}]  # fmt: skip
    for name in ("dblocks", "dblocks-resident"):
        for b in (1, 2, 3, 4, 6):
            recs.append({"config": name, "blocks": b, "peak_with_weights_bytes": (9 << 20) // b,
                         "predicted_bytes": (8 << 20) // b})  # fmt: skip
    return recs


def test_memory_plot_has_integer_ticks_and_explains_the_dotted_lines(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bench.plot_memory(_memory_records(), tmp_path / "m.png") is not None
    ax = figures[0].axes[0]
    assert list(ax.get_xticks()) == [1, 2, 3, 4, 6]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4", "6"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("paper formula" in t and "dotted" in t for t in labels)
    close(figures[0])


# ---------------------------------------------------------------------- 8. sample grids
def test_grid_is_upscaled_and_rows_are_labelled():
    images = torch.zeros(6, 1, 28, 28)
    plain = image_grid(images, rows=2)
    assert plain.shape[0] >= 2 * 64  # every image at least 64 px on its side
    labelled = image_grid(images, rows=2, row_labels=["0 T-shirt/top", "1 Trouser"])
    assert labelled.shape[0] == plain.shape[0] and labelled.shape[1] > plain.shape[1]
    column = labelled[:, : labelled.shape[1] - plain.shape[1]]
    half = labelled.shape[0] // 2
    assert (column[:half] == 0).any() and (column[half:] == 0).any()  # ink in both rows
    assert torch.equal(labelled[:, -plain.shape[1] :], plain)
    assert text_mask("ab", 2).shape == (14, 22)
    with pytest.raises(ValueError, match="row labels"):
        image_grid(images, rows=2, row_labels=["only one"])


def test_sample_cli_writes_a_labelled_grid(tmp_path, capsys):
    pytest.importorskip("sklearn")
    run_dir = str(tmp_path / "run")
    code = main(["train", "--preset", "dit-tiny", "--set", "data=digits", "--set", "patch_size=4",
                 "--set", "fid_samples=0", "--set", "train_subset=128", "--set", "test_subset=64",
                 "--set", "device=cpu", "--out", run_dir, "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    png = tmp_path / "grid.png"
    code, out, err = run(capsys, "sample", "--run", run_dir, "--n", "2", "--steps", "2",
                         "--out", str(png))  # fmt: skip
    assert code == 0, err
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert height >= 10 * 64 and width > 2 * 64
    assert "rows, top to bottom: 0, 1, 2" in out
    assert not UNIT.search(out)


# ---------------------------------------------------------------------- 9. piped progress
def test_piped_progress_is_plain_lines(tiny_run):
    _, _, err, _ = tiny_run
    assert "\r" not in err and "it/s" not in err and "step/s" not in err
    lines = [line for line in err.splitlines() if re.match(r"dblocks: step \d+/\d+", line)]
    assert lines and lines[-1].startswith("dblocks: step ")
    last = re.match(r"dblocks: step (\d+)/(\d+)", lines[-1])
    assert last.group(1) == last.group(2)  # the last step is always reported


# ---------------------------------------------------------------------- 10. text sample --n
class _FakeTextTask(Task):
    """A task that generates text, sampled through the protocol (``Task.sample``) as every
    task is; no corpus and no network."""

    generates = "text"

    class config:  # noqa: N801 - the run's sampling defaults
        task = "fake"
        temperature = 1.0
        seq_len = 64

    class vocab:  # noqa: N801
        @staticmethod
        def encode(text):
            return [0] * len(text)

    def __init__(self):
        pass

    def _sample_text(self, length, generator, prompt, steps, temperature):
        return "x" * length, {"steps": 1, "calls_per_unit": [1, 1]}


def test_text_sample_notes_the_image_only_flags(capsys):
    args = build_parser().parse_args(["sample", "--run", "r", "--n", "4", "--length", "3"])
    assert sample_text(_FakeTextTask(), args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "xxx"
    assert "note: --n apply to image samples" in err and "calls per block" in err
    args = build_parser().parse_args(["sample", "--run", "r", "--length", "3"])
    assert sample_text(_FakeTextTask(), args) == 0
    assert "note:" not in capsys.readouterr().err


# ---------------------------------------------------------------------- 11. bench tables
def test_bench_tables_say_what_they_measure(capsys, monkeypatch):
    def fake_speed(preset, blocks, overrides, repeats):
        return [
            {"config": name, "blocks": b, "median_step_seconds": 0.01 / b,
             "step_ratio_to_e2e": 1 / b, "median_paired_step_ratio": 1 / b,
             "equal_compute_ratio": 1.0}
            for name, b in (("e2e", 1), ("dblocks", 2))
        ]  # fmt: skip

    monkeypatch.setattr(bench, "run_speed_bench", fake_speed)
    code, out, err = run(capsys, "bench", "speed", "--preset", "tiny", "--blocks", "2")
    assert code == 0, err
    assert "ratio to trust" in out and "not total training time" in out
    assert out.index("What the columns measure") < out.index("| config |")
    assert "ratio to trust" in bench.MEMORY_TABLE_KEY and "peak+weights" in bench.MEMORY_TABLE_KEY


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_rows_match_the_channels_written(channels):
    import struct
    import zlib

    from diffusionblocks.png import encode_png, image_grid

    images = torch.rand(4, channels, 6, 5)
    pixels = image_grid(images, rows=2)
    data = encode_png(pixels)
    width, height, _, colour = struct.unpack(">IIBB", data[16:26])
    idat = data.index(b"IDAT")
    size = struct.unpack(">I", data[idat - 4 : idat])[0]
    raw = zlib.decompress(data[idat + 4 : idat + 4 + size])
    per_pixel = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    assert per_pixel == channels and len(raw) == height * (1 + width * per_pixel)
