"""Autoregressive LM with DiffusionBlocks: the two-stream mask, target alignment, cached
generation, metrics, CLI and bad input."""

import json

import pytest
import torch

from diffusionblocks.cli import main
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.tasks.autoregressive import distinct_n, repetition, two_stream_mask


def ar_task(**overrides):
    return make_task(make_config("ar-tiny", {"device": "cpu", **overrides}), torch.device("cpu"))


def test_two_stream_mask():
    t = 5
    m = two_stream_mask(t)
    for i in range(t):
        # clean token i: clean tokens <= i, never a noisy one
        assert m[i, :t].tolist() == [j <= i for j in range(t)]
        assert not m[i, t:].any()
        # noisy token i: clean tokens < i and itself only
        assert m[t + i, :t].tolist() == [j < i for j in range(t)]
        assert m[t + i, t:].tolist() == [j == i for j in range(t)]


def test_noisy_token_i_is_paired_with_target_token_i():
    """With almost no noise, z_i is target i's embedding. An oracle that reads the token off z
    has zero loss only if the loss pairs noisy position i with character i (not i+1)."""
    task = ar_task(sigma_min=0.0005, sigma_max=0.001, p_mean=-7.0, overlap=0.0)
    batch = task.train_batch(torch.arange(8))
    seen = {}

    def oracle(unit, ids, z, sigma):
        seen["z"] = z
        logits = 1000 * z @ task.table().T
        return logits, torch.zeros(*ids.shape, task.model.shape.hidden)

    task.denoise_logits = oracle
    loss, logs = task.loss(0, batch, torch.Generator().manual_seed(0))
    assert torch.equal((seen["z"] @ task.table().T).argmax(-1), batch)
    assert logs["ce"] < 1e-3


@pytest.mark.parametrize("readout", ["ensemble", "chain"])
def test_cached_and_uncached_generation_give_identical_tokens(readout):
    task = ar_task(readout=readout)
    from diffusionblocks.training import Trainer

    Trainer(task, None, progress=False).fit()  # non-trivial weights
    a, info = task.generate_text(10, torch.Generator().manual_seed(3), "ROMEO", temperature=0)
    b, _ = task.generate_text(10, torch.Generator().manual_seed(3), "ROMEO", temperature=0,
                              cache=False)  # fmt: skip
    assert a == b and len(a) == 10
    assert sum(info["calls_per_unit"]) == 10 * 2  # B denoiser calls per token (steps = calls)
    c, _ = task.generate_text(10, torch.Generator().manual_seed(5), "ROMEO", temperature=1.0)
    d, _ = task.generate_text(10, torch.Generator().manual_seed(5), "ROMEO", temperature=1.0,
                              cache=False)  # fmt: skip
    assert c == d


@pytest.mark.parametrize("overrides", [{"method": "e2e"}, {"readout": "ensemble"},
                                       {"readout": "chain"}])  # fmt: skip
def test_generation_past_the_context_sees_the_last_seq_len_characters(overrides):
    """Any length works (nanoGPT's crop): a prompt longer than the context gives the tokens of
    its last seq_len - 1 characters alone (the longest prefix training predicts from),
    generation runs on past seq_len, and the DiffusionBlocks models' cached clean prefix rolls
    with the window (cached = uncached)."""
    task = ar_task(**overrides)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial weights without training (adaLN-Zero starts at zero)
        for p in task.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    n = task.config.seq_len - 1  # the window
    text = "ROMEO. But soft, what light through yonder window breaks? It is the east."
    assert len(text) > n + 10

    def gen(prompt, length, **kw):
        out, _ = task.generate_text(length, torch.Generator().manual_seed(1), prompt,
                                    temperature=0, **kw)  # fmt: skip
        return out

    long = gen(text, n + 7)
    assert len(long) == n + 7
    assert long == gen(text[-n:], n + 7)  # only the window is seen
    # Past the context the window rolls: the character after a window of generated ones
    # depends on those alone, not on the prompt (for the readouts that draw no noise; the
    # chain draws its starting point per character).
    if overrides.get("readout") != "chain":
        assert gen(text, 2 * n + 1)[-1] == gen(text[-3:] + gen(text, 2 * n)[-n:], 1)
    if "readout" in overrides:
        assert long == gen(text, n + 7, cache=False)


def test_text_metrics():
    assert distinct_n(["a b a b"], 1, words=True) == pytest.approx(2 / 4)
    assert distinct_n(["abcd"], 2) == 1.0
    assert repetition(["abababab"], 2) == 1.0 and repetition(["abcdefgh"], 2) == 0.0


def test_aux_ce_adds_the_clean_next_token_term():
    task = ar_task(aux_ce=0.5)
    _, logs = task.loss(0, task.train_batch(torch.arange(8)), torch.Generator().manual_seed(0))
    assert "aux_ce" in logs and logs["aux_ce"] > 0


def test_cli_end_to_end_with_judge_and_bad_input(tmp_path, capsys):
    judge, run = str(tmp_path / "judge"), str(tmp_path / "db")
    assert main(["train", "--preset", "ar-tiny", "--set", "method=e2e", "--out", judge,
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["train", "--preset", "ar-tiny", "--out", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", run, "--judge", judge, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["judge_perplexity"] > 1 and out["ce_is_likelihood"]  # readout=ensemble
    assert 0 <= out["heldout_accuracy"] <= 1 and "distinct_1" in out
    # The sweep's B-step entry is the chain with the same noise: the numbers of readout=chain.
    assert main(["eval", "--run", run, "--steps", "1", "2", "--set", "readout=chain",
                 "--json"]) == 0  # fmt: skip
    swept = json.loads(capsys.readouterr().out)
    assert not swept["ce_is_likelihood"] and set(swept["steps_sweep"]) == {"1", "2"}
    assert swept["steps_sweep"]["2"]["heldout_ce"] == swept["heldout_ce"]  # ar-tiny: B=2
    assert swept["steps_sweep"]["1"]["heldout_ce"] != swept["heldout_ce"]
    assert out["chain_call"]["heldout_ce"] == swept["heldout_ce"]
    first = swept["sigma_max_call"]
    assert 0 < first["heldout_ce"] < 20 and 0 <= first["heldout_accuracy"] <= 1
    assert main(["eval", "--run", run, "--steps", "1"]) == 0
    assert "1 denoising steps: CE" in capsys.readouterr().out
    assert main(["sample", "--run", run, "--prompt", "KING", "--length", "8",
                 "--temperature", "0"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("KING")
    assert main(["sample", "--run", judge, "--prompt", "KING", "--length", "8"]) == 0  # baseline
    out, err = capsys.readouterr()
    assert out.startswith("KING") and "model calls 8" in err
    # Past the context (ar-tiny: 32 characters): the window rolls; the default is 32 characters.
    for argv, printed in ((["--length", "45"], 4 + 45), ([], 4 + 32)):
        assert main(["sample", "--run", run, "--prompt", "KING", *argv]) == 0, argv
        assert len(capsys.readouterr().out) == printed + 1  # and the newline
    for argv, message in (
        (["--length", "5", "--prompt", "\u4e2d\u6587"], "outside the vocabulary"),
        (["--length", "0", "--prompt", "A"], "--length must be >= 1"),
        (["--length", "-3", "--prompt", "A"], "--length must be >= 1"),
    ):
        assert main(["sample", "--run", run, *argv]) == 2, argv
        assert message in capsys.readouterr().err
    # No prompt (or an empty one): generation starts from a newline, which is not printed.
    for argv in (["--length", "5"], ["--length", "5", "--prompt", ""]):
        assert main(["sample", "--run", run, *argv, "--temperature", "0"]) == 0, argv
        out = capsys.readouterr().out
        assert len(out) == 6 and out.endswith("\n"), repr(out)  # 5 characters, then the newline
    assert main(["eval", "--run", run, "--judge", run]) == 2
    assert "not an end-to-end" in capsys.readouterr().err


def test_ensemble_call_averages_every_blocks_log_probabilities_at_sigma_max():
    task = ar_task()
    task.model.eval()
    ids = task.eval_sequences(split="val")[:3]
    n, t = ids.shape
    z = torch.zeros(n, t, task.model.shape.hidden)
    level = torch.full((n, t), task.schedule.sigma_max)
    per_block = [task.denoise_logits(b, ids, z, level)[0].log_softmax(-1) for b in range(2)]
    by_hand = ((per_block[0] + per_block[1]) / 2).log_softmax(-1)[:, 1:]
    got = task.ensemble_logits(ids)
    assert torch.allclose(got, by_hand, atol=1e-6)
    assert torch.allclose(got.exp().sum(-1), torch.ones(n, t - 1), atol=1e-5)  # a distribution
    ev = task.evaluate(split="val")
    assert ev["ensemble_call"] == task.score(task.eval_sequences(split="val"), task.ensemble_logits)


def test_readout_ensemble_predicts_and_generates_with_the_averaged_blocks():
    """The default readout: held-out CE is the ensemble's (a likelihood), the chain is scored
    beside it; greedy generation picks the ensemble's most likely next character each time; the
    chain readout gives the chain's CE (not a likelihood); a saved config without the key (an
    older run) predicts with the chain."""
    from diffusionblocks.config.parse import config_from_dict
    from diffusionblocks.training import Trainer

    task = ar_task()
    assert task.config.readout == "ensemble"
    Trainer(task, None, progress=False).fit()  # non-trivial weights
    ev = task.evaluate(split="val")
    assert ev["ce_is_likelihood"] and ev["heldout_ce"] == ev["ensemble_call"]["heldout_ce"]
    assert ev["chain_call"]["heldout_ce"] != ev["heldout_ce"]
    text, info = task.generate_text(6, torch.Generator().manual_seed(0), "KING", temperature=0)
    assert info["calls_per_unit"] == [6, 6]
    ids = task.vocab.encode("KING")[None]
    for ch in text:
        task.model.eval()
        best = int(task.ensemble_logits(torch.cat([ids, ids[:, :1]], 1))[0, -1].argmax())
        assert task.vocab.decode([best]) == ch
        ids = torch.cat([ids, task.vocab.encode(ch)[None]], 1)
    task.config.readout = "chain"
    chain_task = make_task(task.config, torch.device("cpu"))
    chain_task.model.load_state_dict(task.model.state_dict())
    ev_chain = chain_task.evaluate(split="val")
    assert not ev_chain["ce_is_likelihood"]
    assert ev_chain["heldout_ce"] == ev["chain_call"]["heldout_ce"]
    saved = {k: v for k, v in vars(task.config).items() if k != "readout"}
    assert config_from_dict(type(task.config), saved).readout == "chain"


def test_resuming_a_run_saved_before_readout_keeps_its_chain(tmp_path, capsys):
    """A run folder whose config.json predates ``readout`` resumes with its preset (whose
    field default is now the ensemble) without a refusal and keeps the chain it trained with;
    evaluating it with the ensemble is one --set away."""
    run = tmp_path / "old"
    args = ["train", "--preset", "ar-tiny", "--set", "epochs=0.5", "--set", "gen_prompts=0"]
    assert main([*args, "--out", str(run), "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    for group in (saved["config"], *[v for v in saved["config"].values() if isinstance(v, dict)]):
        group.pop("readout", None)
    (run / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert main([*args, "--out", str(run), "--resume", "--no-progress"]) == 0
    assert main(["eval", "--run", str(run), "--json"]) == 0
    assert not json.loads(capsys.readouterr().out.splitlines()[-1])["ce_is_likelihood"]  # chain
    assert main(["eval", "--run", str(run), "--set", "readout=ensemble", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ce_is_likelihood"]
