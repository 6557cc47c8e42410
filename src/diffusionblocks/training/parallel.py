"""Block-parallel training on ``torch.distributed``.

Launch: ``torchrun --nproc-per-node N -m diffusionblocks train --preset P --set parallel=true``.
World size = (number of trained blocks) x (data-parallel degree). Rank r trains block
``blocks[r // dp]`` on data shard ``r % dp``; it builds **only its block** (the others stay on the
meta device) plus the shared modules. Every step is one step of the ``synchronous`` schedule:
the same global batch for every block, each block's noise from its own generator, so a parallel
run computes what a single-process ``schedule=synchronous`` run computes.

Shared modules (``shared``):
- ``sync``: their gradients are averaged over all ranks every step (all-reduce); every rank holds
  the same copy. In expectation this is the paper's random schedule with a B-times larger batch.
- ``frozen``: not updated (their initial values, or those of ``shared_init``).
- ``per-block``: every block trains its own copy, no communication between blocks. Only for tasks
  whose target space does not depend on the shared modules (image generation, masked LM).

Checkpoints: ``RUN/blocks/block-{b}/step-*`` (the block's tensors, optimizer, RNG and trainer
state; written by the block's first rank) and ``RUN/shared/step-*`` (or ``RUN/shared-block-{b}``
for per-block), each with metadata naming the config hash, the block, its noise interval and the
version (sha256) of the shared modules it trained with. ``dblocks assemble`` joins them.

``ParallelTrainer`` is the one :class:`~.trainer.Trainer`, composed for a rank: its block as the
only block it trains, ``DistributedSync`` for the gradients, ``BlockCheckpoints`` for the
checkpoints, no evaluation of the chain (the rank holds one block).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError, RunConfig
from ..networks.placement import device_of
from ..tasks.base import Task
from .blockmodel import shared_state
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    save_checkpoint,
)
from .residency import materialize
from .state import Parts
from .trainer import Trainer
from .weights import PARALLEL_HASH_IGNORE, parallel_hashes, tensors_version


@dataclass
class ParallelContext:
    rank: int
    world: int
    dp: int  # data-parallel degree within a block group
    block: int  # the block this rank trains
    dp_rank: int
    blocks: tuple[int, ...]  # all trained blocks
    block_group: Any = None  # process group of this block's ranks (None: world 1 or dp 1)
    initialized: bool = False  # whether this module initialised torch.distributed

    @property
    def is_block_leader(self) -> bool:
        return self.dp_rank == 0


def layout(blocks: tuple[int, ...], world: int, rank: int) -> ParallelContext:
    """Assign ranks to blocks; refuse a world size that does not fit."""
    k = len(blocks)
    if world < k or world % k:
        raise ConfigError(
            f"parallel training of {k} block(s) {list(blocks)} needs a world size that is a "
            f"multiple of {k} (one or more processes per block), got {world}; launch with "
            f"torchrun --nproc-per-node {k} (or 2x, 3x ... for data parallelism within blocks), "
            "or select fewer blocks with --set blocks=..."
        )
    dp = world // k
    return ParallelContext(rank, world, dp, blocks[rank // dp], rank % dp, tuple(blocks))


def init_distributed(config: RunConfig) -> ParallelContext:
    """Read torchrun's environment, initialise the process group (gloo on CPU, NCCL on CUDA)
    and the per-block groups. A single process training a single block needs no torchrun."""
    blocks = config.trained_blocks
    if "WORLD_SIZE" not in os.environ:
        if len(blocks) == 1:
            return layout(blocks, 1, 0)
        raise ConfigError(
            f"parallel=true with {len(blocks)} blocks needs torchrun (no WORLD_SIZE in the "
            f"environment): torchrun --nproc-per-node {len(blocks)} -m diffusionblocks train ..."
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    ctx = layout(blocks, world, rank)
    device = config.device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        ctx.initialized = True
    if world > 1 and ctx.dp > 1:
        for u in blocks:  # every rank creates every group, in the same order
            ranks = [r for r in range(world) if blocks[r // ctx.dp] == u]
            group = dist.new_group(ranks)
            if u == ctx.block:
                ctx.block_group = group
    return ctx


def shutdown(ctx: ParallelContext) -> None:
    if ctx.initialized and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: ParallelContext) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.barrier()


class DistributedSync:
    """The gradients of a block-parallel step (``sync.GradientSync`` across the ranks): a block's
    data-parallel ranks average its gradients; the shared modules' are averaged over all ranks
    (``shared=sync``) or over the block's ranks (``shared=per-block``)."""

    def __init__(self, ctx: ParallelContext, shared_policy: str) -> None:
        self.ctx = ctx
        self.shared_policy = shared_policy

    def reduce(
        self,
        blocks: list[int],
        block_params: dict[int, list[nn.Parameter]],
        shared_params: list[nn.Parameter],
    ) -> None:
        ctx = self.ctx
        if ctx.world == 1:
            return
        if ctx.dp > 1:
            for p in block_params[ctx.block]:
                if p.grad is not None:
                    dist.all_reduce(p.grad, group=ctx.block_group)
                    p.grad /= ctx.dp
        if self.shared_policy == "sync":
            # Gather every rank's gradient and add them in rank order, as a single process adds
            # its blocks' gradients: the sum (and so the run) is bitwise the single-process
            # synchronous one, whatever the number of blocks (an all-reduce may add in another
            # order). The shared modules are small; the extra traffic is theirs only.
            for p in shared_params:
                if not p.requires_grad:
                    continue
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                parts = [torch.empty_like(grad) for _ in range(ctx.world)]
                dist.all_gather(parts, grad.contiguous())
                total = parts[0].clone()
                for part in parts[1:]:
                    total += part
                p.grad = total / ctx.world
        elif self.shared_policy == "per-block" and ctx.dp > 1:
            for p in shared_params:
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                dist.all_reduce(grad, group=ctx.block_group)
                p.grad = grad / ctx.dp


class BlockCheckpoints:
    """The checkpoints of one rank of a block-parallel run (a ``state.CheckpointStore``): its
    block's in ``RUN/blocks/block-{b}`` (written by the block's first rank), the shared modules
    in ``RUN/shared`` (rank 0; per-block: each block's first rank, ``RUN/shared-block-{b}``)."""

    def __init__(self, ctx: ParallelContext) -> None:
        self.ctx = ctx

    def shared_dir(self, parts: Parts) -> Path:
        if parts.settings.shared_policy == "per-block":
            return parts.folder / f"shared-block-{self.ctx.block}"
        return parts.folder / "shared"

    def block_dir(self, parts: Parts, block: int | None = None) -> Path:
        return parts.folder / "blocks" / f"block-{self.ctx.block if block is None else block}"

    def write(self, parts: Parts) -> Path:
        """Each block's leader writes its block; rank 0 (per-block: each leader) the shared
        modules. Returns this rank's block checkpoint folder."""
        ctx, c, pos, acc = self.ctx, parts.config, parts.position, parts.accounting
        shared = shared_state(parts.model)
        version = tensors_version(shared)
        path = self.block_dir(parts)
        if ctx.is_block_leader:
            b = ctx.block
            meta = {
                "task": c.task,
                "method": c.method,
                "config_hash": c.config_hash(ignore=PARALLEL_HASH_IGNORE),
                "block": b,
                "units": len(parts.model.blocks),  # saved key, kept for old checkpoints
                "noise_interval": parts.task.block_interval(b),
                "shared_policy": c.shared_policy,
                "shared_version": version,
                "total_steps": parts.plan.total_steps,
            }
            objects = {
                "optimizer": parts.optimizers.for_block(b).state_dict(),
                "trainer": {  # "unit_steps": saved key, kept for old checkpoints
                    "step": pos.step,
                    "unit_steps": list(pos.block_steps),
                    "generator": pos.block_generators[b].get_state(),
                    "train_seconds": acc.train_seconds,
                    "layer_evals": acc.layer_evals,
                    "backward_layer_evals": acc.backward_layer_evals,
                    "step_times": {str(u): list(t) for u, t in acc.step_times.items()},
                },
            }
            path = save_checkpoint(
                path, pos.step, {"block": parts.model.blocks[b].state_dict()}, objects, meta,
                c.keep_checkpoints,
            )  # fmt: skip
        shared_writer = ctx.is_block_leader if c.shared_policy == "per-block" else ctx.rank == 0
        if shared_writer:
            shared_objects: dict[str, Any] = {}
            if c.shared_policy != "frozen":
                shared_objects["optimizer"] = _shared_optimizer(parts).state_dict()
            shared_meta = {
                "task": c.task,
                "config_hash": c.config_hash(ignore=PARALLEL_HASH_IGNORE),
                "shared_policy": c.shared_policy,
                "shared_version": version,
                "block": ctx.block if c.shared_policy == "per-block" else None,
            }
            save_checkpoint(self.shared_dir(parts), pos.step, {"shared": shared}, shared_objects,
                            shared_meta, c.keep_checkpoints)  # fmt: skip
        barrier(ctx)
        return path

    def resume(self, parts: Parts) -> bool:
        """Load this block's latest checkpoint and the shared modules it trained with."""
        ctx, config, model = self.ctx, parts.config, parts.model
        path = latest_checkpoint(self.block_dir(parts))
        if path is None:
            return False
        ckpt = Checkpoint(path)
        expect = config.config_hash(ignore=PARALLEL_HASH_IGNORE)
        known = parallel_hashes(config, parts.folder)
        if ckpt.meta.get("config_hash") not in known or ckpt.meta.get("block") != ctx.block:
            raise CheckpointError(
                f"{path} is block {ckpt.meta.get('block')} of config {ckpt.meta.get('config_hash')}"
                f"; this rank trains block {ctx.block} of config {expect}"
            )
        shared_path = latest_checkpoint(self.shared_dir(parts))
        if shared_path is None:
            raise CheckpointError(
                f"{self.shared_dir(parts)} has no checkpoint for block {ctx.block}"
            )
        shared_ckpt = Checkpoint(shared_path)
        model.load_state_dict(shared_ckpt.tensors("shared"), strict=False)
        if shared_ckpt.has("optimizer.pt") and parts.settings.shared_policy != "frozen":
            _shared_optimizer(parts).load_state_dict(shared_ckpt.obj("optimizer"))
        materialize(model, ctx.block, device_of(model), ckpt.tensors("block"))
        parts.optimizers.by_block.clear()
        parts.optimizers.pending[ctx.block] = ckpt.obj("optimizer")
        state = ckpt.obj("trainer")
        pos, acc = parts.position, parts.accounting
        pos.step = int(state["step"])
        pos.block_steps = [int(s) for s in state["unit_steps"]]  # saved key, kept
        pos.block_generators[ctx.block].set_state(state["generator"])
        acc.train_seconds = float(state.get("train_seconds", 0.0))
        acc.layer_evals = int(state.get("layer_evals", 0))
        acc.backward_layer_evals = int(state.get("backward_layer_evals", 0))
        return True


def _shared_optimizer(parts: Parts) -> torch.optim.AdamW:
    """The shared modules' optimizer, which trainable shared modules (sync, per-block) have."""
    opt = parts.optimizers.shared_optimizer
    assert opt is not None, "trainable shared modules without an optimizer"
    return opt


def ParallelTrainer(
    task: Task,
    run_dir: str | Path | None,
    ctx: ParallelContext,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Trainer:
    """The :class:`Trainer` of one rank of a block-parallel run: it trains ``ctx.block`` (built
    alone; the others stay on the meta device) with a synchronous step on its data shard, syncs
    gradients across ranks, writes per-block checkpoints, and does not evaluate the chain."""
    c = task.config
    trainer = Trainer(
        task,
        run_dir,
        progress=progress and ctx.rank == 0,
        log=log,
        data_shard=(ctx.dp_rank, ctx.dp),
        local_blocks=(ctx.block,),
        sync=DistributedSync(ctx, c.shared_policy),
        checkpoints=BlockCheckpoints(ctx),
        can_evaluate=False,
        resident=False,  # the other blocks are never built here, nothing to offload
    )
    if c.shared_policy == "per-block" and not task.per_block_shared:
        raise ConfigError(
            f"shared=per-block is not allowed for task {c.task!r}: its target space depends "
            "on the shared modules (label/token embeddings), so blocks must share them; use "
            "shared=sync or shared=frozen"
        )
    if trainer.run_dir is not None:
        name = f"metrics-block-{ctx.block}.jsonl" if ctx.is_block_leader else None
        trainer.metrics.path = trainer.run_dir / name if name else None
        # A numerical fault names the last good checkpoint of this rank's block.
        trainer.faults.checkpoints = trainer.run_dir / "blocks" / f"block-{ctx.block}"
    # Different data shards within a block group (batch_indices with the data-parallel
    # rank), the same batches across blocks; and different noise per data-parallel rank.
    if ctx.dp > 1:
        base = dict(trainer.position.block_generators)
        trainer.position.block_generators = {
            u: torch.Generator().manual_seed(base[u].initial_seed() + 7919 * ctx.dp_rank)
            for u in base
        }
    materialize(trainer.model, ctx.block, device_of(trainer.model))
    return trainer
