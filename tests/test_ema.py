"""``ema``: an exponential moving average of the DiT's weights, which sampling and evaluation use
(DiT and EDM sample from one). DiffusionBlocks keeps one average per block, moved only when its
block trains, and one of the shared modules. Off by default: nothing changes then."""

import pytest
import torch
from helpers import same_state, snapshot, synthetic_images
from safetensors.torch import load_file
from test_parallel import torchrun

from diffusionblocks.assemble import assemble
from diffusionblocks.cli import main
from diffusionblocks.config import ConfigError
from diffusionblocks.networks.layers import WeightAverage
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer

DECAY = 0.9


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthetic_images(tmp_path_factory.mktemp("synth") / "images.npz")


def task_of(synth, **overrides):
    config = {"device": "cpu", "data": synth, "train_subset": 0, "test_subset": 0, **overrides}
    return make_task(make_config("dit-tiny", config), torch.device("cpu"))


def averages(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "average." in k}


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "average." not in k}


def test_off_by_default_the_model_and_its_state_are_unchanged(synth):
    plain, off = task_of(synth), task_of(synth, ema=0.0)
    assert not averages(plain.model) and plain.model.averaged is False
    assert same_state(snapshot(plain.model), snapshot(off.model))
    on = task_of(synth, ema=DECAY)
    assert averages(on.model)  # every block and the shared modules
    assert same_state(weights(on.model), snapshot(plain.model))  # the same initial weights


def test_averages_start_at_the_weights_and_follow_the_closed_form(synth):
    task = task_of(synth, num_blocks=2, ema=DECAY)
    model = task.model
    for group in model.blocks:  # start: the initial weights, bitwise
        params = dict(group.named_parameters())
        for name, shadow in zip(group.average.names, group.average.shadows(), strict=True):
            assert torch.equal(shadow, params[name])
    trainer = Trainer(task, None, progress=False)
    batch = task.train_batch(torch.arange(32))
    trainer.train_step(1, batch)  # opens block 1's zero-initialised gates
    block0 = [s.clone() for s in model.blocks[0].average.shadows()]
    shared_before = [s.clone() for s in model.shared_average.shadows()]
    before = [s.clone() for s in model.blocks[1].average.shadows()]
    trainer.train_step(1, batch)
    params = dict(model.blocks[1].named_parameters())
    names = model.blocks[1].average.names
    for name, old, new in zip(names, before, model.blocks[1].average.shadows(), strict=True):
        assert torch.equal(new, torch.lerp(old, params[name].detach(), 1 - DECAY))
    # block 0 did not train: its average did not move; the shared modules' did
    assert all(torch.equal(a, b) for a, b in zip(block0, model.blocks[0].average.shadows(),
                                                 strict=True))  # fmt: skip
    assert not all(torch.equal(a, b) for a, b in zip(shared_before,
                                                     model.shared_average.shadows(),
                                                     strict=True))  # fmt: skip


def test_sampling_uses_the_averages_and_leaves_the_trained_weights_bitwise(synth):
    task = task_of(synth, num_blocks=2, ema=DECAY)
    Trainer(task, None, progress=False).fit(stop_at=6)
    trained = weights(task.model)
    labels = torch.arange(4)
    images, _ = task.generate(labels, torch.Generator().manual_seed(0), steps=4)
    assert same_state(trained, weights(task.model))  # swapped back exactly
    # the same network with the averages loaded as its weights samples the same images
    twin = task_of(synth, num_blocks=2)
    state = {}
    for b, group in enumerate(task.model.blocks):
        for name, shadow in zip(group.average.names, group.average.shadows(), strict=True):
            state[f"blocks.{b}.{name}"] = shadow
    for name, shadow in zip(task.model.shared_average.names, task.model.shared_average.shadows(),
                            strict=True):  # fmt: skip
        state[name] = shadow
    twin.model.load_state_dict(state, strict=True)
    expected, _ = twin.generate(labels, torch.Generator().manual_seed(0), steps=4)
    assert torch.equal(images, expected)
    unaveraged = task_of(synth, num_blocks=2)
    unaveraged.model.load_state_dict(trained, strict=True)
    plain, _ = unaveraged.generate(labels, torch.Generator().manual_seed(0), steps=4)
    assert not torch.equal(images, plain)  # the averages are not the trained weights


@pytest.mark.parametrize(
    "overrides",
    [{"num_blocks": 2}, {"method": "e2e"}, {"num_blocks": 2, "schedule": "synchronous"}],
    ids=["dblocks", "e2e", "synchronous"],
)
def test_resume_from_a_mid_training_checkpoint_is_bitwise_averages_included(
    synth, tmp_path, overrides
):
    full = task_of(synth, ema=DECAY, **overrides)
    Trainer(full, tmp_path / "full", progress=False).fit()
    first = task_of(synth, ema=DECAY, **overrides)
    t1 = Trainer(first, tmp_path / "split", progress=False)
    stop = t1.total_steps // 2 + 1
    t1.fit(stop_at=stop)
    t1.save()
    second = task_of(synth, ema=DECAY, **overrides)
    t2 = Trainer(second, tmp_path / "split", progress=False)
    assert t2.resume() and t2.step == stop
    t2.fit()
    assert averages(second.model)
    assert same_state(snapshot(full.model), snapshot(second.model))


def test_block_resident_swapping_keeps_each_blocks_average(synth, tmp_path):
    """resident=true: a swapped-out block takes its average to disk and back; the run equals
    the all-in-memory one bitwise, averages included."""
    common = {"num_blocks": 2, "ema": DECAY, "schedule": "cycle"}
    memory = task_of(synth, **common)
    Trainer(memory, tmp_path / "memory", progress=False).fit()
    swapped = task_of(synth, resident=True, **common)
    trainer = Trainer(swapped, tmp_path / "swapped", progress=False)
    trainer.fit()
    assert trainer.swaps > 1
    trainer.materialize_all()
    assert same_state(snapshot(memory.model), snapshot(swapped.model))


def test_block_parallel_averages_equal_the_single_process_run_bitwise(synth, tmp_path):
    """Each rank keeps its block's average (and the shared modules'); the assembled model
    carries them, equal to the single-process synchronous run's."""
    common = ["--preset", "dit-tiny", "--set", f"data={synth}", "--set", "train_subset=0",
              "--set", "test_subset=0", "--set", "ema=0.9", "--set", "fid_samples=0",
              "--set", "device=cpu"]  # fmt: skip
    proc = torchrun(2, *common, "--set", "parallel=true", "--out", str(tmp_path / "par"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = tmp_path / "single"
    assert main(["train", *common, "--set", "schedule=synchronous", "--out", str(single),
                 "--no-progress"]) == 0  # fmt: skip
    a = load_file(assemble(single) / "model.safetensors")
    b = load_file(tmp_path / "par" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and any("average." in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "overrides",
    [
        {"ema": 1.0},
        {"ema": -0.1},
        {"ema": float("nan")},
        {"ema": 0.99, "schedule": "sequential"},  # shared=auto resolves to block-copies
        {"ema": 0.99, "schedule": "sequential", "shared": "block-copies"},
    ],
)
def test_bad_ema_values_are_refused_naming_ema(synth, overrides):
    with pytest.raises(ConfigError, match="'ema'"):
        task_of(synth, **overrides)


def test_weight_average_update_is_the_closed_form():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 4.0]))
    avg = WeightAverage([("w", param)])
    with torch.no_grad():
        param.copy_(torch.tensor([3.0, 0.0, 0.0]))
    avg.update({"w": param}, 0.75)
    assert torch.equal(avg.shadows()[0], torch.tensor([1.5, -1.5, 3.0]))


def test_a_skipped_non_finite_step_leaves_the_averages_alone(synth):
    task = task_of(synth, num_blocks=2, ema=DECAY)
    trainer = Trainer(task, None, progress=False)
    batch = task.train_batch(torch.arange(32))
    trainer.train_step(0, batch)
    before = averages(task.model)
    task.loss = lambda *a, **k: (torch.tensor(float("nan"), requires_grad=True), {})
    trainer.train_step(0, batch)
    assert trainer.faults.skipped_steps  # the step was skipped ...
    assert same_state(before, averages(task.model))  # ... and nothing was averaged


def test_held_out_evaluation_uses_the_averages(synth):
    task = task_of(synth, num_blocks=2, ema=DECAY)
    Trainer(task, None, progress=False).fit(stop_at=6)
    twin = task_of(synth, num_blocks=2, ema=DECAY)
    state = dict(task.model.state_dict())
    for b, group in enumerate(task.model.blocks):  # the twin's weights := the averages
        for name, shadow in zip(group.average.names, group.average.shadows(), strict=True):
            state[f"blocks.{b}.{name}"] = shadow
    for name, shadow in zip(task.model.shared_average.names, task.model.shared_average.shadows(),
                            strict=True):  # fmt: skip
        state[name] = shadow
    twin.model.load_state_dict(state)
    got = task.heldout_mse(torch.Generator().manual_seed(3), limit=32)
    # the twin's averages are not its weights, so compare with its trained weights swapped off
    with torch.no_grad():
        twin.model.averaged = False
        expected = twin.heldout_mse(torch.Generator().manual_seed(3), limit=32)
    assert got == expected


@pytest.mark.parametrize("source_ema", [0.0, DECAY])
def test_shared_init_loads_the_weights_and_restarts_the_average_there(synth, tmp_path, source_ema):
    source = task_of(synth, num_blocks=2, ema=source_ema)
    Trainer(source, tmp_path / "source", progress=False).fit()
    task = task_of(synth, num_blocks=2, ema=DECAY, shared="frozen",
                   shared_init=str(tmp_path / "source"))  # fmt: skip
    Trainer(task, None, progress=False)  # loads shared_init
    src = dict(source.model.named_parameters())
    shared = task.model.shared_average
    for name, shadow in zip(shared.names, shared.shadows(), strict=True):
        assert torch.equal(dict(task.model.named_parameters())[name], src[name])
        assert torch.equal(shadow, src[name])  # not the source's average


@pytest.mark.parametrize("shared", ["frozen", "first-block"])
def test_other_shared_policies_train_and_sample_with_averages(synth, shared):
    common = {"num_blocks": 2, "ema": DECAY, "shared": shared}
    if shared == "first-block":
        common["schedule"] = "sequential"
    task = task_of(synth, **common)
    trainer = Trainer(task, None, progress=False)
    trainer.fit()
    restore = trainer.prepare_evaluation()
    trained = weights(task.model)
    images, _ = task.generate(torch.arange(4), torch.Generator().manual_seed(0), steps=4)
    restore()
    assert torch.isfinite(images).all() and same_state(trained, weights(task.model))
