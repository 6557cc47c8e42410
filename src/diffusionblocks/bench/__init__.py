"""Memory and speed benchmarks: ``dblocks bench memory`` and ``dblocks bench speed``; and
``dblocks bench cap``, a memory cap enforced by the kernel and which methods train under it
(:mod:`diffusionblocks.bench.cap`).

Memory: every configuration runs in its own fresh Python process (peak counters only go up), with
the real trainer. For each one we record

- ``peak_bytes``: peak memory above the moment just before the first training step (CPU: peak RSS
  minus RSS then; CUDA: ``max_memory_allocated`` minus the bytes allocated then). The weights that
  exist at that moment are not in it;
- ``peak_with_weights_bytes``: ``peak_bytes`` plus the parameter bytes that existed at that moment,
  so configurations that hold different weights compare fairly;
- ``activation_bytes``: bytes autograd saves for the backward pass in one training step, counted
  exactly with ``torch.autograd.graph.saved_tensors_hooks`` (unique storages, parameters excluded);
- ``param_bytes``, ``grad_bytes``, ``optimizer_bytes``: tensors resident after that step's backward;
- ``predicted_bytes``: the paper's analytic formula (docs/method.md §4) with P and A per layer
  taken from the model and from the end-to-end measurement, plus 4x the shared modules' parameters.

Speed: one process, all configurations built side by side, repeats interleaved so that machine
noise hits every configuration alike; medians and ratios to ``e2e``.

``dblocks bench memory|speed --json FILE`` writes ``{"protocol": ..., "command": ...,
"records": [one per configuration and B, the keys above]}``; ``protocol`` is the object of
docs/protocol.md §5 (``commands/bench.py::bench_protocol``): ``selected_on`` "none",
``reported_on`` "none: ..." (no data split is read), ``seeds`` 1 (one model per configuration;
speed repeats are timing repeats, said in ``caveats``), ``baselines`` the ``e2e`` configurations
measured, ``command`` the ``dblocks bench`` command line.
"""

from __future__ import annotations

from .configs import MEMORY_CONFIGS, SPEED_CONFIGS, config_overrides
from .memory import (
    DEFAULT_MMAP_THRESHOLD,
    MEMORY_TABLE_KEY,
    SavedTensorCounter,
    format_memory_table,
    measure_memory,
    plot_memory,
    predicted_bytes,
    run_memory_bench,
    warm_runtime,
)
from .speed import SPEED_TABLE_KEY, format_speed_table, run_speed_bench

__all__ = [
    "DEFAULT_MMAP_THRESHOLD",
    "MEMORY_CONFIGS",
    "MEMORY_TABLE_KEY",
    "SPEED_CONFIGS",
    "SPEED_TABLE_KEY",
    "SavedTensorCounter",
    "config_overrides",
    "format_memory_table",
    "format_speed_table",
    "measure_memory",
    "plot_memory",
    "predicted_bytes",
    "run_memory_bench",
    "run_speed_bench",
    "warm_runtime",
]
