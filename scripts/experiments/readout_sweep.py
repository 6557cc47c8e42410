"""Validation accuracy of DiffusionBlocks classification runs under both readouts: per setting
(a folder of ``seed-N`` run folders, or a ``dblocks compare`` folder's ``dblocks`` runs), the chain
(the paper's), the ensemble (every block once at sigma_max), the chain stopped after each block,
mean and s.d. over seeds, and the paired difference of each setting from the first one given.
Reads val only: the runs' ``eval_val`` (runs trained before the ensemble readout existed are
re-evaluated on val with ``--reeval``, which loads each run; nothing is written into the runs).
Writes ``{"protocol": ..., "rows": [one summary per setting]}``.

    python scripts/experiments/readout_sweep.py --json OUT.json \\
        preset=/tmp/depth/vit-mnist1d/dblocks swap0.1=/tmp/r17/swap01 --reeval
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import mean_sd

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402


def seed_row(run: Path, reeval: bool) -> dict[str, Any]:
    ev = json.loads((run / "results.json").read_text())["eval_val"]
    if "readouts" not in ev:
        if not reeval:
            raise SystemExit(f"{run}: no readouts in eval_val (trained before them): --reeval")
        from diffusionblocks.loading import evaluate_run

        ev = evaluate_run(run, steps=[], split="val")
    return {
        "run": str(run),
        "seed": json.loads((run / "config.json").read_text())["config"]["seed"],
        "chain": ev["readouts"]["chain"],
        "ensemble": ev["readouts"]["ensemble"],
        "chain_after_block": [b["chain_accuracy"] for b in ev["per_block"]],
    }


def summarise(name: str, folder: Path, reeval: bool) -> dict[str, Any]:
    runs = sorted(p.parent for p in folder.glob("seed-*/results.json"))
    if not runs:
        raise SystemExit(f"{folder} holds no seed-*/results.json")
    rows = [seed_row(r, reeval) for r in runs]
    blocks = len(rows[0]["chain_after_block"])
    return {
        "setting": name,
        "folder": str(folder),
        "seeds": [r["seed"] for r in rows],
        "chain": mean_sd([r["chain"] for r in rows]),
        "ensemble": mean_sd([r["ensemble"] for r in rows]),
        "first_call": mean_sd([r["chain_after_block"][0] for r in rows]),
        "chain_after_block": [
            mean_sd([r["chain_after_block"][b] for r in rows]) for b in range(blocks)
        ],  # fmt: skip
        "per_seed": rows,
    }


def paired(base: dict[str, Any], other: dict[str, Any], key: str) -> dict[str, Any] | None:
    """other - base on the seeds both have, for readout ``key``."""
    a = {r["seed"]: r[key] for r in base["per_seed"]}
    diffs = [r[key] - a[r["seed"]] for r in other["per_seed"] if r["seed"] in a]
    return mean_sd(diffs) if diffs else None


def sweep_protocol(out: list[dict[str, Any]], caveats: Sequence[str] = (),
                   argv: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The protocol object: settings compared on val, against the first one given."""
    return protocol(
        selected_on="val", reported_on="val", seeds=max(len(s["seeds"]) for s in out),
        baselines=[f"{out[0]['setting']} (the first setting: paired differences are taken from "
                   "it)"],
        caveats=["val only: no test number in this file",
                 *[f"{s['setting']}: {len(s['seeds'])} seeds" for s in out
                   if len(s["seeds"]) < max(len(t["seeds"]) for t in out)], *caveats],
        argv=argv, script=__file__)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="+", help="NAME=FOLDER; the first is the reference")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--reeval", action="store_true")
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    out = []
    for item in args.settings:
        name, _, folder = item.partition("=")
        out.append(summarise(name, Path(folder), args.reeval))
    for s in out:
        s["paired_vs_first"] = {k: paired(out[0], s, k) for k in ("chain", "ensemble")}
        line = "  ".join(f"{k} {s[k]['mean']:.4f} ± {s[k]['sd'] or 0:.4f}"
                         for k in ("first_call", "chain", "ensemble"))  # fmt: skip
        d = s["paired_vs_first"]["ensemble"]
        print(
            f"{s['setting']:>12} ({len(s['seeds'])} seeds)  {line}  "
            f"ensemble - {out[0]['setting']}: {d['mean']:+.4f} ± {d['sd'] or 0:.4f}"
        )
    if args.json:
        record = {"protocol": sweep_protocol(out, args.caveat, argv), "rows": out}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
