"""Training compute, measured: the floating-point operations of real training steps.

``dblocks`` compares methods at equal compute by measured FLOPs, not by counting layer
evaluations: a count of block layers leaves out the shared modules (stem, embeddings, head), which
run in every block's step — B times as often in DiffusionBlocks as end to end — and the
autoregressive task's second token stream. :func:`measure_step_flops` runs the loss and its
backward pass of each trained block on one real training batch under
``torch.utils.flop_counter.FlopCounterMode``, which counts every module's matrix products,
convolutions and attention (element-wise operations and the optimizer update are not counted;
they are a small part of a transformer's compute). :func:`train_flops` scales each block's step by
the number of steps it took. A step whose cost is random (the recurrent baseline draws its number
of iterations) is measured ``repeats`` times and averaged: an estimate, said so in the record.
Attention on the CPU is counted with the formulas FlopCounterMode uses for the GPU kernels.

The measurement runs after training and evaluation, on the trained model, with its own random
generator; it changes no weight (gradients are cleared afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from torch.utils.module_tracker import ModuleTracker

from ..tasks.base import Task

_aten = torch.ops.aten


def _cpu_attention(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return int(sdpa_flop_count(q, k, v))


def _cpu_attention_backward(
    grad: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return int(sdpa_backward_flop_count(grad, q, k, v))


# FlopCounterMode (torch 2.13) has formulas for the CUDA attention kernels but not for the one
# scaled_dot_product_attention runs on the CPU, whose FLOPs it would leave out: the same
# formulas (the two matrix products of attention, forward; their gradients, backward).
CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


class _WholeProgram(ModuleTracker):
    """FlopCounterMode's module tracker, switched off: every count goes to the total
    (``parents`` stays ``{"Global"}``). The tracker's forward hooks register gradient hooks on
    each module's inputs, which fails inside the recomputation of (reentrant) activation
    checkpointing; the total is all we read."""

    def __enter__(self) -> _WholeProgram:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def count_flops() -> FlopCounterMode:
    """A ``FlopCounterMode`` for the total only (no per-module table, so it also counts under
    activation checkpointing, recomputation included) that also counts attention on the CPU."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    counter.mod_tracker = _WholeProgram()
    return counter


def measure_step_flops(
    task: Task, blocks: Sequence[int], batch: Any, repeats: int = 3, seed: int = 0
) -> tuple[dict[int, float], bool]:
    """FLOPs of one training step (loss forward and backward) of each block in ``blocks`` on
    ``batch``: the mean of ``repeats`` steps, and whether they differed (a step of random
    cost, so the mean is an estimate)."""
    generator = torch.Generator().manual_seed(seed)
    params = list(task.model.parameters())
    flops: dict[int, float] = {}
    varies = False
    for block in blocks:
        counts = []
        for _ in range(repeats):
            with count_flops() as counter:
                loss, _ = task.loss(block, batch, generator)
                loss.backward()
            counts.append(counter.get_total_flops())
            for p in params:
                p.grad = None
        flops[block] = sum(counts) / repeats
        varies |= min(counts) != max(counts)
    return flops, varies


def train_flops(
    step_flops: dict[int, float], block_steps: Sequence[int], *, estimate: bool = False
) -> dict[str, Any]:
    """The training FLOPs of a run whose block b took ``block_steps[b]`` steps of
    ``step_flops[b]`` FLOPs each."""
    total = sum(step_flops[b] * block_steps[b] for b in step_flops)
    return {
        "train_flops": total,
        "step_flops_by_block": {str(b): f for b, f in sorted(step_flops.items())},
        "counted": "matrix products, convolutions and attention, forward and backward "
        "(torch.utils.flop_counter.FlopCounterMode), every module; not element-wise "
        "operations or the optimizer",
        "estimate": estimate,
    }
