"""Mean and s.d. over seeds of ``dblocks eval --json`` outputs of classification runs, per split:
the accuracy of the readout evaluated, and both readouts (``readouts``: chain and ensemble).

    python scripts/experiments/readout_table.py DIR --json OUT.json
    # DIR holds NAME-seed-S-SPLIT.json files (one ``dblocks eval --split SPLIT --json`` each)

Writes ``{"protocol": ..., "rows": {NAME: {SPLIT: ...}}}``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import mean_sd

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # protocol.py beside this file, also when a test loads it by path
    sys.path.insert(0, HERE)
from protocol import add_caveat_argument, protocol  # noqa: E402


def table(folder: Path) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*-seed-*-*.json")):
        m = re.fullmatch(r"(.+)-seed-(\d+)-(val|test)\.json", path.name)
        if m:
            groups.setdefault((m[1], m[3]), []).append(json.loads(path.read_text()))
    if not groups:
        raise SystemExit(f"{folder} holds no NAME-seed-S-SPLIT.json files")
    out: dict[str, Any] = {}
    for (name, split), evs in sorted(groups.items()):
        out.setdefault(name, {})[split] = {
            "seeds": len(evs),
            "readout": evs[0]["readout"],
            "accuracy": mean_sd([e["accuracy"] for e in evs]),
            "chain": mean_sd([e["readouts"]["chain"] for e in evs]),
            "ensemble": mean_sd([e["readouts"]["ensemble"] for e in evs]),
            "runs": [e["run_dir"] for e in evs],
        }
    return out


def table_protocol(out: dict[str, Any], caveats: Sequence[str] = (),
                   argv: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The protocol object: the readout is chosen on val, test (when present) read once."""
    splits = sorted({split for splits in out.values() for split in splits}, reverse=True)
    return protocol(
        selected_on="val", reported_on=" and ".join(splits),
        seeds=max(row["seeds"] for splits in out.values() for row in splits.values()),
        baselines=["chain (the paper's readout; each row's readouts.chain)"],
        caveats=["readouts of DiffusionBlocks runs only: the baseline methods at the same seeds "
                 "are in the comparisons the runs come from", *caveats],
        argv=argv, script=__file__)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path)
    add_caveat_argument(ap)
    args = ap.parse_args(argv)
    out = table(args.folder)
    for name, splits in out.items():
        for split, row in splits.items():
            print(
                f"{name} {split}: "
                + ", ".join(
                    f"{k} {row[k]['mean']:.4f} ± {row[k]['sd'] or 0:.4f}"
                    for k in ("chain", "ensemble")
                )
            )
    if args.json:
        record = {"protocol": table_protocol(out, args.caveat, argv), "rows": out}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
