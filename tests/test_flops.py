"""Measured training compute (training/flops.py) against closed-form counts of a transformer
layer: the FLOPs a block's step adds per layer, and an end-to-end step's total."""

import pytest
import torch

from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer
from diffusionblocks.training.flops import count_flops, measure_step_flops, train_flops


def layer_flops(n: int, t: int, d: int, mlp: int) -> tuple[int, int]:
    """Forward FLOPs of one adaLN transformer layer on n sequences of t tokens of width d, with
    one conditioning vector per sequence: (matrix products of the linear maps, attention)."""
    linear = 2 * n * t * (3 * d * d + d * d + 2 * d * mlp) + 2 * n * d * 6 * d  # + modulation
    attention = 2 * 2 * n * t * t * d  # scores q k^T and their product with v
    return linear, attention


def test_attention_on_the_cpu_is_counted():
    """torch's counter knows the GPU attention kernels only; ours also counts the CPU one, with
    the closed form (forward: 2 products; backward: 2.5 times the forward)."""
    from diffusionblocks.networks.layers import AdaLNLayer

    layer = AdaLNLayer(32, 4, 4.0)
    x = torch.randn(8, 17, 32, requires_grad=True)
    cond = torch.randn(8, 32, requires_grad=True)
    with count_flops() as forward:
        y = layer(x, cond)
    with count_flops() as backward:
        y.sum().backward()
    linear, attention = layer_flops(8, 17, 32, 128)
    assert forward.get_total_flops() == linear + attention
    assert backward.get_total_flops() == 2 * linear + 2.5 * attention


@pytest.fixture(scope="module")
def tiny_steps():
    """The step FLOPs of the tiny ViT (depth 4, hidden 32, 4x4 patches of 2x2 pixels, batch 64)
    end to end and block-wise with B = 2."""
    out = {}
    for method in ("e2e", "dblocks"):
        task = make_task(make_config("tiny", {"method": method, "depth": 4, "num_blocks": 2}))
        trainer = Trainer(task, None, progress=False)
        batch = task.train_batch(trainer.plan.batch_indices(0))
        out[method], _ = measure_step_flops(task, trainer.plan.blocks, batch)
    return out


def test_a_blocks_step_saves_the_flops_of_the_layers_it_does_not_run(tiny_steps):
    """End to end runs 4 layers per step, a block 2: the difference is 2 layers' forward and
    backward in closed form (the stem and head run in both), within 1%."""
    linear, attention = layer_flops(64, 17, 32, 128)  # 16 patches + the slot token
    per_layer = 3 * linear + 3.5 * attention  # forward + backward (2x products, 2.5x attention)
    saved = tiny_steps["e2e"][0] - tiny_steps["dblocks"][0]
    assert saved == pytest.approx(2 * per_layer, rel=0.01)
    assert tiny_steps["dblocks"][0] == tiny_steps["dblocks"][1]  # the blocks are alike


def test_an_end_to_end_step_is_its_layers_plus_a_small_stem_and_head(tiny_steps):
    linear, attention = layer_flops(64, 17, 32, 128)
    layers = 4 * (3 * linear + 3.5 * attention)
    assert layers < tiny_steps["e2e"][0] < 1.10 * layers


def test_train_flops_scale_each_blocks_step_by_its_steps():
    record = train_flops({0: 10.0, 1: 12.0}, [3, 5], estimate=False)
    assert record["train_flops"] == 10.0 * 3 + 12.0 * 5
    assert record["step_flops_by_block"] == {"0": 10.0, "1": 12.0} and not record["estimate"]


def test_results_record_the_measured_training_flops(tmp_path):
    """results.json's compute, tied to the closed form: the tiny e2e step runs 2 layers more than
    a block's step (depth 4, B = 2), and the run's FLOPs are its steps times its step."""
    from diffusionblocks.runs import train_run

    compute, steps = {}, {}
    for method in ("e2e", "dblocks"):
        config = make_config("tiny", {"method": method, "epochs": 0.2})
        results = train_run(config, tmp_path / method, progress=False, log=lambda s: None)
        compute[method], steps[method] = results["compute"], results["accounting"]["steps_per_unit"]
    linear, attention = layer_flops(64, 17, 32, 128)
    e2e_step = compute["e2e"]["step_flops_by_block"]["0"]
    block_steps = compute["dblocks"]["step_flops_by_block"]
    for b in ("0", "1"):
        assert e2e_step - block_steps[b] == pytest.approx(2 * (3 * linear + 3.5 * attention))
    assert compute["e2e"]["train_flops"] == e2e_step * steps["e2e"][0]
    assert compute["dblocks"]["train_flops"] == sum(
        block_steps[str(b)] * s for b, s in enumerate(steps["dblocks"])
    )
    assert not compute["e2e"]["estimate"] and not compute["dblocks"]["estimate"]


def test_activation_checkpointing_counts_the_recomputed_forward():
    """e2e-ckpt runs every layer's forward twice (once more in the backward pass): its step is
    the e2e step plus one forward of the 4 layers, in closed form (and the measurement works
    under checkpointing at all)."""
    steps = {}
    for method in ("e2e", "e2e-ckpt"):
        task = make_task(make_config("tiny", {"method": method, "depth": 4}))
        trainer = Trainer(task, None, progress=False)
        batch = task.train_batch(trainer.plan.batch_indices(0))
        steps[method], _ = measure_step_flops(task, trainer.plan.blocks, batch)
    linear, attention = layer_flops(64, 17, 32, 128)
    assert steps["e2e-ckpt"][0] - steps["e2e"][0] == 4 * (linear + attention)
