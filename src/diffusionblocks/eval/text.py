"""Text metrics: diversity and repetition of generated text, and its perplexity under a judge
(a loaded end-to-end autoregressive model)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Protocol, cast

import torch
from torch import nn

from ..config import ConfigError


class Judge(Protocol):
    """What the judge must offer: an end-to-end autoregressive task with its weights loaded."""

    model: nn.Module
    vocab: Any
    source: str | None

    def continuation_nll(self, prompt: str, continuation: str) -> tuple[float, int]: ...


def distinct_n(texts: list[str], n: int, words: bool = False) -> float:
    """Unique n-grams / all n-grams over the texts (characters, or whitespace words)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        units = text.split() if words else list(text)
        grams += [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(texts: list[str], n: int = 4) -> float:
    """Mean over texts of the fraction of character n-grams that occur more than once."""
    scores = []
    for text in texts:
        grams = [text[i : i + n] for i in range(len(text) - n + 1)]
        if grams:
            counts = Counter(grams)
            scores.append(sum(c for c in counts.values() if c > 1) / len(grams))
    return sum(scores) / len(scores) if scores else 0.0


def judge_perplexity(
    task: object, prompts: list[str], continuations: list[str], vocabulary: str
) -> float:
    """Perplexity (per character) of the continuations under a loaded end-to-end model."""
    name = getattr(task, "source", "the judge")
    if not hasattr(task, "continuation_nll"):  # an end-to-end autoregressive task
        raise ConfigError(f"judge {name} is not an end-to-end autoregressive run")
    judge = cast(Judge, task)
    if judge.vocab.key != vocabulary:  # the characters, or a subword tokenizer's JSON
        raise ConfigError(f"judge {name} was trained on another vocabulary")
    judge.model.eval()
    total, count = 0.0, 0
    device = next(judge.model.parameters()).device
    # The judge scores in float32 whatever precision the judged run samples in.
    with torch.autocast(device_type=device.type, enabled=False):
        for prompt, text in zip(prompts, continuations, strict=True):
            nll, n = judge.continuation_nll(prompt, text)
            total, count = total + nll, count + n
    return math.exp(total / max(count, 1))
