"""Inference-only readouts of trained DiffusionBlocks classification runs, on the validation
split: the chain (3 calls by default) under bridge temperatures 1 (the paper), 0 (hard), 0.5 and
2; the chain's calls read out together (mean log-probability, mean probability); 2, 4 and 6
calls; each block alone at sigma_max (on pure noise and on z = 0); and every block at sigma_max
together (the ``readout=ensemble`` of the library, here on pure noise). Mean and s.d. over runs.
Nothing is trained and nothing is written into the runs.

    python scripts/experiments/chain_readouts.py RUN [RUN ...] --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffusionblocks.comparison import mean_sd
from diffusionblocks.loading import load_run

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402


def readouts(run: Path) -> dict[str, float]:
    task, _ = load_run(run)
    task.model.eval()
    c = task.config
    own_temperature = c.bridge_temperature
    hits: dict[str, list[int]] = {}

    def add(name: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        h = hits.setdefault(name, [0, 0])
        h[0] += int((logits.argmax(-1) == labels).sum())
        h[1] += len(labels)

    def together(calls: list[tuple[int, float, torch.Tensor]]) -> torch.Tensor:
        return torch.stack([logits.log_softmax(-1) for _, _, logits in calls])

    with torch.no_grad():
        for images, labels in task._eval_batches("val"):
            n, B, dev = len(labels), c.num_blocks, task.device
            for temperature in (1.0, 0.0, 0.5, 2.0):
                c.bridge_temperature = temperature
                gen = torch.Generator().manual_seed(c.seed + 1_000_003)
                final, calls = task.predict(images, B, gen, readout="chain")
                logp = together(calls)
                add(f"chain, {B} calls, T={temperature}: last call", final, labels)
                add(f"chain, {B} calls, T={temperature}: mean log-prob of calls", logp.mean(0),
                    labels)  # fmt: skip
                add(f"chain, {B} calls, T={temperature}: mean prob of calls", logp.exp().mean(0),
                    labels)  # fmt: skip
            c.bridge_temperature = own_temperature
            for steps in (2, 4, 6):
                gen = torch.Generator().manual_seed(c.seed + 1_000_003)
                final, calls = task.predict(images, steps, gen, readout="chain")
                add(f"chain, {steps} calls: last call", final, labels)
                add(f"chain, {steps} calls: mean log-prob of calls", together(calls).mean(0),
                    labels)  # fmt: skip
            gen = torch.Generator().manual_seed(c.seed + 2_000_003)
            s_max = torch.full((n,), task.schedule.sigma_max, device=dev)
            noisy = []
            for b in range(B):
                patches = task.block_features(b, images)
                z = task.schedule.sigma_max * torch.randn(n, task.model.shape.hidden, generator=gen)
                z = z.to(dev)
                logits = task.block_output(b, z, s_max, patches)
                noisy.append(logits.log_softmax(-1))
                add(f"block {b} alone at sigma_max, pure noise", logits, labels)
                add(f"block {b} alone at sigma_max, z = 0",
                    task.block_output(b, torch.zeros_like(z), s_max, patches), labels)  # fmt: skip
            add("every block at sigma_max, pure noise, mean log-prob", torch.stack(noisy).mean(0),
                labels)  # fmt: skip
            add("every block at sigma_max, z = 0, mean log-prob (readout=ensemble)",
                task.ensemble(images)[0], labels)  # fmt: skip
    return {name: h[0] / h[1] for name, h in hits.items()}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    per_run = {str(run): readouts(run) for run in args.runs}
    names = list(next(iter(per_run.values())))
    table: dict[str, Any] = {}
    for name in names:
        values = [acc[name] for acc in per_run.values()]
        table[name] = mean_sd(values)
        print(f"{name:68s} {table[name]['mean']:.4f} ± {table[name]['sd'] or 0:.4f}")
    if args.json:
        # The readouts are compared on val to choose one (the ensemble became the default after
        # them); every row reads the same DiffusionBlocks runs: no baseline method.
        record = protocol(
            selected_on="val", reported_on="val", seeds=len(per_run), baselines=[],
            caveats=["val only: no test number in this file",
                     "readouts of the DiffusionBlocks runs only: no baseline method in this file",
                     *args.caveat],
            argv=argv, script=__file__)  # fmt: skip
        out = {"protocol": record, "split": "val", "runs": list(per_run), "readouts": table}
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
