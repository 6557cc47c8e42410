"""The ``dblocks`` command line.

dblocks train --preset NAME [--set key=value ...] [--out DIR] [--resume] [--dry-run]
dblocks eval --run DIR [--steps N ...] [--json]
dblocks schedule (--blocks B | --preset NAME [--set key=value ...]) [--overlap G] [--json]
dblocks compare --preset NAME [--set key=value ...] [--out DIR]
dblocks presets
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError, parse_assignments
from .data.images import DataError, DataWarning
from .diffusion import PARTITIONS, BlockPartition, NoiseSchedule
from .fid import EvaluatorError
from .registry import PRESETS, make_config, preset_names
from .reporting import (  # noqa: F401 - headline_metric and format_comparison re-exported
    check_plan,
    comparison_row,
    describe_generation,
    format_comparison,
    headline_metric,
    print_evaluation,
    print_plan,
    print_results,
    print_schedule,
)
from .training.checkpoint import CheckpointError, atomic_write_json, atomic_write_text
from .training.trainer import NumericalFault, TrainingInterrupted


class UsageError(ValueError):
    """Bad command-line input that argparse cannot catch."""


# ---------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from .runs import default_run_dir, prepare_run_dir, read_run_config, train_run

    overrides = parse_assignments(args.set or [])
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR (the run folder to continue)")
    if args.preset is None and not args.resume:
        raise UsageError(f"--preset is required; choose one of {', '.join(preset_names())}")
    if args.preset is not None:
        config = make_config(args.preset, overrides)
    elif overrides:  # --resume --set k=v: the run's saved config with those keys changed
        from .config import config_from_dict

        saved = read_run_config(args.out)
        config = config_from_dict(type(saved), {**saved.to_dict(), **overrides})
    else:
        config = None
    if args.dry_run:
        if config is None:
            config = read_run_config(args.out)
        print_plan(config, args.preset)
        check_plan(config)
        return 0
    out = Path(args.out) if args.out else default_run_dir(args.preset, config)
    args.out = str(out)
    if args.resume:
        config = prepare_run_dir(
            config, out, resume=True, command=command_line(args.argv),
            allow_safe_changes=args.allow_safe_changes,
        )  # fmt: skip
    elif args.allow_safe_changes:
        raise UsageError("--allow-safe-changes applies to --resume")
    results = train_run(
        config,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        preset=args.preset,
        command=command_line(args.argv),
    )
    if "eval" not in results:  # a non-zero rank of a block-parallel run
        print(f"rank {results['rank']}: block {results['block']} done")
        return 0
    print_results(results)
    for note in results.get("warnings", []):
        print(f"warning: {note}")
    print(f"run folder: {out}")
    return 0


def command_line(argv: list[str]) -> str:
    """The command as a user would type it (``dblocks ...``), shell-quoted."""
    import shlex

    return " ".join(["dblocks", *(shlex.quote(a) for a in argv)])


# ---------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from .runs import evaluate_run

    if args.steps and any(s < 1 for s in args.steps):
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.fid is not None and args.fid < 2:
        raise UsageError(f"--fid needs at least 2 samples, got {args.fid}")
    result = evaluate_run(
        args.run,
        args.steps,
        args.device,
        parse_assignments(args.set or []),
        split=args.split,
        fid_samples=args.fid,
        inception=args.inception,
        judge=args.judge,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"run {args.run} (checkpoint step {result['checkpoint_step']})")
    print_evaluation(result)
    return 0


# ---------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .png import image_grid, save_png
    from .runs import load_run

    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.cfg is not None and not 0 <= args.cfg <= 100:
        raise UsageError(f"--cfg must be in [0, 100], got {args.cfg}")
    task, _ = load_run(args.run, args.device, parse_assignments(args.set or []))
    if task.generates == "text":
        return sample_text(task, args)
    if task.generates != "images":
        raise UsageError(
            f"{args.run} is a {task.config.task} run; `dblocks sample` needs a generative run"
        )
    if args.out is None:
        raise UsageError("--out FILE.png is required for image samples")
    classes = task.data.num_classes
    n = SAMPLE_N_DEFAULT if args.n is None else args.n
    if args.class_ is not None:
        if not 0 <= args.class_ < classes:
            raise UsageError(f"unknown class {args.class_}: classes are 0..{classes - 1}")
        labels, rows = torch.full((n,), args.class_), 1
        row_classes = [args.class_]
    else:
        labels, rows = torch.arange(classes).repeat_interleave(n), classes
        row_classes = list(range(classes))
    names = getattr(task.data, "class_names", None)
    row_labels = [f"{k} {names[k]}" if names else str(k) for k in row_classes]
    gen = torch.Generator().manual_seed(args.seed)
    images, info = [], {}
    for start in range(0, len(labels), task.config.eval_batch_size):
        out, info = task.generate(
            labels[start : start + task.config.eval_batch_size], gen, args.steps, args.cfg
        )
        images.append(out)
    images = torch.cat(images)
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


def sample_text(task, args: argparse.Namespace) -> int:
    import torch

    if args.length is None:  # as many characters as the model's context leaves
        from .api import text_room

        args.length = text_room(task, args.prompt or "")
    if args.length < 1:
        raise UsageError(f"--length must be >= 1 for a text sample, got {args.length}")
    if args.temperature is None:  # the run's (eval --set temperature=... changes it too)
        args.temperature = getattr(task.config, "temperature", 1.0)
    if not 0 <= args.temperature <= 100:
        raise UsageError(f"--temperature must be in [0, 100] (0 = greedy), got {args.temperature}")
    prompt = args.prompt or ""
    try:
        task.vocab.encode(prompt)
    except DataError as err:
        raise UsageError(f"--prompt has {err}") from None
    image_flags = {"--n": args.n, "--class": args.class_, "--cfg": args.cfg, "--out": args.out,
                   "--npz": args.npz}  # fmt: skip
    ignored = [flag for flag, value in image_flags.items() if value is not None]
    if ignored:
        print(f"note: {', '.join(ignored)} apply to image samples and are not used here; a text "
              "sample is one continuation of --length characters", file=sys.stderr)  # fmt: skip
    gen = torch.Generator().manual_seed(args.seed)
    text, info = task.generate_text(args.length, gen, prompt, args.steps, args.temperature)
    print(prompt + text)
    print(f"\n[{describe_generation(info)}]", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- schedule
# What `dblocks schedule` prints without --preset (the paper's EDM noise, no overlap).
SCHEDULE_DEFAULTS = {
    "blocks": None,
    "overlap": 0.0,
    "partition": "equi-probability",
    "p_mean": -1.2,
    "p_std": 1.2,
    "sigma_min": 0.002,
    "sigma_max": 80.0,
}


def cmd_schedule(args: argparse.Namespace) -> int:
    values = dict(SCHEDULE_DEFAULTS)
    sigma_data = NoiseSchedule().sigma_data
    if args.preset is not None:  # the preset's partition; explicit flags still override
        overrides = parse_assignments(args.set or [])
        if PRESETS[args.preset][1].get("data") == "":  # a preset for users' data
            overrides.setdefault("data", "your data")  # the partition does not depend on it
        config = make_config(args.preset, overrides)
        if config.block_variable != "sigma":
            intervals = {k: v for k, v in config.resolved().items() if k.endswith("_intervals")}
            raise UsageError(
                f"preset {args.preset} is a {config.task} run: its blocks split "
                f"{config.block_variable}, not sigma ({intervals})"
            )
        values.update(blocks=config.num_blocks, overlap=config.overlap,
                      partition=config.partition, p_mean=config.p_mean, p_std=config.p_std,
                      sigma_min=config.sigma_min, sigma_max=config.sigma_max)  # fmt: skip
        sigma_data = config.sigma_data
    elif args.set:
        raise UsageError("--set needs --preset (or give the flags: --blocks, --overlap, ...)")
    values.update({k: getattr(args, k) for k in values if getattr(args, k) is not None})
    if values["blocks"] is None:
        raise UsageError("--blocks B is required (or --preset NAME for a preset's partition)")
    if values["blocks"] < 1:
        raise UsageError(f"--blocks must be >= 1, got {values['blocks']}")
    if not 0 <= values["overlap"] <= 1:
        raise UsageError(f"--overlap must be in [0, 1], got {values['overlap']}")
    try:
        schedule = NoiseSchedule(values["p_mean"], values["p_std"], values["sigma_min"],
                                 values["sigma_max"], sigma_data)  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    partition = BlockPartition.create(
        values["blocks"], schedule, values["partition"], values["overlap"]
    )
    if args.json:
        print(json.dumps(partition.describe()))
    else:
        source = f"preset {args.preset}" if args.preset else "flags"
        print(
            f"# {source}: B={values['blocks']}, ln sigma ~ N({values['p_mean']:g}, "
            f"{values['p_std']:g}^2) on [{values['sigma_min']:g}, {values['sigma_max']:g}]"
        )
        print_schedule(partition)
    return 0


# ---------------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> int:
    """Train each method in its own fresh process (so peak memory is per method), then print
    one table."""
    base = parse_assignments(args.set or [])
    make_config(args.preset, base)  # validate before any work starts
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    baseline = make_config(args.preset, base).baseline_method
    if args.methods == "e2e,dblocks":  # the default: the task's baseline, then DiffusionBlocks
        methods = [baseline, "dblocks"]
    for m in methods:
        make_config(args.preset, {**base, "method": m})
    out = Path(args.out or f"runs/compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "comparison.json").exists():
        raise UsageError(f"{out} already holds a comparison; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in methods:
        run_dir = out / m
        cmd = [sys.executable, "-m", "diffusionblocks", "train", "--preset", args.preset]
        for k, v in {**base, "method": m}.items():
            cmd += ["--set", f"{k}={v}"]
        cmd += ["--out", str(run_dir)]
        if args.no_progress:
            cmd.append("--no-progress")
        print(f"\n=== {m}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, env=os.environ.copy())
        if proc.returncode != 0:
            raise UsageError(f"training {m} failed (exit code {proc.returncode})")
        results = json.loads((run_dir / "results.json").read_text())
        rows.append(comparison_row(m, results, " ".join(["dblocks", *cmd[3:]])))
    e2e = next((r for r in rows if r["method"] == baseline), None)
    for r in rows:
        if e2e:
            r["step_time_vs_e2e"] = r["median_step_ms"] / e2e["median_step_ms"]
            r["train_peak_vs_e2e"] = r["train_peak_mib"] / max(e2e["train_peak_mib"], 1e-9)
    table = format_comparison(rows)
    notes = [f"warning ({r['method']}): {w}" for r in rows for w in r["warnings"]]
    table += "".join(f"\n\n{note}" for note in notes)
    print("\n" + table)
    atomic_write_json(
        out / "comparison.json", {"preset": args.preset, "overrides": base, "rows": rows}
    )
    atomic_write_text(out / "comparison.md", table + "\n")
    print(f"\nwritten: {out}/comparison.json, {out}/comparison.md")
    return 0


# ---------------------------------------------------------------------- bench
def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} expects comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{name} expects integers >= 1, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    overrides: dict[str, Any] = dict(parse_assignments(args.set or []))
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        overrides["batch_size"] = args.batch_size
    blocks = _int_list(args.blocks, "--blocks")
    if args.kind == "memory" and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.kind == "speed" and args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    configs = bench.MEMORY_CONFIGS if args.kind == "memory" else bench.SPEED_CONFIGS
    for name in configs:  # validate every configuration before any work starts
        for b in [1] if name.startswith("e2e") else blocks:
            make_config(args.preset, {**overrides, **bench.config_overrides(name, b)})
    if args.kind == "memory":
        print(f"memory benchmark, preset {args.preset}, each configuration in a fresh process")
        if args.malloc_mmap_threshold < 0:
            raise UsageError("--malloc-mmap-threshold must be >= 0 (0 = glibc default)")
        records = bench.run_memory_bench(
            args.preset, blocks, overrides, args.steps, mmap_threshold=args.malloc_mmap_threshold
        )
        table = bench.format_memory_table(records)
    else:
        print(f"speed benchmark, preset {args.preset}, interleaved repeats in one process")
        records = bench.run_speed_bench(args.preset, blocks, overrides, args.repeats)
        table = bench.format_speed_table(records)
    key = bench.MEMORY_TABLE_KEY if args.kind == "memory" else bench.SPEED_TABLE_KEY
    print("\n" + key + "\n\n" + table)
    command = command_line(args.argv)
    if args.json:
        atomic_write_json(args.json, {"command": command, "records": records})
        print(f"written: {args.json}")
    if args.kind == "memory" and args.plot:
        if bench.plot_memory(records, args.plot) is None:
            print("note: matplotlib is not installed; no plot written", file=sys.stderr)
        else:
            print(f"written: {args.plot}")
    return 0


# ---------------------------------------------------------------------- evaluator
def cmd_evaluator(args: argparse.Namespace) -> int:
    """Train the Fashion-MNIST classifier whose features FID uses; write its weights and card."""
    from safetensors.torch import save_file

    from .fid import train_evaluator

    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model, card = train_evaluator(
        args.data_dir, epochs=args.epochs, seed=args.seed, device=args.device
    )
    card["command"] = command_line(args.argv)
    card["date"] = time.strftime("%Y-%m-%d")
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out)
    atomic_write_json(out.with_suffix(".json"), card)
    print(f"evaluator test accuracy {card['test_accuracy']:.4f}; written {out}")
    return 0


# ---------------------------------------------------------------------- assemble
def cmd_assemble(args: argparse.Namespace) -> int:
    from .assemble import assemble

    out = assemble(args.run_dir, args.out)
    print(f"assembled {args.run_dir} -> {out} (model.safetensors, config.json, README.md)")
    return 0


# ---------------------------------------------------------------------- presets
def cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        task, _, text = PRESETS[name]
        print(f"{name:<18} {task:<15} {text}")
    return 0


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
        help="classification: evaluate on the validation split (make every choice there) or "
        "the test split (default; read once for final tables)",
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
    sm.add_argument("--run", required=True, help="run folder")
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
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", help="images: the grid (.png), one row per class")
    sm.add_argument("--npz", help="also write the raw samples here (x uint8, y labels)")
    sm.add_argument(
        "--length", type=int,
        help="text: characters to generate (default: as many as the model's context leaves)",
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

    c = sub.add_parser("compare", help="train e2e and dblocks from one preset and compare")
    c.add_argument("--preset", choices=preset_names(), required=True)
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run")
    c.add_argument("--methods", default="e2e,dblocks", help="comma-separated methods")
    c.add_argument("--out", help="folder for the runs and the table")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_compare)

    b = sub.add_parser("bench", help="memory and speed benchmarks")
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
        k.add_argument("--json", help="write the records to this JSON file")
        if kind == "memory":
            k.add_argument("--steps", type=int, default=3, help="training steps before measuring")
            k.add_argument("--plot", help="write a PNG plot here")
            k.add_argument(
                "--malloc-mmap-threshold",
                type=int,
                default=131072,
                help="glibc MALLOC_MMAP_THRESHOLD_ for the workers (0 = allocator default)",
            )
        else:
            k.add_argument("--repeats", type=int, default=10, help="timed repeats per config")
        k.set_defaults(func=cmd_bench)

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
    a.add_argument("--out", help="model folder (default RUN_DIR/model)")
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

            def plain(message, category, filename, lineno, file=None, line=None):
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
