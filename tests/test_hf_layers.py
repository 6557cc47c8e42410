"""Layers from Hugging Face transformers (``layer=hf:llama``, the optional extra ``[hf]``) and a
user's own layers (``layer=FILE.py:NAME``) inside a built-in network, the masked-diffusion LM:
they start as the wrapped layer, attend both ways, and say how to install what is missing.
(Block isolation and resume with Llama layers: tests/test_trainer.py.)"""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import FIXTURES, ar_stack_task, llama_ar_task, llama_masked_task

from diffusionblocks.config import ConfigError
from diffusionblocks.networks.hf import LlamaLayer, llama_config
from diffusionblocks.networks.stack import SigmaConditioned
from diffusionblocks.registry import make_config
from diffusionblocks.training import Trainer


def test_a_wrapped_llama_layer_starts_as_exactly_the_llama_layer():
    torch.manual_seed(0)
    layer = LlamaLayer(llama_config(32, 2, 4.0, 16), 0, causal=False)
    wrapped = SigmaConditioned(layer, 32, 0)
    x, cond = torch.randn(3, 16, 32), torch.randn(3, 32)
    assert torch.equal(wrapped(x, cond), layer(x))
    names = [n for n, _ in layer.named_modules()]
    assert any("input_layernorm" in n for n in names) and any("gate_proj" in n for n in names)


@pytest.mark.parametrize("causal", [False, True])
def test_the_masked_lm_attends_both_ways_and_a_causal_layer_does_not(causal):
    torch.manual_seed(0)
    layer = LlamaLayer(llama_config(32, 2, 4.0, 16), 0, causal=causal)
    x = torch.randn(1, 16, 32)
    y = x.clone()
    y[0, -1] += 1.0  # the last position changes
    first_moves = not torch.equal(layer(x)[0, 0], layer(y)[0, 0])
    assert first_moves == (not causal)


def test_the_masked_lm_builds_llama_blocks_and_trains_them():
    task = llama_masked_task(num_blocks=2, depth=4)
    layers = [layer for block in task.model.blocks for layer in block.layers]
    assert len(layers) == 4 and all(isinstance(layer.layer, LlamaLayer) for layer in layers)
    assert all(not layer.layer.causal for layer in layers)
    Trainer(task, None, progress=False).fit()
    assert torch.isfinite(torch.tensor(task.evaluate(quick=True)["bpc"]))


def test_a_users_layer_runs_inside_the_masked_lm():
    task = llama_masked_task(layer=f"{FIXTURES}/stack_models.py:token_layer")
    assert type(task.model.blocks[0].layers[0].layer).__name__ == "ResMLP"
    Trainer(task, None, progress=False).fit()


@pytest.mark.parametrize(
    "layer, words",
    [
        ("hf:gpt2", ["'layer'", "hf:llama"]),
        ("llama", ["'layer'", "FILE.py:NAME"]),
        (f"{FIXTURES}/stack_models.py:no_such", ["'layer'", "no function 'no_such'"]),
        (f"{FIXTURES}/stack_models.py:mlp4", ["'layer'", "(index, hidden, heads, mlp_ratio)"]),
    ],
)
def test_a_bad_layer_is_refused_naming_the_key(layer, words):
    with pytest.raises(ConfigError) as err:
        llama_masked_task(layer=layer)
    for word in words:
        assert word in str(err.value)


def test_without_transformers_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    with pytest.raises(ConfigError, match=r"diffusionblocks\[hf\]"):
        llama_masked_task()
    assert make_config("mdm-tiny", {"layer": "hf:llama"}).layer == "hf:llama"


@pytest.mark.parametrize("make", [llama_ar_task, ar_stack_task], ids=["hf-llama", "your-model"])
def test_the_autoregressive_model_never_sees_the_next_characters(make):
    """Two streams (Llama layers with rotary positions, or a user's whole token network): the
    logits for character i (the noisy stream) depend on the characters before i only, through
    every block."""
    task = make()
    Trainer(task, None, progress=False).fit()  # past the zero-initialised head
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, task.vocab.size, (1, 12), generator=gen)
    z = torch.randn(1, 12, task.model.hidden, generator=gen)
    sigma = torch.full((1, 12), 1.0)
    k = 6
    changed = ids.clone()
    changed[0, k] = (ids[0, k] + 1) % task.vocab.size
    with torch.no_grad():
        for block in range(len(task.model.blocks)):
            a = task.denoise_logits(block, ids, z, sigma)[0]
            b = task.denoise_logits(block, changed, z, sigma)[0]
            assert torch.equal(a[:, : k + 1], b[:, : k + 1]), block  # character k itself too
            assert not torch.equal(a[:, k + 1 :], b[:, k + 1 :]), block


def test_the_autoregressive_model_with_llama_layers_generates_without_the_cache():
    task = llama_ar_task(readout="chain")
    text, info = task.generate_text(7, torch.Generator().manual_seed(0), "the ", 2, 1.0)
    assert len(text) == 7 and sum(info["calls_per_unit"]) == 7 * 2


def test_a_layer_without_a_mask_argument_is_refused_where_the_model_needs_one():
    task = llama_ar_task(layer=f"{FIXTURES}/stack_models.py:token_layer")
    with pytest.raises(ConfigError, match=r"layer 0 \(ResMLP\) takes no attention mask.*mask=None"):
        task.loss(0, task.train_batch(torch.arange(2)), torch.Generator().manual_seed(0))
