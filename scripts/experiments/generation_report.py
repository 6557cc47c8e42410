"""The first-round image-generation table from the runs of
``scripts/experiments/generation_cpu.sh`` (preset ``dit-fmnist``).

    python scripts/experiments/generation_report.py [RUNS_DIR] [--caveat TEXT ...]
    # RUNS_DIR: runs/generation-first-round

Writes ``docs/results/generation/first-round/results.{json,csv}`` (one row per run with its
exact command and the recorded architecture) and prints the Markdown table. Also measures two
reference points on the same FID scale (the shipped Fashion-MNIST evaluator, reference = the
10,000 test images): 2,000 real *training* images (what a perfect generator would score with
this sample size) and 2,000 images of uniform noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from diffusionblocks import fid
from diffusionblocks.data.images import load_fashion_mnist

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol, seeds_per_method  # noqa: E402

OUT = Path("docs/results/generation/first-round")
RUNS = Path("runs/generation-first-round")  # where generation_cpu.sh trains


def reference_points(n: int = 2000) -> dict[str, float]:
    data = load_fashion_mnist()
    ev = fid.EvaluatorFeatures("cpu")
    ref = data.test_x
    pick = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))[:n]
    real = data.train_x[pick]
    noise = torch.rand(n, *ref.shape[1:], generator=torch.Generator().manual_seed(0))
    return {
        "real_train_images": fid.fid_against(ev, real, ref),
        "uniform_noise": fid.fid_against(ev, noise, ref),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="?", default=RUNS)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    runs = args.runs
    rows = []
    for run in sorted(runs.glob("*/")):
        f = run / "results.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        cfg, ev = r["config"], r["eval"]
        rows.append({
            "run": run.name,
            "method": cfg["method"],
            "num_blocks": cfg["num_blocks"] if cfg["method"] == "dblocks" else 1,
            "partition": cfg["partition"] if cfg["method"] == "dblocks" else "",
            "seed": cfg["seed"],
            "depth": cfg["depth"],
            "hidden": cfg["hidden"],
            "patch_size": cfg["patch_size"],
            "epochs_per_block": cfg["epochs"],
            "fid_evaluator": round(ev["fid"], 2),
            "fid_samples": ev["samples"],
            "sampling_steps": ev["steps"],
            "cfg_scale": ev["cfg_scale"],
            "class_agreement": round(ev["class_agreement"], 4),
            "class_counts": ev["class_counts"],
            "layer_evals_per_image": ev["layer_evals_per_image"],
            "heldout_mse_per_unit": [round(v, 5) for v in ev["heldout_mse_per_unit"]],
            "training_layer_evaluations": r["accounting"]["layer_evaluations"],
            "train_seconds": round(r["timing"]["train_seconds"]),
            "command": r["command"],
        })  # fmt: skip
    refs = reference_points()
    OUT.mkdir(parents=True, exist_ok=True)
    record = protocol(
        selected_on="none (nothing is chosen on these numbers)",
        reported_on="test",
        seeds=seeds_per_method(rows),
        baselines=sorted({row["method"] for row in rows} - {"dblocks"}),
        caveats=["FID from generated samples against the 10,000 test images in the feature space "
                 "of the package's Fashion-MNIST classifier, not Inception: not comparable with "
                 "the paper's", *args.caveat],
        argv=argv, script=__file__,
        preceded_by="bash scripts/experiments/generation_cpu.sh" if runs == RUNS else None,
    )  # fmt: skip
    (OUT / "results.json").write_text(
        json.dumps({"protocol": record, "runs": rows, "reference_fid": refs}, indent=2) + "\n"
    )
    keys = [k for k in rows[0] if not isinstance(rows[0][k], list)]
    with open(OUT / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print("| run | B | partition | FID (evaluator) | class agreement | layer evals / image "
          "| train time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['num_blocks']} | {row['partition'] or '-'} "
              f"| {row['fid_evaluator']:.1f} | {row['class_agreement']:.3f} "
              f"| {row['layer_evals_per_image']} | {row['train_seconds']} s |")  # fmt: skip
    print(f"\nreference: 2000 real training images {refs['real_train_images']:.2f}, "
          f"2000 uniform-noise images {refs['uniform_noise']:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
