"""Shared helpers for tests: tiny configs and tasks on scikit-learn digits."""

from __future__ import annotations

import os

import pytest
import torch

from diffusionblocks.registry import make_config, make_task


def tiny_config(**overrides):
    values = {"device": "cpu", "log_every": 1000}
    values.update(overrides)
    return make_config("tiny", values)


def tiny_task(**overrides):
    return make_task(tiny_config(**overrides), torch.device("cpu"))


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# Folders the helpers make once per test session (per xdist worker); conftest.py removes them
# when the session ends
SESSION_FOLDERS: list[str] = []


def session_folder(prefix: str) -> str:
    """A new temporary folder, removed when the test session ends."""
    import tempfile

    folder = tempfile.mkdtemp(prefix=prefix)
    SESSION_FOLDERS.append(folder)
    return folder


_STACK_DATA: dict[bool, str] = {}


def stack_data(continuous: bool = False) -> str:
    """scikit-learn's digits as a user's .npz (made once per test session)."""
    if continuous not in _STACK_DATA:
        import sys

        sys.path.insert(0, FIXTURES)
        from stack_models import digits_npz

        folder = session_folder("dblocks-stack-")
        _STACK_DATA[continuous] = digits_npz(os.path.join(folder, "digits.npz"), continuous)
    return _STACK_DATA[continuous]


def stack_config(model: str = "", **overrides):
    """A user's network (``tests/fixtures/stack_models.py``, by default a residual MLP of
    ``depth`` layers: 4 or 6; or ``model`` given as FILE.py:NAME) on digits, as small as the
    tiny preset."""
    depth = overrides.pop("depth", 4)
    continuous = overrides.get("target") == "continuous"
    if ":" not in model:
        model = f"{FIXTURES}/stack_models.py:{model or f'mlp{depth}'}"
    values = {"device": "cpu", "log_every": 1000, "epochs": 1, "num_blocks": 2,
              "data": stack_data(continuous), "eval_subset": 200, "eval_batch_size": 200,
              "model": model}  # fmt: skip
    values.update(overrides)
    return make_config("your-model", values)


def stack_task(model: str = "", **overrides):
    return make_task(stack_config(model, **overrides), torch.device("cpu"))


def llama_masked_task(**overrides):
    """The masked-diffusion LM (``mdm-tiny``) with Llama decoder layers from transformers
    (``layer=hf:llama``)."""
    values = {"device": "cpu", "log_every": 1000, "layer": "hf:llama", **overrides}
    return make_task(make_config("mdm-tiny", values), torch.device("cpu"))


def token_stack_task(**overrides):
    """The masked-diffusion LM (``mdm-tiny``) of a user's whole token network
    (``model=FILE.py:token_encoder``: ResidualStack(target="tokens"), PyTorch encoder layers)."""
    values = {"device": "cpu", "log_every": 1000,
              "model": f"{FIXTURES}/stack_models.py:token_encoder", **overrides}  # fmt: skip
    return make_task(make_config("mdm-tiny", values), torch.device("cpu"))


def ar_stack_task(**overrides):
    """The autoregressive model (``ar-tiny``) of a user's whole token network
    (``model=FILE.py:ar_token_model``: ResidualStack(target="tokens"), encoder layers taking the
    attention mask)."""
    values = {"device": "cpu", "log_every": 1000,
              "model": f"{FIXTURES}/stack_models.py:ar_token_model", **overrides}  # fmt: skip
    return make_task(make_config("ar-tiny", values), torch.device("cpu"))


def llama_ar_task(**overrides):
    """The autoregressive model (``ar-tiny``: two streams, causal and two-stream attention
    masks) with Llama decoder layers from transformers (``layer=hf:llama``)."""
    values = {"device": "cpu", "log_every": 1000, "layer": "hf:llama", **overrides}
    return make_task(make_config("ar-tiny", values), torch.device("cpu"))


_LLAMA: dict[str, str] = {}


def tiny_llama_folder() -> str:
    """A tiny random-initialised Llama causal LM saved with ``save_pretrained`` (6 layers of
    width 32, 2 attention heads sharing 1 key-value head) with a byte-level BPE of 300 tokens
    trained on Shakespeare's first 100,000 training characters as its tokenizer.json: what a
    user's pretrained folder holds, made once per test session, nothing downloaded."""
    if "folder" not in _LLAMA:
        from transformers import LlamaConfig, LlamaForCausalLM

        from diffusionblocks.data.text import load_shakespeare
        from diffusionblocks.data.tokens import train_bpe

        corpus = load_shakespeare(0.1)
        tokenizer = train_bpe(corpus.vocab.decode(corpus.train_ids[:100_000].tolist()), 300)
        config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=128, tie_word_embeddings=False)  # fmt: skip
        folder = session_folder("dblocks-llama-")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            LlamaForCausalLM(config).save_pretrained(folder)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(tokenizer)
        text = corpus.vocab.decode(corpus.train_ids[:300_000].tolist())
        _LLAMA["data"] = os.path.join(folder, "corpus.txt")  # a user's text: quick to encode
        with open(_LLAMA["data"], "w", encoding="utf-8") as f:
            f.write(text)
        _LLAMA["folder"] = folder
    return _LLAMA["folder"]


def pretrained_ar_task(**overrides):
    """The autoregressive model fine-tuning :func:`tiny_llama_folder` (``pretrained``): its 6
    layers (``depth`` is the model's: 6 if given), embeddings, head and tokenizer, on the first
    300,000 characters of Shakespeare's training text as a user's text file."""
    assert overrides.pop("depth", 6) == 6, "the pretrained model has 6 layers"
    values = {"device": "cpu", "log_every": 1000, "pretrained": tiny_llama_folder(),
              "data": _LLAMA["data"], **overrides}  # fmt: skip
    return make_task(make_config("ar-tiny", values), torch.device("cpu"))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def optimizer_snapshot(opt: torch.optim.Optimizer) -> list[dict[str, torch.Tensor]]:
    return [
        {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
        for group in opt.param_groups
        for p in group["params"]
    ]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class count_layer_calls:
    """Context manager counting forward calls of every transformer layer of ``model``
    (``AdaLNLayer``) with forward hooks: ``counted.layers`` after the block."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.layers, self.handles = model, 0, []

    def _hook(self, module, inputs, output):
        self.layers += 1

    def __enter__(self):
        from diffusionblocks.networks.layers import AdaLNLayer

        for m in self.model.modules():
            if isinstance(m, AdaLNLayer):
                self.handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


FASHION_MNIST_FILE = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tests that need the real Fashion-MNIST skip on a developer's machine without it, and FAIL in CI
# (CI=true), where it is installed: a missing data set must never pass as a silent skip there.
needs_fmnist = pytest.mark.skipif(
    not os.path.exists(FASHION_MNIST_FILE) and not IN_CI,
    reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)",
)


def synthetic_images(path, n: int = 96, size: int = 28, classes: int = 10, seed: int = 0):
    """A small labelled image set written as a user .npz: class k is a bright square at a
    position that depends on k, plus noise (learnable, and needs no download)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 40, size=(n, size, size)).astype(np.uint8)
    step = max(1, (size - 6) // classes)
    for i, k in enumerate(y):
        x[i, k * step : k * step + 6, k * step : k * step + 6] = 230
    np.savez(path, x=x, y=y)
    return str(path)
