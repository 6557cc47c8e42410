"""``key=value`` text to typed config values, and configs to and from plain dictionaries."""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from dataclasses import fields
from typing import Any

from .checks import ConfigError, _show
from .run import RunConfig


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_int(text: str) -> int:
    t = text.strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", t):
        raise ValueError("expected an integer")
    return int(t)


def _parse_float(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_int_tuple(text: str) -> tuple[int, ...] | None:
    t = text.strip().lower()
    if t in ("", "none", "all", "null"):
        return None
    return tuple(_parse_int(part) for part in t.strip("[]()").split(",") if part.strip())


def coerce(cls: type, key: str, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a JSON value) to the type of field
    ``key`` of config class ``cls``. Raises :class:`ConfigError` naming the key."""
    hint = _field_types(cls)[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        base = next(a for a in args if a is not type(None))
    try:
        if value is None:
            if optional:
                return None
            raise ValueError("a value is required")
        if typing.get_origin(base) is tuple:
            if isinstance(value, str):
                return _parse_int_tuple(value)
            if isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                return tuple(value)
            raise ValueError("expected a comma-separated list of integers")
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return _parse_bool(value)
            raise ValueError("expected true or false")
        if base is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return _parse_int(value)
            raise ValueError("expected an integer")
        if base is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            if isinstance(value, (int, float)):
                if not math.isfinite(value):
                    raise ValueError("expected a finite number")
                return float(value)
            if isinstance(value, str):
                return _parse_float(value)
            raise ValueError("expected a number")
        if base is str:
            if isinstance(value, str):
                if optional and value.strip().lower() in ("", "none", "null"):
                    return None
                return value.strip()
            raise ValueError("expected a string")
    except ValueError as err:
        raise ConfigError(f"invalid value for '{key}': {_show(value)} ({err})") from None
    raise ConfigError(f"field '{key}' has an unsupported type {hint}")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "blocks=0,2"]`` -> ``{"lr": "1e-3", "blocks": "0,2"}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not re.fullmatch(r"([A-Za-z_]\w*\.)?[A-Za-z_]\w*", key):
            raise ConfigError(f"--set key {key!r} is not a valid config key name")
        out[key] = value
    return out


def flat_keys(cls: type[RunConfig], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with grouped keys made flat: ``{"noise.p_mean": 1}`` and
    ``{"noise": {"p_mean": 1}}`` become ``{"p_mean": 1}``, and another name of a key
    (``block_order``) becomes the name it is saved under (``schedule``). A key given twice with
    different values, a group that does not exist, or a key outside its group is refused by name."""
    groups = cls.key_groups()
    aliases = cls.key_aliases
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in groups and isinstance(value, dict):
            items = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            items = [(key, value)]
        for name, v in items:
            if "." in name:
                group, _, flat = name.partition(".")
                if group not in groups:
                    raise ConfigError(
                        f"unknown config group '{group}' in '{name}'; the groups are "
                        f"{', '.join(groups)}"
                    )
                flat = aliases.get(flat, flat)
                if flat not in groups[group]:
                    where = cls.group_of(flat)
                    hint = f"; '{flat}' is in group '{where}'" if where else ""
                    raise ConfigError(
                        f"'{flat}' is not a key of group '{group}' (its keys: "
                        f"{', '.join(groups[group])}){hint}"
                    )
                name = flat
            name = aliases.get(name, name)
            if name in out and out[name] != v:
                raise ConfigError(f"key '{name}' given twice: {_show(out[name])} and {_show(v)}")
            out[name] = v
    return out


def build_config(cls: type[RunConfig], values: dict[str, Any]) -> RunConfig:
    """Build and validate ``cls`` from ``values`` (flat keys, ``group.key`` or nested group
    dictionaries); unknown keys are rejected with a suggestion."""
    values = flat_keys(cls, values)
    names = [f.name for f in fields(cls) if f.init and f.name != "task"]
    for key in values:
        if key == "task":
            if values[key] != cls.task:
                raise ConfigError(
                    f"'task' is fixed by the preset ({cls.task!r}); pick another preset instead"
                )
            continue
        if key not in names:
            close = difflib.get_close_matches(key, [*names, *cls.key_aliases], n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}' for task '{cls.task}'{hint}")
    typed = {k: coerce(cls, k, v) for k, v in values.items() if k != "task"}
    try:
        return cls(**typed)
    except TypeError as err:  # pragma: no cover - guarded by the name check above
        raise ConfigError(str(err)) from None


def config_from_dict(cls: type[RunConfig], data: dict[str, Any]) -> RunConfig:
    """Rebuild a config saved with :meth:`RunConfig.to_dict` (flat or nested). A key the saved
    config lacks (written before the key existed) takes the value in ``cls.saved_defaults`` that
    reproduces what the saved run did, else its field default."""
    task = data.get("task", "")
    if task and task != cls.task:
        raise ConfigError(f"config is for task '{task}', not '{cls.task}'")
    values = flat_keys(cls, {k: v for k, v in data.items() if k != "task"})
    for key, old in cls.saved_defaults.items():
        values.setdefault(key, old)
    return build_config(cls, values)


def config_diff(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs of the same class."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in da if da[k] != db.get(k)}
