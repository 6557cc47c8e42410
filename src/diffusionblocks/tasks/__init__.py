"""The task layer: data -> (condition, clean target), denoiser call, loss, readout, metrics."""

from .base import Task

__all__ = ["Task"]
