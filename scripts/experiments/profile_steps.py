"""Where a training step's time goes, end to end against DiffusionBlocks at equal compute.

    python scripts/experiments/profile_steps.py --preset vit-fmnist-quick --steps 60 \
        --threads 1 --json OUT.json

Builds the run of each method (``e2e`` and ``dblocks`` with the preset's B) in this process,
trains it ``--steps`` steps as the training loop does (a batch fetched per step, every block in
turn), timing the parts of each step with the clock: fetching the batch, the loss's forward pass
(and inside it the shared modules' forward: stem, embeddings, head, every child module of the
network outside its blocks), the backward pass, gradient clipping, the optimizer update, and the
rest of the step (bookkeeping). Reports milliseconds per step and per end-to-end step's worth of
layer evaluations (B DiffusionBlocks steps), and the ratio of each part to end to end's. The
first ``--warmup`` steps are not counted. Steps alternate between the methods so that machine
noise hits them alike.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import optimizers
from diffusionblocks.training import trainer as trainer_module
from diffusionblocks.training.trainer import Trainer

PARTS = ("batch", "forward", "shared_forward", "backward", "clip", "optimizer", "other")


class StepClock:
    """Wraps a trainer's task and the functions a step calls with timers (perf_counter)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.times: dict[str, float] = defaultdict(float)
        task = trainer.task
        loss, fetch = task.loss, task.train_batch

        def timed_loss(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = loss(*args, **kwargs)
            value = out[0]
            self.times["forward"] += time.perf_counter() - t0
            backward = value.backward

            def timed_backward(*a: Any, **k: Any) -> Any:
                t1 = time.perf_counter()
                result = backward(*a, **k)
                self.times["backward"] += time.perf_counter() - t1
                return result

            value.backward = timed_backward
            return out

        def timed_fetch(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fetch(*args, **kwargs)
            self.times["batch"] += time.perf_counter() - t0
            return out

        task.loss = timed_loss  # type: ignore[method-assign]
        task.train_batch = timed_fetch  # type: ignore[method-assign]
        self._starts: dict[int, float] = {}
        for name, child in task.model.named_children():
            if name != "blocks":
                child.register_forward_pre_hook(self._enter)
                child.register_forward_hook(self._leave)

    def _enter(self, module: torch.nn.Module, args: Any) -> None:
        self._starts[id(module)] = time.perf_counter()

    def _leave(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        self.times["shared_forward"] += time.perf_counter() - self._starts.pop(id(module))


def patch_globals(clocks: dict[str, StepClock], current: list[str]) -> None:
    """Time gradient clipping and the optimizer update of whichever trainer is stepping."""
    clip, step_at = torch.nn.utils.clip_grad_norm_, optimizers.step_at

    def timed_clip(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = clip(*args, **kwargs)
        clocks[current[0]].times["clip"] += time.perf_counter() - t0
        return out

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = step_at(*args, **kwargs)
        clocks[current[0]].times["optimizer"] += time.perf_counter() - t0
        return out

    torch.nn.utils.clip_grad_norm_ = timed_clip
    trainer_module.step_at = timed_step  # the name the trainer calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit-fmnist-quick")
    ap.add_argument("--steps", type=int, default=60, help="end-to-end steps timed")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    trainers: dict[str, Trainer] = {}
    for method in ("e2e", "dblocks"):
        config = make_config(
            args.preset, {"method": method, "device": "cpu", "threads": args.threads}
        )
        trainers[method] = Trainer(make_task(config), None, progress=False)
    clocks = {m: StepClock(t) for m, t in trainers.items()}
    current = ["e2e"]
    patch_globals(clocks, current)
    per_round: dict[str, list[dict[str, float]]] = {m: [] for m in trainers}
    for rnd in range(args.warmup + args.steps):
        for method, tr in trainers.items():  # one e2e step, then B DiffusionBlocks steps
            current[0] = method
            clock = clocks[method]
            clock.times.clear()
            t0 = time.perf_counter()
            for block in range(tr.num_blocks):
                step = rnd * tr.num_blocks + block
                batch = tr.task.train_batch(tr.plan.batch_indices(step % tr.plan.steps_per_epoch))
                tr.train_step(block, batch)
            total = time.perf_counter() - t0
            parts = dict(clock.times)
            parts["forward"] -= parts.get("shared_forward", 0.0)  # the blocks' part of it
            parts["other"] = total - sum(parts.get(p, 0.0) for p in PARTS if p != "other")
            parts["total"] = total
            if rnd >= args.warmup:
                per_round[method].append(parts)
    out: dict[str, Any] = {}
    for method, rounds in per_round.items():
        b = trainers[method].num_blocks
        out[method] = {
            "blocks": b,
            "ms_per_round": {
                p: 1000 * statistics.median(r.get(p, 0.0) for r in rounds)
                for p in (*PARTS, "total")
            },  # fmt: skip
            "ms_per_step": {
                p: 1000 * statistics.median(r.get(p, 0.0) for r in rounds) / b
                for p in (*PARTS, "total")
            },  # fmt: skip
        }
    e2e = out["e2e"]["ms_per_round"]
    out["dblocks"]["round_vs_e2e"] = {
        p: (out["dblocks"]["ms_per_round"][p] / e2e[p]) if e2e[p] > 0 else None
        for p in (*PARTS, "total")
    }
    out["paired_total_ratio"] = statistics.median(
        d["total"] / e["total"] for d, e in zip(per_round["dblocks"], per_round["e2e"], strict=True)
    )
    print(f"{'part':16s} {'e2e ms/step':>12s} {'dblocks ms/round (B steps)':>28s} {'ratio':>7s}")
    for p in (*PARTS, "total"):
        ratio = out["dblocks"]["round_vs_e2e"][p]
        print(f"{p:16s} {e2e[p]:12.2f} {out['dblocks']['ms_per_round'][p]:28.2f} "
              f"{'-' if ratio is None else f'{ratio:.2f}x':>7s}")  # fmt: skip
    print(f"paired ratio of the totals (median over rounds): {out['paired_total_ratio']:.3f}x")
    if args.json:
        record = {
            "protocol": {
                "selected_on": "none",
                "reported_on": "none: timings, no data split",
                "seeds": 1,
                "baselines": ["e2e"],
                "command": shlex.join(["python", *sys.argv]),
                "caveats": [f"medians over {args.steps} rounds in one process, {args.threads} "
                            "thread(s); an e2e round is one step, a dblocks round one step of "
                            "every block (equal layer evaluations)"],
            },
            "preset": args.preset,
            "threads": args.threads,
            **out,
        }  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
