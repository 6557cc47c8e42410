"""Masked-diffusion language model: masking process, ELBO, partition in t, sampler, CLI."""

import json
import math

import pytest
import torch

from diffusionblocks.cli import main
from diffusionblocks.config import ConfigError
from diffusionblocks.data.images import DataError
from diffusionblocks.data.text import load_text_file
from diffusionblocks.diffusion.masking import TimePartition, alpha, elbo_weight, mask_tokens
from diffusionblocks.registry import make_config, make_task


def mdm_task(**overrides):
    return make_task(make_config("mdm-tiny", {"device": "cpu", **overrides}), torch.device("cpu"))


def test_masking_fraction_matches_t():
    ids = torch.zeros(4, 20_000, dtype=torch.long)
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    x_t, masked = mask_tokens(ids, t, mask_id=7, generator=torch.Generator().manual_seed(0))
    frac = masked.float().mean(1)
    assert torch.allclose(frac, t, atol=0.01)
    assert torch.equal(x_t == 7, masked)


def test_elbo_weight_formula():
    t = torch.linspace(0.01, 1, 50, requires_grad=True)
    a = alpha(t)
    (da,) = torch.autograd.grad(a.sum(), t)
    assert torch.allclose(elbo_weight(t.detach()), (-da / (1 - a)).detach())


def test_time_partition_ownership_round_trip():
    for blocks in (1, 2, 3, 4):
        p = TimePartition(blocks, overlap=0.0)
        gen = torch.Generator().manual_seed(0)
        for b in range(blocks):
            lo, hi = p.interval(b)
            assert (lo, hi) == pytest.approx((1 - (b + 1) / blocks, 1 - b / blocks))
            t = p.sample_t(b, 1000, gen)
            inside = t[(t > lo + 1e-9) & (t < hi - 1e-9)]
            assert torch.all(p.block_of(inside) == b)
        assert int(p.block_of(1.0)) == 0 and int(p.block_of(0.0)) == blocks - 1
    widened = TimePartition(3, overlap=0.05)
    assert widened.train_interval(1) == pytest.approx((1 / 3 - 0.05 / 3, 2 / 3 + 0.05 / 3))
    assert widened.train_interval(0)[1] == 1.0 and widened.train_interval(2)[0] == 1e-3


def test_oracle_elbo_equals_the_source_entropy():
    """Characters drawn i.i.d. from p: a network that always predicts p has an ELBO of exactly
    H(p) per character in expectation; the estimator must find it within its error bars."""
    task = mdm_task()
    v = task.vocab.size
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(v, generator=gen) * 2, 0)
    entropy_bits = float(-(p * p.log()).sum()) / math.log(2)
    seqs = torch.multinomial(p, 64 * 32, replacement=True, generator=gen).view(64, 32)
    task.network = lambda unit, ids, t: p.log().expand(ids.shape[0], ids.shape[1], v)
    est = task.estimate_bpc(seqs, draws=16, seed=1)
    assert est["bpc"] == pytest.approx(entropy_bits, abs=3 * est["bpc_stderr"] + 0.02)
    assert est["sequences"] == 64 and est["draws_per_sequence"] == 16


def test_sampler_emits_only_vocabulary_characters_and_no_mask():
    task = mdm_task()
    gen = torch.Generator().manual_seed(0)
    text, info = task.generate_text(20, gen, prompt="The ", steps=5)
    assert len(text) == 20 and set(text) <= set(task.vocab.chars)
    assert sum(info["calls_per_unit"]) == 5 and info["calls_per_unit"][0] > 0
    text, _ = task.generate_text(28, gen, steps=1)  # one step reveals everything
    assert len(text) == 28 and set(text) <= set(task.vocab.chars)


def test_blockwise_loss_uses_its_own_t_interval():
    task = mdm_task(overlap=0.0)
    seen = []
    original = task.elbo_terms

    def spy(unit, ids, t, gen):
        seen.append((unit, t.min().item(), t.max().item()))
        return original(unit, ids, t, gen)

    task.elbo_terms = spy
    for unit in (0, 1):
        task.loss(unit, task.train_batch(torch.arange(16)), torch.Generator().manual_seed(unit))
    assert seen[0][0] == 0 and seen[0][1] >= 0.5 and seen[1][0] == 1 and seen[1][2] <= 0.5


def test_text_file_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        load_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait, encore".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_text_file(tmp_path / "latin.txt")
    with pytest.raises(DataError, match="does not exist"):
        load_text_file(tmp_path / "missing.txt")
    (tmp_path / "ok.txt").write_text("abcdefghij" * 10)
    corpus = load_text_file(tmp_path / "ok.txt")
    assert len(corpus.train_ids) == 90 and len(corpus.test_ids) == 10
    with pytest.raises(DataError, match="longer than"):
        corpus.chunks("test", 64)


def test_cli_end_to_end_and_bad_input(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--preset", "mdm-tiny", "--out", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", run, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bpc"] > 0 and out["bpc_stderr"] > 0 and "Hamlet" in out["held_out"]
    assert main(["sample", "--run", run, "--length", "12", "--prompt", "ROMEO"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO")
    assert main(["sample", "--run", run, "--length", "5", "--prompt", ""]) == 0  # = no prompt
    assert len(capsys.readouterr().out) == 6  # 5 characters and the newline
    for argv, message in (
        (["--length", "0"], "--length must be >= 1"),
        (["--length", "5", "--prompt", "\u00e6\u00f8\u00e5\u4e2d"], "outside the vocabulary"),
        (["--length", "500"], "exceeds the model's sequence length"),
    ):
        assert main(["sample", "--run", run, *argv]) == 2, argv
        assert message in capsys.readouterr().err


def test_user_text_file_and_seq_len_errors(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question. " * 40)
    run = str(tmp_path / "run")
    code = main(
        [
            "train",
            "--preset",
            "mdm-tiny",
            "--set",
            f"data={tmp_path / 't.txt'}",
            "--set",
            "train_subset=0",
            "--set",
            "batch_size=8",
            "--out",
            run,
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    code = main(
        [
            "train",
            "--preset",
            "mdm-tiny",
            "--set",
            f"data={tmp_path / 't.txt'}",
            "--set",
            "seq_len=5000",
            "--out",
            str(tmp_path / "r2"),
        ]
    )
    assert code == 2 and "longer than" in capsys.readouterr().err


def test_readout_diagnostics_score_the_same_masking_draws():
    """Block k alone, the ensemble and the routed estimate use the same masking draws: with the
    two blocks' weights made equal, all four readouts agree; with different (random) weights
    they differ, and an unknown readout is refused by name."""
    task = mdm_task(method="dblocks")
    seqs = task.split_seqs("val")[:16]
    blocks = task.model.blocks
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random weights everywhere (the zero-initialised head included)
        for p in task.model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    diag = task.readout_diagnostics(seqs, draws=2, seed=5)
    alone = [row["bpc"] for row in diag["block_alone"]]
    assert alone[0] != pytest.approx(alone[1], abs=1e-3)
    assert diag["interval_shares"][0] != pytest.approx(diag["interval_shares"][1], rel=1e-3)
    blocks[1].load_state_dict(blocks[0].state_dict())
    routed = task.estimate_bpc(seqs, 2, 5)["bpc"]
    diag = task.readout_diagnostics(seqs, draws=2, seed=5)
    for value in [row["bpc"] for row in diag["block_alone"]] + [diag["ensemble"]["bpc"]]:
        assert value == pytest.approx(routed, rel=1e-5)
    shares = diag["interval_shares"]  # equal blocks, same draws per interval: equal rows
    assert shares[0] == pytest.approx(shares[1], rel=1e-5) and len(shares[0]) == 2
    with pytest.raises(ConfigError, match="readout"):
        task.estimate_bpc(seqs, 2, 5, readout="block:2")
