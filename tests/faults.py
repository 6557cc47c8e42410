"""Fault injection helpers shared by the tests and scripts/experiments/fault_campaign.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["--preset", "tiny", "--set", "epochs=3", "--set", "checkpoint_every=3",
         "--set", "device=cpu", "--no-progress"]  # fmt: skip


def dblocks(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "diffusionblocks", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)  # fmt: skip


def final_weights(run: Path) -> dict[str, bytes]:
    """The bytes of every tensor file of the run's latest checkpoint."""
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {p.name: p.read_bytes() for p in ckpt.iterdir() if p.suffix == ".safetensors"}


def check_complete(run: Path) -> list[str]:
    """Problems with the files a killed run left: every non-temporary file must be whole."""
    from diffusionblocks.training.checkpoint import Checkpoint, latest_checkpoint

    problems = []
    if (run / "config.json").exists():
        try:
            json.loads((run / "config.json").read_text())
        except json.JSONDecodeError:
            problems.append("config.json is torn")
    if (run / "results.json").exists():
        try:
            json.loads((run / "results.json").read_text())
        except json.JSONDecodeError:
            problems.append("results.json is torn")
    if (run / "checkpoints").exists():
        path = latest_checkpoint(run / "checkpoints")
        if path is not None:
            try:
                Checkpoint(path).verify()
            except Exception as err:  # noqa: BLE001 - any failure is a problem to report
                problems.append(f"latest checkpoint does not verify: {err}")
    return problems


def kill_phase(run: Path) -> str:
    """When a kill landed, from what it left: ``before first checkpoint`` (nothing to resume
    from), ``mid-training`` (a checkpoint before the last step), ``after training`` (the final
    checkpoint was written)."""
    latest = run / "checkpoints" / "latest"
    if not latest.exists():
        return "before first checkpoint"
    meta = json.loads((run / "checkpoints" / latest.read_text().strip() / "meta.json").read_text())
    return "after training" if meta["step"] >= meta["total_steps"] else "mid-training"


def kill_and_resume(run: Path, reference: dict[str, bytes], rng: random.Random | None,
                    max_delay: float = 9.0) -> dict:  # fmt: skip
    """Start training, SIGKILL it after a random delay (``rng``), or as soon as the first
    checkpoint exists (``rng=None``: a kill mid-training), check what is on disk, resume to the
    end and compare the final weights with an uninterrupted run's."""
    proc = dblocks("train", *TRAIN, "--out", str(run))
    start = time.time()
    if rng is None:
        while not (run / "checkpoints" / "latest").exists() and time.time() - start < 600:
            time.sleep(0.01)
    else:
        time.sleep(rng.uniform(0.5, max_delay))
    delay = time.time() - start
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = {"delay_s": round(delay, 2), "problems": check_complete(run)}
    latest = run / "checkpoints" / "latest"
    record["resumed_from"] = latest.read_text().strip() if latest.exists() else None
    record["phase"] = kill_phase(run)
    args = (
        ["train", "--out", str(run), "--resume", "--no-progress"]
        if (run / "config.json").exists()
        else ["train", *TRAIN, "--out", str(run)]
    )
    resumed = dblocks(*args)
    out, err = resumed.communicate(timeout=600)
    record["resume_exit"] = resumed.returncode
    record["resume_stderr"] = err[-500:] if resumed.returncode else ""
    leftovers = [p.name for p in run.rglob(".*") if p.name not in (".", "..")]
    record["leftover_temporary"] = leftovers
    metrics_ok = True
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            metrics_ok = False
    record["metrics_whole"] = metrics_ok
    record["bit_exact"] = resumed.returncode == 0 and final_weights(run) == reference
    record["ok"] = (
        not record["problems"] and resumed.returncode == 0 and not leftovers and metrics_ok
        and record["bit_exact"]
    )  # fmt: skip
    return record


def names_key(message: str, key: str) -> bool:
    """Whether a refusal ``message`` names config key ``key`` (quoted, or as ``key=value`` not
    preceded by more of a name: ``num_blocks=`` does not name ``blocks``)."""
    import re

    if f"'{key}'" in message:
        return True
    return bool(key) and re.search(rf"(?<![\w.]){re.escape(key)}=", message) is not None


def refused_alone(cls: type, data: dict) -> list[str]:
    """The keys of ``data`` that ``cls`` refuses when each is given alone (over the defaults):
    the offending keys. Empty when only a combination of keys is wrong (e.g. ``heads`` that does
    not divide ``hidden``), and then any of the given keys is the right one to name."""
    from diffusionblocks.config import ConfigError, build_config

    offending = []
    for key, value in data.items():
        try:  # keys without a usable default get their example values
            build_config(cls, {**getattr(cls, "required", {}), key: value})
        except ConfigError:
            offending.append(key)
    return offending


def names_the_offending_key(cls: type, data: dict, message: str) -> bool:
    """The campaign's and the property test's criterion: a refusal of ``data`` names one of the
    keys that are refused on their own, or, when none is, one of the keys that were given; or
    it names a key the config requires (no usable default: ``required``) that ``data`` left
    empty."""
    required = getattr(cls, "required", {})
    if any(f"missing value for '{k}'" in message and not data.get(k) for k in required):
        return True
    return any(names_key(message, k) for k in (refused_alone(cls, data) or list(data)))
