"""The examples run as a user runs them (offline, CPU) and print what their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_your_model_quick_trains_a_users_mixer_and_prints_the_test_metric_last(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "your_model.py"), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy "), proc.stdout
    # clearly above the trivial baseline it prints (the majority class: about 1 in 10)
    assert float(last.split()[2]) > 0.4, last
    assert (tmp_path / "runs" / "digits.npz").is_file()
    assert len(list((tmp_path / "runs").glob("your-model-dblocks-B3-*"))) == 1


def test_hf_finetune_quick_fine_tunes_a_saved_llama_and_prints_the_test_metric_last(tmp_path):
    """The stand-in pretrained model is saved with save_pretrained and fine-tuned block-wise
    (block-resident); the last line is the test CE per character beside the unigram baseline."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "hf_finetune.py"), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test CE ") and "unigram baseline" in last, proc.stdout
    folder = tmp_path / "runs" / "stand-in-llama"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    (run,) = (tmp_path / "runs").glob("ar-text-dblocks-*")
    assert (run / "tokenizer.json").read_text() == (folder / "tokenizer.json").read_text()
