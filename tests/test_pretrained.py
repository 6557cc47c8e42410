"""Fine-tuning a pretrained Hugging Face causal LM block-wise (``pretrained=FOLDER``): the run
starts as the pretrained model exactly, takes its shape and tokenizer, reads each block's layers
from the folder when the block is built (block-resident training included), keeps one block's
gradients and optimizer state, and refuses what it cannot use, naming the key. The folder is a
tiny random-initialised Llama saved with ``save_pretrained`` (helpers.tiny_llama_folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import _LLAMA, pretrained_ar_task, tiny_llama_folder

from diffusionblocks.config import ConfigError
from diffusionblocks.data.tokens import train_bpe
from diffusionblocks.registry import make_config
from diffusionblocks.runs import train_run
from diffusionblocks.tasks.autoregressive import causal_mask


@pytest.fixture(scope="module")
def reference():
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_llama_folder()).eval()


def clean_logits(task, ids):
    """The clean stream through every block and the head: the next-token logits."""
    m = task.model
    n, t = ids.shape
    x, cond = m.clean_inputs(ids), m.clean_condition(n, t)
    for group in m.blocks:
        x = group(x, cond, causal_mask(t), torch.arange(t))
    return m.head(x, cond)


@pytest.mark.parametrize("method", ["e2e", "dblocks"])
def test_the_run_starts_as_the_pretrained_model(reference, method):
    task = pretrained_ar_task(method=method)
    ids = task.split_seqs("val")[:4]
    with torch.no_grad():
        assert torch.equal(clean_logits(task, ids), reference(ids).logits)


def test_the_shape_and_tokenizer_are_the_models(reference):
    config = make_config("ar-tiny", {"pretrained": tiny_llama_folder(), "num_blocks": 3})
    assert (config.depth, config.hidden, config.heads) == (6, 32, 2)
    assert config.mlp_ratio == 2.0
    assert config.tokenizer.endswith("tokenizer.json")
    task = pretrained_ar_task(num_blocks=3)
    assert task.vocab.size == reference.config.vocab_size
    assert [len(b.layers) for b in task.model.blocks] == [2, 2, 2]


def test_a_block_built_later_reads_its_pretrained_layers(reference):
    """Block-resident training builds a block when it first trains (``materialize``): from the
    folder's weights (its layers only), so the resident run starts from the pretrained model."""
    from diffusionblocks.training.residency import materialize

    task = pretrained_ar_task(schedule="sequential", num_blocks=3)
    assert task.config.block_resident
    assert all(p.is_meta for p in task.model.blocks[2].parameters())
    block = materialize(task.model, 2, "cpu")
    for i, index in enumerate(task.model.block_layers(2)):
        ours = block.layers[i].layer.layer.state_dict()
        theirs = reference.model.layers[index].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_shallow_baseline_keeps_the_first_layers(reference):
    task = pretrained_ar_task(method="e2e-shallow", num_blocks=3)
    assert [len(b.layers) for b in task.model.blocks] == [2]
    first = task.model.blocks[0].layers[1].layer.layer.state_dict()
    assert all(torch.equal(v, reference.model.layers[1].state_dict()[k]) for k, v in first.items())


def test_dblocks_holds_one_blocks_gradients_and_optimizer_state(tmp_path):
    """Measured by the trainer (``peak_state_bytes``: parameters, gradients and optimizer state
    at their largest): block-resident fine-tuning holds less than end-to-end fine-tuning."""
    runs = {}
    for name, method, schedule in (("e2e", "e2e", "random"), ("db", "dblocks", "sequential")):
        task = pretrained_ar_task(method=method, schedule=schedule, num_blocks=3)
        runs[name] = train_run(task.config, tmp_path / name, progress=False, log=lambda s: 0)
    e2e, db = (runs[k]["memory"]["peak_state_bytes"] for k in ("e2e", "db"))
    assert 0 < db < e2e
    assert runs["db"]["eval"]["heldout_tokens"] > 0


def test_a_pretrained_run_loads_assembles_and_finds_a_moved_folder(tmp_path):
    import diffusionblocks as db
    from diffusionblocks.assemble import assemble

    folder = tmp_path / "llama"
    shutil.copytree(tiny_llama_folder(), folder)
    task = pretrained_ar_task(pretrained=str(folder))
    train_run(task.config, tmp_path / "run", progress=False, log=lambda s: 0)
    model = assemble(tmp_path / "run", tmp_path / "model")
    ids = task.split_seqs("val")[:2]

    def logits(path, **overrides):
        return db.load(path, **overrides).task.predict_logits(ids, torch.Generator())

    before = logits(tmp_path / "run")
    folder.rename(tmp_path / "moved")
    with pytest.raises(ConfigError, match="'pretrained'.*--set pretrained=PATH"):
        db.load(tmp_path / "run")
    moved = str(tmp_path / "moved")
    assert torch.equal(logits(tmp_path / "run", pretrained=moved), before)  # the run's weights
    assert torch.equal(logits(model, pretrained=moved), before)


def test_a_tokenizer_that_is_not_the_models_is_refused_naming_the_key(tmp_path):
    for value in ("char", "bpe:300"):
        with pytest.raises(ConfigError, match="'tokenizer'"):
            pretrained_ar_task(tokenizer=value)
    big = tmp_path / "big.json"
    big.write_text(train_bpe(Path(_LLAMA["data"]).read_text(encoding="utf-8"), 400))
    with pytest.raises(ConfigError, match="'pretrained'.*300 rows, the tokenizer 400"):
        pretrained_ar_task(tokenizer=str(big))


def test_a_wrong_shape_override_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="'hidden'.*has 32"):
        make_config("ar-tiny", {"pretrained": tiny_llama_folder(), "hidden": 64})
    with pytest.raises(ConfigError, match="'hidden'"):
        make_config("ar-tiny", {"pretrained": tiny_llama_folder(), "hidden": "abc"})
    with pytest.raises(ConfigError, match="'layer'"):
        make_config("ar-tiny", {"pretrained": tiny_llama_folder(), "layer": "hf:llama"})
    with pytest.raises(ConfigError, match="'pretrained'"):
        make_config("recurrent-tiny", {"pretrained": tiny_llama_folder()})


def test_a_folder_it_cannot_use_is_one_sentence_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'pretrained'.*no config.json"):
        make_config("ar-tiny", {"pretrained": str(tmp_path)})
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="'pretrained'.*model_type 'gpt2'"):
        make_config("ar-tiny", {"pretrained": str(other)})
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama_folder(), bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="'pretrained'.*no tokenizer.json"):
        make_config("ar-tiny", {"pretrained": str(bare)})
    (bare / "model.safetensors").unlink()
    values = {"pretrained": str(bare), "tokenizer": str(tmp_path / "t.json"),
              "data": _LLAMA["data"]}  # fmt: skip
    shutil.copy(f"{tiny_llama_folder()}/tokenizer.json", tmp_path / "t.json")
    with pytest.raises(ConfigError, match="'pretrained'.*no model.safetensors"):
        pretrained_ar_task(**values)
