"""The documented Python entry points: train a run, load it, and use it.

    import diffusionblocks as db

    model = db.train("images", data="my_images.npz", out="runs/mine")  # = dblocks train
    model = db.load("runs/mine")                   # a run folder or an assembled model folder
    labels = model.classify(images)                # uint8 0..255 or float 0..1 images
    model = db.train("your-model", model=build, data="xy.npz")  # your own network
    y = model.predict(x)                           # its predictions (docs/your-model.md)
    images = model.generate(labels=[0, 1, 2])      # image generation runs: floats in [0, 1]
    text = model.sample_text(100, prompt="ROMEO:") # language-model runs
    model.evaluate(split="val")                    # the same numbers as `dblocks eval`

Inputs are converted the way the run's training data was: pixels scaled to [0, 1], then
standardised with the training set's mean and std (recomputed from the run's data, so the data
must be where the run says, or given with ``data=``). Defaults (inference steps, temperature) are
the run's; every random draw comes from a generator seeded by ``seed``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from .config import ConfigError
from .data.images import DataError
from .runtime import running

if TYPE_CHECKING:
    import numpy.typing as npt

    from .config import RunConfig
    from .tasks.base import Task


class Model:
    """A trained run (or assembled model folder) ready for predictions. ``task`` is the
    underlying task object (data, network with weights, evaluation); ``results`` the training
    results when the model comes from :func:`train`."""

    def __init__(self, task: Task, path: Path, step: int, results: dict[str, Any] | None = None):
        self.task = task
        self.path = path
        self.step = step
        self.results = results

    def __repr__(self) -> str:
        c = self.config
        return f"Model({str(self.path)!r}, task={c.task!r}, method={c.method!r}, step={self.step})"

    @property
    def config(self) -> RunConfig:
        """The run's config (a dataclass; ``to_dict()`` for plain data)."""
        return self.task.config

    # -- classification ----------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(
        self,
        images: npt.ArrayLike | torch.Tensor,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Class probabilities (N, classes) of ``images``: an array or tensor of uint8 pixels
        (0..255), other integers in 0..255, or floats in [0, 1]; laid out (N, H, W),
        (N, C, H, W) or (N, H, W, C), or one image without the N axis. ``steps``: denoiser calls
        of the DiffusionBlocks chain (default: the run's, B), for a model loaded with
        ``readout="chain"`` (the default readout, ``ensemble``, calls every block once)."""
        task = self._need(self.task.predicts == "classes", "classify", "a classification run")
        blockwise = hasattr(task, "predict")  # DiffusionBlocks; end to end has one forward
        if blockwise and steps is not None and task.config.readout == "ensemble":
            raise ConfigError(
                "steps counts the calls of the chain, but this model reads out with "
                "readout=ensemble (every block once); load it with readout='chain' to run a chain"
            )
        x = as_images(images, task.data.image_shape)
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) == 0:
            return torch.empty(0, task.data.num_classes)
        generator = torch.Generator().manual_seed(seed)
        size = batch_size or task.config.eval_batch_size
        out = []
        task.model.eval()
        if steps is not None and not blockwise:
            raise ConfigError("steps applies to DiffusionBlocks runs (method dblocks)")
        try:
            with running(task):  # the run's threads and precision
                for start in range(0, len(x), size):
                    batch = task._prepare(x[start : start + size])
                    if blockwise:  # DiffusionBlocks: its readout (the ensemble or the chain)
                        logits = task.predict(batch, steps, generator)[0]
                    else:
                        logits = task.logits(batch)
                    out.append(logits.float().softmax(-1).cpu())
        finally:
            task.model.train()
        return torch.cat(out)

    def classify(self, images: npt.ArrayLike | torch.Tensor, steps: int | None = None,
                 seed: int = 0, batch_size: int | None = None) -> torch.Tensor:  # fmt: skip
        """Predicted class index (N,) of each image; inputs as for :meth:`probabilities`.
        ``class_names`` (when the data has them) turns indices into names."""
        return self.probabilities(images, steps, seed, batch_size).argmax(-1)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        data = getattr(self.task, "data", None)
        return getattr(data, "class_names", None)

    # -- your own network (the stack task) ----------------------------------------------------
    @torch.no_grad()
    def predict(
        self, inputs: npt.ArrayLike | torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        """Predictions of a run of your own network (``docs/your-model.md``) for ``inputs``
        (N, ...) shaped as the training data's ``x``: class indices (N,) for class targets,
        values (N, ...) in the data's units for continuous targets; by the run's readout."""
        task = self._need(self.task.predicts == "targets", "predict", "a run of your own network")
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        if tuple(x.shape[1:]) != task.data.input_shape:
            raise DataError(f"inputs of shape {tuple(x.shape)} do not fit this model's "
                            f"{task.data.input_shape} inputs (give (N, ...) as x)")  # fmt: skip
        size = batch_size or task.config.eval_batch_size
        out = []
        task.model.eval()
        try:
            with running(task):
                for start in range(0, len(x), size):
                    pred = task.predict(task._prepare(x[start : start + size])).float().cpu()
                    out.append(
                        pred.argmax(-1)
                        if task.classes
                        else task._values(pred).reshape(len(pred), *task.data.target_shape)
                    )
        finally:
            task.model.train()
        return torch.cat(out) if out else torch.empty(0)

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        labels: Sequence[int] | torch.Tensor | None = None,
        n: int = 8,
        steps: int | None = None,
        cfg: float | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Images (N, C, H, W), floats in [0, 1], of the classes ``labels`` (default: ``n`` of
        each class). ``steps`` (Euler steps) and ``cfg`` (guidance weight) default to the run's."""
        task = self._need(self.task.generates == "images", "generate", "an image generation run")
        classes = task.data.num_classes
        if labels is None:
            labels = torch.arange(classes).repeat_interleave(n)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < classes):
            raise ConfigError(f"labels must be class indices 0..{classes - 1}")
        generator = torch.Generator().manual_seed(seed)
        size = task.config.eval_batch_size
        out = [cast(torch.Tensor, self.task.sample(generator, labels=labels[i : i + size],
                                                   steps=steps, cfg=cfg)[0]).cpu()
               for i in range(0, len(labels), size)]  # fmt: skip
        return torch.cat(out) if out else torch.empty(0, *task.data.image_shape)

    # -- text --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_text(
        self,
        length: int | None = None,
        prompt: str = "",
        temperature: float | None = None,
        steps: int | None = None,
        seed: int = 0,
    ) -> str:
        """``length`` generated characters (tokens, with a subword ``tokenizer``) after
        ``prompt`` (the prompt is not repeated; default: :func:`text_room`; autoregressive
        models take any length, seeing the last ``seq_len - 1`` of them). Without a prompt,
        autoregressive models start from a newline (or the training text's first character when
        the text has no newline).
        ``temperature`` and ``steps`` default to the run's."""
        task = self._need(self.task.generates == "text", "sample_text", "a language-model run")
        generator = torch.Generator().manual_seed(seed)
        if length is None:
            length = text_room(task, prompt)
        if temperature is None:
            temperature = getattr(task.config, "temperature", 1.0)
        text, _ = self.task.sample(generator, length=length, prompt=prompt, steps=steps,
                                   temperature=temperature)  # fmt: skip
        return str(text)

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, split: str | None = None, steps: list[int] | None = None,
                 **options: Any) -> dict[str, Any]:  # fmt: skip
        """Held-out metrics, as ``dblocks eval`` computes them (same numbers for the same
        checkpoint). ``split``: ``val`` or ``test`` where the task has both."""
        from .runs import evaluate_task

        result = evaluate_task(self.task, steps, split=split, **options)
        return {"checkpoint_step": self.step, **result}

    def _need(self, able: bool, what: str, kind: str) -> Any:
        """The task, when it can do ``what`` (the task protocol's ``predicts`` and
        ``generates`` say; each task kind has its own methods, so it is used duck-typed)."""
        if not able:
            raise ConfigError(f"{what} needs {kind}; {self.path} is a {self.config.task} run")
        return self.task


def load(path: str | os.PathLike, device: str | None = None, **overrides: Any) -> Model:
    """The model of a run folder (its latest checkpoint) or of an assembled model folder.
    ``overrides``: inference keys (e.g. ``inference_steps=4``) or ``data=PATH`` when the run's
    data moved (it must be the same file)."""
    from .runs import load_run

    task, ckpt = load_run(path, device, {k: str(v) for k, v in overrides.items()} or None)
    return Model(task, Path(path), int(ckpt.step))


def train(
    preset: str,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Model:
    """Train ``preset`` with ``overrides`` (config keys, as ``--set``) into the run folder
    ``out`` (default ``runs/<preset>-...``), exactly as ``dblocks train`` does; returns the
    trained model, with the run's results in ``.results``."""
    from .registry import make_config
    from .runs import default_run_dir, load_run, train_run

    overrides = {k: os.fspath(v) if isinstance(v, os.PathLike) else v
                 for k, v in overrides.items()}  # fmt: skip
    if callable(overrides.get("model")):  # your own network: where its function is defined
        overrides["model"] = function_reference(overrides["model"])
    config = make_config(preset, overrides)
    out = Path(out) if out is not None else default_run_dir(preset, config)
    args = " ".join(f"--set {k}={v}" for k, v in overrides.items())
    command = f"python: diffusionblocks.train({preset!r}) {args}".strip()
    results = train_run(config, out, progress=progress, preset=preset, command=command)
    for note in results.get("warnings", []):
        warnings.warn(note, RuntimeWarning, stacklevel=3)  # the caller of db.train
    task, ckpt = load_run(out)
    return Model(task, out, int(ckpt.step), results)


def function_reference(function: Any) -> str:
    """The ``model`` key for a top-level function: ``FILE.py:NAME`` with the file's absolute
    path, so that the run folder can build the network again from any process (``dblocks
    eval``, resume, block-parallel ranks), or ``package.module:NAME`` for a function of an
    installed package."""
    import inspect

    name = getattr(function, "__qualname__", "")
    if not name or "<" in name:
        raise ConfigError(
            f"invalid value for 'model': {function!r} (give a function defined at the top level "
            "of a file, so that the run can build the network again)"
        )
    source = inspect.getsourcefile(function)
    module = getattr(function, "__module__", None)
    installed = source is not None and any(
        part in ("site-packages", "dist-packages") for part in Path(source).parts
    )
    if module and installed:
        return f"{module}:{name}"
    if source is None:
        raise ConfigError(f"invalid value for 'model': {name} (its file cannot be found)")
    return f"{Path(source).resolve()}:{name}"


def text_room(task: Task, prompt: str = "") -> int:
    """How many characters a language-model run generates after ``prompt`` by default: one
    context's worth (its sequence length) for the autoregressive models, which can go on past
    it; the sequence length minus the prompt for masked diffusion, which fills one window."""
    config: Any = task.config  # a language-model config: it has seq_len
    if hasattr(task, "start_text"):  # autoregressive (CharLM): the window rolls
        return int(config.seq_len)
    try:  # the prompt's ids (subword tokens: fewer than its characters)
        used = len(cast(Any, task).vocab.encode(prompt))
    except DataError:  # characters outside the vocabulary: refused by the caller, by name
        used = len(prompt)
    return max(config.seq_len - used, 0)


def as_images(images: npt.ArrayLike | torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``images`` as float (N, C, H, W) in [0, 1] for a model of images ``shape`` = (C, H, W).
    Accepts NumPy arrays and tensors; uint8 or other integer pixels in 0..255, or floats in
    [0, 1]; (N, H, W), (N, C, H, W), (N, H, W, C), or a single image without the N axis."""
    c, h, w = shape
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    x = x.detach().cpu()
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"images have dtype {x.dtype} (expected uint8 pixels or floats in [0, 1])")
    dims = tuple(x.shape)
    if dims in ((h, w), (c, h, w), (h, w, c)):  # one image
        x = x[None]
        dims = tuple(x.shape)
    if len(dims) == 3 and c == 1 and dims[1:] == (h, w):
        x = x[:, None]
    elif len(dims) == 4 and dims[1:] == (c, h, w):
        pass
    elif len(dims) == 4 and dims[1:] == (h, w, c):
        x = x.permute(0, 3, 1, 2)
    else:
        raise DataError(
            f"images of shape {dims} do not fit this model's {c}x{h}x{w} images; give (N, C, H, "
            f"W) = (N, {c}, {h}, {w}), (N, H, W, C)" + (", or (N, H, W)" if c == 1 else "")
        )
    if x.dtype.is_floating_point:
        x = x.float()
        if len(x) and not torch.isfinite(x).all():
            raise DataError("images contain NaN or infinite values")
        if len(x) and (x.min() < 0 or x.max() > 1):
            raise DataError(
                f"float images must lie in [0, 1] (found {float(x.min()):.3g}.."
                f"{float(x.max()):.3g}); divide 0..255 pixels by 255, or pass them as uint8"
            )
        return x.contiguous()
    x = x.to(torch.int64)  # uint16/uint32 have no min/max kernels
    if len(x) and (int(x.min()) < 0 or int(x.max()) > 255):
        raise DataError(f"integer images must lie in 0..255 (found {int(x.min())}..{int(x.max())})")
    return (x.float() / 255.0).contiguous()
