"""Trained models in and out of the Hugging Face Hub (the ``[hf]`` extra: ``huggingface_hub``).

:class:`DiffusionBlocksModel` is a :class:`~diffusionblocks.api.Model` (``classify``,
``generate``, ``sample_text``) that is also an ``nn.Module`` with ``huggingface_hub``'s
``PyTorchModelHubMixin``::

    import diffusionblocks as db
    hub = db.DiffusionBlocksModel.from_run("runs/mine")  # any run or model folder
    hub.save_pretrained("hf/mine")                 # or hub.push_to_hub("me/mine")
    model = db.DiffusionBlocksModel.from_pretrained("hf/mine")  # a folder or "me/mine"
    model.classify(images)

``save_pretrained`` writes the layout of ``dblocks assemble`` (``model.safetensors``: the shared
modules under their own names, ``blocks.{b}.*``, ``shared_per_block.{b}.*``; ``config.json``:
the run's config) plus the run's **data card** (``data/card.py``: image shape, classes and pixel
statistics, or the vocabulary: what predicting needs from the data) and a generated model card
(``README.md``: the config, the results, how to load it). ``from_pretrained`` builds the network
from the config and the data card, without the data, and loads the weights strictly (every
tensor present, every shape right). Such a model predicts and generates; ``evaluate`` needs the
data (load the run or model folder with :func:`diffusionblocks.load`).

A run of your own network (``model=FILE.py:NAME``) or your own layers (``layer=FILE.py:NAME``)
saves a copy of that file in the folder's ``code/`` (one file: what it imports must be installed
where the model loads; ``package.module:NAME`` is kept as it is); loading it runs that code, so
``from_pretrained`` refuses it unless ``trust_code=True`` (read the file first). A fine-tuned
``pretrained`` model saves a copy of the pretrained model's ``config.json`` (its architecture) in
``pretrained/``; its weights are all in ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .api import Model
from .config import ConfigError, RunConfig, config_from_dict
from .data.card import data_card
from .data.images import DataError
from .loading import (
    CODE_FOLDER,
    PRETRAINED_FOLDER,
    check_card_config,
    code_key,
    load_card_folder,
)

try:
    from huggingface_hub import ModelCard, PyTorchModelHubMixin, snapshot_download
except ImportError as err:  # pragma: no cover - the [hf] extra is in every test environment
    raise ImportError(
        "diffusionblocks.hub needs huggingface_hub: pip install 'diffusionblocks[hf]'"
    ) from err

PAPER_URL = "https://arxiv.org/abs/2506.14202"
HUB_FILES = ["config.json", "model.safetensors", "README.md"]


class DiffusionBlocksModel(
    Model,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="diffusionblocks",
    tags=["diffusionblocks", "block-wise-training", "arxiv:2506.14202"],
    paper_url=PAPER_URL,
):
    """A trained DiffusionBlocks (or end-to-end baseline) model that saves to and loads from a
    Hugging Face Hub folder or repository. ``network`` is the task's network (its parameters are
    this module's); the prediction methods are :class:`~diffusionblocks.api.Model`'s."""

    # (the parameters are not named as config.json's keys: the mixin would pass those)
    def __init__(self, task: Any, source: str | os.PathLike, weights_step: int = 0,
                 run_results: dict[str, Any] | None = None):  # fmt: skip
        nn.Module.__init__(self)
        Model.__init__(self, task, Path(source), int(weights_step), run_results)
        self.network = task.model
        self.card = data_card(task)

    def __repr__(self) -> str:
        return Model.__repr__(self).replace("Model(", "DiffusionBlocksModel(", 1)

    # -- out ----------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, path: str | os.PathLike, device: str | None = None) -> DiffusionBlocksModel:
        """The Hub model of a run folder (its latest weights) or an assembled model folder,
        loaded with its data as :func:`diffusionblocks.load` loads it."""
        from .api import load

        return cls.from_model(load(path, device))

    @classmethod
    def from_model(cls, model: Model) -> DiffusionBlocksModel:
        """The Hub model of a loaded or trained :class:`~diffusionblocks.api.Model`; refuses
        (naming the key) what a Hub folder cannot hold. The run's results go into the model
        card when they were measured with the model's config (not after ``db.load`` changed an
        inference key such as ``readout``)."""
        files_for_folder(model.config)  # refuses what the folder cannot hold (naming the key)
        results = model.results
        if results is None and (model.path / "results.json").is_file():
            results = json.loads((model.path / "results.json").read_text())
        if results and results.get("config") != model.config.to_dict():
            results = None  # measured with other inference settings than the model has now
        return cls(model.task, model.path, model.step, results)

    def _save_pretrained(self, save_directory: Path) -> None:
        """``model.safetensors`` and ``config.json`` (the mixin then writes the model card)."""
        from .assemble import write_model_files

        state = dict(self.network.state_dict())
        for b, copy in sorted(getattr(self.network, "_shared_variants", {}).items()):
            state.update({f"shared_per_block.{b}.{k}": v for k, v in copy.items()})
        config, files = files_for_folder(self.config)
        contents = [(name, source.read_bytes()) for source, name in files]  # read before any
        for name, data in contents:  # write: saving into the folder it was loaded from
            (save_directory / name).parent.mkdir(exist_ok=True)
            (save_directory / name).write_bytes(data)
        write_model_files(save_directory, state, config, {
            "data_card": self.card,
            "results": summary(self.task, self.results),
            "saved_from": self.path.name,  # the folder's name only: the card may be public
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "step": self.step,
        })  # fmt: skip
        for stale in ("README.md", "tokenizer.json"):  # the card describes this model; an
            (save_directory / stale).unlink(missing_ok=True)  # assembled folder's tokenizer

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card: what the model is, its results, how to load it, its config."""
        results = summary(self.task, self.results)
        config = files_for_folder(self.config)[0]
        return ModelCard(model_card(config, self.card, results, self.task.generates))

    # -- in -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        device: str | None = None,
        trust_code: bool = False,
        **options: Any,
    ) -> DiffusionBlocksModel:
        """The model of a local folder saved with :meth:`save_pretrained`, or of a Hub
        repository (``"user/name"``: its ``config.json``, ``model.safetensors`` and
        ``README.md`` are downloaded once, into the Hub cache). ``device``: where it runs
        (default cpu). ``options``: inference keys (``readout="chain"``, ``inference_steps``,
        ``temperature``...: ``loading.INFERENCE_KEYS``), as :func:`diffusionblocks.load` takes
        them; the remaining arguments are ``huggingface_hub``'s. Loading is always strict.
        ``trust_code``: a model of your own network (or layers) runs the code saved in its
        ``code/`` when it is built; refused unless True (read the code first)."""
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
            device=device, trust_code=trust_code, **options)  # fmt: skip

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None,
                         cache_dir: str | Path | None = None, force_download: bool = False,
                         local_files_only: bool = False, token: str | bool | None = None,
                         device: str | None = None, map_location: str | None = None,
                         strict: bool = True, proxies: Any = None, resume_download: Any = None,
                         trust_code: bool = False,
                         **options: Any) -> DiffusionBlocksModel:  # fmt: skip
        """See :meth:`from_pretrained` (``map_location``: the mixin's name for ``device``;
        ``proxies`` and ``resume_download``: older huggingface_hub options, not used)."""
        if not strict:
            raise ConfigError("invalid value for 'strict': False (a model loads strictly: "
                              "every tensor present and of its shape)")  # fmt: skip
        folder = hub_folder(model_id, revision=revision, cache_dir=cache_dir,
                            force_download=force_download, token=token,
                            local_files_only=local_files_only)  # fmt: skip
        task, weights, saved = load_card_folder(folder, device or map_location or "cpu",
                                                options, "from_pretrained", trust_code)  # fmt: skip
        results = saved.get("results") if not options else None
        return cls(task, folder, weights.step, results)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``to(device)``, ``cuda()``, ``cpu()``: the task follows its network. Other dtypes
        than float32 are refused (the network is put back in float32)."""
        out = super()._apply(fn, recurse)
        params = list(self.network.parameters())
        if params:
            if any(p.is_floating_point() and p.dtype != torch.float32 for p in params):
                super()._apply(lambda t: t.float() if t.is_floating_point() else t, recurse)
                raise TypeError("a DiffusionBlocksModel stays in float32 (its predictions "
                                "convert their inputs to float32)")  # fmt: skip
            self.task.device = params[0].device
        return out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "a DiffusionBlocksModel is not called: use classify, generate, sample_text (or "
            "network, its blocks and shared modules)"
        )


def hub_folder(model_id: str, **download: Any) -> Path:
    """The local folder of ``model_id``: itself when it is a folder; a Hub repository id
    (``user/name``) downloaded (the model's files only); anything else that names a path is
    refused."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    looks_like_path = (path.exists() or model_id.startswith((".", "/", "~"))
                       or os.sep in model_id.strip("/").replace("/", "", 1)
                       or model_id.count("/") != 1)  # fmt: skip
    if looks_like_path:
        raise DataError(f"no model folder {model_id} (give a folder saved with save_pretrained, "
                        "or a Hub repository id user/name)")  # fmt: skip
    # your network's code, a fine-tuned model's pretrained architecture, if it has them
    patterns = [*HUB_FILES, f"{CODE_FOLDER}/*.py", f"{PRETRAINED_FOLDER}/config.json"]
    return Path(snapshot_download(repo_id=model_id, allow_patterns=patterns, **download))


def files_for_folder(config: RunConfig) -> tuple[RunConfig, list[tuple[Path, str]]]:
    """The config a Hub folder holds and the files it carries (source, path in the folder): a
    ``FILE.py:NAME`` of ``model`` or ``layer`` becomes ``code/FILE.py:NAME`` (the file copied
    there; a ``package.module:NAME`` stays as it is); a fine-tuned ``pretrained`` model becomes
    ``pretrained`` (its config.json, the architecture, copied into ``pretrained/``). A file
    that is not there is refused, naming the key."""
    values = config.to_dict()
    check_card_config(values)  # the pretrained model's config.json is there
    changes: dict[str, str] = {}
    files: list[tuple[Path, str]] = []
    if values.get("pretrained"):
        source = Path(str(values["pretrained"])).expanduser() / "config.json"
        files.append((source, f"{PRETRAINED_FOLDER}/config.json"))
        changes["pretrained"] = PRETRAINED_FOLDER
    named = code_key(values)
    if named is not None:
        key, value = named
        where, _, name = value.rpartition(":")
        if where.endswith(".py"):
            source = Path(where).expanduser()
            if not source.is_file():
                raise ConfigError(f"invalid value for '{key}': {value} ({source} is not there "
                                  "to copy into the model folder)")  # fmt: skip
            files.append((source, f"{CODE_FOLDER}/{source.name}"))
            changes[key] = f"{CODE_FOLDER}/{source.name}:{name}"
    if not changes:
        return config, []
    return config_from_dict(type(config), {**values, **changes}), files


def summary(task: Any, results: dict[str, Any] | None) -> dict[str, Any]:
    """The headline numbers of a run's results for the model card: the metric, its value on
    test and val, the trivial baseline's, the command and preset."""
    if not results:
        return {}
    metric = getattr(task, "headline_metric", None)
    out: dict[str, Any] = {k: results.get(k) for k in ("command", "preset") if results.get(k)}
    if metric is None:
        return out
    key, label = metric
    test, val = results.get("eval") or {}, results.get("eval_val") or {}
    trivial = results.get("trivial") or {}
    out.update(metric=key, label=label)
    for name, ev in (("test", test), ("val", val)):
        if isinstance(ev.get(key), (int, float)):
            out[name] = float(ev[key])
        base = (trivial.get(name) or {}).get(key)
        if isinstance(base, (int, float)):
            out[f"trivial_{name}"] = float(base)
    return out


def model_card(config: RunConfig, card: dict[str, Any], results: dict[str, Any],
               generates: str | None = None) -> str:  # fmt: skip
    """The README.md of a saved model (YAML metadata for the Hub, then markdown); ``generates``:
    the task's (``images`` for image generation)."""
    task, method = config.task, config.method
    blockwise = not config.end_to_end
    what = {"images": f"{card.get('name')} images {tuple(card.get('image_shape', ()))}, "
                      f"{card.get('num_classes')} classes",
            "text": f"{card.get('name')} text, "
                    + ("subword tokens" if "tokenizer_json" in card else
                       f"{len(card.get('chars', ''))} characters"),
            "arrays": f"{card.get('name')} arrays, inputs {tuple(card.get('input_shape', ()))}, "
                      + (f"{card.get('num_classes')} classes" if card.get("num_classes")
                         else f"targets {tuple(card.get('target_shape', ()))}"),
            }[card["kind"]]  # fmt: skip
    use = {"images": "model.classify(images)  # uint8 or [0, 1] images, (N, H, W) ...",
           "text": "text = model.sample_text(200)  # or prompt=... in the model's vocabulary",
           "arrays": "model.predict(x)  # class indices, or values in the data's units"
           }[card["kind"]]  # fmt: skip
    named = code_key(config.to_dict())
    trust = ", trust_code=True" if named else ""
    if generates == "images":
        use = "images = model.generate(labels=[0, 1, 2])  # (N, C, H, W) in [0, 1]"
    how = (f"DiffusionBlocks (Shing, Koyama, Akiba, ICLR 2026) in {config.num_model_blocks} "
           "blocks, each trained alone as a denoiser of its own noise interval" if blockwise
           else f"the end-to-end baseline `{method}`")  # fmt: skip
    lines = [
        "---",
        "library_name: diffusionblocks",
        f"tags: [diffusionblocks, block-wise-training, {task}, arxiv:2506.14202, model_hub_mixin]",
        "---",
        "",
        f"# {task}: {method}" + (f", {config.num_model_blocks} blocks" if blockwise else ""),
        "",
        f"Trained with [diffusionblocks]({PAPER_URL}) {__version__}: {how}. Data: {what} (the "
        "data is not in this folder; its card is, in config.json).",
        "",
    ]
    if results.get("metric"):
        lines += ["## Results", "",
                  f"`{results['metric']}` ({results['label']}) of the trained run, on its "
                  "validation and test splits, and of the task's trivial baseline:", "",
                  f"| split | {results['metric']} | trivial baseline |",
                  "|---|---|---|"]  # fmt: skip
        for split in ("val", "test"):
            if split in results:
                base = results.get(f"trivial_{split}")
                lines.append(f"| {split} | {results[split]:.4f} | "
                             + ("" if base is None else f"{base:.4f}") + " |")  # fmt: skip
        lines.append("")
    if results.get("command"):
        lines += [f"Trained with `{results['command']}`.", ""]
    if named:
        built = "The network is" if named[0] == "model" else "Its layers are"
        lines += ["## Code", "",
                  f"{built} built by `{named[1]}` (`{named[0]}`), code that loading runs: read "
                  "it, then load with `trust_code=True`.", ""]  # fmt: skip
    lines += [
        "## Use",
        "",
        "```python",
        "from diffusionblocks import DiffusionBlocksModel",
        f"model = DiffusionBlocksModel.from_pretrained('THIS_REPO_OR_FOLDER'{trust})",
        use,
        "```",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
