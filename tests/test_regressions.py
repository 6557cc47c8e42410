"""Regression tests for defects found in review: each fails on the code that had the defect."""

import pytest
import torch
import torch.nn.functional as F
from helpers import count_layer_calls, tiny_task

import diffusionblocks.tasks.autoregressive as ar_module
import diffusionblocks.tasks.slot as slot_module
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer


def _task(preset, **overrides):
    return make_task(make_config(preset, {"device": "cpu", **overrides}), torch.device("cpu"))


class _BridgeSpy:
    def __init__(self, module, monkeypatch):
        self.tables = []
        real = module.soft_bridge

        def spy(logits, table, temperature=1.0):
            self.tables.append(table.detach().clone())
            return real(logits, table, temperature)

        monkeypatch.setattr(module, "soft_bridge", spy)


# classification bridges in tasks/slot.py (shared with a user's stack); the recurrent task's
# bridge is the language models' shared one (autoregressive.TokenTargets)
@pytest.mark.parametrize("preset, module", [("tiny", slot_module), ("ar-tiny", ar_module),
                                            ("recurrent-tiny", ar_module)])  # fmt: skip
def test_the_chain_bridges_with_the_normalised_target_table(preset, module, monkeypatch):
    """The soft bridge must use the same unit-norm table the loss used as targets (the authors'
    code uses the raw table). Raw rows are scaled to norm 3 so that the two differ."""
    # recurrent: the chain readout (its default, refine, has no bridge without self-conditioning)
    task = (
        _task(preset, num_blocks=2)
        if preset != "recurrent-tiny"
        else _task(preset, readout="chain")
    )
    weight = task.model.label_embed.weight if preset == "tiny" else task.model.token_embed.weight
    with torch.no_grad():
        weight.copy_(3 * F.normalize(weight, dim=-1))
    spy = _BridgeSpy(module, monkeypatch)
    if preset == "tiny":
        images, _ = task.train_batch(torch.arange(4))
        task.predict(images, 3, readout="chain")
    else:
        task.predict_logits(task.test_seqs[:2], torch.Generator().manual_seed(0), 3)
    assert spy.tables, "the chain never called the soft bridge"
    for table in spy.tables:
        assert torch.allclose(table.norm(dim=-1), torch.ones(len(table)), atol=1e-6)
        assert torch.allclose(table, F.normalize(weight, dim=-1))


def test_aux_ce_changes_the_gradient_when_on():
    """The auxiliary clean next-token CE must reach the weights: same weights (trained a little,
    so that the zero-initialised head passes gradients), same draws, aux on vs off."""
    task = _task("ar-tiny", epochs=0.5)
    Trainer(task, None, progress=False).fit()
    batch = task.train_batch(torch.arange(8))

    def grads(aux):
        task.config.aux_ce = aux
        task.model.zero_grad(set_to_none=True)
        loss, logs = task.loss(0, batch, torch.Generator().manual_seed(0))
        loss.backward()
        return loss, logs, {n: p.grad.clone() for n, p in task.model.named_parameters()
                            if p.grad is not None}  # fmt: skip

    loss0, logs0, g0 = grads(0.0)
    loss1, logs1, g1 = grads(0.5)
    assert "aux_ce" not in logs0 and logs1["aux_ce"] > 0
    assert torch.allclose(loss1 - loss0, torch.tensor(0.5 * logs1["aux_ce"]), atol=1e-4)
    for name in ("token_embed.weight", "head.linear.weight", "blocks.0.layers.0.mlp.0.weight"):
        assert not torch.allclose(g0[name], g1[name]), name


@pytest.mark.parametrize("method", ["dblocks", "bptt"])
def test_recurrent_training_compute_is_what_the_hooks_count(method):
    """Forward and backward layer passes per step, counted by hooks on every transformer layer,
    equal the accounting (DiffusionBlocks: prelude + core + coda once, forward and backward)."""
    # No validation split: the hooks then see training steps only (the trainer's held-out loss
    # on the validation batch runs the layers too, between training steps).
    task = _task("recurrent-tiny", method=method, epochs=0.25, val_fraction=0)
    layers = [m for m in task.model.modules() if type(m).__name__ == "AdaLNLayer"]
    backward = []
    for layer in layers:
        layer.register_full_backward_hook(lambda *a: backward.append(1))
    with count_layer_calls(task.model) as forward:
        accounting = Trainer(task, None, progress=False).fit()["accounting"]
    bs = task.config.batch_size
    assert accounting["layer_evaluations"] == forward.layers * bs
    assert accounting["backward_layer_evaluations"] == len(backward) * bs
    if method == "dblocks":
        c = task.config
        assert forward.layers == accounting["steps"] * (c.prelude + c.core + c.coda)


def test_classification_steps_are_denoiser_calls_as_counted_by_hooks():
    task = tiny_task(num_blocks=2, depth=4, readout="chain")
    images, _ = task.train_batch(torch.arange(4))
    for steps in (1, 2, 5):
        with count_layer_calls(task.model) as counted:
            task.predict(images, steps)
        assert counted.layers == steps * 2  # each call runs one block of 2 layers


@pytest.mark.parametrize("preset", ["tiny", "dit-tiny", "mdm-tiny", "ar-tiny", "recurrent-tiny"])
def test_building_a_task_leaves_the_global_generator_alone(preset):
    """Model initialisation draws from its own seeded generator (networks.layers.seeded): the
    caller's global torch generator is where it was, and the weights do not depend on it."""
    from diffusionblocks.registry import make_config, make_task

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = make_task(make_config(preset, {"device": "cpu"}))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    second = make_task(make_config(preset, {"device": "cpu"}))
    for (k, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert a.is_meta or torch.equal(a, b), k
