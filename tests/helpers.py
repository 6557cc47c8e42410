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


class count_layer_calls:
    """Context manager counting forward calls of every transformer layer of ``model``
    (``AdaLNLayer``) with forward hooks: ``counted.layers`` after the block."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.layers, self.handles = model, 0, []

    def _hook(self, module, inputs, output):
        self.layers += 1

    def __enter__(self):
        from diffusionblocks.networks.layers import AdaLNLayer

        for m in self.model.modules():
            if isinstance(m, AdaLNLayer):
                self.handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
