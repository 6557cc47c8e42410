"""The block-wise trainer: isolation, schedules, budget, determinism, resume."""

import pytest
import torch
from helpers import (
    ar_stack_task,
    llama_ar_task,
    llama_masked_task,
    optimizer_snapshot,
    pretrained_ar_task,
    same_state,
    snapshot,
    stack_task,
    tiny_task,
    token_stack_task,
)

from diffusionblocks.training import (
    Checkpoint,
    Trainer,
    block_sequence,
    latest_checkpoint,
    learning_rate,
)
from diffusionblocks.training.residency import is_materialized, materialize
from diffusionblocks.training.trainer import batch_indices

# The built-in ViT, a user's own network (``stack``: a residual MLP through the public API) and
# the masked-diffusion and autoregressive LMs built from Llama decoder layers (``layer=hf:llama``)
# pass the same isolation and resume tests.
TASKS = pytest.mark.parametrize(
    "make",
    [
        tiny_task,
        stack_task,
        token_stack_task,
        ar_stack_task,
        llama_masked_task,
        llama_ar_task,
        pretrained_ar_task,
    ],
    ids=[
        "builtin",
        "your-model",
        "your-token-model",
        "your-ar-model",
        "hf-llama",
        "hf-llama-ar",
        "hf-pretrained",
    ],
)


def _warm_up_all(trainer, steps_each=2):
    for _ in range(steps_each):
        for u in range(trainer.num_units):
            idx = torch.arange(trainer.config.batch_size)
            trainer.train_step(u, trainer.task.train_batch(idx))


@TASKS
@pytest.mark.parametrize("block", [0, 1, 2])
def test_a_step_on_one_block_moves_nothing_else(block, make):
    task = make(num_blocks=3, depth=6, weight_decay=0.1)
    trainer = Trainer(task, None, progress=False)
    _warm_up_all(trainer)  # every block has weights, gradients history and optimizer state
    blocks_before = [snapshot(b) for b in task.model.blocks]
    opt_before = {u: optimizer_snapshot(o) for u, o in trainer.optimizers.items()}
    shared_before = {
        k: v.clone() for k, v in task.model.state_dict().items() if not k.startswith("blocks.")
    }

    batch = task.train_batch(torch.arange(64, 128))
    trainer.train_step(block, batch)

    for u, b in enumerate(task.model.blocks):
        changed = not same_state(blocks_before[u], snapshot(b))
        assert changed == (u == block), f"block {u} moved={changed} after a step on {block}"
        if u != block:
            after = optimizer_snapshot(trainer.optimizers[u])
            assert all(same_state(x, y) for x, y in zip(opt_before[u], after, strict=True))
    shared_after = {k: v for k, v in task.model.state_dict().items() if not k.startswith("blocks.")}
    assert not same_state(shared_before, shared_after), "shared modules should train every step"


@TASKS
def test_gradients_reach_only_the_active_block(make):
    task = make(num_blocks=2)
    _warm_up_all(Trainer(task, None, progress=False), 1)  # the zero-initialised head opens up
    loss, _ = task.loss(1, task.train_batch(torch.arange(32)), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in task.model.blocks[0].parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.blocks[1].parameters()
    )


def test_schedules():
    units = (0, 1, 2)
    assert block_sequence("cycle", units, 2, 0).tolist() == [0, 1, 2, 0, 1, 2]
    assert block_sequence("sequential", units, 2, 0).tolist() == [0, 0, 1, 1, 2, 2]
    r = block_sequence("random", units, 3000, 0)
    # balanced: every block exactly its budget, so its cosine schedule ends where it should
    assert torch.bincount(r, minlength=3).tolist() == [3000, 3000, 3000]
    assert torch.equal(r, block_sequence("random", units, 3000, 0))
    assert not torch.equal(r, block_sequence("random", units, 3000, 1))
    assert (r[1:] != r[:-1]).float().mean() > 0.6  # shuffled, not in runs of one block
    assert block_sequence("cycle", (2,), 3, 0).tolist() == [2, 2, 2]
    # visits of 2 steps; the last round is short when the budget is odd
    assert block_sequence("cycle", (0, 1), 5, 0, chunk=2).tolist() == [0, 0, 1, 1] * 2 + [0, 1]


def test_learning_rate_schedule():
    lrs = [learning_rate(s, 100, 1.0, 0.1, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(s, 5, 50, 10, seed=3) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(50))
    assert not torch.equal(batch_indices(0, 5, 50, 10, 3), batch_indices(5, 5, 50, 10, 3))


def test_budget_equal_compute_and_accounting():
    e2e = Trainer(tiny_task(method="e2e", depth=4), None, progress=False)
    db = Trainer(
        tiny_task(method="dblocks", num_blocks=2, depth=4, schedule="cycle"), None, progress=False
    )
    assert db.steps_per_unit == e2e.steps_per_unit
    assert db.total_steps == 2 * e2e.total_steps
    a, b = e2e.fit()["accounting"], db.fit()["accounting"]
    assert a["layer_evaluations"] == b["layer_evaluations"]
    assert b["steps_per_unit"] == [db.steps_per_unit] * 2


def test_blocks_subset_trains_only_those():
    task = tiny_task(num_blocks=3, depth=6, blocks=(0, 2), schedule="cycle")
    before = snapshot(task.model.blocks[1])
    trainer = Trainer(task, None, progress=False)
    out = trainer.fit()
    assert out["accounting"]["steps_per_unit"] == [
        trainer.steps_per_unit,
        0,
        trainer.steps_per_unit,
    ]
    assert same_state(before, snapshot(task.model.blocks[1]))
    assert set(trainer.optimizers) == {0, 2}


def test_one_block_run_is_resident_and_leaves_the_others_at_init(tmp_path):
    task = tiny_task(num_blocks=2, blocks=(1,))
    trainer = Trainer(task, tmp_path, progress=False)
    assert trainer.resident
    out = trainer.fit()
    assert out["accounting"]["steps_per_unit"] == [0, trainer.steps_per_unit]
    assert not is_materialized(task.model, 0)  # never in memory
    assert set(trainer.optimizers) == {1}
    ckpt = Checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert same_state(ckpt.tensors("block-0"), task.model.build_block(0).state_dict())


def test_sequential_keeps_only_the_active_optimizer():
    task = tiny_task(num_blocks=2, schedule="sequential")
    trainer = Trainer(task, None, progress=False)
    seen = []
    original = trainer.train_step

    def spy(unit, batch):
        seen.append(set(trainer.optimizers))
        return original(unit, batch)

    trainer.train_step = spy
    trainer.fit()
    assert all(s <= {0} for s in seen[: trainer.steps_per_unit])
    assert all(s <= {1} for s in seen[trainer.steps_per_unit :])


def test_same_seed_same_result_different_seed_differs():
    def run(seed):
        task = tiny_task(seed=seed)
        Trainer(task, None, progress=False).fit()
        return snapshot(task.model)

    assert same_state(run(0), run(0))
    assert not same_state(run(0), run(1))


@TASKS
@pytest.mark.parametrize("schedule", ["random", "sequential"])
def test_resume_continues_identically(tmp_path, schedule, make):
    full_task = make(schedule=schedule)
    full = Trainer(full_task, tmp_path / "full", progress=False)
    full.fit()
    full.materialize_all()  # sequential runs are block-resident: blocks come back from disk

    first = make(schedule=schedule)
    t1 = Trainer(first, tmp_path / "split", progress=False)
    stop = t1.total_steps // 2 + 1
    t1.fit(stop_at=stop)
    t1.save()
    second = make(schedule=schedule)
    t2 = Trainer(second, tmp_path / "split", progress=False)
    assert t2.resume() and t2.step == stop
    t2.fit()
    t2.materialize_all()
    assert t2.resident == (schedule == "sequential")
    assert same_state(snapshot(full_task.model), snapshot(second.model))
    # the per-block copies of the shared modules (block-resident default) resume exactly too
    a, b = full.shared.all_copies(), t2.shared.all_copies()
    assert a.keys() == b.keys() and all(same_state(a[u], b[u]) for u in a)


def test_e2e_trainer_learns_digits():
    task = tiny_task(method="e2e", epochs=20)
    Trainer(task, None, progress=False).fit()
    assert task.evaluate()["accuracy"] > 0.7


def test_a_trainer_without_a_run_folder_removes_its_swap_folder():
    """Block-resident training without a run folder swaps blocks to a temporary folder; it goes
    when the trainer does (it once stayed in /tmp for good)."""
    import gc

    task = tiny_task(schedule="sequential", epochs=1)
    trainer = Trainer(task, None, progress=False)
    assert trainer.resident
    trainer.fit()
    folder = trainer.residency.offload_dir
    assert folder.name.startswith("dblocks-blocks-") and any(folder.iterdir())
    trainer.prepare_evaluation()  # every block back in memory: the model outlives the folder
    before = task.evaluate()
    del trainer
    gc.collect()
    assert not folder.exists()
    assert task.evaluate() == before


@TASKS
def test_resident_training_holds_only_the_active_block(tmp_path, make):
    task = make(num_blocks=3, depth=6, schedule="sequential")
    trainer = Trainer(task, tmp_path, progress=False)
    assert trainer.resident
    assert not any(is_materialized(task.model, u) for u in range(3))
    seen = []
    original = trainer.train_step

    def spy(unit, batch):
        resident = [u for u in range(3) if is_materialized(task.model, u)]
        seen.append((unit, resident, sorted(trainer.optimizers), trainer.resident_bytes()))
        return original(unit, batch)

    trainer.train_step = spy
    trainer.fit()
    one_block = sum(p.numel() * 4 for p in task.model.build_block(0).parameters())
    shared = sum(p.numel() * 4 for p in task.shared_parameters())
    for unit, resident, optimizers, nbytes in seen:
        assert resident == [unit]
        assert optimizers in ([], [unit])
        assert nbytes["param_bytes"] == shared + one_block
        assert nbytes["optimizer_bytes"] <= 2 * (shared + one_block) + 1024
    assert [s[0] for s in seen] == [0] * trainer.steps_per_unit + [1] * trainer.steps_per_unit + [
        2
    ] * trainer.steps_per_unit


def test_resident_and_in_memory_training_give_the_same_weights(tmp_path):
    def run(resident):
        task = tiny_task(num_blocks=2, schedule="sequential")
        trainer = Trainer(task, tmp_path / str(resident), progress=False)
        if not resident:
            for u in range(2):
                materialize(task.model, u, "cpu")
            trainer.resident = False
        trainer.fit()
        trainer.materialize_all()
        return snapshot(task.model)

    assert same_state(run(True), run(False))


@pytest.mark.parametrize("schedule, cycle_steps", [("cycle", 1), ("cycle", 3), ("random", 1)])
def test_resident_swapping_equals_all_blocks_in_memory_bitwise(tmp_path, schedule, cycle_steps):
    """resident=true with a schedule that comes back to blocks: each swap takes the block's
    weights and optimizer state to disk and back; the result is the all-resident run's, bitwise,
    and at every step only the active block (and its optimizer) is in memory."""

    def run(resident):
        task = tiny_task(num_blocks=3, depth=6, schedule=schedule, cycle_steps=cycle_steps,
                         resident=resident)  # fmt: skip
        trainer = Trainer(task, tmp_path / str(resident), progress=False)
        assert trainer.resident == resident
        seen = []
        original = trainer.train_step

        def spy(unit, batch):
            resident = [u for u in range(3) if is_materialized(task.model, u)]
            seen.append((resident, sorted(trainer.optimizers), sorted(trainer._pending_optimizer),
                         unit))  # fmt: skip
            return original(unit, batch)

        trainer.train_step = spy
        trainer.fit()
        trainer.materialize_all()
        return snapshot(task.model), seen, trainer

    full, _, _ = run(False)
    swapped, seen, trainer = run(True)
    assert same_state(full, swapped)
    for blocks, optimizers, pending, unit in seen:
        assert blocks == [unit] and set(optimizers) | set(pending) <= {unit}
    visits = 1 + sum(a[3] != b[3] for a, b in zip(seen, seen[1:], strict=False))
    assert trainer.swaps == visits


def test_resident_swapping_resumes_bitwise(tmp_path):
    def task():
        return tiny_task(num_blocks=2, schedule="cycle", cycle_steps=4, resident=True)

    full_task = task()
    full = Trainer(full_task, tmp_path / "full", progress=False)
    full.fit()
    full.materialize_all()
    first = Trainer(task(), tmp_path / "split", progress=False)
    first.fit(stop_at=first.total_steps // 2 + 3)  # mid-visit, the other block's optimizer on disk
    first.save()
    assert first.optimizer_files  # a swapped-out block's optimizer state went into the checkpoint
    second_task = task()
    second = Trainer(second_task, tmp_path / "split", progress=False)
    assert second.resume()
    second.fit()
    second.materialize_all()
    assert same_state(snapshot(full_task.model), snapshot(second_task.model))
