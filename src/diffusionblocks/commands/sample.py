"""`dblocks sample`: image grids (and raw samples) from a generation run, text continuations
from a language-model run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..config import parse_assignments
from ..data.images import DataError
from ..reporting import (
    describe_generation,
)
from . import UsageError

if TYPE_CHECKING:
    import torch

    from ..data.base import ImageDataset
    from ..data.text import Vocabulary
    from ..tasks.base import Task


class _BatchedConfig(Protocol):
    eval_batch_size: int


class _ImageTask(Protocol):
    """What `dblocks sample` uses of a task that generates images, besides ``Task.sample``: its
    classes and its evaluation batch size."""

    data: ImageDataset

    @property
    def config(self) -> _BatchedConfig: ...


class _TextTask(Protocol):
    """What `dblocks sample` uses of a task that generates text, besides ``Task.sample``: its
    vocabulary (to check the prompt)."""

    vocab: Vocabulary


# ---------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ..eval.png import image_grid, save_png
    from ..loading import has_data_card, load_card_folder
    from ..runs import load_run

    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.cfg is not None and not 0 <= args.cfg <= 100:
        raise UsageError(f"--cfg must be in [0, 100], got {args.cfg}")
    overrides = parse_assignments(args.set or [])
    if has_data_card(args.run):  # saved with save_pretrained: it samples without its data
        task, _, _ = load_card_folder(Path(args.run), args.device, overrides, "sample --set",
                                      args.trust_code)  # fmt: skip
    else:
        task, _ = load_run(args.run, args.device, overrides)
    if task.generates == "text":
        return sample_text(task, args)
    if task.generates != "images":
        raise UsageError(
            f"{args.run} is a {task.config.task} run; `dblocks sample` needs a generative run"
        )
    if args.out is None:
        raise UsageError("--out FILE.png is required for image samples")
    images_task = cast(_ImageTask, task)  # it generates images: its classes and batch size
    classes = images_task.data.num_classes
    n = SAMPLE_N_DEFAULT if args.n is None else args.n
    if args.class_ is not None:
        if not 0 <= args.class_ < classes:
            raise UsageError(f"unknown class {args.class_}: classes are 0..{classes - 1}")
        labels, rows = torch.full((n,), args.class_), 1
        row_classes = [args.class_]
    else:
        labels, rows = torch.arange(classes).repeat_interleave(n), classes
        row_classes = list(range(classes))
    names = getattr(images_task.data, "class_names", None)
    row_labels = [f"{k} {names[k]}" if names else str(k) for k in row_classes]
    gen = torch.Generator().manual_seed(args.seed)
    batches: list[torch.Tensor] = []
    info: dict[str, Any] = {}
    size = images_task.config.eval_batch_size
    for start in range(0, len(labels), size):
        out, info = task.sample(gen, labels=labels[start : start + size], steps=args.steps,
                                cfg=args.cfg)  # fmt: skip
        batches.append(cast(torch.Tensor, out))  # images (generates == "images")
    images = torch.cat(batches)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_png(image_grid(images, rows, row_labels=row_labels), args.out)
    print(f"wrote {len(images)} samples ({rows} rows) to {args.out}")
    print(f"rows, top to bottom: {', '.join(row_labels)}")
    if args.npz:
        import numpy as np

        pixels = (images * 255).round().to(torch.uint8).numpy()
        tmp = Path(args.npz).with_name(f".{Path(args.npz).name}.tmp.npz")
        np.savez(tmp, x=pixels, y=labels.numpy())
        os.replace(tmp, args.npz)
        print(f"wrote raw samples (uint8 x, labels y) to {args.npz}")
    print(
        f"{info['steps']} Euler steps, CFG {info['cfg_scale']}: {info['layer_evals_per_image']} "
        f"layer evaluations per image (denoiser calls per block {info['calls_per_unit']})"
    )
    return 0


SAMPLE_N_DEFAULT = 8  # `dblocks sample --n`: image samples per class


def sample_text(task: Task, args: argparse.Namespace) -> int:
    import torch

    if args.length is None:  # one context's worth (masked: what the window leaves)
        from ..api import text_room

        args.length = text_room(task, args.prompt or "")
    if args.length < 1:
        raise UsageError(f"--length must be >= 1 for a text sample, got {args.length}")
    if args.temperature is None:  # the run's (eval --set temperature=... changes it too)
        args.temperature = getattr(task.config, "temperature", 1.0)
    if not 0 <= args.temperature <= 100:
        raise UsageError(f"--temperature must be in [0, 100] (0 = greedy), got {args.temperature}")
    prompt = args.prompt or ""
    text_task = cast(_TextTask, task)  # it generates text: its vocabulary checks the prompt
    try:
        text_task.vocab.encode(prompt)
    except DataError as err:
        raise UsageError(f"--prompt has {err}") from None
    image_flags = {"--n": args.n, "--class": args.class_, "--cfg": args.cfg, "--out": args.out,
                   "--npz": args.npz}  # fmt: skip
    ignored = [flag for flag, value in image_flags.items() if value is not None]
    if ignored:
        print(f"note: {', '.join(ignored)} apply to image samples and are not used here; a text "
              "sample is one continuation of --length characters (or tokens)",
              file=sys.stderr)  # fmt: skip
    gen = torch.Generator().manual_seed(args.seed)
    text, info = task.sample(gen, length=args.length, prompt=prompt, steps=args.steps,
                             temperature=args.temperature)  # fmt: skip
    print(prompt + cast(str, text))  # text (generates == "text")
    print(f"\n[{describe_generation(info)}]", file=sys.stderr)
    return 0
