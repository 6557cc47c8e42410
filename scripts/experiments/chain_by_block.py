"""Where a classification chain gets its accuracy: the validation accuracy of the chain stopped
after each block (results.json -> eval_val -> per_block -> chain_accuracy), mean and s.d. over
the seeds of a `dblocks compare` folder's DiffusionBlocks runs. Reads val only. Writes
``{"protocol": ..., "rows": [one row per stopping point]}``.

    python scripts/experiments/chain_by_block.py docs/results/classification/vit-fmnist \
        --json docs/results/classification/vit-fmnist/chain-by-block.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from diffusionblocks.comparison import mean_sd

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402


def chain_by_block(folder: Path) -> list[dict[str, object]]:
    # a comparison's folder (dblocks/seed-*) or a published one (runs/dblocks/seed-*); not
    # deeper, where other comparisons may have been published beside it
    runs = sorted([*folder.glob("dblocks/seed-*/results.json"),
                   *folder.glob("runs/dblocks/seed-*/results.json")])  # fmt: skip
    if not runs:
        raise SystemExit(f"{folder} holds no dblocks/seed-*/results.json")
    results = [json.loads(p.read_text()) for p in runs]
    configs = {json.dumps({k: v for k, v in r.get("config", {}).items() if k != "seed"},
                          sort_keys=True) for r in results}  # fmt: skip
    if len(configs) > 1:
        raise SystemExit(f"{folder}: its dblocks runs differ in more than their seed")
    per_seed = [r["eval_val"]["per_block"] for r in results]
    layers = results[0]["accounting"]["layers_per_unit"]
    rows = []
    for b in range(len(per_seed[0])):
        values = [seed[b]["chain_accuracy"] for seed in per_seed]
        summary = mean_sd(values)
        rows.append({
            "after_block": b,
            "layers_run": sum(layers[: b + 1]),
            "sigma_interval": per_seed[0][b]["sigma_interval"],
            "val_values": values,
            "val_mean": summary["mean"],
            "val_sd": summary["sd"],
            "runs": [str(p.parent.relative_to(folder)) for p in runs],
        })  # fmt: skip
    return rows


def chain_protocol(folder: Path, rows: list[dict[str, object]], caveats: Sequence[str] = (),
                   argv: Sequence[str] | None = None) -> dict[str, object]:  # fmt: skip
    """The protocol object of the file: a diagnostic on val of the DiffusionBlocks runs alone."""
    runs = rows[0]["runs"] if rows else []
    return protocol(
        selected_on="none (a diagnostic of where the chain gets its accuracy; nothing is chosen)",
        reported_on="val", seeds=len(runs) if isinstance(runs, list) else 0,  # one per seed
        baselines=["the full chain (stopped after the last block)"],
        caveats=["val only: no test number in this file",
                 f"the DiffusionBlocks runs of {folder} alone: the baseline methods at the same "
                 "seeds are in its comparison.json", *caveats],
        argv=argv, script=__file__)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    rows = chain_by_block(args.folder)
    for r in rows:
        sd = f" ± {r['val_sd']:.4f}" if r["val_sd"] is not None else ""
        print(f"chain stopped after block {r['after_block']}: val accuracy {r['val_mean']:.4f}{sd}")
    if args.json:
        record = {"protocol": chain_protocol(args.folder, rows, args.caveat, argv), "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
