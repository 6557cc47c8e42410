"""Moved: the Fréchet distance and the shipped Fashion-MNIST evaluator now live in
:mod:`diffusionblocks.eval.fid`. This module re-exports its names so that
``from diffusionblocks import fid`` and ``from diffusionblocks.fid import ...`` keep working."""

from __future__ import annotations

from .eval.fid import (
    ASSETS,
    EVALUATOR_CARD,
    EVALUATOR_WEIGHTS,
    FMNIST_MEAN,
    FMNIST_STD,
    EvaluatorCNN,
    EvaluatorError,
    EvaluatorFeatures,
    FeatureExtractor,
    InceptionFeatures,
    evaluator_accuracy,
    extract,
    feature_stats,
    fid_against,
    frechet_distance,
    load_evaluator,
    train_evaluator,
)
from .eval.fid import _sqrtm_psd as _sqrtm_psd  # private, kept importable from here

__all__ = [
    "ASSETS",
    "EVALUATOR_CARD",
    "EVALUATOR_WEIGHTS",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "EvaluatorCNN",
    "EvaluatorError",
    "EvaluatorFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
    "evaluator_accuracy",
    "extract",
    "feature_stats",
    "fid_against",
    "frechet_distance",
    "load_evaluator",
    "train_evaluator",
]
