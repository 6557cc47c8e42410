"""Shared helpers for tests: tiny configs and tasks on scikit-learn digits."""

from __future__ import annotations

import torch

from diffusionblocks.registry import make_config, make_task


def tiny_config(**overrides):
    values = {"device": "cpu", "log_every": 1000}
    values.update(overrides)
    return make_config("tiny", values)


def tiny_task(**overrides):
    return make_task(tiny_config(**overrides), torch.device("cpu"))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def optimizer_snapshot(opt: torch.optim.Optimizer) -> list[dict[str, torch.Tensor]]:
    return [
        {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
        for group in opt.param_groups
        for p in group["params"]
    ]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
