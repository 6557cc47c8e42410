"""Datasets."""

from .images import DataError, DataWarning, ImageDataset, load_image_dataset

__all__ = ["DataError", "DataWarning", "ImageDataset", "load_image_dataset"]
