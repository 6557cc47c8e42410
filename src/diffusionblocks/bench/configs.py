"""The benchmark configurations: config keys that turn a preset into each measured setting."""

from __future__ import annotations

from typing import Any

MEMORY_CONFIGS = ("e2e", "e2e+ckpt", "dblocks", "dblocks-resident", "dblocks-swap",
                  "dblocks-resident+ckpt")  # fmt: skip
SPEED_CONFIGS = ("e2e", "e2e+ckpt", "dblocks", "dblocks+ckpt")


def config_overrides(name: str, blocks: int, baseline: str = "e2e") -> dict[str, Any]:
    """Config keys that turn a preset into benchmark configuration ``name`` with B = ``blocks``;
    "e2e" is the task's end-to-end ``baseline`` method (recurrent depth: ``bptt``)."""
    ckpt = name.endswith("+ckpt")
    base = name.removesuffix("+ckpt")
    if base == "e2e":
        return {"method": baseline, "checkpointing": ckpt}
    if base == "dblocks":  # the paper's schedule, every block and optimizer resident
        return {
            "method": "dblocks",
            "num_blocks": blocks,
            "schedule": "cycle",
            "checkpointing": ckpt,
        }
    if base == "dblocks-resident":  # one block at a time, the others on disk
        return {
            "method": "dblocks",
            "num_blocks": blocks,
            "schedule": "sequential",
            "checkpointing": ckpt,
        }
    if base == "dblocks-swap":  # the paper's order, one block in memory, swapped at each visit
        return {
            "method": "dblocks",
            "num_blocks": blocks,
            "schedule": "cycle",
            "resident": True,
            "checkpointing": ckpt,
        }
    raise ValueError(f"unknown benchmark configuration {name!r}")
