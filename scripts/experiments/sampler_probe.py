"""Other samplers for the classification chain, on trained DiffusionBlocks runs' validation split:
the paper's Euler chain (B calls on the CDF-uniform levels), Heun's second-order correction on
the same levels (2B - 1 calls), ancestral steps (each step jumps to the denoised estimate plus
fresh noise at the next level: B calls) and EDM-style churn (noise added to raise each level by
40% before its call: B calls). Every sampler routes each call to the block owning its sigma and
bridges with the soft bridge at the run's temperature; the last call's logits predict. Mean and
s.d. of val accuracy over runs. Nothing is trained and nothing is written into the runs.

    python scripts/experiments/sampler_probe.py RUN [RUN ...] --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffusionblocks.comparison import mean_sd
from diffusionblocks.diffusion import chain_levels, soft_bridge
from diffusionblocks.loading import load_run

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402

CHURN = 0.4  # sigma raised by 40% before each call (EDM's gamma, below its cap sqrt(2) - 1)


def denoise(
    task: Any, images: torch.Tensor, z: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the block owning ``sigma`` on z, and their soft bridge (its estimate D)."""
    block = task.route(sigma)
    sigmas = torch.full((len(z),), sigma, device=z.device)
    logits = task.block_output(block, z, sigmas, task.block_features(block, images))
    return logits, soft_bridge(logits, task.label_table(), task.config.bridge_temperature)


def probe(run: Path) -> dict[str, float]:
    task, _ = load_run(run)
    task.model.eval()
    c = task.config
    levels = chain_levels(c.num_blocks, task.schedule, c.grid)
    hits: dict[str, list[int]] = {}
    with torch.no_grad():
        for images, labels in task._eval_batches("val"):
            n, dev = len(labels), task.device
            table = task.label_table()

            for name in ("euler", "heun", "ancestral", "churn"):
                gen = torch.Generator().manual_seed(c.seed + 1_000_003)
                z = levels[0] * torch.randn(n, table.shape[1], generator=gen).to(dev)
                for i, sigma in enumerate(levels):
                    if name == "churn" and i > 0:
                        hat = sigma * (1 + CHURN)
                        z = z + math.sqrt(hat**2 - sigma**2) * torch.randn(
                            z.shape, generator=gen).to(dev)  # fmt: skip
                        sigma = hat
                    logits, d = denoise(task, images, z, sigma)
                    if i + 1 == len(levels):
                        break
                    nxt = levels[i + 1]
                    if name == "ancestral":
                        z = d + nxt * torch.randn(z.shape, generator=gen).to(dev)
                        continue
                    slope = (z - d) / sigma
                    z_next = z + (nxt - sigma) * slope
                    if name == "heun":  # correct with the slope at the next level
                        _, d2 = denoise(task, images, z_next, nxt)
                        z_next = z + (nxt - sigma) * (slope + (z_next - d2) / nxt) / 2
                    z = z_next
                h = hits.setdefault(name, [0, 0])
                h[0] += int((logits.argmax(-1) == labels).sum())
                h[1] += n
    return {name: right / total for name, (right, total) in hits.items()}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--json", type=Path)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    per_run = [probe(run) for run in args.runs]
    summary: dict[str, Any] = {k: mean_sd([r[k] for r in per_run]) for k in per_run[0]}
    for k, v in summary.items():
        print(f"{k:<10} {v['mean']:.4f} ± {v['sd']:.4f}")
    if args.json:
        record = protocol(
            selected_on="none (a lever screened on val; nothing chosen)", reported_on="val",
            seeds=len(args.runs), baselines=["euler chain (the paper's sampler)"],
            caveats=["val only: no test number in this file", *args.caveat],
            argv=argv, script=__file__)  # fmt: skip
        out = {"protocol": record, "split": "val", "runs": [str(r) for r in args.runs],
               "churn": CHURN, "summary": summary, "per_run": per_run}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
