"""The math layer: noise distribution, partition of the noise range into blocks, EDM
preconditioning and loss weights, samplers. Knows nothing about images, tokens or networks."""

from .bridge import soft_bridge, unit_table
from .noise import (
    NoiseSchedule,
    edm_denoise,
    edm_loss_weight,
    edm_preconditioning,
    lognormal_cdf,
    lognormal_icdf,
    max_edm_weight,
)
from .partition import PARTITIONS, BlockPartition, partition_boundaries, widen_interval
from .samplers import (
    GRIDS,
    chain,
    chain_levels,
    euler_sample,
    euler_step,
    mean_log_probs,
    sigma_grid,
)
from .weighting import WEIGHTINGS, weighted_loss

__all__ = [
    "GRIDS",
    "PARTITIONS",
    "WEIGHTINGS",
    "BlockPartition",
    "NoiseSchedule",
    "chain",
    "chain_levels",
    "edm_denoise",
    "edm_loss_weight",
    "edm_preconditioning",
    "euler_sample",
    "euler_step",
    "lognormal_cdf",
    "lognormal_icdf",
    "max_edm_weight",
    "mean_log_probs",
    "partition_boundaries",
    "sigma_grid",
    "soft_bridge",
    "unit_table",
    "weighted_loss",
    "widen_interval",
]
