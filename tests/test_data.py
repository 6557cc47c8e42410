"""Dataset loaders and their errors."""

import gzip
import struct

import numpy as np
import pytest
import torch
from helpers import needs_fmnist

from diffusionblocks.data.images import (
    DataError,
    load_digits_dataset,
    load_fashion_mnist,
    load_image_dataset,
    load_mnist1d,
    load_npz,
    read_idx,
)


def _write_idx(path, array, compress=True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(data)


def _fake_fashion(tmp_path, n_train=20, n_test=10, compress=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 28, 28)),
            compress,
        )
        _write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (n,)), compress
        )
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path, compress):
    ds = load_fashion_mnist(_fake_fashion(tmp_path, compress=compress))
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_x.min() >= 0 and ds.train_x.max() <= 1
    assert ds.train_y.dtype == torch.int64 and ds.num_classes == 10


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not found"):
        load_fashion_mnist(tmp_path)  # folder exists, files do not


def test_truncated_idx_is_refused(tmp_path):
    _fake_fashion(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")


def test_mismatched_idx_split_is_refused(tmp_path):
    _fake_fashion(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(DataError, match="do not match"):
        load_fashion_mnist(tmp_path)


def test_digits_split_is_fixed():
    a, b = load_digits_dataset(), load_digits_dataset()
    assert torch.equal(a.test_y, b.test_y)
    assert len(a.train_y) + len(a.test_y) == 1797 and a.image_shape == (1, 8, 8)


def test_npz_uint8_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "a.npz",
        x=rng.integers(0, 256, (50, 6, 6), dtype=np.uint8),
        y=rng.integers(0, 3, 50),
    )
    ds = load_npz(tmp_path / "a.npz", test_fraction=0.2)
    assert len(ds.train_y) == 40 and len(ds.test_y) == 10 and ds.image_shape == (1, 6, 6)
    np.savez(
        tmp_path / "b.npz",
        x=rng.random((8, 3, 4, 4)).astype(np.float32),
        y=np.arange(8),
        x_test=rng.random((2, 3, 4, 4)).astype(np.float32),
        y_test=np.array([0, 1]),
    )
    ds = load_image_dataset(str(tmp_path / "b.npz"))
    assert ds.image_shape == (3, 4, 4) and ds.num_classes == 8 and len(ds.test_y) == 2


BAD_NPZ = [
    (dict(x=np.zeros((4, 5, 5), np.uint8)), "no array 'y'"),
    (dict(x=np.zeros((4, 5), np.uint8), y=np.zeros(4, int)), "must be \\(N, H, W\\)"),
    (dict(x=np.zeros((4, 5, 5), np.uint8), y=np.zeros(3, int)), "one label per image"),
    (dict(x=np.zeros((4, 5, 5), np.uint8), y=np.zeros(4, float)), "integer labels"),
    (dict(x=np.zeros((4, 5, 5), np.uint8), y=-np.ones(4, int)), "negative labels"),
    (dict(x=np.full((4, 5, 5), 2.0), y=np.zeros(4, int)), "must lie in \\[0, 1\\]"),
    (dict(x=np.full((4, 5, 5), np.nan), y=np.zeros(4, int)), "NaN"),
    (dict(x=np.full((4, 5, 5), 300, np.int32), y=np.zeros(4, int)), "dtype int32"),
    (dict(x=np.zeros((0, 5, 5), np.uint8), y=np.zeros(0, int)), "empty"),
    (dict(x=np.zeros((4, 9, 5, 5), np.uint8), y=np.zeros(4, int)), "channels"),
    (
        dict(
            x=np.zeros((4, 5, 5), np.uint8),
            y=np.zeros(4, int),
            x_test=np.zeros((2, 5, 5), np.uint8),
        ),
        "both",
    ),
    (
        dict(
            x=np.zeros((4, 5, 5), np.uint8),
            y=np.zeros(4, int),
            x_test=np.zeros((2, 6, 6), np.uint8),
            y_test=np.zeros(2, int),
        ),
        "test images have shape",
    ),
    (dict(x=np.zeros((1, 5, 5), np.uint8), y=np.zeros(1, int)), "cannot be split"),
]


@pytest.mark.parametrize("arrays,message", BAD_NPZ)
def test_bad_npz_is_named(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_unreadable_and_missing_npz(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="unknown dataset"):
        load_image_dataset("cifar-100")


@needs_fmnist
def test_real_fashion_mnist():
    ds = load_fashion_mnist()
    assert len(ds.train_y) == 60_000 and len(ds.test_y) == 10_000
    assert ds.image_shape == (1, 28, 28)
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10


def test_validation_split_of_a_class_sorted_file_keeps_every_class(tmp_path):
    """A user file with its own test split may be sorted by class: the validation examples are
    drawn from a permutation, not the file's tail, so training keeps every class."""
    x = np.zeros((200, 4, 4), dtype=np.uint8)
    y = np.repeat(np.arange(10), 20)  # sorted by class
    np.savez(tmp_path / "sorted.npz", x=x, y=y, x_test=x[:10], y_test=y[:10])
    ds = load_npz(tmp_path / "sorted.npz").hold_out(0.1)
    assert len(ds.val_y) == 20 and len(ds.train_y) == 180
    assert len(torch.unique(ds.val_y)) > 3 and len(torch.unique(ds.train_y)) == 10
    assert (ds.train_y[1:] >= ds.train_y[:-1]).all()  # training keeps the file's order
    fashion_like = load_npz(tmp_path / "sorted.npz")
    fashion_like.shuffled = True  # a shuffled source: the tail is the validation split
    assert torch.equal(fashion_like.hold_out(0.1).val_y, torch.from_numpy(y[-20:]))


def test_training_without_a_validation_split_completes(tmp_path):
    from diffusionblocks.cli import main

    out = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--set", "val_fraction=0", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    import json

    results = json.loads((out / "results.json").read_text())
    assert "eval_val" not in results and results["eval"]["split"] == "test"


def test_mnist1d_is_generated_deterministically_without_touching_global_seeds():
    import random

    random.seed(5)
    np.random.seed(5)
    expect = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    a = load_mnist1d(num_samples=500)
    assert (random.random(), np.random.rand()) == expect  # the generator's seeding undone
    b = load_mnist1d(num_samples=500)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape == (400, 2, 4, 5) and a.test_x.shape == (100, 2, 4, 5)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    lo = min(a.train_x.min(), a.test_x.min())
    hi = max(a.train_x.max(), a.test_x.max())
    assert (lo, hi) == (0.0, 1.0)
    assert set(a.train_y.tolist()) == set(range(10)) and a.num_classes == 10
    # pixel (r, c) holds points 2t and 2t+1 of the signal, t = 5r + c: the layout is the
    # signal's order, so neighbouring points share a token
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 500
    raw = make_dataset(args)
    lo = min(raw["x"].min(), raw["x_test"].min())
    hi = max(raw["x"].max(), raw["x_test"].max())
    flat = a.train_x.permute(0, 2, 3, 1).reshape(400, 40).numpy()  # index 2t + k
    np.testing.assert_allclose(flat, (raw["x"] - lo) / (hi - lo), rtol=0, atol=1e-6)
    assert np.array_equal(a.train_y.numpy(), raw["y"])


def test_mnist1d_without_its_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # the import fails
    with pytest.raises(DataError, match=r"pip install 'diffusionblocks\[mnist1d\]'"):
        load_image_dataset("mnist1d")
