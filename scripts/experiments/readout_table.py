"""Mean and s.d. over seeds of ``dblocks eval --json`` outputs of classification runs, per split:
the accuracy of the readout evaluated, and both readouts (``readouts``: chain and ensemble).

    python scripts/experiments/readout_table.py DIR --json OUT.json
    # DIR holds NAME-seed-S-SPLIT.json files (one ``dblocks eval --split SPLIT --json`` each)
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from diffusionblocks.comparison import mean_sd


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
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
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
