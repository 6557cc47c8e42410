"""Datasets."""

from .images import DataError, ImageDataset, load_image_dataset

__all__ = ["DataError", "ImageDataset", "load_image_dataset"]
