"""`dblocks train`, `eval`, `assemble` and `presets`: each checks its arguments, calls the
library and prints through :mod:`diffusionblocks.reporting`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import parse_assignments
from ..registry import PRESETS, make_config, preset_names
from ..reporting import (
    check_plan,
    print_evaluation,
    print_plan,
    print_results,
)
from . import UsageError, command_line


# ---------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from ..runs import default_run_dir, prepare_run_dir, read_run_config, train_run

    overrides = parse_assignments(args.set or [])
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR (the run folder to continue)")
    if args.preset is None and not args.resume:
        raise UsageError(f"--preset is required; choose one of {', '.join(preset_names())}")
    if args.preset is not None:
        config = make_config(args.preset, overrides)
    elif overrides:  # --resume --set k=v: the run's saved config with those keys changed
        from ..config import config_from_dict, flat_keys

        saved = read_run_config(args.out)
        changes = flat_keys(type(saved), overrides)
        config = config_from_dict(type(saved), {**saved.to_dict(), **changes})
    else:
        config = None
    if args.dry_run:
        if config is None:
            config = read_run_config(args.out)
        print_plan(config, args.preset)
        check_plan(config)
        return 0
    if args.out:
        out = Path(args.out)
    else:  # --resume needs --out: this is a new run from a preset
        assert config is not None
        out = default_run_dir(args.preset, config)
    args.out = str(out)
    if args.resume:
        config = prepare_run_dir(
            config, out, resume=True, command=command_line(args.argv),
            allow_safe_changes=args.allow_safe_changes,
        )  # fmt: skip
    elif args.allow_safe_changes:
        raise UsageError("--allow-safe-changes applies to --resume")
    assert config is not None  # a preset's, or the resumed run's
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


# ---------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from ..runs import evaluate_run

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


# ---------------------------------------------------------------------- assemble
def cmd_assemble(args: argparse.Namespace) -> int:
    from ..assemble import assemble

    if args.hub or args.push:
        return hub_folder(args)
    out = assemble(args.run_dir, args.out)
    print(f"assembled {args.run_dir} -> {out} (model.safetensors, config.json, README.md)")
    return 0


def hub_folder(args: argparse.Namespace) -> int:
    """``assemble --hub``: the run's model saved for the Hugging Face Hub (``hub.py``: with its
    data card and model card), written beside ``--out`` and renamed into place when complete;
    ``--push REPO``: then uploaded to that Hub repository."""
    from pathlib import Path

    from ..assemble import check_out, replace_folder, staging_folder
    from ..hub import DiffusionBlocksModel

    out = Path(args.out) if args.out else Path(args.run_dir) / "hub"
    check_out(Path(args.run_dir), out)
    model = DiffusionBlocksModel.from_run(args.run_dir, device="cpu")
    tmp = staging_folder(out)
    try:
        model.save_pretrained(tmp)
        replace_folder(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"saved {args.run_dir} -> {out} (model.safetensors, config.json with its data card, "
          "README.md): load it with DiffusionBlocksModel.from_pretrained")  # fmt: skip
    if args.push:
        url = model.push_to_hub(args.push)
        print(f"pushed to {url}")
    return 0


# ---------------------------------------------------------------------- presets
def cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        task, _, text = PRESETS[name]
        print(f"{name:<18} {task:<15} {text}")
    return 0
