"""Add the full resolved config to every published result row that carries its training command
(docs/results/**/*.json rows with a "command": "dblocks train --preset P --set k=v ...").

    python scripts/experiments/resolve_configs.py

The config is rebuilt from the command with the presets and defaults of the code that runs this
script (the commit is recorded with it); keys added to the library after a run was made take
their defaults, except ``val_fraction`` in the first-round folders (``docs/results/*/first-round``)
of the tasks whose runs there all predate their validation split (image generation and the
language models: 0, every training image or all of the text before the test text trained, as
those runs did); later runs of those tasks recorded their ``val_fraction`` (0.1) and keep it.
Rows whose command does not parse are left as they are and listed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from diffusionblocks.config import config_from_dict, parse_assignments
from diffusionblocks.registry import make_config

# Tasks whose first-round runs were all made before they had a validation split (added
# 2026-11-28).
BEFORE_VALIDATION = ("generation", "autoregressive", "masked-lm", "recurrent")


def config_of(command: str, first_round: bool = False):
    argv = shlex.split(command)
    if argv[:2] != ["dblocks", "train"] or "--preset" not in argv:
        return None
    preset = argv[argv.index("--preset") + 1]
    sets = parse_assignments([argv[i + 1] for i, a in enumerate(argv) if a == "--set"])
    config = make_config(preset, sets)
    if first_round and config.task in BEFORE_VALIDATION and "val_fraction" not in sets:
        config = config_from_dict(type(config), {**config.to_dict(), "val_fraction": 0.0})
    return config


def rows_of(data):
    if isinstance(data, list):
        return data
    for key in ("runs", "rows"):
        if isinstance(data, dict) and isinstance(data.get(key), list):
            return data[key]
    return []


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    for path in sorted(Path("docs/results").rglob("*.json")):
        data = json.loads(path.read_text())
        changed = skipped = 0
        for row in rows_of(data):
            if not isinstance(row, dict) or "command" not in row:
                continue
            config = config_of(row["command"], "first-round" in path.parts)
            if config is None:
                skipped += 1
                continue
            row["config"] = config.to_dict()
            row["resolved"] = config.resolved()
            row["config_resolved_with"] = (
                f"diffusionblocks at commit {commit}; keys added later take their defaults. "
                "Evaluations dated before 2026-11-28 ran the chain of their day: classification "
                "and autoregressive 'steps' then meant Euler steps followed by one more call at "
                "sigma_min (B+1 denoiser calls by default, not the inference_calls above)"
            )
            changed += 1
        if changed:
            path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{path}: {changed} rows resolved, {skipped} without a parsable train command")


if __name__ == "__main__":
    main()
