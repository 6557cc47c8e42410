"""Run configuration: one dataclass per task extending :class:`RunConfig` (:mod:`.run`), the
checks that refuse bad values naming their key (:mod:`.checks`), and ``key=value`` parsing
(:mod:`.parse`)."""

from .checks import (
    ConfigError,
    _check,
    _choice,
    check_layer_split,
    check_tokenizer_key,
    check_transformer,
)
from .parse import (
    build_config,
    coerce,
    config_diff,
    config_from_dict,
    flat_keys,
    parse_assignments,
)
from .run import (
    METHODS,
    NAN_POLICIES,
    SAFE_RESUME_KEYS,
    SCHEDULES,
    SHARED_POLICIES,
    RunConfig,
    dict_hash,
)
from .training import TrainingSettings

__all__ = [
    "METHODS",
    "NAN_POLICIES",
    "SAFE_RESUME_KEYS",
    "SCHEDULES",
    "SHARED_POLICIES",
    "TrainingSettings",
    "ConfigError",
    "RunConfig",
    "_check",
    "_choice",
    "build_config",
    "check_layer_split",
    "check_tokenizer_key",
    "check_transformer",
    "coerce",
    "config_diff",
    "config_from_dict",
    "dict_hash",
    "flat_keys",
    "parse_assignments",
]
