"""Copy a `dblocks compare` output folder into docs/results/: comparison.json and .md, and every
run's results.json and config.json (the resolved config and exact command), without checkpoints;
with --rows, also the file compare's --json wrote, as rows.json.

    python scripts/experiments/publish_comparison.py /tmp/protocol/vit-fmnist \
        docs/results/classification/vit-fmnist --rows /tmp/protocol/vit-fmnist-rows.json
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def publish(src: Path, dest: Path, rows: Path | None = None) -> None:
    if not (src / "comparison.json").is_file():
        raise SystemExit(f"{src} holds no comparison.json (did the compare finish?)")
    if rows is not None and not rows.is_file():
        raise SystemExit(f"no rows file {rows}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("comparison.json", "comparison.md"):
        shutil.copy(src / name, dest / name)
    if rows is not None:
        shutil.copy(rows, dest / "rows.json")
    for results in sorted(src.glob("*/**/results.json")):
        run = results.parent
        target = dest / "runs" / run.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "config.json"):
            shutil.copy(run / name, target / name)
    print(f"published {src} -> {dest}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--rows", type=Path, help="the --json file of the same compare")
    args = ap.parse_args(argv)
    publish(args.src, args.dest, args.rows)


if __name__ == "__main__":
    main()
