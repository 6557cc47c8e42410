"""The speed benchmark: every configuration built side by side in one process, repeats
interleaved so that machine noise hits them alike; medians and ratios to ``e2e``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import torch

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
  inference     one prediction of a batch: each block once (dblocks readout), one forward (e2e)
Per-step speed is not total training time: at equal compute a dblocks run takes B times the
steps of e2e (each step runs 1/B of the layers); `dblocks compare` measures whole runs."""


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
    for name in configs:
        for b in [1] if name.startswith("e2e") else blocks:
            ov = {**overrides, **config_overrides(name, b)}
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
    infer_times: dict[int, list[float]] = {i: [] for i in range(len(entries))}
    images = batch[0]
    log(f"  {len(entries)} configurations x {repeats} interleaved repeats ...")
    for repeat in range(warmup + repeats):
        for i, e in enumerate(entries):
            block = repeat % e["trainer"].num_blocks
            t = timed(lambda e=e, block=block: e["trainer"].train_step(block, batch))
            if repeat >= warmup:
                step_times[i].append(t)
        for i, e in enumerate(entries):
            if e["config"].endswith("+ckpt"):
                continue  # inference is the same with or without activation checkpointing
            task = e["task"]
            with torch.no_grad():
                if e["config"] == "e2e":
                    t = timed(lambda task=task: task.logits(images))
                else:
                    gen = torch.Generator().manual_seed(repeat)
                    t = timed(
                        lambda task=task, gen=gen: task.predict(images, task.config.num_blocks, gen)
                    )
            if repeat >= warmup:
                infer_times[i].append(t)
    records: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        rec: dict[str, Any] = {
            "config": e["config"],
            "blocks": e["blocks"],
            "device": str(device),
            "batch_size": e["task"].config.batch_size,
            "repeats": repeats,
            "median_step_seconds": statistics.median(step_times[i]),
            "step_seconds": step_times[i],
        }
        if infer_times[i]:
            rec["median_inference_seconds"] = statistics.median(infer_times[i])
            rec["inference_seconds"] = infer_times[i]
        records.append(rec)
    e2e = next(r for r in records if r["config"] == "e2e")
    for r in records:
        r["step_ratio_to_e2e"] = r["median_step_seconds"] / e2e["median_step_seconds"]
        # Ratio of medians and median of per-repeat ratios (repeats are interleaved, so each
        # repeat's ratio compares two steps taken moments apart).
        r["median_paired_step_ratio"] = statistics.median(
            a / b for a, b in zip(r["step_seconds"], e2e["step_seconds"], strict=True)
        )
        if "median_inference_seconds" in r:
            r["inference_ratio_to_e2e"] = (
                r["median_inference_seconds"] / e2e["median_inference_seconds"]
            )
    return records


def format_speed_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| config | B | median step | vs e2e | paired ratio | inference | vs e2e forward |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        inf = r.get("median_inference_seconds")
        inf_text = "-" if inf is None else f"{inf * 1000:.1f} ms"
        ratio_text = "-" if inf is None else f"{r['inference_ratio_to_e2e']:.3f}x"
        lines.append(
            f"| {r['config']} | {r['blocks']} | {r['median_step_seconds'] * 1000:.1f} ms "
            f"| {r['step_ratio_to_e2e']:.3f}x | {r['median_paired_step_ratio']:.3f}x "
            f"| {inf_text} | {ratio_text} |"
        )
    return "\n".join(lines)
