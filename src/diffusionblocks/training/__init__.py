"""The trainer, checkpoints and metrics."""

from .checkpoint import Checkpoint, CheckpointError, latest_checkpoint
from .trainer import Trainer, block_sequence, learning_rate

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Trainer",
    "block_sequence",
    "latest_checkpoint",
    "learning_rate",
]
