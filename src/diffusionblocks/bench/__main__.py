"""``python -m diffusionblocks.bench worker ...``: one memory-benchmark configuration measured in
this (fresh) process, printed as one JSON line; ``... cap-worker ...``: one training run under a
memory cap (``dblocks bench cap``), its status printed as one JSON line; ``... threads-worker
...``: training-step times on this process's threads (``dblocks bench threads``)."""

from __future__ import annotations

import json
import sys

from .cap import cap_worker
from .memory import measure_memory
from .threads import threads_worker


def _worker(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m diffusionblocks.bench worker")
    p.add_argument("--preset", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--overrides", default="{}")
    args = p.parse_args(argv)
    record = measure_memory(args.preset, json.loads(args.overrides), args.steps)
    print(json.dumps(record))
    return 0


def _cap_worker(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m diffusionblocks.bench cap-worker")
    p.add_argument("--preset", required=True)
    p.add_argument("--overrides", default="{}")
    p.add_argument("--out", required=True)
    p.add_argument("--cap", type=int)
    args = p.parse_args(argv)
    from ..cli import main

    record = cap_worker(args.preset, json.loads(args.overrides), args.out, args.cap, main)
    print(json.dumps(record))
    return 0


def _threads_worker(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m diffusionblocks.bench threads-worker")
    p.add_argument("--preset", required=True)
    p.add_argument("--overrides", default="{}")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sync-dir", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--processes", type=int, default=1)
    a = p.parse_args(argv)
    record = threads_worker(a.preset, json.loads(a.overrides), a.steps, a.warmup, a.sync_dir,
                            a.index, a.processes)  # fmt: skip
    print(json.dumps(record))
    return 0


if __name__ == "__main__":  # pragma: no cover - subprocess entry point
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(_worker(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "cap-worker":
        sys.exit(_cap_worker(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "threads-worker":
        sys.exit(_threads_worker(sys.argv[2:]))
    sys.exit(
        "usage: python -m diffusionblocks.bench worker --preset P [--steps N] [--overrides JSON]"
        " | cap-worker --preset P --out DIR [--overrides JSON] [--cap BYTES]"
        " | threads-worker --preset P --sync-dir DIR [--overrides JSON] [--steps N]"
    )
