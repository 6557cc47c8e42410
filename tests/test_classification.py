"""The classification task: targets, loss formula, inference chain."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import count_layer_calls, tiny_task

from diffusionblocks.diffusion import edm_preconditioning, soft_bridge, weighted_loss


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
    x = torch.cat([(c_in * z)[:, None] + m.pos_embed[:, :1], m.features(images)[0]], dim=1)
    for layer in m.blocks[1].layers:
        x = layer(x, cond)
    logits = m.head(c_skip * z + c_out * x[:, 0], cond)
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(loss, weighted_loss(ce, sigma, weighting, 0.5), rtol=1e-5)


@pytest.mark.parametrize("num_blocks", [2, 4])
def test_default_chain_calls_each_block_once_at_the_cost_of_one_forward(num_blocks):
    """The chain makes B denoiser calls by default (the paper's procedure): every block once, the
    last call at sigma_min; the ensemble readout calls every block once at sigma_max; layer
    evaluations counted by forward hooks equal one end-to-end forward for both."""
    task = tiny_task(num_blocks=num_blocks, depth=4, readout="chain")
    images, _ = task.train_batch(torch.arange(4))
    with count_layer_calls(task.model) as counted:
        final, calls = task.predict(images)
    assert [b for b, _, _ in calls] == list(range(num_blocks))
    assert calls[0][1] == 80.0 and calls[-1][1] == 0.002
    assert torch.equal(final, calls[-1][2])
    assert counted.layers == 4  # one call per layer of the 4-layer network
    e2e = tiny_task(method="e2e", depth=4)
    with count_layer_calls(e2e.model) as counted_e2e:
        e2e.logits(images)
    assert counted.layers == counted_e2e.layers
    ensemble = tiny_task(num_blocks=num_blocks, depth=4)  # the default readout
    with count_layer_calls(ensemble.model) as counted_ensemble:
        _, calls = ensemble.predict(images)
    assert [(b, s) for b, s, _ in calls] == [(b, 80.0) for b in range(num_blocks)]
    assert counted_ensemble.layers == counted_e2e.layers


def test_steps_count_denoiser_calls():
    task = tiny_task(num_blocks=2, readout="chain")
    images, _ = task.train_batch(torch.arange(4))
    for steps in (1, 3, 6):
        with count_layer_calls(task.model) as counted:
            _, calls = task.predict(images, steps, torch.Generator().manual_seed(0))
        assert len(calls) == steps and counted.layers == steps * 2
    assert [b for b, _, _ in calls] == [0, 0, 0, 1, 1, 1]
    _, calls = task.predict(images, 1)
    assert [(b, s) for b, s, _ in calls] == [(0, 80.0)]  # one call: pure noise at sigma_max


def test_reported_layer_evaluations_match_the_hooks():
    task = tiny_task(num_blocks=2, depth=4, eval_subset=8, eval_batch_size=8)
    with count_layer_calls(task.model) as counted:
        result = task.evaluate(quick=True)
    assert counted.layers == result["layer_evals_per_image"]  # per batch of images: one call


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
    capsys.readouterr()
    assert main(["eval", "--run", out, "--set", "readout=chain", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)  # the run's default is the ensemble
    assert ev["readout"] == "chain" and ev["accuracy"] == ev["readouts"]["chain"]
    assert main(["eval", "--run", out, "--set", "lr=1"]) == 2
    assert "inference keys" in capsys.readouterr().err


def test_a_step_count_scores_the_same_whatever_else_is_swept():
    task = tiny_task(num_blocks=2, eval_subset=64, eval_batch_size=16)
    alone = task.evaluate(steps=[3])["steps_sweep"]["3"]
    swept = task.evaluate(steps=[1, 3, 8])["steps_sweep"]["3"]
    assert alone == swept


def test_label_swap_builds_noisy_labels_around_other_classes_but_keeps_the_loss_target():
    """label_swap=p: about p of the centres are another class (never the true one, every other
    class drawn), the cross-entropy still targets the true class; p=0 draws nothing extra."""
    task = tiny_task(label_swap=0.3)
    labels = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(1))
    centres = task._centres(labels, torch.Generator().manual_seed(2))
    swapped = centres != labels
    assert abs(swapped.float().mean().item() - 0.3) < 0.02
    assert set(((centres - labels) % 10)[swapped].tolist()) == set(range(1, 10))
    plain = tiny_task()  # label_swap=0, the default
    gen = torch.Generator().manual_seed(3)
    assert plain._centres(labels, gen) is labels
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(3).get_state())

    images, batch_labels = task.train_batch(torch.arange(16))
    gen = torch.Generator().manual_seed(5)
    _, stats = task.loss(1, (images, batch_labels), gen)
    gen = torch.Generator().manual_seed(5)
    sigma = task.partition.sample_sigma(1, 16, gen)
    y = task.model.label_table()[task._centres(batch_labels, gen)]
    z = y + sigma[:, None] * torch.randn(y.shape, generator=gen)
    logits = task.block_output(1, z, sigma, task.block_features(1, images))
    assert stats["ce"] == pytest.approx(F.cross_entropy(logits, batch_labels).item(), rel=1e-5)


def test_label_swap_refuses_a_certainty():
    with pytest.raises(Exception, match="label_swap"):
        tiny_task(label_swap=1.0)


def test_ensemble_readout_averages_every_blocks_log_probabilities_at_sigma_max():
    task = tiny_task(num_blocks=2, readout="ensemble", eval_subset=64, eval_batch_size=32)
    images, _ = task.train_batch(torch.arange(8))
    mean, calls = task.predict(images, steps=5)  # steps belong to the chain: unused here
    s_max = torch.full((8,), task.schedule.sigma_max)
    by_hand = [task.block_output(b, torch.zeros(8, task.model.shape.hidden), s_max,
                                 task.block_features(b, images)).log_softmax(-1)
               for b in range(2)]  # fmt: skip
    s_max_value = task.schedule.sigma_max
    assert [(b, s) for b, s, _ in calls] == [(0, s_max_value), (1, s_max_value)]
    assert torch.allclose(mean, (by_hand[0] + by_hand[1]) / 2, atol=1e-6)
    assert torch.equal(task.predict(images)[0], mean)  # no draws: the same every time
    ev = task.evaluate(split="val")
    assert ev["readout"] == "ensemble" and ev["accuracy"] == ev["readouts"]["ensemble"]
    chain = tiny_task(num_blocks=2, readout="chain", eval_subset=64, eval_batch_size=32)
    chain.model.load_state_dict(task.model.state_dict())
    ev_chain = chain.evaluate(split="val")
    assert ev_chain["accuracy"] == ev_chain["readouts"]["chain"] == ev_chain["steps_sweep"]["2"]
    assert ev_chain["readouts"] == ev["readouts"]


def test_readout_refuses_an_unknown_name():
    with pytest.raises(Exception, match="readout"):
        tiny_task(readout="vote")


def test_every_inference_key_may_change_when_a_run_resumes():
    """A key `dblocks eval --set` may change (it only affects prediction) may also change on
    --resume --allow-safe-changes: the two lists must not drift apart (readout did once)."""
    from diffusionblocks.config.run import SAFE_RESUME_KEYS
    from diffusionblocks.loading import INFERENCE_KEYS

    assert set(INFERENCE_KEYS) <= set(SAFE_RESUME_KEYS)


@pytest.mark.parametrize("readout", ["ensemble", "chain"])
def test_final_eval_readout_computes_only_the_readout_and_the_same_accuracy(tmp_path, readout):
    """final_eval=readout (one forward pass per image) reports the accuracy the full evaluation
    reports for the run's readout, to the last digit, without the sweep and diagnostics."""
    from helpers import tiny_config

    from diffusionblocks.loading import load_run
    from diffusionblocks.runs import evaluate_run, train_run

    run = tmp_path / "run"
    train_run(tiny_config(readout=readout), run, progress=False, log=lambda s: 0)
    full = evaluate_run(run)
    light = evaluate_run(run, overrides={"final_eval": "readout"})
    assert light["accuracy"] == full["accuracy"] == full["readouts"][readout]
    assert light["final_eval"] == "readout" and full["final_eval"] == "full"
    other = "chain" if readout == "ensemble" else "ensemble"
    assert light["readouts"] == {readout: full["accuracy"], other: None}
    assert light["steps_sweep"] == ({"2": full["accuracy"]} if readout == "chain" else {})
    assert "per_block" not in light and len(full["per_block"]) == 2
    assert set(full["steps_sweep"]) == {"1", "2", "4", "8"}
    # A sweep asked for still runs, and scores as the full evaluation's.
    asked = evaluate_run(run, steps=[4], overrides={"final_eval": "readout"})
    assert asked["steps_sweep"]["4"] == full["steps_sweep"]["4"]
    # Split among processes by batches (a block-parallel run's ranks: each tallies every third
    # batch and takes the chain's draws of the others), the same result to the last digit.
    # More processes than batches leaves some with none. A quick evaluation too (eval_subset).
    task, _ = load_run(run, overrides={"final_eval": "readout", "eval_batch_size": 16})
    for split in ("val", "test"):
        one = task.evaluate(steps=[1, 4], split=split)
        batches = -(-one["examples"] // 16)
        for count in (3, batches + 2):
            tallies = [task.evaluation_tally(split, (i, count), steps=[1, 4])
                       for i in range(count)]  # fmt: skip
            assert [t["examples"] > 0 for t in tallies] == [i < batches for i in range(count)]
            assert task.merged_evaluation(split, tallies, steps=[1, 4]) == one
    quick = task.evaluate(quick=True)
    tallies = [task.evaluation_tally(quick["split"], (i, 2), quick=True) for i in range(2)]
    assert task.merged_evaluation(quick["split"], tallies, quick=True) == quick


def test_a_quick_evaluation_scores_eval_subset_examples_exactly():
    """The last batch stops at eval_subset (it once ran to a whole batch: 210 of 200)."""
    task = tiny_task(eval_subset=100, eval_batch_size=64)
    assert task.evaluate(quick=True)["examples"] == 100


def test_a_run_with_final_eval_readout_ends_with_the_light_evaluation(tmp_path):
    from helpers import tiny_config

    from diffusionblocks.runs import train_run

    r = train_run(tiny_config(final_eval="readout"), tmp_path / "run", progress=False,
                  log=lambda s: 0)  # fmt: skip
    for ev in (r["eval"], r["eval_val"]):
        assert ev["final_eval"] == "readout" and "per_block" not in ev
    with pytest.raises(Exception, match="final_eval"):
        tiny_task(final_eval="some")
