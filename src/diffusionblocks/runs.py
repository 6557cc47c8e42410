"""Run folders: create, train and resume (loading and evaluating them: :mod:`.loading`).

A run folder holds ``config.json`` (the resolved config), ``metrics.jsonl``, ``checkpoints/``,
``results.json`` (accounting, timing, memory and the final evaluation) and ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .assemble import assemble
from .config import (
    SAFE_RESUME_KEYS,
    ConfigError,
    RunConfig,
    config_diff,
    config_from_dict,
    flat_keys,
)
from .eval.fid import EvaluatorError
from .loading import (  # noqa: F401 - re-exported: the run-folder API in one place
    INFERENCE_KEYS,
    check_moved_data,
    evaluate_run,
    evaluate_task,
    load_pretrained,
    load_run,
    with_judge,
)
from .networks.placement import device_of
from .registry import make_task, read_run_config, resolve_device, task_class
from .reporting import legend_entry, metrics_legend, run_warnings  # noqa: F401
from .runtime import autocast, threads_for, use_threads
from .tasks.base import Task
from .training.blockmodel import block_model
from .training.checkpoint import atomic_write_json
from .training.flops import measure_step_flops, train_flops
from .training.metrics import plot_losses
from .training.residency import is_materialized
from .training.runfolder import (
    DATA_KEYS,
    check_run_files,
    resolve_paths,
    with_run_tokenizer,
    write_run_config,
    write_run_files,
)
from .training.trainer import Trainer


def default_run_dir(preset: str, config: RunConfig) -> Path:
    """``runs/<preset>-<method>[-B<b>]-s<seed>-<date-time>``: a new folder for every run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    blocks = "" if config.end_to_end else f"-B{config.num_blocks}"
    return Path("runs") / f"{preset}-{config.method}{blocks}-s{config.seed}-{stamp}"


def refuse_existing_run(run_dir: Path) -> None:
    """A new run never writes into a folder that holds another run."""
    if (Path(run_dir) / "config.json").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def keep_saved_defaults(config: RunConfig, saved: RunConfig, run_dir: Path) -> RunConfig:
    """``config`` with each key the run's saved config.json lacks (written before the key
    existed; ``saved_defaults`` gives what the run did) kept at the saved run's value where the
    request carries the key's field default: resuming an older run with its preset must not
    switch it to a newer default (e.g. ``readout``; ``dblocks eval --set`` changes inference
    keys). Any other value stays (and is then a change the resume checks)."""
    try:
        raw = json.loads((run_dir / "config.json").read_text())["config"]
        present = set(flat_keys(type(saved), {k: v for k, v in raw.items() if k != "task"}))
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return config
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    keep = {key: getattr(saved, key) for key in type(saved).saved_defaults
            if key not in present and getattr(config, key) == defaults.get(key)}  # fmt: skip
    return dataclasses.replace(config, **keep) if keep else config


def prepare_run_dir(
    config: RunConfig | None,
    run_dir: str | os.PathLike,
    resume: bool,
    preset: str | None = None,
    command: str | None = None,
    allow_safe_changes: bool = False,
) -> RunConfig:
    """Create ``run_dir`` for a new run, or check it for ``--resume``; returns the config to use.

    A new run refuses a folder that already holds a run. A resumed run keeps the folder's saved
    config; an explicitly different config is refused, naming the keys that differ.
    """
    run_dir = Path(run_dir)
    has_run = (run_dir / "config.json").exists()
    if resume:
        if not has_run:
            raise ConfigError(f"--resume: {run_dir} holds no run (no config.json)")
        saved = read_run_config(run_dir)
        if config is None:
            check_moved_data(run_dir, saved, saved)
            return saved
        config = resolve_paths(keep_saved_defaults(config, saved, run_dir))
        diff = config_diff(resolve_paths(saved), config)  # older runs saved paths as typed
        check_moved_data(run_dir, saved, config)  # a moved data file must hold the same bytes
        if not diff:
            return saved
        keys = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        unsafe = [k for k in diff if k not in (*SAFE_RESUME_KEYS, *DATA_KEYS)]
        if unsafe:
            why = (
                " ('epochs' sets each block's learning-rate schedule, a warm-up then a cosine "
                "decay over all of the block's steps: a changed value would jump the learning "
                "rate mid-run and the result would match no fresh run)"
                if "epochs" in unsafe
                else ""
            )
            raise ConfigError(
                f"--resume: the requested config differs from the one in {run_dir} ({keys}); "
                f"{', '.join(unsafe)} cannot change in a resumed run (the checkpoint would "
                f"describe another run){why}; resume without those changes, or start a new --out"
            )
        if not allow_safe_changes:
            raise ConfigError(
                f"--resume: the requested config differs from the one in {run_dir} ({keys}); "
                "these changes are safe: pass --allow-safe-changes to resume with them"
            )
        update = json.loads((run_dir / "config.json").read_text())
        update["config"] = config.to_dict()
        update.setdefault("changes", []).append(
            {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": keys, "command": command}
        )
        atomic_write_json(run_dir / "config.json", update)
        return config
    refuse_existing_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to the run folder {run_dir}: {err.strerror}") from None
    assert config is not None  # only a resumed run may leave the config to its folder
    write_run_config(run_dir, config, preset, command)
    return config


def train_run(
    config: RunConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    allow_safe_changes: bool = False,
    progress: bool = True,
    preset: str | None = None,
    sweep: tuple[int, ...] | None = None,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run, evaluate it (sweeping ``sweep`` inference step counts, by default
    the task's ``default_sweep``), and write ``results.json`` and ``loss.png``."""
    run_dir = Path(run_dir)
    if config is not None and not resume:
        config = resolve_paths(config)
    if config.parallel:
        return train_parallel(config, run_dir, resume, progress, preset, log, command)
    if resume:
        config = prepare_run_dir(config, run_dir, resume, preset, command, allow_safe_changes)
        device = resolve_device(config.device)
        task = make_task(with_run_tokenizer(config, run_dir), device)
        check_run_files(run_dir, task.run_files())
    else:
        # Everything bad input can break (device, data, model) fails before the folder exists,
        # so a corrected command can reuse the same --out.
        refuse_existing_run(run_dir)
        device = resolve_device(config.device)
        task = make_task(config, device)
        config = prepare_run_dir(config, run_dir, resume, preset, command, allow_safe_changes)
        write_run_files(run_dir, task.run_files())
    threads, threads_reason = threads_for(task)
    with use_threads(threads):
        check_disk_space(run_dir, task, config)
        trainer = Trainer(task, run_dir, progress=progress, log=log)
        if resume and trainer.resume():
            log(f"resumed {run_dir} at step {trainer.step}/{trainer.total_steps}")
        info = task.describe()
        trained = len(trainer.trained_blocks)
        log(
            f"{config.task}/{config.method}: {info.get('parameters', 0):,} parameters, "
            f"{trainer.total_steps} steps ({trainer.steps_per_block} per block x "
            f"{trained} block{'s' if trained != 1 else ''}) on {device}"
        )
        fitted = trainer.fit()
        trainer.prepare_evaluation()  # every block in memory, with its own shared copy if any
        steps = list(sweep or ()) or task.final_sweep()
        options = with_judge({}, task)  # a language-model judge, loaded once for both splits
        extra = {}
        with autocast(config.precision, device):
            evaluation = task.evaluate(quick=False, steps=steps, **options)
            if "val" in task.splits:  # where every choice is made, reported beside the test split
                extra["eval_val"] = task.evaluate(quick=False, steps=steps, split="val", **options)
        # Measured training compute (after evaluation: the measurement's steps change no weight).
        batch = task.train_batch(trainer.plan.batch_indices(0))
        step_flops, varies = measure_step_flops(
            task, trainer.trained_blocks, batch, seed=config.seed
        )
        extra["compute"] = train_flops(step_flops, trainer.block_steps, estimate=varies)
        extra["trivial"] = trivial_baselines(task, evaluation)
        results: dict[str, Any] = {
            **_run_record(run_dir, preset, command, config, info),
            **fitted,
            "eval": evaluation,
            **extra,
            "environment": environment(device, threads_reason),
        }
        results["metrics_legend"] = metrics_legend(task)
        results["warnings"] = run_warnings(task, trainer)
        atomic_write_json(run_dir / "results.json", results)
        final = {"step": trainer.step, **split_record(evaluation)}
        if "eval_val" in extra:
            final.update(split_record(extra["eval_val"]))
        trainer.metrics.write(final)
        plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", task.plot_key, task.plot_label)
        return results


def _run_record(
    run_dir: Path, preset: str | None, command: str | None, config: RunConfig,
    task_info: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """What every ``results.json`` opens with: where the run is, how it was made, its config
    and what it resolved to, and the task's facts."""
    return {
        "run_dir": str(run_dir),
        "preset": preset,
        "command": command or _saved_command(run_dir),
        "config": config.to_dict(),
        "resolved": config.resolved(),
        "task": task_info,
    }


def _merge_compute(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The training FLOPs of a block-parallel run: every rank's (each trained its block on its
    data shard), added; each block's step as its ranks measured it."""
    by_block: dict[str, float] = {}
    for r in ranks:
        by_block.update(r["step_flops_by_block"])
    return {**ranks[0], "train_flops": sum(r["train_flops"] for r in ranks),
            "step_flops_by_block": dict(sorted(by_block.items())),
            "estimate": any(r["estimate"] for r in ranks)}  # fmt: skip


def trivial_baselines(task: Task, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The task's trivial baseline on each of its splits (what a model must beat to have
    learned anything), where the evaluation computed the headline metric it is compared with;
    a split it cannot score records why."""
    if task.headline(evaluation) is None:  # the evaluation lacks the task's headline metric
        return {}
    out: dict[str, Any] = {}
    for split in task.splits:
        try:
            out[split] = task.trivial_baseline(split)
        except (ConfigError, EvaluatorError) as err:
            out[split] = {"skipped": str(err)}
    return out


def check_disk_space(run_dir: Path, task: Task, config: RunConfig) -> None:
    """Fail before training when the folder cannot hold the checkpoints: each one holds the
    weights and two Adam moments (3x the parameters; 4x with their averages, ``ema``),
    ``keep_checkpoints`` + 1 of them at once."""
    import shutil

    params = sum(p.numel() * p.element_size() for p in task.model.parameters() if not p.is_meta)
    if not params:  # block-resident models: count one block's worth per block
        params = 1
    copies = 4 if getattr(task.model, "averaged", False) else 3
    need = copies * params * (config.keep_checkpoints + 1) + (16 << 20)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(
            f"not enough free disk space for checkpoints in {run_dir}: about "
            f"{need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free"
        )


def _rank_device(config: RunConfig) -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` under torchrun when the config asks for CUDA."""
    if config.device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return config.device


def train_parallel(
    config: RunConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    preset: str | None,
    log: Callable[[str], None],
    command: str | None,
) -> dict[str, Any]:
    """One rank of a block-parallel run (see :mod:`diffusionblocks.training.parallel`). Rank 0
    prepares the folder; at the end it assembles the blocks and evaluates the model."""
    import torch.distributed as dist

    from .training.parallel import (
        PARALLEL_HASH_IGNORE,
        ParallelTrainer,
        barrier,
        init_distributed,
        shutdown,
    )

    ctx = init_distributed(config)
    try:
        if not resume:  # bad input (device, data, model) fails before the folder is touched
            task = make_task(config, resolve_device(_rank_device(config)))
        if ctx.rank == 0:
            existing = (run_dir / "config.json").exists()
            if existing and not resume:
                saved = read_run_config(run_dir)
                if saved.config_hash(ignore=PARALLEL_HASH_IGNORE) != config.config_hash(
                    ignore=PARALLEL_HASH_IGNORE
                ):
                    raise ConfigError(
                        f"{run_dir} holds a run with another config; choose another --out"
                    )  # same config: (re)train the selected blocks into it
                check_run_files(run_dir, task.run_files())  # and the same tokenizer
            else:
                prepare_run_dir(config, run_dir, resume, preset, command)
                if not resume:
                    write_run_files(run_dir, task.run_files())
        barrier(ctx)
        if resume:
            config = _resumable(config, run_dir)
            task = make_task(
                with_run_tokenizer(config, run_dir), resolve_device(_rank_device(config))
            )
            check_run_files(run_dir, task.run_files())
        threads, threads_reason = threads_for(task)
        with use_threads(threads):
            check_disk_space(run_dir, task, config)
            trainer = ParallelTrainer(task, run_dir, ctx, progress=progress, log=log)
            if resume and trainer.resume():
                log(f"rank {ctx.rank}: resumed block {ctx.block} at step {trainer.step}")
            log(
                f"rank {ctx.rank}/{ctx.world}: block {ctx.block} "
                f"(data shard {ctx.dp_rank}/{ctx.dp}), "
                f"{trainer.total_steps} synchronous steps, shared={config.shared_policy}"
            )
            fitted = trainer.fit()
            model = block_model(task.model)
            # This rank's training FLOPs: its block's step on its own first batch, times its steps.
            batch = task.train_batch(trainer.plan.batch_indices(0))
            step_flops, varies = measure_step_flops(
                task, trainer.plan.local_blocks, batch, seed=config.seed
            )
            record = {
                "rank": ctx.rank,
                "block": ctx.block,
                # What this process held: its own block only (checked by the tests).
                "materialized_blocks": [
                    u for u in range(len(model.blocks)) if is_materialized(model, u)
                ],
                "optimizer_units": sorted(trainer.optimizers),  # saved key, kept for old results
                "data_shard": [ctx.dp_rank, ctx.dp],
                # The examples this process trained on in its first epoch (the data shards' audit).
                "first_epoch_indices": sorted(trainer.first_epoch_indices),
                **fitted,
                "compute": train_flops(step_flops, trainer.block_steps, estimate=varies),
            }
            if ctx.world > 1:
                gathered: list[Any] = [None] * ctx.world
                dist.all_gather_object(gathered, record)
            else:
                gathered = [record]
            evaluated, model_task, by_rank = _evaluate_assembled(run_dir, ctx, config)
            if ctx.rank != 0:
                return {"rank": ctx.rank, **record}
            assert model_task is not None  # rank 0 evaluates the test split
            evaluation = evaluated["test"]
            extra = {"eval_val": evaluated["val"]} if "val" in evaluated else {}
            results = {
                **_run_record(run_dir, preset, command, config, task.describe()),
                "parallel": {
                    "world": ctx.world,
                    "dp": ctx.dp,
                    "shared": config.shared_policy,
                    # which ranks evaluated each split of the assembled model
                    "evaluated_by_rank": by_rank,
                },
                "ranks": gathered,
                "accounting": _merge_accounting([r["accounting"] for r in gathered]),
                "timing": {
                    "train_seconds": max(r["timing"]["train_seconds"] for r in gathered),
                    "median_step_seconds": gathered[0]["timing"]["median_step_seconds"],
                },
                "memory": {
                    "train_peak_rss_bytes": max(
                        r["memory"]["train_peak_rss_bytes"] for r in gathered
                    ),
                    "per_rank_train_peak_rss_bytes": [
                        r["memory"]["train_peak_rss_bytes"] for r in gathered
                    ],
                },
                "eval": evaluation,
                **extra,
                "compute": _merge_compute([r["compute"] for r in gathered]),
                "trivial": trivial_baselines(model_task, evaluation),
                "environment": environment(device_of(model), threads_reason),
            }
            atomic_write_json(run_dir / "results.json", results)
            return results
    finally:
        shutdown(ctx)


def _evaluate_assembled(
    run_dir: Path, ctx: Any, config: RunConfig
) -> tuple[dict[str, Any], Task | None, dict[str, list[int]]]:
    """A block-parallel run's last act on every rank: rank 0 assembles the blocks into one
    model, then the ranks share its evaluation: where the task splits it by examples (the
    light evaluation, ``final_eval=readout``) every rank tallies every split on its share of
    the batches and rank 0 merges the counts; otherwise one split per rank (rank 0 the test
    split, rank 1 the validation split). Either way the numbers are the ones a single process
    computes (each split draws from its own generators, and a rank takes the draws of the
    batches it leaves to the others). Returns every split's evaluation (on rank 0; others:
    their own part), the loaded model on the ranks that evaluated, and (on rank 0) which ranks
    scored examples of each split. A failure on any rank is raised on rank 0 and the others
    return, so that no rank waits for one that has stopped."""
    import torch.distributed as dist

    def share(value: Any) -> list[Any]:
        if ctx.world == 1:
            return [value]
        gathered: list[Any] = [None] * ctx.world
        dist.all_gather_object(gathered, value)
        return gathered

    model_dir, failure = None, None
    if ctx.rank == 0:
        try:
            model_dir = str(assemble(run_dir))
        except Exception as err:  # every rank must hear of it before rank 0 raises it
            failure = err
    shared = share((model_dir, None if failure is None else repr(failure)))[0]
    if failure is not None:
        raise failure
    if shared[1] is not None:
        return {}, None, {}  # rank 0 raises the assembly's error
    model_task, mine, error = None, {}, None
    sharded = task_class(config).shards_evaluation(config)
    try:
        if sharded:  # every rank a share of every split's batches
            model_task, _ = load_run(shared[0], _rank_device(config))
            sweep = model_task.final_sweep()
            threads, _ = threads_for(model_task, alone=ctx.world < 2)
            with use_threads(threads), autocast(config.precision, model_task.device):
                for split in model_task.splits:
                    mine[split] = model_task.evaluation_tally(split, (ctx.rank, ctx.world),
                                                              steps=sweep)  # fmt: skip
        elif ctx.rank < 2:  # one split per rank (two at most: the other ranks have nothing to do)
            model_task, _ = load_run(shared[0], _rank_device(config))
            splits = ["test", *(["val"] if "val" in model_task.splits else [])]
            sweep = model_task.final_sweep()
            options = with_judge({}, model_task)  # as a single process: the judge loaded once
            threads, _ = threads_for(model_task, alone=len(splits) < 2 or ctx.world < 2)
            with use_threads(threads), autocast(config.precision, model_task.device):
                for split in splits[ctx.rank :: ctx.world]:
                    where = {"split": "val"} if split == "val" else {}
                    mine[split] = model_task.evaluate(quick=False, steps=sweep, **where, **options)
    except Exception as err:
        error = err
    results = share((mine, None if error is None else repr(error)))
    if ctx.rank == 0:
        if error is not None:
            raise error
        failed = [e for _, e in results if e is not None]
        if failed:
            raise RuntimeError(f"the evaluation of the assembled model failed: {failed[0]}")
    if ctx.rank != 0 or model_task is None:
        return mine, model_task, {}
    if sharded:  # the ranks' tallies merged; the ranks that had batches of each split
        parts = {split: [part[split] for part, _ in results] for split in mine}
        sweep = model_task.final_sweep()
        merged = {split: model_task.merged_evaluation(split, p, steps=sweep)
                  for split, p in parts.items()}  # fmt: skip
        by_rank = {split: [r for r, t in enumerate(p) if t["examples"]]
                   for split, p in parts.items()}  # fmt: skip
        return merged, model_task, by_rank
    evaluated = {k: v for part, _ in results for k, v in part.items()}
    by_rank = {s: [r] for r, (part, _) in enumerate(results) for s in part}
    return evaluated, model_task, by_rank


def _merge_accounting(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's accounting from its ranks: steps per block from the ranks that trained it,
    layer evaluations summed over ranks."""
    merged = dict(records[0])  # the "unit" keys are saved keys ("unit": a block's old name)
    per_rank = [r["steps_per_unit"] for r in records]
    merged["steps_per_unit"] = [max(col) for col in zip(*per_rank, strict=True)]
    for key in ("layer_evaluations", "backward_layer_evaluations", "compute_layer_units",
                "examples_seen"):  # fmt: skip
        merged[key] = sum(r[key] for r in records)
    merged["trained_units"] = sorted({u for r in records for u in r["trained_units"]})
    return merged


def _resumable(config: RunConfig, run_dir: Path) -> RunConfig:
    """Resuming keeps the folder's config (the selected blocks may differ)."""
    saved = read_run_config(run_dir)
    values = {**saved.to_dict(), "blocks": config.blocks, "parallel": True,
              "shared_init": config.shared_init}  # fmt: skip
    return config_from_dict(type(config), values)


def _saved_command(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "config.json").read_text()).get("command")
    except (OSError, json.JSONDecodeError):
        return None


def environment(device: torch.device, threads_reason: str | None = None) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if threads_reason is not None:  # how the ``threads`` key was resolved (runtime.py)
        env["cpu_threads_chosen_by"] = threads_reason
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def split_record(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a final evaluation as one metrics record, each key prefixed with the split
    it was measured on (``test_accuracy``, ``test_examples``); a key that already names the
    split is not prefixed again (never ``test_test_examples``)."""
    prefix = f"{evaluation.get('split', 'test')}_"
    return {k if k.startswith(prefix) else prefix + k: v for k, v in _flat(evaluation)}


def _flat(d: dict[str, Any]) -> Iterator[tuple[str, int | float]]:
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, v
