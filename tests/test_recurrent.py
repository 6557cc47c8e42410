"""Recurrent depth: weight tying, truncated backprop, one core application per DiffusionBlocks
step, exact compute accounting, test-time depth, CLI."""

import json

import pytest
import torch

from diffusionblocks.cli import main
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer


def rec_task(**overrides):
    return make_task(
        make_config("recurrent-tiny", {"device": "cpu", **overrides}), torch.device("cpu")
    )


def _count_core_calls(task):
    calls = []
    task.model.stack.core.register_forward_hook(
        lambda mod, inp, out: calls.append(out.requires_grad)
    )
    return calls


def test_one_set_of_core_weights_whatever_k():
    a = rec_task(mean_iterations=2, inference_steps=2)
    b = rec_task(mean_iterations=32, inference_steps=32)
    count = lambda t: sum(p.numel() for p in t.model.parameters())  # noqa: E731
    assert count(a) == count(b)
    assert len(list(a.model.stack.core.layers)) == 2  # core = 2 layers, applied K times


def test_truncated_backprop_stops_beyond_k_iterations():
    task = rec_task(method="bptt", mean_iterations=6, truncation=2)
    calls = _count_core_calls(task)
    for seed in range(5):
        calls.clear()
        loss, logs = task.loss(
            0, task.train_batch(torch.arange(4)), torch.Generator().manual_seed(seed)
        )
        k = logs["iterations"]
        assert len(calls) == k
        assert calls == [False] * (k - min(2, k)) + [True] * min(2, k)
        assert task.backward_layer_evals(0) == 1 + min(2, k) * 2 + 1
        assert task.layer_evals(0) == 1 + k * 2 + 1


def test_dblocks_step_runs_the_core_exactly_once():
    task = rec_task(method="dblocks")
    calls = _count_core_calls(task)
    loss, logs = task.loss(0, task.train_batch(torch.arange(4)), torch.Generator().manual_seed(0))
    loss.backward()
    assert calls == [True] and task.layer_evals(0) == 4
    assert all(p.grad is not None for p in task.model.stack.core.parameters())


def test_compute_accounting_is_exact():
    for method in ("bptt", "dblocks"):
        # No validation split: every loss call is then a training step (the trainer's held-out
        # loss on the validation batch calls loss too, between training steps).
        task = rec_task(method=method, val_fraction=0)
        trainer = Trainer(task, None, progress=False)
        per_step = []
        original = task.loss

        def spy(unit, batch, gen, original=original, per_step=per_step, task=task):
            loss, logs = original(unit, batch, gen)
            per_step.append((task.layer_evals(unit), task.backward_layer_evals(unit)))
            return loss, logs

        task.loss = spy
        acc = trainer.fit()["accounting"]
        bs = task.config.batch_size
        assert acc["layer_evaluations"] == sum(f for f, _ in per_step) * bs
        assert acc["backward_layer_evaluations"] == sum(b for _, b in per_step) * bs
        assert (
            acc["compute_layer_units"]
            == acc["layer_evaluations"] + 2 * acc["backward_layer_evaluations"]
        )


def test_inference_depth_changes_the_cost_and_runs():
    # dblocks with the chain: K applications (the default refine runs one without
    # self-conditioning: test_refine_readout_iterates_only_with_an_estimate_to_read)
    for method in ("bptt", "dblocks"):
        task = rec_task(method=method, **({"readout": "chain"} if method == "dblocks" else {}))
        ids = task.test_seqs[:2]
        for k in (1, 3):
            logits = task.predict_logits(ids, torch.Generator().manual_seed(0), steps=k)
            assert logits.shape == (2, ids.shape[1] - 1, task.vocab.size)
        assert task.inference_layer_evals(8) > task.inference_layer_evals(2)
        text, _ = task.generate_text(5, torch.Generator().manual_seed(0), "KING", temperature=0)
        assert len(text) == 5


@pytest.mark.parametrize("method", ["bptt", "dblocks"])
def test_generation_past_the_context_sees_the_last_seq_len_characters(method):
    task = rec_task(method=method)
    n = task.config.seq_len - 1  # the longest prefix training predicts from
    text = "KING. Now is the winter of our discontent made glorious summer by this sun."
    assert len(text) > n + 10

    def gen(prompt, length):
        out, _ = task.generate_text(length, torch.Generator().manual_seed(1), prompt,
                                    temperature=0)  # fmt: skip
        return out

    long = gen(text, n + 7)
    assert len(long) == n + 7 and long == gen(text[-n:], n + 7)


def test_cli_end_to_end_with_depth_sweep(tmp_path, capsys):
    for method in ("bptt", "dblocks"):
        run = str(tmp_path / method)
        assert main(["train", "--preset", "recurrent-tiny", "--set", f"method={method}",
                     "--out", run, "--no-progress"]) == 0  # fmt: skip
        capsys.readouterr()
        assert main(["eval", "--run", run, "--steps", "1", "2", "4", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert set(out["depth_sweep"]) == {"1", "2", "4"}
        results = json.loads((tmp_path / method / "results.json").read_text())
        assert results["accounting"]["compute_layer_units"] > 0
        assert main(["sample", "--run", run, "--prompt", "KING", "--length", "6",
                     "--steps", "2"]) == 0  # fmt: skip
        out, err = capsys.readouterr()
        # dblocks' default readout (refine) without self-conditioning: one application
        applications = 2 if method == "bptt" else 1
        assert out.startswith("KING") and f"core applications per character {applications}" in err
        if method == "dblocks":
            assert main(["sample", "--run", run, "--prompt", "KING", "--length", "6",
                         "--steps", "2", "--set", "readout=chain"]) == 0  # fmt: skip
            assert "core applications per character 2" in capsys.readouterr().err
    assert main(["train", "--preset", "recurrent-tiny", "--set", "method=e2e"]) == 2
    assert "choose one of dblocks, bptt" in capsys.readouterr().err
    assert main(["train", "--preset", "recurrent-tiny", "--set", "core=3"]) == 2
    assert "prelude=1 + core=3 + coda=1" in capsys.readouterr().err


def test_self_conditioning_starts_as_the_plain_model_and_trains_its_projection():
    """self_condition adds one zero-initialised projection: before training the model is the
    plain one exactly (torch.equal, whatever estimate it reads); a step runs the core twice
    (the estimate without gradients), counts it, and trains the projection."""
    plain, sc = rec_task(method="dblocks"), rec_task(method="dblocks", self_condition=0.5)
    assert plain.model.stack.estimate_in is None
    names = set(sc.model.state_dict()) - set(plain.model.state_dict())
    assert names == {"blocks.0.estimate_in.weight"}  # no bias: no estimate == a zero estimate
    for key, value in plain.model.state_dict().items():
        assert torch.equal(sc.model.state_dict()[key], value)
    ids = plain.test_seqs[:2]
    e = sc.model.encode(ids)[:, :-1]
    z = torch.randn(e.shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.full(e.shape[:2], 2.0)
    estimate = torch.randn(e.shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sc.denoise(e, z, sigma, estimate), plain.denoise(e, z, sigma))
    with torch.no_grad():  # a head that is not zero (as at initialisation) passes gradients
        sc.model.head.linear.weight.normal_(0, 1.0)
    calls = _count_core_calls(sc)
    loss, _ = sc.loss(0, sc.train_batch(torch.arange(4)), torch.Generator().manual_seed(0))
    loss.backward()
    assert calls == [False, True]  # the estimate's pass has no graph
    assert sc.layer_evals(0) == 4 + 3 and sc.backward_layer_evals(0) == 4
    assert sc.model.stack.estimate_in.weight.grad.abs().sum() > 0
    with torch.no_grad():  # after a step: the first call (no estimate) is the trained path
        for p in sc.model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
        assert sc.model.stack.estimate_in.weight.abs().sum() > 0
        zeros = torch.zeros(e.shape)
        assert torch.equal(sc.denoise(e, z, sigma, None), sc.denoise(e, z, sigma, zeros))


def test_refine_readout_iterates_only_with_an_estimate_to_read():
    """readout=refine: calls at sigma_max on z = 0 (no draw). Without self-conditioning every
    call is the same, so K calls equal one (and cost one); with a (non-zero) projection the K-th
    call reads the previous estimate and differs from the first. The chain and refine differ;
    both run when generating; refine's CE is a likelihood, the chain's is not."""
    for sc in (0.0, 0.5):
        task = rec_task(method="dblocks", self_condition=sc, readout="refine")
        with torch.no_grad():  # the head is zero at initialisation: every logit 0
            task.model.head.linear.weight.normal_(0, 1.0)
            if sc:
                task.model.stack.estimate_in.weight.normal_(0, 1.0)
        ids = task.test_seqs[:2]
        one, three = (task.predict_logits(ids, torch.Generator().manual_seed(0), steps=k)
                      for k in (1, 3))  # fmt: skip
        assert torch.equal(one, three) == (sc == 0)
        gen = torch.Generator().manual_seed(0)
        assert torch.equal(task.predict_logits(ids, gen, steps=3), three)  # no draw
        text, info = task.generate_text(5, torch.Generator().manual_seed(0), "KING",
                                        temperature=0)  # fmt: skip
        assert len(text) == 5
        assert info["core_applications"] == (task.config.inference_steps if sc else 1)
        assert task.inference_layer_evals(3) == 1 + (3 if sc else 1) * 3  # prelude + (core+coda)
        assert task.ce_is_likelihood
        task.config.readout = "chain"
        chained = make_task(task.config, torch.device("cpu"))
        chained.model.load_state_dict(task.model.state_dict())
        assert not chained.ce_is_likelihood and chained.inference_layer_evals(3) == 1 + 3 * 3
        chain3 = chained.predict_logits(ids, torch.Generator().manual_seed(0), steps=3)
        assert not torch.equal(chain3, three)


def test_recurrent_option_refusals_name_their_key():
    import pytest

    from diffusionblocks.config import ConfigError

    for overrides, key in (
        ({"method": "bptt", "self_condition": 0.5}, "self_condition"),
        ({"method": "dblocks", "self_condition": 1.5}, "self_condition"),
        ({"method": "dblocks", "readout": "ensemble"}, "readout"),
    ):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            make_config("recurrent-tiny", overrides).validate()
