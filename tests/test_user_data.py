"""A user's first hour with their own data (issue 14): each test plays what a user does with a
small file of their own, through the loaders that ``--set data=PATH`` reaches."""

import os
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusionblocks.data.images import (
    FORMATS_HINT,
    DataError,
    DataWarning,
    load_image_dataset,
    load_npz,
)
from diffusionblocks.data.text import load_text_corpus


def _images(n=40, classes=4, shape=(6, 6), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes


# ---------------------------------------------------------------------- 1. the wrong file
def test_text_or_garbage_given_as_image_data_is_named(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 20, encoding="utf-8")
    for given in (text, tmp_path / "data.npz"):  # a text file, also under an .npz name
        given.write_bytes(text.read_bytes())
        with pytest.raises(DataError) as err:
            load_image_dataset(str(given))
        assert f"{given} is not an .npz archive" in str(err.value)
        assert FORMATS_HINT in str(err.value) and "pickle" not in str(err.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="is not an .npz archive") as err:
        load_image_dataset(str(garbage))
    assert "pickle" not in str(err.value) and "\n" not in str(err.value)
    np.save(tmp_path / "x.npy", _images()[0])
    with pytest.raises(DataError, match=r"not an .npz archive .*single .npy array.*np.savez"):
        load_image_dataset(str(tmp_path / "x.npy"))
    with pytest.raises(DataError, match=f"'shakespeare' is a text dataset: {FORMATS_HINT}"):
        load_image_dataset("shakespeare")


def test_image_archive_given_to_a_text_preset_is_named(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    with pytest.raises(DataError) as err:
        load_text_corpus(str(tmp_path / "mine.npz"))
    assert "not a text file" in str(err.value) and FORMATS_HINT in str(err.value)
    assert "UTF-8 (bad byte" not in str(err.value)  # not the misleading encoding advice
    with pytest.raises(DataError, match=f"'digits' is an image dataset: {FORMATS_HINT}"):
        load_text_corpus("digits")


def test_a_folder_given_as_data_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"is a folder, not an .npz archive.* x \(images\)"):
        load_image_dataset(str(tmp_path))
    with pytest.raises(DataError, match="is a folder, not a text file: text presets take one"):
        load_text_corpus(str(tmp_path))


def test_tilde_in_a_data_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    x, y = _images()
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    (tmp_path / "corpus.txt").write_text("abcdefghij" * 10, encoding="utf-8")
    assert load_image_dataset("~/mine.npz").image_shape == (1, 6, 6)
    assert len(load_text_corpus("~/corpus.txt").train_ids) == 90


def test_a_missing_file_is_named_with_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    where = re.escape(os.path.join(os.getcwd(), "missing.npz"))
    with pytest.raises(DataError, match=f"^dataset file {where} does not exist$"):
        load_image_dataset("missing.npz")
    where = re.escape(os.path.join(os.getcwd(), "missing.txt"))
    with pytest.raises(DataError, match=f"^text file {where} does not exist$"):
        load_text_corpus("missing.txt")
    with pytest.raises(DataError, match=f"does not exist; {FORMATS_HINT}"):
        load_text_corpus("missing.npz")  # the image file, given to a text preset


# ---------------------------------------------------------------------- 2. channels-last
def test_channels_last_images_are_accepted(tmp_path):
    x, y = _images(shape=(6, 5, 3))  # (N, H, W, C): how PIL, matplotlib and TF store images
    np.savez(tmp_path / "rgb.npz", x=x, y=y, x_test=x[:4], y_test=y[:4])
    ds = load_image_dataset(str(tmp_path / "rgb.npz"))
    assert ds.image_shape == (3, 6, 5) and ds.train_x.is_contiguous()
    want = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(ds.train_x, want)
    # Ambiguous (axis 1 and the last axis could both be channels): read as channels-first.
    x3 = np.ascontiguousarray(x[:, :3, :3, :3])
    np.savez(tmp_path / "tiny.npz", x=x3, y=y, x_test=x3[:4], y_test=y[:4])
    ds = load_npz(tmp_path / "tiny.npz")
    assert torch.equal(ds.train_x, torch.from_numpy(x3.astype(np.float32) / 255))


# ---------------------------------------------------------------------- 3. integer pixels
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16, np.int8])
def test_integer_pixels_in_0_255_load_like_uint8(tmp_path, dtype):
    x, y = _images()
    x = x // 2 if dtype == np.int8 else x  # int8 holds 0..127
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    np.savez(tmp_path / "int.npz", x=x.astype(dtype), y=y)
    assert torch.equal(
        load_npz(tmp_path / "int.npz").train_x, load_npz(tmp_path / "u8.npz").train_x
    )


def test_integer_pixels_out_of_range_are_refused_with_the_range(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "16bit.npz", x=x.astype(np.uint16) * 257, y=y)  # a 16-bit scan
    with pytest.raises(DataError, match=r"dtype uint16 with values \d+\.\.65535.*0\.\.255; scale"):
        load_npz(tmp_path / "16bit.npz")
    np.savez(tmp_path / "neg.npz", x=x.astype(np.int32) - 128, y=y)  # centred pixels
    with pytest.raises(DataError, match=r"values -128\.\.127"):
        load_npz(tmp_path / "neg.npz")


# ---------------------------------------------------------------------- 4. suspicious labels
def test_a_single_training_class_is_refused(tmp_path):
    x, _ = _images()
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(40, int))
    with pytest.raises(DataError, match="have label 0; a classifier needs at least two classes"):
        load_image_dataset(str(tmp_path / "one.npz"))
    ds = load_image_dataset(str(tmp_path / "one.npz"), allow_single_class=True)
    assert ds.num_classes == 1


def test_sparse_labels_are_refused_unless_allowed(tmp_path):
    x, _ = _images(n=50)
    y = np.r_[np.arange(45) % 9, [1000] * 5]  # nine classes and a stray code
    np.savez(tmp_path / "sparse.npz", x=x, y=y)
    with pytest.raises(DataError) as err:
        load_image_dataset(str(tmp_path / "sparse.npz"))
    message = str(err.value)
    assert "use 10 values (0, 1, 2, 3, 4, 5, ..., 1000) but go up to 1000" in message
    assert "1001 outputs, 991 of them for labels no example has" in message
    assert "relabel to 0..9" in message and "sparse_labels" in message
    ds = load_image_dataset(str(tmp_path / "sparse.npz"), allow_sparse_labels=True)
    assert ds.num_classes == 1001
    # The relabelling the message suggests gives a dataset that loads.
    np.savez(tmp_path / "dense.npz", x=x, y=np.unique(y, return_inverse=True)[1])
    assert load_npz(tmp_path / "dense.npz").num_classes == 10


def test_test_classes_missing_from_training_warn(tmp_path):
    x, y = _images(n=40, classes=3)
    np.savez(tmp_path / "a.npz", x=x, y=y, x_test=x[:6], y_test=np.array([0, 1, 2, 3, 3, 0]))
    with pytest.warns(DataWarning, match=r"test labels 3 have no training example.* 2 test"):
        ds = load_npz(tmp_path / "a.npz")
    assert ds.num_classes == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file gives no warning
        np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:6], y_test=y[:6])
        load_npz(tmp_path / "b.npz")


# ---------------------------------------------------------------------- 5. docs/data.md
def test_the_snippets_of_docs_data_md_write_files_that_load(tmp_path, monkeypatch):
    doc = (Path(__file__).parent.parent / "docs" / "data.md").read_text()
    write, relabel = [block.split("```", 1)[0] for block in doc.split("```python\n")[1:3]]
    monkeypatch.chdir(tmp_path)
    exec(write, {})  # writes mydata.npz: (N, H, W, 3) uint8 with class_names
    ds = load_image_dataset("mydata.npz")
    assert ds.image_shape == (3, 32, 32) and ds.num_classes == 5 and ds.class_names[4] == "eel"
    assert len(ds.test_y) == 50 and len(ds.hold_out(0.1).val_y) == 45
    scope = {"np": np, "y": np.r_[np.arange(9), [1000]], "y_test": np.array([1000, 3])}
    exec(textwrap.dedent(relabel), scope)
    assert scope["y"].tolist() == list(range(10)) and scope["y_test"].tolist() == [9, 3]
