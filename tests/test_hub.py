"""Models out to and in from a Hugging Face Hub folder (``hub.py``: ``PyTorchModelHubMixin``):
``save_pretrained`` / ``from_pretrained`` round trips for every built-in task, with the training
data deleted before loading (the data card stands in for it), the generated model card, and the
refusals. Nothing touches the network (a Hub id goes through a patched ``snapshot_download``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    FIXTURES,
    pretrained_ar_task,
    stack_data,
    synthetic_images,
)
from safetensors.torch import load_file, save_file

import diffusionblocks as db
from diffusionblocks.assemble import assemble
from diffusionblocks.config import ConfigError
from diffusionblocks.data.images import DataError
from diffusionblocks.training.weights import CheckpointError

QUICK = {"threads": 1, "device": "cpu"}


def trained(tmp_path, preset, data, **overrides):
    """A short run of ``preset`` on ``data`` (a file under tmp_path, deleted by the caller)."""
    return db.train(preset, out=tmp_path / "run", progress=False, data=str(data),
                    **QUICK, **overrides)  # fmt: skip


def text_file(tmp_path):
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "café", "naïve", "☃"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(600)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("overrides", [{}, {"resident": "true"}, {"readout": "chain"},
                                       {"method": "e2e"}, {"method": "e2e-shallow"},
                                       {"schedule": "sequential", "shared": "block-copies"}],
                         ids=["dblocks", "resident", "chain", "e2e", "e2e-shallow",
                              "block-copies"])  # fmt: skip
def test_a_classifier_saved_for_the_hub_predicts_bitwise_the_same_without_its_data(
    tmp_path, overrides
):
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data, **overrides)
    x = np.random.default_rng(1).integers(0, 255, size=(20, 8, 8)).astype(np.uint8)
    expected = model.probabilities(x)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    (tmp_path / "images.npz").unlink()  # from here on, only the data card knows the data
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    assert torch.equal(loaded.probabilities(x), expected)
    assert loaded.config.to_dict() == model.config.to_dict()
    assert isinstance(loaded, torch.nn.Module) and loaded.step == model.step
    saved = set(load_file(tmp_path / "hub" / "model.safetensors"))
    assert {k for k in saved if k.startswith("blocks.")}, saved
    if overrides.get("shared") == "block-copies":
        assert any(k.startswith("shared_per_block.1.") for k in saved)
    # Nothing evaluates on the stand-in data: every way in is refused, saying why
    for evaluate in (loaded.evaluate, lambda: loaded.evaluate(split="val"),
                     loaded.task.evaluate, loaded.task.trivial_baseline,
                     lambda: db.api.Model.evaluate(loaded),
                     db.DiffusionBlocksModel.from_model(loaded).evaluate):  # fmt: skip
        with pytest.raises(DataError, match="without its data"):
            evaluate()


def test_the_folder_holds_the_config_data_card_and_a_model_card_with_the_results(tmp_path):
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data)
    hub = db.DiffusionBlocksModel.from_run(tmp_path / "run")  # results read from the run folder
    hub.save_pretrained(tmp_path / "hub")
    saved = json.loads((tmp_path / "hub" / "config.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["format"] == "diffusionblocks-model"
    assert saved["config"] == model.config.to_dict()
    card = saved["data_card"]
    assert card["kind"] == "images" and card["image_shape"] == [1, 8, 8]
    assert card["num_classes"] == 10
    task = model.task
    assert (card["pixel_mean"], card["pixel_std"]) == (task.pixel_mean, task.pixel_std)
    assert saved["results"]["test"] == results["eval"]["accuracy"]
    assert saved["results"]["val"] == results["eval_val"]["accuracy"]
    readme = (tmp_path / "hub" / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: diffusionblocks\n")
    assert f"| test | {results['eval']['accuracy']:.4f} |" in readme
    assert f"| val | {results['eval_val']['accuracy']:.4f} |" in readme
    assert results["command"] in readme and '"num_blocks": 2' in readme
    # With the data where the run says, db.load reads the folder as a model folder and evaluates
    assert db.load(tmp_path / "hub").evaluate()["accuracy"] == results["eval"]["accuracy"]
    # Saved again over the folder, the model card is rewritten for the model saved
    (tmp_path / "hub" / "README.md").write_text("stale")
    hub.save_pretrained(tmp_path / "hub")
    assert (tmp_path / "hub" / "README.md").read_text() == readme


@pytest.mark.parametrize("ema", ["0", "0.9"])
def test_image_generation_round_trips_without_its_data(tmp_path, ema):
    """With ``ema`` the weight average (buffers of the network) is what generates."""
    data = synthetic_images(tmp_path / "images.npz", n=160, size=16)
    model = trained(tmp_path, "dit-tiny", data, patch_size=4, train_subset=0, ema=ema)
    expected = model.generate(labels=[0, 3], seed=5)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    (tmp_path / "images.npz").unlink()
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    assert torch.equal(loaded.generate(labels=[0, 3], seed=5), expected)
    with pytest.raises(DataError, match="without its data"):
        loaded.task.trivial_baseline()


@pytest.mark.parametrize(
    "preset, overrides",
    [("ar-tiny", {}), ("ar-tiny", {"tokenizer": "bpe:300"}), ("mdm-tiny", {}),
     ("mdm-tiny", {"tokenizer": "bpe:300"}), ("recurrent-tiny", {})],
    ids=["ar", "ar-bpe", "mdm", "mdm-bpe", "recurrent"],
)  # fmt: skip
def test_language_models_round_trip_without_their_text(tmp_path, preset, overrides):
    corpus = text_file(tmp_path)
    model = trained(tmp_path, preset, corpus, **overrides)
    expected = [model.sample_text(20, prompt=p, seed=2) for p in ("", "to be")]
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    corpus.unlink()
    (tmp_path / "run").rename(tmp_path / "moved")  # the run's tokenizer.json is not read either
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    assert [loaded.sample_text(20, prompt=p, seed=2) for p in ("", "to be")] == expected
    assert loaded.task.vocab.size == model.task.vocab.size


def test_a_hub_id_is_downloaded_with_the_models_files_only(tmp_path, monkeypatch):
    """A name that is not a folder goes to snapshot_download (patched here: no network) with
    the mixin's options, asking for the three files of the model."""
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(tmp_path / "hub")

    monkeypatch.setattr("diffusionblocks.hub.snapshot_download", fake_download)
    loaded = db.DiffusionBlocksModel.from_pretrained("someone/tiny-digits", revision="v1")
    assert calls[0]["repo_id"] == "someone/tiny-digits" and calls[0]["revision"] == "v1"
    assert sorted(calls[0]["allow_patterns"]) == [
        "README.md", "code/*.py", "config.json", "model.safetensors", "pretrained/config.json"
    ]  # fmt: skip
    x = torch.rand(4, 8, 8)
    assert torch.equal(loaded.probabilities(x), model.probabilities(x))


def test_what_a_hub_folder_cannot_hold_is_refused_naming_the_key(tmp_path):
    """Your own network whose file is gone, a fine-tuned model whose pretrained folder is gone:
    nothing to copy into the folder."""
    code = tmp_path / "net.py"
    code.write_text((Path(FIXTURES) / "stack_models.py").read_text())
    run = db.train("your-model", out=tmp_path / "stack", progress=False, data=stack_data(),
                   model=f"{code}:mlp4", epochs=0.2, num_blocks=2, **QUICK)  # fmt: skip
    code.unlink()
    with pytest.raises(ConfigError, match="'model'.*not there to copy"):
        db.DiffusionBlocksModel.from_model(run)
    task = pretrained_ar_task()
    task.config.pretrained = str(tmp_path / "moved")
    with pytest.raises(ConfigError, match="'pretrained'.*not there to copy"):
        db.DiffusionBlocksModel.from_model(db.api.Model(task, tmp_path, 0))


def test_a_fine_tuned_pretrained_model_goes_to_the_hub_with_its_architecture(tmp_path):
    """The folder carries the pretrained model's config.json (pretrained/) and every weight:
    with the pretrained folder and the text deleted, it generates the same text as the run."""
    import shutil

    from helpers import _LLAMA, tiny_llama_folder

    llama = tmp_path / "llama"
    shutil.copytree(tiny_llama_folder(), llama)
    data = tmp_path / "corpus.txt"
    shutil.copyfile(_LLAMA["data"], data)
    model = db.train("ar-tiny", out=tmp_path / "run", progress=False, pretrained=str(llama),
                     data=str(data), train_subset=64, **QUICK)  # fmt: skip
    expected = model.sample_text(12, seed=4)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    shutil.rmtree(llama)
    data.unlink()
    saved = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert saved["config"]["pretrained"] == "pretrained"
    assert sorted(p.name for p in (tmp_path / "hub" / "pretrained").iterdir()) == ["config.json"]
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    assert loaded.sample_text(12, seed=4) == expected


# your own network (model=) of each target kind, and your own layers (layer=)
OWN_CODE = [
    ("your-model", "model", "mlp4", {"num_blocks": 2}),
    ("your-model", "model", "regression4", {"num_blocks": 2, "target": "continuous"}),
    ("mdm-tiny", "model", "token_encoder", {}),
    ("ar-tiny", "model", "ar_token_model", {}),
    ("mdm-tiny", "layer", "token_layer", {}),
]


@pytest.mark.parametrize("preset, key, function, overrides", OWN_CODE,
                         ids=["classes", "continuous", "masked-lm", "ar-lm", "layer"])  # fmt: skip
def test_your_own_network_goes_to_the_hub_with_its_code_and_loads_only_when_trusted(
    tmp_path, preset, key, function, overrides
):
    """The folder carries a copy of the network's file (code/) and the data card: with the
    original file and the data deleted, ``trust_code=True`` loads a model that predicts (or
    generates) exactly as the run; without it, loading is refused naming the key, before the
    code runs."""
    code = tmp_path / "my_net.py"
    code.write_text((Path(FIXTURES) / "stack_models.py").read_text())
    values = {key: f"{code}:{function}", **overrides, **QUICK}
    if preset == "your-model":
        data = tmp_path / "xy.npz"
        data.write_bytes(Path(stack_data(overrides.get("target") == "continuous")).read_bytes())
        values.update(data=str(data), epochs=0.5)
    model = db.train(preset, out=tmp_path / "run", progress=False, **values)
    x = torch.randn(6, 64) if preset == "your-model" else None
    expected = model.predict(x) if x is not None else model.sample_text(12, seed=4)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    code.unlink()  # from here on, only the folder has the code ...
    if preset == "your-model":
        data.unlink()  # ... and only the data card knows the data
    saved = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert saved["config"][key] == f"code/my_net.py:{function}"
    assert (tmp_path / "hub" / "code" / "my_net.py").is_file()
    assert "trust_code=True" in (tmp_path / "hub" / "README.md").read_text()
    with pytest.raises(ConfigError, match=f"'{key}'.*trust_code=True"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", trust_code=True)
    if x is not None:
        assert torch.equal(loaded.predict(x), expected)
        with pytest.raises(DataError, match="data card"):
            loaded.evaluate()
    else:
        assert loaded.sample_text(12, seed=4) == expected


@pytest.fixture(scope="module")
def lm_hub_folders(tmp_path_factory):
    """Hub folders of a built-in masked-diffusion LM and autoregressive LM (made once)."""
    root = tmp_path_factory.mktemp("lm-hubs")
    corpus = text_file(root)
    folders = {}
    for preset in ("mdm-tiny", "ar-tiny"):
        model = db.train(preset, out=root / f"{preset}-run", progress=False, data=str(corpus),
                         **QUICK)  # fmt: skip
        db.DiffusionBlocksModel.from_model(model).save_pretrained(root / preset)
        folders[preset] = root / preset
    return folders


# (preset, the key the refusal names, its edit: the flat key, the grouped form "model.KEY" a
# config also accepts, or an installed module's package.module:NAME)
EDITS = [
    ("mdm-tiny", "layer", "flat"), ("mdm-tiny", "layer", "grouped"),
    ("mdm-tiny", "model", "flat"), ("mdm-tiny", "model", "grouped"),
    ("mdm-tiny", "model", "package"), ("ar-tiny", "pretrained", "flat"),
    ("ar-tiny", "pretrained", "grouped"),
]  # fmt: skip


@pytest.mark.parametrize("preset, key, form", EDITS, ids=["-".join(e[1:]) for e in EDITS])
def test_a_downloaded_config_naming_code_or_files_is_refused_before_anything_runs(
    tmp_path, monkeypatch, lm_hub_folders, preset, key, form
):
    """A config.json edited to name code (a file, or an installed module) or another folder is
    refused before the network is built, whichever form of the key it uses: the code is never
    imported (trust_code=True still refuses a file outside the folder's code/)."""
    import shutil

    folder = tmp_path / "hub"
    shutil.copytree(lm_hub_folders[preset], folder)
    marker = tmp_path / "imported"
    code = tmp_path / "evil_module.py"
    code.write_text(f"open({str(marker)!r}, 'w').close()\ndef build(*a):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # evil_module is an installed module too
    value = {"layer": f"{code}:build", "model": f"{code}:build",
             "pretrained": str(tmp_path)}[key]  # fmt: skip
    if form == "package":
        value = "evil_module:build"
    saved = json.loads((folder / "config.json").read_text())
    if form == "grouped":
        saved["config"].pop(key)
        saved["config"][f"model.{key}"] = value
    else:
        saved["config"][key] = value
    (folder / "config.json").write_text(json.dumps(saved))
    words = "own pretrained/config.json" if key == "pretrained" else "trust_code=True"
    with pytest.raises(ConfigError, match=f"'{key}'.*{words}"):
        db.DiffusionBlocksModel.from_pretrained(folder)
    if key != "pretrained" and form != "package":  # trusted: a file outside code/ is refused
        with pytest.raises(ConfigError, match=f"'{key}'.*code/ folder"):
            db.DiffusionBlocksModel.from_pretrained(folder, trust_code=True)
    assert not marker.exists()


def test_trusted_code_must_be_a_file_of_the_folders_code_not_a_link_out(tmp_path):
    """A code/ file that is a link to a file elsewhere is refused even with trust_code=True;
    db.load refuses a Hub folder that names code (it would resolve code/ against the current
    directory), pointing at from_pretrained."""
    code = tmp_path / "my_net.py"
    code.write_text((Path(FIXTURES) / "stack_models.py").read_text())
    model = db.train("mdm-tiny", out=tmp_path / "run", progress=False,
                     data=str(text_file(tmp_path)), model=f"{code}:token_encoder",
                     **QUICK)  # fmt: skip
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    with pytest.raises(ConfigError, match="'model'.*from_pretrained"):
        db.load(tmp_path / "hub")
    saved = tmp_path / "hub" / "code" / "my_net.py"
    saved.unlink()
    saved.symlink_to(code)
    with pytest.raises(ConfigError, match="'model'.*code/ folder"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", trust_code=True)


def test_saving_a_loaded_model_back_into_its_own_folder_keeps_it_whole(tmp_path):
    """A model loaded from a Hub folder of your own network saves into that same folder: its
    code is read before anything is written, and the folder loads again the same."""
    code = tmp_path / "my_lm.py"
    code.write_text((Path(FIXTURES) / "stack_models.py").read_text())
    model = db.train("ar-tiny", out=tmp_path / "run", progress=False,
                     data=str(text_file(tmp_path)), model=f"{code}:ar_token_model",
                     **QUICK)  # fmt: skip
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    code.unlink()
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", trust_code=True)
    expected = loaded.sample_text(10, seed=1)
    loaded.save_pretrained(tmp_path / "hub")
    again = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", trust_code=True)
    assert again.sample_text(10, seed=1) == expected
    saved = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert saved["config"]["model"] == "code/my_lm.py:ar_token_model"


def test_folders_that_are_not_complete_hub_models_are_refused(tmp_path):
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    assemble(tmp_path / "run", tmp_path / "assembled")
    with pytest.raises(DataError, match="no data card"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "assembled")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(DataError, match="not a diffusionblocks model folder"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "other")
    state = load_file(tmp_path / "hub" / "model.safetensors")
    dropped = next(k for k in state if k.startswith("blocks.1."))
    del state[dropped]
    save_file(state, tmp_path / "hub" / "model.safetensors")
    with pytest.raises(CheckpointError, match="block 1 does not fit"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    with pytest.raises(ConfigError, match="no option colour"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", colour="red")
    with pytest.raises(ConfigError, match="'strict'"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", strict=False)
    for path in (tmp_path / "missing", "./missing/model", str(tmp_path / "images.npz")):
        with pytest.raises(DataError, match="no model folder"):
            db.DiffusionBlocksModel.from_pretrained(path)


def test_the_data_card_is_checked(tmp_path):
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    path = tmp_path / "hub" / "config.json"
    saved = json.loads(path.read_text())
    for edit, message in (({"version": 99}, "version 99"), ({"kind": "text"}, "'text' data"),
                          ({"format": "x"}, "no data card")):  # fmt: skip
        path.write_text(json.dumps({**saved, "data_card": {**saved["data_card"], **edit}}))
        with pytest.raises(DataError, match=message):
            db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")


def test_per_block_copies_of_the_shared_modules_load_strictly(tmp_path):
    """shared=block-copies: one copy per block, each with the shared state's keys; a missing
    copy, a missing tensor of one, an extra copy, or copies for a model without them are
    refused."""
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data, schedule="sequential", shared="block-copies")
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    file = tmp_path / "hub" / "model.safetensors"
    state = load_file(file)
    copy1 = [k for k in state if k.startswith("shared_per_block.1.")]
    edits = {
        "missing copy": {k: v for k, v in state.items() if k not in copy1},
        "missing tensor": {k: v for k, v in state.items() if k != copy1[0]},
        "extra copy": {**state, **{k.replace(".1.", ".7.", 1): state[k].clone() for k in copy1}},
    }
    for edited in edits.values():  # each refused
        save_file(edited, file)
        with pytest.raises(CheckpointError, match="copy|copies"):
            db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    plain = trained(tmp_path / "p", "tiny", data)
    db.DiffusionBlocksModel.from_model(plain).save_pretrained(tmp_path / "plain")
    plain_state = load_file(tmp_path / "plain" / "model.safetensors")
    save_file(
        {**plain_state, **{k: state[k] for k in copy1}}, tmp_path / "plain" / "model.safetensors"
    )
    with pytest.raises(CheckpointError, match="needs none"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "plain")


def test_inference_keys_at_load_and_devices(tmp_path):
    """from_pretrained takes inference keys as db.load does (the results of the other settings
    are then left out of the card); to(device) moves the task too; other dtypes are refused."""
    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    chain = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", readout="chain")
    x = torch.rand(5, 8, 8)
    reference = db.load(tmp_path / "run", readout="chain")
    assert torch.equal(chain.probabilities(x, steps=4), reference.probabilities(x, steps=4))
    assert chain.results is None
    saved = db.DiffusionBlocksModel.from_model(reference)
    assert saved.results is None  # measured with the ensemble readout, not this one
    with pytest.raises(ConfigError, match="no option lr"):
        db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub", lr=0.1)
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub").to("cpu")
    assert torch.equal(loaded.probabilities(x), model.probabilities(x))
    with pytest.raises(TypeError, match="float32"):
        loaded.double()
    assert torch.equal(loaded.probabilities(x), model.probabilities(x))


def test_the_cli_writes_a_hub_folder_whole_or_not_at_all(tmp_path, monkeypatch):
    """``dblocks assemble RUN --hub``: a folder from_pretrained loads (model file readable by
    others, as assemble's); a failure while writing leaves no folder and no staging folder; an
    --out that is the run folder (or above it) is refused and the run kept."""
    import argparse
    import os
    import stat
    import subprocess
    import sys

    from diffusionblocks.commands.train import hub_folder

    data = synthetic_images(tmp_path / "images.npz", n=120, size=8)
    model = trained(tmp_path, "tiny", data)
    cmd = [sys.executable, "-m", "diffusionblocks", "assemble"]
    done = subprocess.run([*cmd, str(tmp_path / "run"), "--hub", "--out", str(tmp_path / "hub")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    mode = stat.S_IMODE(os.stat(tmp_path / "hub" / "model.safetensors").st_mode)
    assert mode == 0o666 & ~_umask()
    loaded = db.DiffusionBlocksModel.from_pretrained(tmp_path / "hub")
    x = torch.rand(3, 8, 8)
    assert torch.equal(loaded.probabilities(x), model.probabilities(x))

    def failing(self, folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(db.DiffusionBlocksModel, "_save_pretrained", failing)
    args = argparse.Namespace(run_dir=str(tmp_path / "run"), out=str(tmp_path / "h2"),
                              hub=True, push=None)  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        hub_folder(args)
    assert not (tmp_path / "h2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".h2")]
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    for out in (tmp_path / "run", tmp_path):
        for extra in (["--hub"], []):
            done = subprocess.run([*cmd, str(tmp_path / "run"), *extra, "--out", str(out)],
                                  capture_output=True, text=True)  # fmt: skip
            assert done.returncode != 0 and "--out" in done.stderr, done.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dblocks_sample_reads_a_hub_folder_without_its_data(tmp_path):
    """``dblocks sample --run FOLDER`` on a folder saved with save_pretrained builds from its
    data card: the same text as from the run with its data, the data deleted; eval still needs
    the data and says so."""
    import subprocess
    import sys

    corpus = text_file(tmp_path)
    model = trained(tmp_path, "ar-tiny", corpus)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    cmd = [sys.executable, "-m", "diffusionblocks"]
    args = ["--length", "24", "--seed", "4", "--set", "temperature=0.9"]

    def sample(folder):
        done = subprocess.run([*cmd, "sample", "--run", str(folder), *args],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = sample(tmp_path / "run")
    corpus.unlink()
    assert sample(tmp_path / "hub") == before
    args = ["--length", "24", "--seed", "4", "--set", "device=meta"]  # the run's device key
    done = subprocess.run([*cmd, "sample", "--run", str(tmp_path / "hub"), *args],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "device" in done.stderr, done.stderr
    done = subprocess.run([*cmd, "eval", "--run", str(tmp_path / "hub")], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode != 0 and "'data'" in done.stderr, done.stderr


def test_dblocks_sample_writes_the_same_images_from_a_hub_folder(tmp_path):
    import subprocess
    import sys

    data = synthetic_images(tmp_path / "images.npz", n=160, size=16)
    model = trained(tmp_path, "dit-tiny", data, patch_size=4, train_subset=0)
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    cmd = [sys.executable, "-m", "diffusionblocks", "sample", "--n", "2", "--seed", "3"]

    def sample(folder, name):
        out = tmp_path / f"{name}.png"
        npz = str(tmp_path / f"{name}.npz")
        done = subprocess.run([*cmd, "--run", str(folder), "--out", str(out), "--npz", npz],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return np.load(tmp_path / f"{name}.npz")

    before = sample(tmp_path / "run", "run")
    (tmp_path / "images.npz").unlink()
    after = sample(tmp_path / "hub", "hub")
    assert sorted(before.files) == sorted(after.files)
    for key in before.files:
        assert np.array_equal(before[key], after[key]), key


def test_dblocks_sample_runs_a_folders_code_only_with_trust_code(tmp_path):
    """A Hub folder of your own token network samples from the command line with --trust-code
    (the same text as from the run), and is refused without it, naming the flag."""
    import subprocess
    import sys

    code = tmp_path / "my_lm.py"
    code.write_text((Path(FIXTURES) / "stack_models.py").read_text())
    model = db.train("ar-tiny", out=tmp_path / "run", progress=False,
                     model=f"{code}:ar_token_model", **QUICK)  # fmt: skip
    db.DiffusionBlocksModel.from_model(model).save_pretrained(tmp_path / "hub")
    cmd = [sys.executable, "-m", "diffusionblocks", "sample", "--length", "20", "--seed", "2"]

    def sample(folder, *extra):
        return subprocess.run([*cmd, "--run", str(folder), *extra], capture_output=True,
                              text=True)  # fmt: skip

    before = sample(tmp_path / "run")
    assert before.returncode == 0, before.stderr
    code.unlink()
    refused = sample(tmp_path / "hub")
    assert refused.returncode != 0 and "'model'" in refused.stderr
    assert "--trust-code" in refused.stderr
    trusted = sample(tmp_path / "hub", "--trust-code")
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout == before.stdout
