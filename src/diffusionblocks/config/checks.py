"""Configuration errors and the checks that raise them: every refusal names its key."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration key or value is invalid. The message names the key."""


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_transformer(cfg: Any) -> None:
    """The shape keys every transformer config has: ``depth``, ``hidden``, ``heads``,
    ``mlp_ratio`` (each refusal names its key)."""
    _check(cfg, "depth", 1 <= cfg.depth <= 256, "an integer in [1, 256]")
    _check(cfg, "hidden", 1 <= cfg.hidden <= 65536, "an integer >= 1")
    _check(cfg, "heads", 1 <= cfg.heads <= cfg.hidden, f"an integer in [1, hidden={cfg.hidden}]")
    _check(cfg, "mlp_ratio", 0 < cfg.mlp_ratio <= 64, "a number in (0, 64]")


def check_layer_split(cfg: Any) -> None:
    """A transformer config's heads must divide its width, and (DiffusionBlocks) its blocks its
    depth, so that every block has the same number of layers, unless ``layers_per_block`` gives
    the sizes (then they must sum to the depth); ``e2e-shallow`` builds depth //
    num_blocks layers, so its blocks must divide the depth too."""
    if cfg.hidden % cfg.heads:
        raise ConfigError(
            f"invalid value for 'heads': {cfg.heads} (must divide hidden={cfg.hidden})"
        )
    sizes = cfg.layers_per_block
    if not cfg.end_to_end and sizes is not None and sum(sizes) != cfg.depth:
        raise ConfigError(
            f"invalid value for 'layers_per_block': {','.join(map(str, sizes))} (sums to "
            f"{sum(sizes)}; the blocks must hold all depth={cfg.depth} layers)"
        )
    if not cfg.end_to_end and sizes is None and cfg.depth % cfg.num_blocks:
        raise ConfigError(
            f"invalid value for 'num_blocks': {cfg.num_blocks} (must divide "
            f"depth={cfg.depth} so that every block has the same number of layers)"
        )
    if cfg.shallow and (cfg.depth % cfg.num_blocks or cfg.depth // cfg.num_blocks < 1):
        raise ConfigError(
            f"invalid value for 'num_blocks': {cfg.num_blocks} (method={cfg.method} trains "
            f"depth/num_blocks layers, the memory of one block: num_blocks must divide "
            f"depth={cfg.depth})"
        )


def _check(cfg: Any, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(
            f"invalid value for '{name}': {_show(getattr(cfg, name))} (must be {allowed})"
        )


def _choice(cfg: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ConfigError(
            f"invalid value for '{name}': {_show(value)} (choose one of {', '.join(allowed)})"
        )


def check_tokenizer_key(cfg: Any) -> None:
    """A language model's ``tokenizer``: char, bpe:N or the path of a tokenizer.json (the file
    itself is read when the task is built)."""
    from ..data.tokens import parse_tokenizer

    try:
        parse_tokenizer(cfg.tokenizer)
    except ValueError as err:
        raise ConfigError(f"invalid value for 'tokenizer': {cfg.tokenizer!r} ({err})") from None
