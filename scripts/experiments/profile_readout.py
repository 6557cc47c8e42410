"""Where a DiffusionBlocks prediction's time goes against one end-to-end forward pass
(classification; issue 20 item 5): both readouts and the e2e forward timed interleaved on the same
batch (medians of paired ratios), then a ``torch.profiler`` table of each (self CPU time by
operator), so that the extra work of the B calls (the noise-level embedding, the slot's entry,
the head and the soft bridge per call) shows next to the layers'.

    OMP_NUM_THREADS=1 python scripts/experiments/profile_readout.py --preset vit-fmnist-quick \
        --blocks 3 --threads 1 --repeats 60 [--json FILE] [--count-ops] [--no-profile]

Untrained weights (speed does not depend on them); no data read (random images of the preset's
shape). Prints the timings and the profiler tables; ``--json`` writes the timings.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from diffusionblocks.registry import make_config, make_task


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched inside it, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="vit-fmnist-quick")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", default=None)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument(
        "--count-ops",
        action="store_true",
        help="also count the operators each case dispatches (one call each)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    common = {"device": "cpu", "train_subset": 256, "test_subset": 256}
    e2e = make_task(make_config(args.preset, {**common, "method": "e2e"}))
    db = make_task(make_config(args.preset, {**common, "num_blocks": args.blocks}))
    shape = db.train_batch(torch.arange(1))[0].shape[1:]
    images = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(0))
    cases = {
        "e2e forward": lambda: e2e.logits(images),
        "ensemble": lambda: db.predict(images, readout="ensemble"),
        "chain": lambda: db.predict(images, readout="chain"),
    }
    for model in (e2e.model, db.model):
        model.eval()
    times: dict[str, list[float]] = {k: [] for k in cases}
    with torch.no_grad():
        for i in range(args.repeats + 5):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                if i >= 5:
                    times[name].append(time.perf_counter() - t0)
    base = times["e2e forward"]
    record: dict = {
        "protocol": {
            "selected_on": "none",
            "reported_on": "none: timings of untrained models on random images, no data split",
            "seeds": 1,
            "baselines": ["e2e"],
            "command": shlex.join(["python", *sys.argv]),
            "caveats": [f"medians over {args.repeats} interleaved repeats in one process, "
                        f"{args.threads} thread(s), a batch of {args.batch}; ratios are medians "
                        "of the per-repeat ratios to the end-to-end forward"],
        },
        "preset": args.preset, "blocks": args.blocks, "threads": args.threads,
        "batch": args.batch, "repeats": args.repeats, "cases": {},
    }  # fmt: skip
    for name, ts in times.items():
        paired = statistics.median(a / b for a, b in zip(ts, base, strict=True))
        record["cases"][name] = {"median_ms": 1000 * statistics.median(ts),
                                 "median_paired_ratio": paired}  # fmt: skip
        print(f"{name:12s} {1000 * statistics.median(ts):7.2f} ms   {paired:.3f}x e2e")
    if args.count_ops:
        for name, fn in cases.items():
            with torch.no_grad(), _OpCounter() as counter:
                fn()
            print(f"{name:12s} {sum(counter.ops.values())} operators: "
                  f"{dict(counter.ops.most_common())}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    if args.no_profile:
        return
    for name, fn in cases.items():
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                fn()
        print(f"\n== {name} (20 calls)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
