"""Your own residual network through the public API (``stack`` task, docs/your-model.md): the
wrapper starts as the wrapped layer, bad stacks and bad checkpoints are refused in one sentence
naming what is wrong, uneven blocks, learning, the CLI, the Python API, assembly and loading.
(Block isolation and resume: tests/test_trainer.py runs its tests on a user's network too.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, stack_config, stack_data, stack_task, tiny_task
from torch import nn

import diffusionblocks as db
from diffusionblocks.config import ConfigError
from diffusionblocks.networks.stack import (
    ResidualStack,
    SigmaConditioned,
    StackNetwork,
    StackShape,
)
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.runs import train_run
from diffusionblocks.tasks.slot import SlotEndToEnd
from diffusionblocks.tasks.stack import load_stack
from diffusionblocks.training import Trainer
from diffusionblocks.training.checkpoint import CheckpointError

sys.path.insert(0, FIXTURES)
import stack_models  # noqa: E402


@pytest.mark.parametrize("shape", [(5, 32), (5, 17, 32)], ids=["vector", "tokens"])
def test_a_wrapped_layer_starts_as_exactly_the_layer(shape):
    torch.manual_seed(0)
    layer = stack_models.ResMLP()
    wrapped = SigmaConditioned(layer, 32, 0)
    x, cond = torch.randn(shape), torch.randn(shape[0], 32)
    assert torch.equal(wrapped(x, cond), layer(x))
    # after training moves the modulation, the condition changes the output
    nn.init.normal_(wrapped.modulation[1].weight)
    assert not torch.allclose(wrapped(x, cond), layer(x))


def test_the_network_starts_as_exactly_the_network_the_user_wrote():
    """End to end at initialisation: head(layer_4(...layer_1(stem(x)))) with the user's own
    modules, bitwise (the slot adds zeros to a vector stem, the wrappers start as their layers)."""
    task = stack_task(method="e2e")
    m = task.model
    layers = [wrapped.layer for block in m.blocks for wrapped in block.layers]
    assert len(layers) == 4 and all(type(layer).__name__ == "ResMLP" for layer in layers)
    x = task.train_batch(torch.arange(5))[0]
    with torch.no_grad():
        h = m.stem(x)
        for layer in layers:
            h = layer(h)
        assert torch.equal(task.predict(x), m.head(h))
    # a layer that takes the condition is used as it is, without modulation
    assert not hasattr(stack_task("conditioned4").model.blocks[0].layers[0], "modulation")


class _PatchStem(nn.Module):
    """The built-in ViT's patch stem, written as a user would (its modules, not copies)."""

    def __init__(self, vit):
        super().__init__()
        self.patch_embed, self.pos_embed = vit.patch_embed, vit.pos_embed

    def forward(self, images):
        return self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]


def test_the_built_in_vit_is_a_residual_stack_on_the_same_path():
    """A user's ResidualStack made of the built-in ViT's parts (a patch stem, its adaLN-Zero
    layers, which take the condition themselves, and its adaLN head, which takes it too) gives
    exactly the built-in classification's block outputs, loss, chain, ensemble and end-to-end
    logits: the built-in task and a user's stack run one code path."""
    task = tiny_task(num_blocks=2, self_condition=0.0)
    Trainer(task, None, progress=False).fit(stop_at=4)  # weights away from their initial values
    vit = task.model
    images, labels = task.train_batch(torch.arange(12))
    layers = [layer for group in vit.blocks for layer in group.layers]
    stack = ResidualStack(stem=_PatchStem(vit), layers=layers, head=vit.head)
    shape = StackShape(num_classes=vit.shape.num_classes, target_size=0, depth=len(layers),
                       num_blocks=2, seed=0)  # fmt: skip
    net = StackNetwork(stack, shape, images)
    assert net.head_takes_condition and all(
        layer.own_condition for group in net.blocks for layer in group.layers
    )
    with torch.no_grad():  # what the library adds: the label table, sigma embedder, slot
        net.label_embed.weight.copy_(vit.label_embed.weight)
        net.cond_embed.load_state_dict(vit.cond_embed.state_dict())
        net.slot.copy_(vit.pos_embed[:, 0])

    def outputs():
        task.model.eval()
        gen = torch.Generator().manual_seed(3)
        z, sigma = torch.randn(12, 32, generator=gen), torch.full((12,), 0.7)
        return [
            task.block_output(1, z, sigma, task.block_features(1, images)),
            task.loss(0, (images, labels), torch.Generator().manual_seed(1))[0],
            task.chain(images, 3, gen)[0],
            task.ensemble(images)[0],
            SlotEndToEnd.end_to_end(task, images),  # type: ignore[arg-type]
        ]

    with torch.no_grad():
        built_in = outputs()
        task.model = net
        users = outputs()
    for a, b in zip(built_in, users, strict=True):
        assert torch.equal(a, b)


def test_a_layer_function_builds_each_block_alone_with_the_same_weights():
    task = stack_task("by_function4")
    model = task.model
    again = model.build_block(1).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.blocks[1].state_dict().items())


@pytest.mark.parametrize(
    "model, overrides, words",
    [
        ("mlp5", {}, ["'num_blocks'", "5 layers", "layers_per_block"]),
        ("mlp4", {"layers_per_block": "1,2"}, ["'layers_per_block'", "sums to 3", "4 layers"]),
        (
            "mlp4",
            {"layers_per_block": "1,1,2"},
            ["'layers_per_block'", "one per block", "num_blocks=2"],
        ),
        ("wrong_signature", {}, ["layer 1", "ThreeInputs", "forward(x, cond)"]),
        ("wrong_shape", {}, ["layer 1", "Linear", "keep its input's shape"]),
        ("wrong_head", {}, ["head", "10 logits"]),
        ("not_a_stack", {}, ["'model'", "ResidualStack"]),
        ("no_such_function", {}, ["'model'", "no function 'no_such_function'"]),
    ],
)
def test_a_bad_stack_is_refused_in_one_sentence_naming_what_is_wrong(model, overrides, words):
    with pytest.raises(ConfigError) as err:
        stack_task(model, **overrides)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_missing_model_file_or_key_is_named():
    with pytest.raises(ConfigError, match="'model'.*does not exist"):
        stack_task("/nonexistent/net.py:build")
    with pytest.raises(ConfigError, match="missing value for 'model'"):
        make_config("your-model", {"data": stack_data()})
    with pytest.raises(ConfigError, match="target must be one of"):
        ResidualStack(stem=nn.Linear(2, 2), layers=[nn.Identity()], head=nn.Linear(2, 2),
                      target="labels")  # fmt: skip
    with pytest.raises(ConfigError, match="'target'.*says target='tokens'.*mdm-text"):
        stack_task(f"{FIXTURES}/stack_models.py:tokens_fixed")
    with pytest.raises(ConfigError, match="'target'.*says target='continuous'"):
        stack_task(f"{FIXTURES}/stack_models.py:regression4")


def test_uneven_blocks_hold_their_layers_and_count_them():
    task = stack_task(layers_per_block="1,3")
    assert [len(b) for b in task.model.blocks] == [1, 3]
    assert [task.layers_in_block(b) for b in (0, 1)] == [1, 3]
    assert task.describe()["layers_per_block"] == [1, 3]


@pytest.mark.parametrize("preset", ["tiny", "dit-tiny", "mdm-tiny", "ar-tiny"])
def test_the_built_in_presets_take_uneven_blocks_too(preset):
    config = make_config(preset, {"depth": 6, "num_blocks": 3, "layers_per_block": "1,4,1",
                                  "device": "cpu"})  # fmt: skip
    task = make_task(config, torch.device("cpu"))
    assert [len(b) for b in task.model.blocks] == [1, 4, 1]
    # a block built alone has its size and the weights of the block built with the network
    again = task.model.build_block(1).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in task.model.blocks[1].state_dict().items())
    e2e = make_task(make_config(preset, {"depth": 6, "num_blocks": 3, "method": "e2e",
                                         "layers_per_block": "1,4,1"}))  # fmt: skip
    assert [len(b) for b in e2e.model.blocks] == [6]  # one block end to end: the sizes unused
    with pytest.raises(ConfigError, match="'layers_per_block'.*sums to 3"):
        make_config(preset, {"depth": 6, "num_blocks": 3, "layers_per_block": "1,1,1"})


def test_the_recurrent_model_refuses_uneven_blocks():
    with pytest.raises(ConfigError, match="'layers_per_block'"):
        make_config("recurrent-tiny", {"layers_per_block": "4"})


@pytest.mark.parametrize("model", ["mlp4", "mixer4"])
def test_diffusionblocks_learns_the_users_network_above_the_trivial_baseline(model):
    task = stack_task(model, epochs=8)
    Trainer(task, None, progress=False).fit()
    ev = task.evaluate(split="val")
    trivial = task.trivial_baseline("val")["accuracy"]
    # clearly above the trivial baseline: four times chance (10 classes)
    assert trivial < 0.2 and ev["accuracy"] > 0.4, (ev, trivial)
    assert set(ev["readouts"]) == {"ensemble", "chain"} and ev["readout"] == "ensemble"


def test_continuous_targets_learn_with_the_chain():
    task = stack_task("regression4", target="continuous", epochs=8)
    Trainer(task, None, progress=False).fit()
    ev = task.evaluate(split="val")
    assert ev["readout"] == "chain" and ev["r2"] > 0.5, ev
    assert task.trivial_baseline("val")["r2"] < 0.05
    e2e = stack_task("regression4", target="continuous", method="e2e", epochs=8)
    Trainer(e2e, None, progress=False).fit()
    assert e2e.evaluate(split="val")["r2"] > 0.5


def test_a_checkpoint_of_another_architecture_is_refused_in_one_sentence(tmp_path):
    train_run(stack_config(epochs=0.05), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError) as err:
        db.load(tmp_path / "run", model=f"{FIXTURES}/stack_models.py:wide4")
    message = str(err.value)
    assert "\n" not in message and "another architecture" in message
    assert "(48" in message or "48)" in message, message


def test_the_python_api_trains_loads_predicts_and_refuses_a_local_function(tmp_path):
    model = db.train("your-model", out=tmp_path / "run", progress=False,
                     model=stack_models.mlp4, data=stack_data(), epochs=0.2,
                     num_blocks=2, device="cpu")  # fmt: skip
    # the file's absolute path: other processes (dblocks eval, torchrun ranks) find it too
    assert model.config.model == f"{Path(FIXTURES).resolve()}/stack_models.py:mlp4"
    x = torch.from_numpy(__import__("numpy").load(stack_data())["x"][:7])
    labels = model.predict(x)
    assert labels.shape == (7,) and labels.dtype == torch.int64
    again = db.load(tmp_path / "run")
    assert torch.equal(again.predict(x), labels)
    assert again.evaluate(split="val")["examples"] == 162

    def local():
        return stack_models.mlp4()

    with pytest.raises(ConfigError, match="top level"):
        db.train("your-model", model=local, data=stack_data(), out=tmp_path / "x")


def test_the_cli_trains_assembles_and_evaluates_a_users_network(tmp_path):
    run, out = tmp_path / "run", tmp_path / "model"
    model = f"{FIXTURES}/stack_models.py:mixer4"
    cmd = [sys.executable, "-m", "diffusionblocks.cli"]
    sets = ["--set", f"model={model}", "--set", f"data={stack_data()}", "--set", "epochs=0.2",
            "--set", "num_blocks=2", "--set", "device=cpu"]  # fmt: skip
    subprocess.run([*cmd, "train", "--preset", "your-model", *sets, "--out", str(run),
                    "--no-progress"], check=True, capture_output=True)  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert results["task"]["depth"] == 4 and "test" in results["trivial"]
    subprocess.run([*cmd, "assemble", str(run), "--out", str(out)], check=True,
                   capture_output=True)  # fmt: skip
    ev = subprocess.run([*cmd, "eval", "--run", str(out), "--split", "val"], check=True,
                        capture_output=True, text=True).stdout  # fmt: skip
    assert "val accuracy" in ev
    missing = subprocess.run([*cmd, "train", "--preset", "your-model", "--set",
                              f"data={stack_data()}", "--out", str(tmp_path / "m")],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode != 0 and "'model'" in missing.stderr
    assert not (tmp_path / "m").exists()


def test_continuous_predictions_come_back_in_the_targets_shape_and_units(tmp_path):
    model = db.train("your-model", out=tmp_path / "run", progress=False, target="continuous",
                     model=f"{FIXTURES}/stack_models.py:regression4", data=stack_data(True),
                     epochs=0.2, num_blocks=2, device="cpu")  # fmt: skip
    arrays = __import__("numpy").load(stack_data(True))
    values = model.predict(arrays["x"][:6])
    assert values.shape == (6, 2) and values.dtype == torch.float32
    # in the data's units: the training targets' scale, not the standardised one
    y = torch.from_numpy(arrays["y"])
    assert abs(float(values[:, 1].mean()) - float(y[:, 1].mean())) < 3 * float(y[:, 1].std())
    np = __import__("numpy")
    np.savez(tmp_path / "one.npz", x=arrays["x"], y=arrays["y"][:, 1])  # one number each: (N,)
    one = db.train("your-model", out=tmp_path / "one", progress=False, target="continuous",
                   model=f"{FIXTURES}/stack_models.py:regression1", data=tmp_path / "one.npz",
                   epochs=0.2, num_blocks=2, device="cpu")  # fmt: skip
    assert one.predict(arrays["x"][:6]).shape == (6,)


@pytest.mark.parametrize("method", ["dblocks", "e2e"])
def test_a_users_network_with_dropout_repeats_and_resumes_exactly(tmp_path, method):
    """Dropout in a user's network draws its masks from the training generator (saved with the
    checkpoints), not from PyTorch's global one: runs agree whatever the global generator holds,
    and a run resumed from a mid-training checkpoint ends as the uninterrupted one."""
    from helpers import same_state, snapshot

    def make():
        return stack_task("dropout4", method=method)

    assert make().unseeded_dropout and not stack_task("mlp4").unseeded_dropout
    torch.manual_seed(1)
    full_task = make()
    Trainer(full_task, tmp_path / "full", progress=False).fit()
    torch.manual_seed(2)
    t1 = Trainer(make(), tmp_path / "split", progress=False)
    stop = t1.total_steps // 2 + 1
    t1.fit(stop_at=stop)
    torch.manual_seed(3)
    second = make()
    t2 = Trainer(second, tmp_path / "split", progress=False)
    assert t2.resume() and t2.step == stop
    t2.fit()
    assert same_state(snapshot(full_task.model), snapshot(second.model))


def test_a_layer_function_trains_block_resident_holding_one_block(tmp_path):
    from diffusionblocks.training.residency import is_materialized

    task = stack_task("by_function4", schedule="sequential")
    trainer = Trainer(task, tmp_path, progress=False)
    held = []
    original = trainer.train_step

    def spy(block, batch):
        held.append([b for b in range(2) if is_materialized(task.model, b)])
        return original(block, batch)

    trainer.train_step = spy
    trainer.fit()
    half = len(held) // 2
    assert held == [[0]] * half + [[1]] * half
    # nothing but the model holds the layers: the stack keeps a function, not modules
    assert callable(load_stack(task.config.model).layers)


def test_which_layers_take_the_condition():
    from diffusionblocks.networks.stack import takes_condition

    class Optional(nn.Module):
        def forward(self, x, cond=None):
            return x

    class Masked(nn.Module):
        def forward(self, x, mask=None):
            return x

    assert takes_condition(Optional(), 0) and takes_condition(stack_models.CondMLP(), 0)
    assert not takes_condition(Masked(), 0) and not takes_condition(nn.Identity(), 0)


def test_mask_and_positions_must_be_optional_keywords():
    from diffusionblocks.networks.stack import takes_condition

    class MaskFirst(nn.Module):
        def forward(self, x, mask=None, cond=None):
            return x

    class MaskRequired(nn.Module):
        def forward(self, x, mask):
            return x

    for layer in (MaskFirst(), MaskRequired()):
        with pytest.raises(ConfigError, match="layer 3 .*optional keywords"):
            takes_condition(layer, 3)


# -- your whole token network as a masked-diffusion LM (target tokens) -------------------------
def test_a_token_stack_starts_as_exactly_the_users_network():
    """The sigma conditioning around each layer is zero-initialised: the network's logits are
    the user's stem -> layers -> head, bitwise, at any masking time; one block alone is the
    stem -> that block's layers -> head."""
    from helpers import token_stack_task

    task = token_stack_task(num_blocks=2, depth=4)
    net = task.model
    ids = torch.randint(0, task.vocab.size + 1, (3, 32), generator=torch.Generator().manual_seed(0))
    plain = [wrapped.layer for group in net.blocks for wrapped in group.layers]
    assert [type(layer).__name__ for layer in plain] == ["TransformerEncoderLayer"] * 4
    net.eval()

    def users(layers):
        x = net.stem(ids)
        for layer in layers:
            x = layer(x)
        return net.head(x)

    with torch.no_grad():
        assert torch.equal(net.run_all(ids, torch.full((3,), 0.7)), users(plain))
        assert torch.equal(net.run_block(1, ids, torch.full((3,), 0.2)), users(plain[2:]))


@pytest.mark.parametrize(
    "function, overrides",
    [("token_encoder", {"resident": "true"}), ("token_by_function", {"resident": "true"}),
     ("token_kwargs", {"method": "e2e"})],
    ids=["resident", "layer-function-resident", "e2e-kwargs"],
)  # fmt: skip
def test_a_token_stack_trains_samples_and_loads(tmp_path, function, overrides):
    model = db.train("mdm-tiny", out=tmp_path / "run", progress=False, device="cpu", threads=1,
                     model=f"{FIXTURES}/stack_models.py:{function}", **overrides)  # fmt: skip
    assert type(model.task.model).__name__ == "TokenStackNetwork"
    loaded = db.load(tmp_path / "run")
    # the run's own final test evaluation, recomputed from the saved weights: the same number
    assert loaded.evaluate()["bpc"] == model.results["eval"]["bpc"]
    text = model.sample_text(16, seed=3)
    assert len(text) == 16 and loaded.sample_text(16, seed=3) == text
    assert model.results["task"]["model"].endswith(f"stack_models.py:{function}")


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        ({"model": f"{FIXTURES}/stack_models.py:token_encoder3"}, "'depth'", "has 3 layers"),
        ({"model": f"{FIXTURES}/stack_models.py:token_wrong_head"}, "'model'", "logits"),
        ({"model": f"{FIXTURES}/stack_models.py:mlp4"}, "'model'", "target='tokens'"),
        ({"model": f"{FIXTURES}/stack_models.py:token_needs_width"}, "'model'", "needs width"),
        ({"model": f"{FIXTURES}/stack_models.py:token_no_mask_row"}, "'model'", "mask token"),
        ({"model": f"{FIXTURES}/stack_models.py:token_wide_stem"}, "'model'", "layer 0"),
        ({"model": f"{FIXTURES}/stack_models.py:token_fixed_length"}, "'model'", "stem"),
        ({"model": f"{FIXTURES}/stack_models.py:token_encoder", "layer": "hf:llama"}, "'layer'",
         "brings its own layers"),
        ({"model": "no_colon"}, "'model'", "FILE.py:NAME"),
    ],
    ids=["depth", "head", "not-tokens", "parameters", "no-mask-row", "wide-stem", "fixed-length",
         "with-layer", "form"],
)  # fmt: skip
def test_a_token_stack_is_refused_naming_the_key(overrides, key, words):
    from helpers import token_stack_task

    with pytest.raises(ConfigError) as err:
        token_stack_task(**overrides)
    assert key in str(err.value) and words in str(err.value), str(err.value)


# -- your whole token network as an autoregressive LM (target tokens) ----------------------------
def test_an_ar_token_stack_starts_as_exactly_the_users_causal_network():
    """The end-to-end AR model on a user's token stack is, at initialisation, exactly the user's
    stem -> layers (under the causal mask) -> head: the stream offsets and the sigma
    conditioning start at zero."""
    from helpers import ar_stack_task

    from diffusionblocks.tasks.autoregressive import causal_mask

    task = ar_stack_task(method="e2e", depth=4)
    net = task.model
    assert type(net).__name__ == "TwoStreamStackNetwork"
    ids = torch.randint(0, task.vocab.size, (3, 32), generator=torch.Generator().manual_seed(0))
    plain = [wrapped.layer for group in net.blocks for wrapped in group.layers]
    net.eval()
    with torch.no_grad():
        x = net.stem(ids)
        for layer in plain:
            x = layer(x, mask=causal_mask(32))
        assert torch.equal(task.clean_logits(ids), net.head(x))


@pytest.mark.parametrize(
    "function, overrides",
    [("ar_token_model", {}), ("ar_by_function", {"resident": "true"}),
     ("ar_token_model", {"method": "e2e"})],
    ids=["dblocks", "layer-function-resident", "e2e"],
)  # fmt: skip
def test_an_ar_token_stack_trains_generates_and_loads(tmp_path, function, overrides):
    model = db.train("ar-tiny", out=tmp_path / "run", progress=False, device="cpu", threads=1,
                     model=f"{FIXTURES}/stack_models.py:{function}", **overrides)  # fmt: skip
    assert type(model.task.model).__name__ == "TwoStreamStackNetwork"
    assert model.results["task"]["model"].endswith(f"stack_models.py:{function}")
    loaded = db.load(tmp_path / "run")
    assert loaded.evaluate()["heldout_ce"] == model.results["eval"]["heldout_ce"]
    # past the training context (seq_len 32): the window rolls
    text = model.sample_text(40, seed=3)
    assert len(text) == 40 and loaded.sample_text(40, seed=3) == text


@pytest.mark.parametrize(
    "preset, overrides, key, words",
    [("ar-tiny", {"model": "token_encoder"}, "model", "takes no attention mask"),
     ("ar-tiny", {"model": "ar_token_model", "layer": "hf:llama"}, "layer", "model="),
     ("ar-tiny", {"model": "ar_three"}, "depth", "3 layers"),
     ("recurrent-tiny", {"model": "ar_token_model"}, "model", "autoregressive or masked"),
     ("ar-tiny", {"model": "ar_own_mask"}, "model", "do not keep to the attention mask"),
     ("ar-tiny", {"model": "ar_seq_len_layer"}, "model", "two streams.*RuntimeError"),
     ("ar-tiny", {"model": "ar_token_model", "pretrained": "somewhere"}, "pretrained",
      "empty with model=")],
    ids=["no-mask", "with-layer", "depth", "recurrent", "own-mask", "seq-len-layer",
         "with-pretrained"],
)  # fmt: skip
def test_an_ar_token_stack_is_refused_naming_the_key(preset, overrides, key, words):
    values = {"device": "cpu", **overrides}
    values["model"] = f"{FIXTURES}/stack_models.py:{values['model']}"
    with pytest.raises(ConfigError, match=f"'{key}'.*{words}"):
        make_task(make_config(preset, values), torch.device("cpu"))
