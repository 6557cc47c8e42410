"""Shared modules in block-resident training: nothing a finished block depends on moves."""

import pytest
import torch
from helpers import same_state, snapshot, tiny_config, tiny_task

from diffusionblocks.assemble import assemble
from diffusionblocks.config import ConfigError
from diffusionblocks.runs import load_run, prepare_run_dir
from diffusionblocks.training import Checkpoint, Trainer, latest_checkpoint


def _shared(task) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in task.model.state_dict().items() if not k.startswith("blocks.")}


def _train_past_block_0(tmp_path, **kw):
    """Train a 2-block sequential run; return (task, trainer, block 0 and the shared modules as
    they were when block 0 finished)."""
    task = tiny_task(num_blocks=2, schedule="sequential", **kw)
    trainer = Trainer(task, tmp_path, progress=False)
    trainer.fit(stop_at=trainer.steps_per_unit)  # block 0 has its whole budget, block 1 none
    assert trainer.unit_steps == [trainer.steps_per_unit, 0]
    block0, shared = snapshot(task.model.blocks[0]), _shared(task)
    trainer.fit()
    trainer.prepare_evaluation()
    return task, trainer, block0, shared


@pytest.mark.parametrize("policy", ["auto", "block-copies", "first-block"])
def test_what_block_0_depends_on_is_bitwise_unchanged_after_it_finished(tmp_path, policy):
    task, trainer, block0, shared = _train_past_block_0(tmp_path, shared=policy)
    assert trainer.shared_policy == ("block-copies" if policy == "auto" else policy)
    assert same_state(block0, snapshot(task.model.blocks[0]))
    task.model.use_shared(0)  # what block 0 runs with at inference
    assert same_state(shared, _shared(task))
    # the targets (label table) are the same for every block
    task.model.use_shared(1)
    assert torch.equal(task.model.label_embed.weight, shared["label_embed.weight"])
    # and the saved checkpoint holds exactly that
    ckpt = Checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert same_state(ckpt.tensors("block-0"), block0)


def test_the_old_sync_policy_drifts(tmp_path):
    """shared=sync keeps training the shared modules with block 1: block 0's stem, head and
    targets move after it finished (the defect the default policy removes)."""
    task, trainer, block0, shared = _train_past_block_0(tmp_path, shared="sync")
    assert same_state(block0, snapshot(task.model.blocks[0]))
    now = _shared(task)
    moved = [k for k in shared if not torch.equal(shared[k], now[k])]
    assert "label_embed.weight" in moved and "patch_embed.weight" in moved


def test_block_copies_differ_per_block_and_targets_freeze(tmp_path):
    task, trainer, _, shared = _train_past_block_0(tmp_path)
    copies = trainer.shared.all_copies()
    assert "label_embed.weight" not in copies[0]  # targets are not copied: one table for all
    assert not torch.equal(copies[0]["patch_embed.weight"], copies[1]["patch_embed.weight"])
    assert torch.equal(task.model.label_embed.weight, shared["label_embed.weight"])


def test_a_saved_block_copies_run_evaluates_the_same_from_disk_and_assembled(tmp_path):
    config = tiny_config(num_blocks=2, schedule="sequential", eval_subset=64)
    run = tmp_path / "run"
    prepare_run_dir(config, run, resume=False)
    task = tiny_task(num_blocks=2, schedule="sequential", eval_subset=64)
    trainer = Trainer(task, run, progress=False)
    trainer.fit()
    trainer.prepare_evaluation()
    expected = task.evaluate(quick=True)["accuracy"]
    loaded, _ = load_run(run)
    assert loaded.evaluate(quick=True)["accuracy"] == expected
    model, _ = load_run(assemble(run))
    assert model.evaluate(quick=True)["accuracy"] == expected


def test_frozen_shared_modules_never_move():
    task = tiny_task(num_blocks=2, shared="frozen")
    before = _shared(task)
    trainer = Trainer(task, None, progress=False)
    trainer.fit()
    assert same_state(before, _shared(task)) and trainer.shared_optimizer is None


@pytest.mark.parametrize(
    "values, phrase",
    [
        ({"shared": "block-copies", "schedule": "random"}, "needs schedule=sequential"),
        ({"shared": "first-block", "schedule": "cycle", "resident": True}, "needs schedule="),
        ({"shared": "per-block"}, "needs parallel=true"),
        ({"resident": True, "method": "e2e"}, "'resident'"),
    ],
)
def test_policies_refused_where_they_do_not_apply(values, phrase):
    with pytest.raises(ConfigError) as err:
        tiny_config(num_blocks=2, **values)
    assert phrase in str(err.value)
    assert any(f"'{key}'" in str(err.value) for key in values)


def _model_as_block(task, block):
    """A fresh task whose shared modules are block ``block``'s copy (no variants installed)."""
    fresh = tiny_task(num_blocks=2)
    state = {k: v for k, v in task.model.state_dict().items()}
    fresh.model.load_state_dict(state, strict=False)
    fresh.model.load_state_dict(task.model._shared_variants[block], strict=False)
    fresh.model.set_shared_variants({})
    return fresh


def test_inference_runs_each_block_with_its_own_copy(tmp_path):
    """With copies installed, a block's logits equal those of a model that simply holds that
    block's copy, whichever block ran before (the stem and sigma embedder included)."""
    task, trainer, _, _ = _train_past_block_0(tmp_path)
    images, _ = task.train_batch(torch.arange(8))
    z = torch.randn(8, task.model.shape.hidden, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((8,), 5.0)
    for block, other in ((0, 1), (1, 0)):
        task.model.use_shared(other)  # the live copy is the other block's
        got = task.block_output(block, z, sigma, task.block_features(block, images))
        ref = _model_as_block(task, block)
        want = ref.block_output(block, z, sigma, ref.model.features(images))
        assert torch.equal(got, want)


def test_every_block_copy_starts_with_a_fresh_optimizer():
    """block-copies: block b's copy never inherits block b-1's Adam moments or step count."""
    task = tiny_task(num_blocks=3, depth=6, schedule="sequential")
    trainer = Trainer(task, None, progress=False)
    first_state = {}
    original = trainer.train_step

    def spy(unit, batch):
        logs = original(unit, batch)
        if unit not in first_state:  # right after the block's first step
            opt = trainer.shared_optimizer
            first_state[unit] = max(int(v["step"]) for v in opt.state.values())
        return logs

    trainer.train_step = spy
    trainer.fit()
    assert first_state == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize(
    "values, key",
    [
        ({"schedule": "sequential", "eval_every": 5}, "eval_every"),
        ({"schedule": "synchronous", "resident": True}, "resident"),
        ({"schedule": "random", "cycle_steps": 4}, "cycle_steps"),
    ],
)
def test_resident_settings_that_cannot_work_are_refused(values, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        tiny_config(num_blocks=2, **values)
