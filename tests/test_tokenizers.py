"""Subword tokens (``tokenizer=bpe:N`` or a tokenizer.json, data/tokens.py): a deterministic BPE
trained on the training text alone, metrics per character whatever the tokens, the tokenizer
saved with the run and checked on load, resume from a mid-training checkpoint, and bad values
refused by name."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from helpers import make_config, make_task

from diffusionblocks.cli import main
from diffusionblocks.config import ConfigError
from diffusionblocks.data.images import DataError
from diffusionblocks.data.text import load_text_file
from diffusionblocks.data.tokens import TOKENIZER_FILE, TokenVocabulary, _train_bpe, train_bpe

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "naïve", "café",
         "owners", "sing", "☃", "and", "résumé", "writers", "count", "😀", "words"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """A small text file with multi-byte characters (2, 3 and 4 UTF-8 bytes)."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(900)]
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def task_of(preset, corpus_file, **overrides):
    values = {"device": "cpu", "data": str(corpus_file), "tokenizer": "bpe:300", **overrides}
    return make_task(make_config(preset, values), torch.device("cpu"))


def test_bpe_is_deterministic_and_learns_from_the_training_text_alone(corpus_file, tmp_path):
    text = corpus_file.read_text(encoding="utf-8")
    assert train_bpe(text, 300) == _train_bpe.__wrapped__("uncached", text, 300)
    # A file whose test text (its last 10%) differs (reversed): the same tokenizer.
    other = tmp_path / "other.txt"
    cut = int(len(text) * 0.9)
    other.write_text(text[:cut] + text[cut:][::-1], encoding="utf-8")
    a = load_text_file(corpus_file, 0.1, 0.1)
    b = load_text_file(other, 0.1, 0.1)
    assert a.vocab.decode(a.train_ids.tolist()) == b.vocab.decode(b.train_ids.tolist())
    assert a.vocab.decode(a.test_ids.tolist()) != b.vocab.decode(b.test_ids.tolist())
    assert a.retokenized("bpe:300").vocab.json == b.retokenized("bpe:300").vocab.json


def test_a_tokens_characters_add_up_to_the_text(corpus_file):
    """Every character counted once, in the token holding its first byte, also when a 3- or
    4-byte character is split over tokens; decoding gives the text back."""
    vocab = TokenVocabulary(train_bpe(corpus_file.read_text(encoding="utf-8"), 300), "bpe")
    for text in ("naïve café ☃ 😀\n", "😀😀 ☃☃ ééé", "unseen: Ωμέγα ✓ 漢字"):
        ids = vocab.encode(text)
        assert vocab.decode(ids) == text
        assert vocab.characters(ids) == len(text)
        assert vocab.per_sequence_characters(ids[None]).item() == len(text)
    assert vocab.characters(torch.tensor([vocab.mask_id])) == 0  # the mask holds no text
    # a long text is encoded in pieces cut at word boundaries: the same ids as in one go
    text = corpus_file.read_text(encoding="utf-8")
    assert torch.equal(vocab.encode_text(text, piece=300), vocab.encode(text))


def test_held_out_scores_are_per_character(corpus_file):
    """The AR score of uniform logits is ln V per token, so ln V x tokens / characters per
    character; the masked-LM ELBO terms divide by each sequence's characters; the unigram
    baseline is its tokens' bits over their characters."""
    task = task_of("ar-tiny", corpus_file)
    seqs = task.split_seqs("val")[:6]
    size = task.vocab.size
    scored = task.score(seqs, lambda ids: torch.zeros(*ids[:, 1:].shape, size))
    chars = task.vocab.characters(seqs[:, 1:])  # exact: the test above
    assert scored["characters"] == chars and scored["tokens"] == seqs[:, 1:].numel()
    # the split's rows are consecutive pieces of the text: their characters are the text's
    assert task.vocab.characters(seqs) == len(task.vocab.decode(seqs.flatten().tolist()))
    assert scored["heldout_ce"] == pytest.approx(math.log(size) * scored["tokens"] / chars)
    assert chars > scored["tokens"]  # tokens hold several characters: not one id per character

    masked = task_of("mdm-tiny", corpus_file)
    rows = masked.split_seqs("val")[:4]
    per_row = masked.sequence_characters(rows)
    assert per_row.tolist() == [masked.vocab.characters(r) for r in rows]
    assert per_row.sum() == len(masked.vocab.decode(rows.flatten().tolist()))

    ids = task.corpus.val_ids
    counts = torch.bincount(task.corpus.train_ids, minlength=size).double() + 1
    bits = -(counts / counts.sum()).log2()[ids].sum()
    val_text = task.vocab.decode(ids.tolist())
    assert task.trivial_baseline("val")["bpc"] == pytest.approx(float(bits) / len(val_text))


def test_a_subword_run_keeps_its_tokenizer_through_eval_sample_assemble(corpus_file, tmp_path):
    run = tmp_path / "run"
    args = ["--set", f"data={corpus_file}", "--set", "tokenizer=bpe:300", "--no-progress"]
    assert main(["train", "--preset", "ar-tiny", "--out", str(run), *args]) == 0
    saved = (run / TOKENIZER_FILE).read_text(encoding="utf-8")
    assert saved == task_of("ar-tiny", corpus_file).vocab.json
    results = json.loads((run / "results.json").read_text())
    assert results["task"]["train_tokens"] < results["task"]["train_characters"]
    assert results["eval"]["heldout_tokens"] < results["eval"]["heldout_characters"]
    assert main(["eval", "--run", str(run), "--json"]) == 0
    assert main(["sample", "--run", str(run), "--prompt", "the café", "--length", "5"]) == 0
    assert main(["assemble", str(run), "--out", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / TOKENIZER_FILE).read_text(encoding="utf-8") == saved
    assert main(["eval", "--run", str(tmp_path / "model"), "--json"]) == 0


def test_a_changed_tokenizer_file_is_refused_by_name(corpus_file, tmp_path, capsys):
    import diffusionblocks as db

    run = tmp_path / "run"
    sets = ["--set", f"data={corpus_file}", "--set", "tokenizer=bpe:300"]
    assert main(["train", "--preset", "mdm-tiny", "--out", str(run), *sets, "--no-progress"]) == 0
    (run / TOKENIZER_FILE).write_text(train_bpe(corpus_file.read_text(), 280), encoding="utf-8")
    with pytest.raises(ConfigError, match="tokenizer.json is not this config's"):
        db.load(run)
    (run / TOKENIZER_FILE).unlink()
    with pytest.raises(ConfigError, match="tokenizer.json is missing"):
        db.load(run)


def test_special_tokens_are_never_added_to_the_text(corpus_file):
    """A Llama-style tokenizer.json adds <s> to what it encodes; the text's ids do not have it
    (nor do the pieces of a long text), and decoding gives the text back."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tok = Tokenizer.from_str(train_bpe(corpus_file.read_text(encoding="utf-8"), 300))
    tok.add_special_tokens(["<s>"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    assert tok.encode("the fox").ids[0] == bos  # what the tokenizer itself does
    vocab = TokenVocabulary(tok.to_str(), "llama-style")
    text = corpus_file.read_text(encoding="utf-8")
    ids = vocab.encode_text(text, piece=300)
    assert bos not in ids.tolist() and vocab.decode(ids) == text
    assert vocab.characters(ids) == len(text)


def test_a_subword_run_resumes_after_its_tokenizer_file_moved(corpus_file, tmp_path):
    """The run's copy is read; a file whose content changed is refused, naming the key."""
    from diffusionblocks.runs import prepare_run_dir
    from diffusionblocks.training.runfolder import write_run_files
    from diffusionblocks.training.trainer import Trainer

    own = tmp_path / "mine.json"
    own.write_text(train_bpe(corpus_file.read_text(encoding="utf-8"), 290), encoding="utf-8")
    config = make_config("mdm-tiny", {"data": str(corpus_file), "tokenizer": str(own)})
    run = tmp_path / "run"
    prepare_run_dir(config, run, resume=False)
    task = make_task(config)
    write_run_files(run, task.run_files())
    trainer = Trainer(task, run, progress=False)
    trainer.fit(stop_at=trainer.total_steps // 2)
    trainer.save()
    own.rename(tmp_path / "moved.json")
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert json.loads((run / "results.json").read_text())["eval"]["bpc"] > 0
    (tmp_path / "moved.json").write_text(train_bpe(corpus_file.read_text(), 280))
    with pytest.raises(ConfigError, match="'tokenizer'.*tokenizer.json is not this config's"):
        from diffusionblocks.runs import load_run

        load_run(run, overrides={"tokenizer": str(tmp_path / "moved.json")})


def test_a_subword_run_read_as_characters_is_refused(corpus_file, tmp_path):
    import diffusionblocks as db

    run = tmp_path / "run"
    sets = ["--set", f"data={corpus_file}", "--set", "tokenizer=bpe:300"]
    assert main(["train", "--preset", "mdm-tiny", "--out", str(run), *sets, "--no-progress"]) == 0
    card = json.loads((run / "config.json").read_text())
    card["config"]["tokenizer"] = "char"
    (run / "config.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="'tokenizer'.*belongs to a subword run"):
        db.load(run)


def test_a_tokenizer_file_that_moved_is_read_from_the_run(corpus_file, tmp_path):
    import diffusionblocks as db

    own = tmp_path / "mine.json"
    own.write_text(train_bpe(corpus_file.read_text(encoding="utf-8"), 290), encoding="utf-8")
    run = tmp_path / "run"
    sets = ["--set", f"data={corpus_file}", "--set", f"tokenizer={own}"]
    assert main(["train", "--preset", "mdm-tiny", "--out", str(run), *sets, "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())["config"]["tokenizer"]
    assert saved == str(own.resolve())
    own.unlink()
    model = db.load(run)
    assert model.task.vocab.size == 290


def test_a_subword_run_resumes_from_a_mid_training_checkpoint(corpus_file, tmp_path, capsys):
    from diffusionblocks.runs import prepare_run_dir
    from diffusionblocks.training.runfolder import write_run_files
    from diffusionblocks.training.trainer import Trainer

    overrides = {"data": str(corpus_file), "tokenizer": "bpe:300", "device": "cpu"}
    config = make_config("ar-tiny", overrides)
    prepare_run_dir(config, tmp_path / "a", resume=False)
    task = make_task(config)
    write_run_files(tmp_path / "a", task.run_files())
    trainer = Trainer(task, tmp_path / "a", progress=False)
    trainer.fit(stop_at=trainer.total_steps // 2)
    trainer.save()
    assert main(["train", "--out", str(tmp_path / "a"), "--resume", "--no-progress"]) == 0
    sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    assert main(["train", "--preset", "ar-tiny", *sets, "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 0  # fmt: skip
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["eval"] == b["eval"]


@pytest.mark.parametrize("value", ["bpe:12", "bpe:many", "words", "bpe:"])
def test_a_bad_tokenizer_value_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="'tokenizer'"):
        make_config("mdm-tiny", {"tokenizer": value})


def test_a_missing_or_broken_tokenizer_file_is_one_sentence(corpus_file, tmp_path):
    with pytest.raises(DataError, match="'tokenizer': the file .*missing.json does not exist"):
        task_of("mdm-tiny", corpus_file, tokenizer=str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="'tokenizer': .*broken.json is not a tokenizers"):
        task_of("mdm-tiny", corpus_file, tokenizer=str(broken))


def test_the_judge_must_share_the_tokenizer(corpus_file, tmp_path):
    from diffusionblocks.eval.text import judge_perplexity

    judge = task_of("ar-tiny", corpus_file, method="e2e")
    other = task_of("ar-tiny", corpus_file, tokenizer="bpe:280")
    with pytest.raises(ConfigError, match="another vocabulary"):
        judge_perplexity(judge, ["the"], [" fox"], other.vocab.key)
    assert judge_perplexity(judge, ["the"], [" fox"], judge.vocab.key) > 1
