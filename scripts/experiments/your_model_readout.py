"""Your own network (the ``stack`` task): which readout ``readout=auto`` picks for each target kind,
chosen on the validation split, with the end-to-end baselines beside it.

    python scripts/experiments/your_model_readout.py --out /tmp/your-model \
        --json docs/results/your-model/readout/results.json

Data: scikit-learn's 8x8 digits as a user's .npz (offline), classes (the digit) and continuous
targets (two numbers per image: the digit's value and the mean brightness of the top half).
Network: the MLP-Mixer of ``examples/your_model.py`` (6 layers, width 64; continuous: the same
with a 2-value head). Methods: DiffusionBlocks B=3 (both readouts scored on val and test in each
run), end to end (full depth), end to end at depth L/B = 2, end to end with activation
checkpointing; the trivial baseline (majority class / the training mean). 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(Path(__file__).parent), str(ROOT / "examples")]
from protocol import add_caveat_argument, protocol  # noqa: E402

import diffusionblocks as db  # noqa: E402

METHODS = ("dblocks", "e2e", "e2e-shallow", "e2e-ckpt")


def build_continuous() -> db.ResidualStack:
    """The example's MLP-Mixer with a head of two values."""
    from torch import nn
    from your_model import WIDTH, build

    stack = build()
    stack.head = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 2))
    stack.target = "continuous"
    return stack


def make_data(folder: Path) -> dict[str, Path]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)
    continuous = np.stack([d.target * 1.0, x[:, :4].mean((1, 2))], 1).astype(np.float32)
    np.savez(folder / "classes.npz", x=x, y=d.target)
    np.savez(folder / "continuous.npz", x=x, y=continuous)
    return {"classes": folder / "classes.npz", "continuous": folder / "continuous.npz"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs")
    parser.add_argument("--json", required=True, help="the results file to write")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=20)
    add_caveat_argument(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(out)
    models = {"classes": f"{ROOT}/examples/your_model.py:build",
              "continuous": f"{Path(__file__).resolve()}:build_continuous"}  # fmt: skip
    rows = []
    for target in ("classes", "continuous"):
        for method in METHODS:
            for seed in range(args.seeds):
                run = out / f"{target}-{method}-s{seed}"
                model = db.train("your-model", out=run, progress=False, model=models[target],
                                 data=data[target], target=target, method=method, seed=seed,
                                 num_blocks=3, epochs=args.epochs, threads=1)  # fmt: skip
                r = model.results
                rows.append({
                    "target": target, "method": method, "seed": seed, "run": str(run),
                    "val": r["eval_val"], "test": r["eval"], "trivial": r["trivial"],
                    "train_seconds": r["timing"]["train_seconds"],
                    "peak_state_bytes": r["memory"]["peak_state_bytes"],
                    "config": r["config"],
                })  # fmt: skip
                print(target, method, seed, {k: r["eval_val"].get(k) for k in ("accuracy", "mse")},
                      flush=True)  # fmt: skip
    summary = {}
    for target in ("classes", "continuous"):
        key = "accuracy" if target == "classes" else "mse"
        for method in METHODS:
            group = [r for r in rows if r["target"] == target and r["method"] == method]
            for split in ("val", "test"):
                names = ["ensemble", "chain"] if method == "dblocks" else [method]
                for name in names:
                    vals = [(r[split]["readouts"][name] if method == "dblocks" else r[split][key])
                            for r in group]  # fmt: skip
                    label = f"dblocks {name}" if method == "dblocks" else method
                    summary.setdefault(target, {}).setdefault(split, {})[label] = {
                        key: statistics.mean(vals),
                        "std": statistics.stdev(vals),
                        "seeds": vals,
                    }
            summary[target]["trivial"] = (
                rows[0]["trivial"]
                if target == "classes"
                else next(r["trivial"] for r in rows if r["target"] == target)
            )
    record = {
        "protocol": protocol(
            selected_on="val",
            reported_on="val and test",
            seeds=args.seeds,
            baselines=["e2e", "e2e-shallow", "e2e-ckpt", "trivial"],
            caveats=[
                "one small dataset (1,455 training images, 8x8 digits), "
                "CPU, 20 epochs per block; a default for a user's own "
                "network, not a claim about one",
                *args.caveat,
            ],
            argv=argv,
            script=__file__,
        ),  # fmt: skip
        "summary": summary,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
