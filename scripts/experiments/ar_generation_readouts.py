"""Generation by autoregressive DiffusionBlocks runs read out two ways (``readout=ensemble``:
every block once at sigma_max, log-probabilities averaged; ``readout=chain``: the paper's B
calls from sigma_max): continuations of validation prompts, their perplexity under an end-to-end
judge run, their diversity and repetition, and the next-character CE/accuracy of the same
readout. Mean and s.d. over the runs (seeds). Reads val only.

    python scripts/experiments/ar_generation_readouts.py RUN... --judge E2E_RUN \
      --prompts 32 [--temperature 0] --json OUT

``--temperature 0`` decodes greedily (the paper's AR generation); the default 1 samples.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import mean_sd
from diffusionblocks.loading import evaluate_run

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402

KEYS = ("judge_perplexity", "distinct_4_chars", "repetition_4_chars", "heldout_accuracy")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="DiffusionBlocks run folders")
    ap.add_argument("--judge", type=Path, required=True, help="an end-to-end run")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0, help="0 = greedy decoding")
    ap.add_argument("--json", type=Path)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    per_run: list[dict[str, Any]] = []
    for run in args.runs:
        for readout in ("ensemble", "chain"):
            overrides = {"readout": readout, "gen_prompts": args.prompts,
                         "temperature": args.temperature}  # fmt: skip
            ev = evaluate_run(run, overrides=overrides, split="val", judge=str(args.judge))
            row = {"run": str(run), "readout": readout, "heldout_ce": ev["heldout_ce"],
                   "ce_is_likelihood": ev["ce_is_likelihood"], "samples": ev["samples"],
                   **{k: ev[k] for k in KEYS}}  # fmt: skip
            per_run.append(row)
            print(run, readout, {k: round(row[k], 4) for k in KEYS})
    judge_ev = evaluate_run(args.judge, split="val", judge=str(args.judge),
                            overrides={"gen_prompts": args.prompts,
                                       "temperature": args.temperature})  # fmt: skip
    summary: dict[str, Any] = {
        r: {k: mean_sd([row[k] for row in per_run if row["readout"] == r]) for k in KEYS}
        for r in ("ensemble", "chain")
    }
    summary["judge"] = {
        "its_own_continuations_perplexity": judge_ev["judge_perplexity"],
        "val_text_perplexity": math.exp(judge_ev["heldout_ce"]),
        "distinct_4_chars": judge_ev["distinct_4_chars"],
        "repetition_4_chars": judge_ev["repetition_4_chars"],
    }
    for name, row in summary.items():
        print(name, json.dumps(row))
    if args.json:
        # The readouts are compared on val to choose one (the ensemble became the default after
        # these numbers); the judge is an end-to-end run, its own continuations the reference.
        record = protocol(selected_on="val", reported_on="val", seeds=len(args.runs),
                          baselines=["e2e (the judge, its own continuations)"],
                          caveats=["val only: no test number in this file", *args.caveat],
                          argv=argv, script=__file__)  # fmt: skip
        out = {"protocol": record, "split": "val", "judge": str(args.judge),
               "prompts": args.prompts, "temperature": args.temperature, "summary": summary,
               "runs": per_run}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
