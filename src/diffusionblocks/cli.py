"""The ``dblocks`` command line: the parser and the dispatch to :mod:`diffusionblocks.commands`
(one module per group of subcommands), with one place that turns errors into exit codes.

dblocks train --preset NAME [--set key=value ...] [--out DIR] [--resume] [--dry-run]
dblocks eval --run DIR [--steps N ...] [--json]
dblocks schedule (--blocks B | --preset NAME [--set key=value ...]) [--overlap G] [--json]
dblocks compare --preset NAME [--methods M,...] [--seeds N] [--set key=value ...] [--out DIR]
                [--json FILE]
dblocks presets
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import TextIO

from . import __version__
from .commands import UsageError
from .commands.bench import cmd_bench, cmd_bench_cap, cmd_bench_threads, cmd_evaluator
from .commands.compare import cmd_compare, cmd_schedule
from .commands.sample import SAMPLE_N_DEFAULT, cmd_sample, sample_text
from .commands.train import cmd_assemble, cmd_eval, cmd_presets, cmd_train
from .comparison import format_comparison
from .config import ConfigError
from .data.images import DataError, DataWarning
from .diffusion import PARTITIONS
from .eval.fid import EvaluatorError
from .registry import preset_names
from .reporting import headline_metric, print_evaluation
from .training.checkpoint import CheckpointError
from .training.faults import NumericalFault, TrainingInterrupted

# Names the tests and older scripts import from here.
__all__ = ["UsageError", "build_parser", "format_comparison", "headline_metric", "main",
           "print_evaluation", "sample_text"]  # fmt: skip


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dblocks",
        description="Train deep networks block by block as diffusion denoisers (DiffusionBlocks).",
    )
    p.add_argument("--version", action="version", version=f"dblocks {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a preset")
    t.add_argument("--preset", choices=preset_names(), help="named configuration")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--out", help="run folder (default runs/<preset>-<method>-...)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--allow-safe-changes",
        action="store_true",
        help="with --resume: accept changes to safe keys (epochs, logging, evaluation)",
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained run")
    e.add_argument("--run", required=True, help="run folder")
    e.add_argument(
        "--steps", type=int, nargs="+", help="inference step counts (denoiser calls) to sweep"
    )
    e.add_argument(
        "--split",
        choices=("val", "test"),
        help="evaluate on the validation split (val_fraction of the training data, never "
        "trained on: make every choice there) or the test split (default; read once for final "
        "tables)",
    )
    e.add_argument("--device", help="override the run's device")
    e.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override an inference-only key"
    )
    e.add_argument("--fid", type=int, metavar="N", help="image generation: FID from N samples")
    e.add_argument(
        "--inception", action="store_true", help="with --fid: also Inception FID (optional extra)"
    )
    e.add_argument("--judge", help="language models: an end-to-end run that scores continuations")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)

    sm = sub.add_parser("sample", help="generate samples from a trained run")
    sm.add_argument("--run", required=True,
                    help="run folder or model folder (one saved with save_pretrained samples "
                         "without its data)")  # fmt: skip
    sm.add_argument(
        "--n",
        type=int,
        help=f"images: samples per class, or in total with --class (default "
        f"{SAMPLE_N_DEFAULT}); text samples are one continuation (--length)",
    )
    sm.add_argument("--class", dest="class_", type=int, help="only this class")
    sm.add_argument(
        "--steps", type=int, help="denoiser calls per sample (default: the run's inference_steps)"
    )
    sm.add_argument("--cfg", type=float, help="classifier-free guidance weight")
    sm.add_argument("--trust-code", action="store_true",
                    help="a model folder of your own network: run the code saved in its code/ "
                         "(read it first)")  # fmt: skip
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", help="images: the grid (.png), one row per class")
    sm.add_argument("--npz", help="also write the raw samples here (x uint8, y labels)")
    sm.add_argument(
        "--length", type=int,
        help="text: characters to generate, or tokens for a run with a subword tokenizer "
        "(default: the model's sequence length; masked diffusion: what its window leaves after "
        "the prompt; autoregressive models take any length, seeing the last seq_len - 1)",
    )  # fmt: skip
    sm.add_argument(
        "--prompt",
        help="text: characters to start from (default: autoregressive models start after a "
        "newline, which is not printed)",
    )
    sm.add_argument(
        "--temperature", type=float,
        help="text: sampling temperature (default: the run's temperature key, 1.0 unless set)",
    )  # fmt: skip
    sm.add_argument("--device", help="override the run's device")
    sm.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override an inference key, or point data=PATH at the run's moved data",
    )  # fmt: skip
    sm.set_defaults(func=cmd_sample)

    s = sub.add_parser(
        "schedule",
        help="print the noise partition into blocks",
        description="Print the noise partition into blocks: a preset's (--preset, --set), or "
        "one from the flags; a flag given with --preset overrides the preset's value.",
    )
    s.add_argument("--preset", choices=preset_names(), help="take B and the noise from a preset")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset key")
    s.add_argument("--blocks", type=int, help="number of blocks B (required without --preset)")
    s.add_argument("--overlap", type=float, help="interval widening gamma (default 0)")
    s.add_argument("--partition", choices=PARTITIONS, help="default equi-probability")
    s.add_argument("--p-mean", type=float, help="mean of ln sigma (default -1.2)")
    s.add_argument("--p-std", type=float, help="std of ln sigma (default 1.2)")
    s.add_argument("--sigma-min", type=float, help="default 0.002")
    s.add_argument("--sigma-max", type=float, help="default 80")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_schedule)

    c = sub.add_parser("compare", help="train methods x seeds from one preset, one table")
    c.add_argument("--preset", choices=preset_names(), required=True)
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run")
    c.add_argument("--methods",
                   help="comma-separated methods (default: the task's baseline and dblocks); "
                        "e.g. e2e,e2e-shallow,e2e-ckpt,dblocks")  # fmt: skip
    c.add_argument("--caveat", action="append", metavar="TEXT",
                   help="a way the compared settings depart from the protocol (e.g. a preset "
                        "value chosen on test); recorded in comparison.json")  # fmt: skip
    c.add_argument("--seeds", type=int, default=1,
                   help="seeds per method (the preset's seed, +1, ...): mean ± s.d.")  # fmt: skip
    c.add_argument("--json", metavar="FILE", help="also write the method rows to FILE")
    c.add_argument("--out", help="folder for the runs and the table")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_compare)

    def add_mmap_threshold(parser: argparse.ArgumentParser) -> None:
        # bench memory and bench cap; the value of diffusionblocks.bench.DEFAULT_MMAP_THRESHOLD
        # (not imported here: it would load PyTorch; tests/test_bench_cap.py checks they agree)
        parser.add_argument(
            "--malloc-mmap-threshold",
            type=int,
            default=131072,
            help="glibc MALLOC_MMAP_THRESHOLD_ for the worker processes: freed memory goes back "
            "to the system (0 = glibc's default)",
        )

    b = sub.add_parser("bench", help="memory, speed and memory-cap benchmarks")
    bsub = b.add_subparsers(dest="kind", required=True)
    for kind, default_blocks, text in (
        ("memory", "1,2,3,4,6", "peak training memory per configuration, one process each"),
        ("speed", "2,3,4", "training-step and inference time, interleaved in one process"),
    ):
        k = bsub.add_parser(kind, help=text)
        k.add_argument("--preset", choices=preset_names(), default="bench")
        k.add_argument("--blocks", default=default_blocks, help="comma-separated block counts")
        k.add_argument("--batch-size", type=int, help="override the preset's batch size")
        k.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
        k.add_argument(
            "--json", help="write the records, with the command and a protocol object, to this file"
        )
        if kind == "memory":
            k.add_argument("--steps", type=int, default=3, help="training steps before measuring")
            k.add_argument("--plot", help="write a PNG plot here")
            add_mmap_threshold(k)
        else:
            k.add_argument("--repeats", type=int, default=10, help="timed repeats per config")
        k.set_defaults(func=cmd_bench)
    k = bsub.add_parser(
        "cap",
        help="a memory cap the OS enforces (RLIMIT_DATA; CUDA: the allocator's fraction): which "
        "of e2e, e2e-ckpt and block-resident DiffusionBlocks train under it",
    )
    k.add_argument("--preset", choices=preset_names(), default="bench")
    k.add_argument(
        "--cap",
        help="bytes, or with a K/M/G suffix (e.g. 600M); default: a quarter of the way from "
        "DiffusionBlocks' peak to end-to-end's, measured by uncapped probe runs",
    )
    k.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    k.add_argument("--out", help="folder for the runs (default runs/bench-cap-PRESET-TIME)")
    k.add_argument("--json", help="write the statuses, records, command and protocol here")
    add_mmap_threshold(k)
    k.set_defaults(func=cmd_bench_cap)

    k = bsub.add_parser(
        "threads",
        help="training steps/s at each CPU thread count, one process alone and several at once "
        "(what the threads=0 default rests on)",
    )
    k.add_argument("--preset", choices=preset_names(), default="bench")
    k.add_argument(
        "--threads", default=None, help="comma-separated thread counts (default 1..cores)"
    )
    k.add_argument(
        "--processes", default="1,2", help="comma-separated numbers of processes training at once"
    )
    k.add_argument("--steps", type=int, default=30, help="timed training steps per process")
    k.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    k.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    k.add_argument("--json", help="write the records, command and protocol to this file")
    k.set_defaults(func=cmd_bench_threads)

    ev = sub.add_parser("evaluator", help="train the Fashion-MNIST classifier used for FID")
    ev.add_argument(
        "--out", required=True, help="weights file (.safetensors); a .json card beside it"
    )
    ev.add_argument("--epochs", type=int, default=6)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--data-dir", help="Fashion-MNIST folder (default: the apt package's)")
    ev.add_argument("--device", default="cpu", help="cpu or cuda")
    ev.set_defaults(func=cmd_evaluator)

    a = sub.add_parser("assemble", help="join per-block checkpoints into one model folder")
    a.add_argument("run_dir", help="run folder")
    a.add_argument("--out", help="model folder (default RUN_DIR/model; with --hub RUN_DIR/hub)")
    a.add_argument("--hub", action="store_true",
                   help="a Hugging Face Hub folder: with its data card (it loads without the "
                        "data: DiffusionBlocksModel.from_pretrained) and model card (the [hf] "
                        "extra)")  # fmt: skip
    a.add_argument("--push", metavar="REPO_ID",
                   help="with --hub: then upload it to this Hub repository (needs a network and "
                        "a Hub token)")  # fmt: skip
    a.set_defaults(func=cmd_assemble)

    ps = sub.add_parser("presets", help="list presets")
    ps.set_defaults(func=cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings():
            show = warnings.showwarning

            def plain(
                message: Warning | str,
                category: type[Warning],
                filename: str,
                lineno: int,
                file: TextIO | None = None,
                line: str | None = None,
            ) -> None:
                """Our data warnings as one line, without Python's source-line context."""
                if issubclass(category, DataWarning):
                    print(f"dblocks {args.command}: warning: {message}", file=sys.stderr)
                else:
                    show(message, category, filename, lineno, file, line)

            warnings.showwarning = plain
            return args.func(args)
    except (ConfigError, DataError, CheckpointError, UsageError, EvaluatorError) as err:
        print(f"dblocks {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NumericalFault as err:
        print(f"dblocks {args.command}: numerical fault: {err}", file=sys.stderr)
        return 3
    except TrainingInterrupted as err:
        out = getattr(args, "out", None)
        hint = (
            f"; resume with: dblocks train --out {out} --resume" if out and err.checkpoint else ""
        )
        print(f"dblocks {args.command}: interrupted by {err}{hint}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"dblocks {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
