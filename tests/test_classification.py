"""The classification task: targets, loss formula, inference chain."""

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_task

from diffusionblocks.diffusion import edm_preconditioning, weighted_loss
from diffusionblocks.tasks.classification import soft_bridge


def test_soft_bridge_uses_the_normalised_table():
    table = F.normalize(torch.randn(5, 8), dim=-1)
    logits = torch.randn(3, 5)
    d = soft_bridge(logits, table)
    assert torch.allclose(d, logits.softmax(-1) @ table)
    assert torch.all(d.norm(dim=-1) <= 1 + 1e-6)  # convex combination of unit vectors
    assert torch.equal(soft_bridge(logits, table, 0.0), table[logits.argmax(-1)])
    gapped = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(soft_bridge(gapped, table, 0.01), table[1:2], atol=1e-3)


def test_targets_are_unit_norm_label_embeddings():
    task = tiny_task()
    table = task.model.label_table()
    assert torch.allclose(table.norm(dim=-1), torch.ones(len(table)))


@pytest.mark.parametrize("weighting", ["edm", "batch", "none"])
def test_block_loss_equals_the_inline_formula(weighting):
    """Recompute one block's loss by hand from the same random draws."""
    task = tiny_task(weighting=weighting)
    images, labels = task.train_batch(torch.arange(16))
    loss, _ = task.loss(1, (images, labels), torch.Generator().manual_seed(5))

    gen = torch.Generator().manual_seed(5)
    sigma = task.partition.sample_sigma(1, 16, gen)
    lo, hi = task.partition.train_interval(1)
    assert sigma.min() >= lo * (1 - 1e-6) and sigma.max() <= hi * (1 + 1e-6)
    y = F.normalize(task.model.label_embed.weight, dim=-1)[labels]
    z = y + sigma[:, None] * torch.randn(y.shape, generator=gen)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma[:, None], 0.5)
    m = task.model
    cond = m.cond_embed(c_noise[:, 0])
    x = torch.cat([(c_in * z)[:, None] + m.pos_embed[:, :1], m.embed_patches(images)], dim=1)
    for layer in m.blocks[1].layers:
        x = layer(x, cond)
    logits = m.head(c_skip * z + c_out * x[:, 0], cond)
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(loss, weighted_loss(ce, sigma, weighting, 0.5), rtol=1e-5)


def test_chain_calls_each_block_once_then_a_final_call():
    task = tiny_task(num_blocks=2)
    images, _ = task.train_batch(torch.arange(4))
    final, calls = task.predict(images, 2, torch.Generator().manual_seed(0))
    assert [b for b, _, _ in calls] == [0, 1, 1]
    assert calls[0][1] == 80.0 and calls[-1][1] == 0.002
    assert torch.equal(final, calls[-1][2])
    _, calls = task.predict(images, 6, torch.Generator().manual_seed(0))
    assert [b for b, _, _ in calls] == [0, 0, 0, 1, 1, 1, 1]


def test_e2e_evaluation_is_one_forward():
    task = tiny_task(method="e2e")
    r = task.evaluate()
    assert r["layer_evals_per_image"] == 4 and 0 <= r["accuracy"] <= 1


def test_eval_set_accepts_only_inference_keys(tmp_path, capsys):
    from diffusionblocks.cli import main

    out = str(tmp_path / "r")
    assert main(["train", "--preset", "tiny", "--out", out, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", out, "--set", "bridge_temperature=0", "--json"]) == 0
    assert main(["eval", "--run", out, "--set", "lr=1"]) == 2
    assert "inference keys" in capsys.readouterr().err
