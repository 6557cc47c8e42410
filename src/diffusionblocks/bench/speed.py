"""The speed benchmark: every configuration built side by side in one process, repeats
interleaved so that machine noise hits them alike; medians and ratios to ``e2e``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

import torch

from ..runtime import autocast, threads_for, use_threads
from .configs import SPEED_CONFIGS, config_overrides

if TYPE_CHECKING:
    from ..tasks.base import Task
    from ..training.trainer import Trainer

SPEED_TABLE_KEY = """\
What the columns measure (interleaved repeats in one process; medians):
  median step   time of ONE training step: one block's forward, backward and update for
                dblocks, the whole network for e2e
  vs e2e        ratio of the median steps
  paired ratio  median of the per-repeat ratios (repeats taken moments apart): the ratio to trust
  equal compute one step of every block, each on a freshly fetched batch (e2e: one step), paired
                ratio to e2e: training time at equal layer evaluations, with what DiffusionBlocks
                runs B times as often (shared modules, batch fetches, optimizer calls)
  inference     one prediction of a batch: each block once (dblocks readout), one forward (e2e);
                generation: a batch of images, or gen_length characters, with the run's sampler
                (throughput per unit in the JSON: images/s, characters/s)
Per-step speed is not total training time: at equal compute a dblocks run takes B times the
steps of e2e (each step runs 1/B of the layers): the equal-compute column counts them; `dblocks
compare` measures whole runs."""


class _Entry(TypedDict):
    config: str
    blocks: int
    task: Task
    trainer: Trainer


# ---------------------------------------------------------------------- speed
def run_speed_bench(
    preset: str,
    blocks: list[int],
    overrides: dict[str, Any],
    repeats: int = 10,
    warmup: int = 2,
    configs: tuple[str, ...] = SPEED_CONFIGS,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Median training-step time of every configuration, interleaved in one process, and the
    inference latency of a DiffusionBlocks prediction (each block once) vs one e2e forward."""
    from ..networks.placement import device_of
    from ..registry import make_config, make_task
    from ..training.blockmodel import block_model
    from ..training.trainer import Trainer

    entries: list[_Entry] = []
    baseline = make_config(preset, overrides).baseline_method  # "e2e" rows: recurrent's bptt
    for name in configs:
        for b in [1] if name.startswith("e2e") else blocks:
            ov = {**overrides, **config_overrides(name, b, baseline)}
            config = make_config(preset, ov)
            task = make_task(config)
            entries.append(
                {
                    "config": name,
                    "blocks": b,
                    "task": task,
                    "trainer": Trainer(task, None, progress=False),
                }
            )
    batch = entries[0]["task"].train_batch(torch.arange(entries[0]["task"].config.batch_size))
    device = device_of(block_model(entries[0]["task"].model))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn: Callable[..., object]) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    step_times: dict[int, list[float]] = {i: [] for i in range(len(entries))}
    cases = {
        i: inference_cases(e["task"], batch)
        for i, e in enumerate(entries)
        if not e["config"].endswith("+ckpt")
    }  # the same inference with or without it
    infer_times: dict[tuple[int, str], list[float]] = {
        (i, name): [] for i, cs in cases.items() for name, *_ in cs
    }  # fmt: skip
    round_times: dict[int, list[float]] = {i: [] for i in range(len(entries))}
    # The threads a training run of the first configuration would take (the threads key, or its
    # automatic choice), for every configuration alike.
    threads, threads_reason = threads_for(entries[0]["task"])
    log(f"  {len(entries)} configurations x {repeats} interleaved repeats, {threads} thread(s) "
        f"({threads_reason}) ...")  # fmt: skip
    with use_threads(threads):
        _interleave(entries, batch, cases, repeats, warmup, timed, step_times, round_times,
                    infer_times)  # fmt: skip
    records: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        rec: dict[str, Any] = {
            "config": e["config"],
            "blocks": e["blocks"],
            "device": str(device),
            "threads": threads,
            "threads_chosen_by": threads_reason,
            "batch_size": e["task"].config.batch_size,
            "repeats": repeats,
            "median_step_seconds": statistics.median(step_times[i]),
            "step_seconds": step_times[i],
            "median_round_seconds": statistics.median(round_times[i]),
            "round_seconds": round_times[i],
        }
        inference = []
        for name, _, items, unit in cases.get(i, []):
            times = infer_times[(i, name)]
            median = statistics.median(times)
            inference.append({"what": name, "median_seconds": median, "seconds": times,
                              "items": items, "unit": unit,
                              "items_per_second": items / median})  # fmt: skip
        if inference:  # the first case is what the run's own settings infer
            rec["inference"] = inference
            rec["median_inference_seconds"] = inference[0]["median_seconds"]
            rec["inference_seconds"] = inference[0]["seconds"]
            rec["inference_what"] = inference[0]["what"]
        records.append(rec)
    e2e = next(r for r in records if r["config"] == "e2e")
    for r in records:
        r["step_ratio_to_e2e"] = r["median_step_seconds"] / e2e["median_step_seconds"]
        # Ratio of medians and median of per-repeat ratios (repeats are interleaved, so each
        # repeat's ratio compares two steps taken moments apart).
        r["median_paired_step_ratio"] = statistics.median(
            a / b for a, b in zip(r["step_seconds"], e2e["step_seconds"], strict=True)
        )
        r["equal_compute_ratio"] = statistics.median(
            a / b for a, b in zip(r["round_seconds"], e2e["round_seconds"], strict=True)
        )
        if "median_inference_seconds" in r:
            r["inference_ratio_to_e2e"] = (
                r["median_inference_seconds"] / e2e["median_inference_seconds"]
            )
            for case in r["inference"]:
                case["ratio_to_e2e"] = case["median_seconds"] / e2e["median_inference_seconds"]
    return records


def _interleave(
    entries: list[_Entry], batch: Any, cases: dict[int, Any], repeats: int, warmup: int,
    timed: Callable[[Callable[..., object]], float], step_times: dict[int, list[float]],
    round_times: dict[int, list[float]], infer_times: dict[tuple[int, str], list[float]],
) -> None:  # fmt: skip
    """The benchmark's repeats: each configuration's step, its round of every block, and its
    inference cases, interleaved so that machine noise hits them alike."""
    for repeat in range(warmup + repeats):
        for i, e in enumerate(entries):
            block = repeat % e["trainer"].num_blocks
            t = timed(lambda e=e, block=block: e["trainer"].train_step(block, batch))
            if repeat >= warmup:
                step_times[i].append(t)
        for i, e in enumerate(entries):  # equal compute: every block once, as training does
            t = timed(lambda e=e, repeat=repeat: _round(e["trainer"], repeat))
            if repeat >= warmup:
                round_times[i].append(t)
        for i, cs in cases.items():
            task = entries[i]["task"]
            for name, fn, _, _ in cs:
                gen = torch.Generator().manual_seed(repeat)
                with torch.no_grad(), autocast(task.config.precision, task.device):
                    t = timed(lambda fn=fn, gen=gen: fn(gen))
                if repeat >= warmup:
                    infer_times[(i, name)].append(t)


def _round(trainer: Trainer, repeat: int) -> None:
    """One step of every block (end to end: one step), each on its own batch fetched as the
    training loop fetches it: the training of one end-to-end step's worth of layer
    evaluations, with what runs B times as often (shared modules, batches, optimizer calls)."""
    task = trainer.task
    for block in range(trainer.num_blocks):
        indices = trainer.plan.batch_indices((repeat * trainer.num_blocks + block) % 64)
        trainer.train_step(block, task.train_batch(indices))


def inference_cases(task: Task, batch: Any) -> list[tuple[str, Any, int, str]]:
    """What the speed benchmark times at inference for ``task``: (name, function of a
    generator, items it produces, their unit). The first case is the run's own setting.

    - classification: a batch of predictions: one forward (e2e); the run's readout and the other
      one, each B block calls (DiffusionBlocks);
    - image generation: a batch of images of the run's sampler (``inference_steps`` calls);
    - text: ``gen_length`` characters from an empty prompt (the run's steps and temperature)."""
    c: Any = task.config
    t: Any = task  # each kind's own methods (logits, predict, data)
    if task.predicts == "classes":
        images = batch[0]
        if c.end_to_end:
            return [("forward", lambda g: t.logits(images), len(images), "images/s")]
        readouts = [c.readout, *(r for r in ("ensemble", "chain") if r != c.readout)]
        return [
            (f"{r} readout, {c.num_blocks} calls",
             partial(_predict, t, images, c.num_blocks, r), len(images), "images/s")
            for r in readouts
        ]  # fmt: skip
    if task.generates == "images":
        n = min(16, c.eval_batch_size)
        labels = torch.arange(n) % t.data.num_classes
        what = f"{n} images, {c.steps_at_inference} calls"
        return [(what, lambda g: t.sample(g, labels=labels), n, "images/s")]
    if task.generates == "text":
        length = getattr(c, "gen_length", c.seq_len)  # masked LM: one whole sequence
        what = f"{length} characters"
        return [(what, lambda g: t.sample(g, length=length), length, "characters/s")]
    return []


def _predict(task: Any, images: torch.Tensor, calls: int, readout: str, g: torch.Generator) -> Any:
    return task.predict(images, calls, g, readout=readout)


def format_speed_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| config | B | median step | vs e2e | paired ratio | equal compute | inference "
        "| vs e2e forward |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        inf = r.get("median_inference_seconds")
        inf_text = "-" if inf is None else f"{inf * 1000:.1f} ms"
        ratio_text = "-" if inf is None else f"{r['inference_ratio_to_e2e']:.3f}x"
        lines.append(
            f"| {r['config']} | {r['blocks']} | {r['median_step_seconds'] * 1000:.1f} ms "
            f"| {r['step_ratio_to_e2e']:.3f}x | {r['median_paired_step_ratio']:.3f}x "
            f"| {r['equal_compute_ratio']:.3f}x | {inf_text} | {ratio_text} |"
        )
    lines += [
        "",
        "| config | B | inference | median | throughput | vs e2e |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        for case in r.get("inference", []):
            lines.append(
                f"| {r['config']} | {r['blocks']} | {case['what']} "
                f"| {case['median_seconds'] * 1000:.1f} ms "
                f"| {case['items_per_second']:.1f} {case['unit']} | {case['ratio_to_e2e']:.3f}x |"
            )
    return "\n".join(lines)
