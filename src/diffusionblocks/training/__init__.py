"""The trainer, checkpoints and metrics."""

from .checkpoint import Checkpoint, CheckpointError, latest_checkpoint
from .schedule import block_sequence, learning_rate
from .trainer import Trainer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Trainer",
    "block_sequence",
    "latest_checkpoint",
    "learning_rate",
]
