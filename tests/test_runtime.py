"""How a run uses the machine: the ``threads``, ``precision`` and ``compile`` keys (runtime.py)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import snapshot, tiny_config, tiny_task

from diffusionblocks import runtime
from diffusionblocks.config import ConfigError
from diffusionblocks.runs import evaluate_run, train_run
from diffusionblocks.training.trainer import Trainer


# ---------------------------------------------------------------------- threads
def test_a_positive_threads_key_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.choose_threads(5) == (5, "threads key")


def test_auto_respects_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.choose_threads(0) == (3, "OMP_NUM_THREADS")


def test_auto_alone_takes_every_core_pytorch_would(monkeypatch):
    """Measured: alone, every preset trained fastest on all cores (docs/results/threads/)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime, "_DEFAULT_THREADS", 6)  # PyTorch's default: physical cores
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert runtime.available_cores() == 6  # not the 12 logical CPUs
    assert runtime.choose_threads(0) == (6, "6 cores")
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert runtime.available_cores() == 2  # a narrower affinity mask wins


def test_auto_shares_the_cores_among_torchrun_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.choose_threads(0) == (8, "8 cores")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # three processes on this machine: 2 each
    assert runtime.choose_threads(0) == (2, "8 cores / 3 processes")
    assert runtime.choose_threads(0, alone=True) == (8, "8 cores")  # the others are idle
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # more processes than cores: one each
    assert runtime.choose_threads(0)[0] == 1


def test_under_torchrun_its_omp_num_threads_is_respected(monkeypatch):
    """torchrun sets OMP_NUM_THREADS=1 when it starts several processes: respected (no
    oversubscription); a user's own value too."""
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.choose_threads(0) == (1, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.choose_threads(0) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")  # another launcher: the cores shared
    assert runtime.choose_threads(0) == (4, "8 cores / 2 processes")


def test_the_step_estimate_counts_parameters_examples_and_positions():
    assert runtime.step_flops(1000, 8, 50) == 6 * 1000 * 8 * 50
    assert runtime.step_flops(1000, 8, 0) == runtime.step_flops(1000, 8, 1)
    vit = tiny_task()
    assert vit.positions > 1  # patches of the image, not one vector


def test_a_run_records_its_threads_and_gives_the_previous_count_back(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    seen = []
    monkeypatch.setattr(Trainer, "fit", _spy(Trainer.fit, seen))
    results = train_run(tiny_config(threads=1), tmp_path / "run", progress=False, log=lambda s: 0)
    assert seen == [1]  # trained on the key's count
    assert torch.get_num_threads() == 2  # and the caller's count came back
    env = results["environment"]
    assert env["cpu_threads"] == 1 and env["cpu_threads_chosen_by"] == "threads key"


def _spy(fit, seen):
    def wrapped(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(self, *args, **kwargs)

    return wrapped


def test_a_run_with_automatic_threads_takes_the_cores_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime, "available_cores", lambda: 2)
    results = train_run(tiny_config(), tmp_path / "run", progress=False, log=lambda s: 0)
    assert results["environment"]["cpu_threads"] == 2
    assert results["environment"]["cpu_threads_chosen_by"] == "2 cores"
    assert torch.get_num_threads() == 1  # the test's own count came back


def test_eval_may_change_threads_and_refuses_a_negative_count(tmp_path):
    run = tmp_path / "run"
    train_run(tiny_config(), run, progress=False, log=lambda s: 0)
    a = evaluate_run(run, overrides={"threads": 1})
    b = evaluate_run(run)
    assert a["accuracy"] == b["accuracy"]
    with pytest.raises(ConfigError, match="'threads'"):
        tiny_config(threads=-1)


# ---------------------------------------------------------------------- precision
def test_bf16_runs_the_loss_in_bfloat16_and_keeps_float32_weights():
    task = tiny_task(precision="bf16")
    trainer = Trainer(task, None, progress=False)
    dtypes = []
    linear = next(m for m in task.model.blocks[0].modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    batch = task.train_batch(torch.arange(task.config.batch_size))
    logs = trainer.train_step(0, batch)
    handle.remove()
    assert dtypes == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in task.model.parameters())
    assert all(
        v.dtype == torch.float32
        for state in trainer.optimizers[0].state.values()
        for v in state.values()
        if torch.is_tensor(v) and v.is_floating_point()
    )
    # Float32 steps give nearly the same losses (bfloat16 keeps 8 bits of mantissa); at the
    # first step they are equal (zero-initialised layers are the identity in both precisions).
    fp32 = Trainer(tiny_task(), None, progress=False)
    ref = fp32.train_step(0, batch)
    assert logs["loss"] == pytest.approx(ref["loss"], rel=0.05)
    for _ in range(3):
        logs, ref = trainer.train_step(0, batch), fp32.train_step(0, batch)
    assert logs["loss"] == pytest.approx(ref["loss"], rel=0.05)
    assert logs["loss"] != ref["loss"]  # the autocast did change the arithmetic


def test_fp32_runs_the_loss_in_float32():
    task = tiny_task()
    dtypes = []
    linear = next(m for m in task.model.blocks[0].modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    Trainer(task, None, progress=False).train_step(0, task.train_batch(torch.arange(8)))
    assert dtypes == [torch.float32]


def test_a_bf16_run_trains_evaluates_and_records_its_precision(tmp_path):
    run = tmp_path / "run"
    results = train_run(tiny_config(precision="bf16", epochs=3), run, progress=False,
                        log=lambda s: 0)  # fmt: skip
    assert results["config"]["precision"] == "bf16"
    assert 0 <= results["eval"]["accuracy"] <= 1
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["precision"] == "bf16"
    with pytest.raises(ConfigError, match="'precision'"):
        tiny_config(precision="fp16")


# ---------------------------------------------------------------------- compile
def test_compile_compiles_each_block_once_and_trains_as_eager(monkeypatch):
    """The wiring of compile=true, with the ``aot_eager`` backend (dynamo's graph capture and
    autograd tracing, without inductor's code generation: fast enough for every run)."""
    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "aot_eager")
    calls = []
    compile_module = torch.nn.Module.compile

    def counted(module, *args, **kwargs):
        calls.append(module)
        return compile_module(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", counted)
    compiled, eager = tiny_task(compile=True), tiny_task()
    batch = compiled.train_batch(torch.arange(compiled.config.batch_size))
    a = Trainer(compiled, None, progress=False)
    b = Trainer(eager, None, progress=False)
    for step in range(4):
        la = a.train_step(step % 2, batch)
        lb = b.train_step(step % 2, batch)
        assert la["loss"] == pytest.approx(lb["loss"], rel=1e-5, abs=1e-6)
    blocks = compiled.model.blocks
    assert calls == list(blocks)  # each block once, though each trained twice
    assert all(getattr(m, "_compiled_call_impl", None) is not None for m in blocks)
    assert not any(getattr(m, "_compiled_call_impl", None) is not None for m in eager.model.blocks)
    # In place: parameter names (checkpoints) are those of the eager model.
    assert snapshot(compiled.model).keys() == snapshot(eager.model).keys()


@pytest.mark.slow
def test_compile_with_inductor_trains_as_eager(tmp_path):
    """compile=true as users run it (inductor generates C++ on the CPU: slow to compile)."""
    a = train_run(tiny_config(compile=True), tmp_path / "a", progress=False, log=lambda s: 0)
    b = train_run(tiny_config(), tmp_path / "b", progress=False, log=lambda s: 0)
    assert a["eval"]["accuracy"] == pytest.approx(b["eval"]["accuracy"], abs=0.03)


def test_the_metric_networks_run_in_float32_under_a_bf16_autocast():
    """precision=bf16 autocasts the evaluation; the Fréchet distance's feature network and the
    class-agreement classifier must not follow, or metrics would not compare across runs."""
    from diffusionblocks.eval.fid import EvaluatorFeatures

    extractor = EvaluatorFeatures("cpu")
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain, labels = extractor(images), extractor.predict(images)
    with runtime.autocast("bf16", torch.device("cpu")):
        assert torch.equal(extractor(images), plain)
        assert torch.equal(extractor.predict(images), labels)


def test_compile_refusals_name_the_key():
    from diffusionblocks.registry import make_config

    with pytest.raises(ConfigError, match="'compile'.*every swap"):
        tiny_config(compile=True, resident=True, schedule="cycle")
    tiny_config(compile=True, schedule="sequential")  # one block after another: compiled once
    with pytest.raises(ConfigError, match="'compile'.*recurrent|'compile'.*prelude"):
        make_config("recurrent-tiny", {"compile": True})
