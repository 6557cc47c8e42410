"""Validation next-character CE of autoregressive DiffusionBlocks runs read out three ways (from
each run's results.json -> eval_val): one call of the noisiest block at sigma_max (a likelihood),
every block once at sigma_max with log-probabilities averaged (``ensemble_call``, a likelihood),
and the default chain's last call (accuracy only: its CE is not a likelihood); beside the e2e
rows of `dblocks compare` folders. Mean and s.d. over seeds. Reads val only.

    python scripts/experiments/ar_readouts.py RUNS_FOLDER --e2e NAME=COMPARE_FOLDER ... --json OUT
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


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="a folder of seed-N DiffusionBlocks run folders")
    ap.add_argument("--e2e", action="append", default=[], help="NAME=compare folder")
    ap.add_argument("--json", type=Path)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    results = [json.loads(p.read_text()) for p in sorted(args.runs.glob("seed-*/results.json"))]
    if not results:
        raise SystemExit(f"{args.runs} holds no seed-*/results.json")
    evs = [r["eval_val"] for r in results]
    out: dict[str, Any] = {
        "protocol": None,  # filled in below, once the baselines are read
        "split": "val",
        "runs": str(args.runs),
        "dblocks": {
            "one_call_ce": mean_sd([e["sigma_max_call"]["heldout_ce"] for e in evs]),
            "ensemble_ce": mean_sd([e["ensemble_call"]["heldout_ce"] for e in evs]),
            "one_call_accuracy": mean_sd([e["sigma_max_call"]["heldout_accuracy"] for e in evs]),
            "ensemble_accuracy": mean_sd([e["ensemble_call"]["heldout_accuracy"] for e in evs]),
            "chain_accuracy": mean_sd([e["heldout_accuracy"] for e in evs]),
            "train_flops": results[0]["compute"]["train_flops"],
            "train_peak_bytes": mean_sd([r["memory"]["train_peak_rss_bytes"] for r in results]),
        },
        "e2e": {},
    }
    for item in args.e2e:
        name, _, folder = item.partition("=")
        for row in json.loads((Path(folder) / "comparison.json").read_text())["rows"]:
            if row["method"] in ("e2e", "e2e-shallow"):
                key = f"{name}:{row['method']}"
                out["e2e"][key] = {"val_ce": mean_sd(row["val_values"]),
                                   "train_flops": row["train_flops"]}  # fmt: skip
    # The readouts are compared on val to choose one (the ensemble became the task's default).
    out["protocol"] = protocol(
        selected_on="val", reported_on="val", seeds=len(results), baselines=list(out["e2e"]),
        caveats=["val only: no test number in this file (the runs' results.json hold test "
                 "numbers from the end of training)", *args.caveat],
        argv=argv, script=__file__)  # fmt: skip
    for k, v in out["dblocks"].items():
        if not isinstance(v, dict) or k == "train_peak_bytes":
            continue
        print(f"dblocks {k:20s} {v['mean']:.4f} ± {v['sd'] or 0:.4f}")
    for k, v in out["e2e"].items():
        print(f"{k:28s} val CE {v['val_ce']['mean']:.4f} ± {v['val_ce']['sd'] or 0:.4f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
