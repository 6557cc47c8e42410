"""Property-based bad input: random and malformed values thrown at the config parser and the data
loaders must end in a clean, named error (ConfigError / DataError), never another exception."""

import contextlib
import io
import math
from dataclasses import fields

import numpy as np
from faults import names_the_offending_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusionblocks.config import ConfigError, build_config, parse_assignments
from diffusionblocks.data.images import DataError, load_npz, read_idx
from diffusionblocks.data.text import load_text_file
from diffusionblocks.registry import TASKS

FAST = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
CONFIGS = [cls for cls, _ in TASKS.values()]
KEYS = sorted({f.name for cls in CONFIGS for f in fields(cls)})

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 70), max_size=4),
    st.sampled_from(["nan", "inf", "-1", "0", "1e309", "0,1", "all", "", " ", "true", "1.5"]),
)


@FAST
@given(
    cls=st.sampled_from(CONFIGS),
    data=st.dictionaries(
        st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), values, max_size=6
    ),  # fmt: skip
)
def test_config_values_give_a_config_or_a_named_error(cls, data):
    try:
        config = build_config(cls, data)
    except ConfigError as err:
        # every refusal names the offending key: one of the keys refused on their own, or, when
        # only their combination is wrong, one of the keys that were given
        assert names_the_offending_key(cls, data, str(err)), (str(err), data)
        return
    for f in fields(config):  # a config that built is valid: no NaN sneaks in
        v = getattr(config, f.name)
        assert not (isinstance(v, float) and not math.isfinite(v)), f.name


@FAST
@given(st.lists(st.text(max_size=20), max_size=5))
def test_set_arguments_parse_or_fail_cleanly(items):
    try:
        parse_assignments(items)
    except ConfigError as err:
        assert "--set" in str(err)


@FAST
@given(st.binary(max_size=200))
def test_idx_reader_never_crashes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "x-ubyte"
    path.write_bytes(data)
    with contextlib.suppress(DataError):
        read_idx(path)


arrays = st.one_of(
    st.builds(
        lambda s, d: np.zeros(s, dtype=d),
        st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple),
        st.sampled_from(
            [np.uint8, np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64]
        ),
    ),  # fmt: skip
    st.builds(lambda n: np.full((n, 4, 4), np.nan), st.integers(1, 3)),
    st.builds(lambda n: np.random.default_rng(0).integers(-3, 300, (n,)), st.integers(0, 6)),
)


@FAST
@given(contents=st.dictionaries(st.sampled_from(["x", "y", "x_test", "y_test", "class_names",
                                                 "other"]), arrays, max_size=5))  # fmt: skip
def test_npz_loader_never_crashes(tmp_path_factory, contents):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    buf = io.BytesIO()
    np.savez(buf, **contents)
    path.write_bytes(buf.getvalue())
    try:
        load_npz(path)
    except DataError as err:
        assert str(path) in str(err) or "test_fraction" in str(err)


@FAST
@given(st.binary(max_size=300))
def test_text_loader_never_crashes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("txt") / "t.txt"
    path.write_bytes(data)
    try:
        corpus = load_text_file(path)
    except DataError as err:
        assert str(path) in str(err) or "text" in str(err)
        return
    assert len(corpus.train_ids) > 0 and len(corpus.test_ids) > 0
