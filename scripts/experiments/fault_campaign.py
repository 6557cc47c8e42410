"""Fault campaign: SIGKILLs at random moments with resume, corrupted and foreign checkpoint
files, and random bad inputs; writes a JSON record and a Markdown table.

    .venv/bin/python scripts/experiments/fault_campaign.py --kills 20 --corruptions 40 \
        --bad-inputs 2000 --out docs/results/faults

Kills are counted by when they landed (before the first checkpoint, mid-training, after the
final checkpoint); the campaign goes on until ``--kills`` of them landed mid-training, the only
ones that test resuming. A corrupted file is "named" when the refusal contains its path; a bad
config is "named" when the refusal names the offending key: one of the given keys that the config
class refuses on its own, or, when none is refused alone (only the combination is wrong), one of
the keys that were given (``tests/faults.py::names_the_offending_key``, the criterion of the
property test ``tests/test_fuzz.py`` too).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from faults import (  # noqa: E402
    TRAIN,
    dblocks,
    final_weights,
    kill_and_resume,
    names_the_offending_key,
)

from diffusionblocks.config import ConfigError, build_config  # noqa: E402
from diffusionblocks.registry import TASKS, make_task  # noqa: E402
from diffusionblocks.training.checkpoint import CheckpointError  # noqa: E402
from diffusionblocks.training.trainer import Trainer  # noqa: E402


def corruption_trials(n: int, rng: random.Random, work: Path) -> list[dict]:
    """Flip bytes in, truncate, or swap in a foreign file for a random checkpoint file, then
    load: every one must be refused with a message naming the file."""
    base = work / "corrupt-base"
    proc = dblocks("train", *TRAIN, "--out", str(base))
    assert proc.wait(timeout=600) == 0
    foreign = work / "foreign"
    proc = dblocks("train", *TRAIN, "--set", "method=e2e", "--out", str(foreign))
    assert proc.wait(timeout=600) == 0
    records = []
    for i in range(n):
        run = work / f"corrupt-{i}"
        shutil.copytree(base, run)
        ckpt_dir = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
        files = sorted(p for p in ckpt_dir.iterdir() if p.name != "meta.json")
        target = rng.choice(files)
        kind = rng.choice(["flip", "truncate", "foreign", "meta"])
        data = bytearray(target.read_bytes())
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            target.write_bytes(bytes(data))
        elif kind == "truncate":
            target.write_bytes(bytes(data[: rng.randrange(len(data))]))
        elif kind == "meta":
            target = ckpt_dir / "meta.json"
            target.write_text(target.read_text()[: rng.randrange(20, 200)])
        else:  # another task's checkpoint in place of this one
            shutil.rmtree(run / "checkpoints")
            shutil.copytree(foreign / "checkpoints", run / "checkpoints")
            target = run / "checkpoints"
        try:  # what --resume does: every file of the checkpoint is read and checked
            from diffusionblocks.runs import read_run_config

            trainer = Trainer(make_task(read_run_config(run)), run, progress=False)
            trainer.resume()
            refused, message = False, "resumed"
        except CheckpointError as err:
            refused, message = True, str(err)
        named = str(target) in message
        records.append({"kind": kind, "file": target.name, "refused": refused,
                        "names_the_file": named, "message": message[:160]})  # fmt: skip
        shutil.rmtree(run)
    return records


def bad_input_trials(n: int, rng: random.Random) -> list[dict]:
    """Random keys and values through every task's config class: each must build or raise a
    ConfigError naming the offending key."""
    classes = [cls for cls, _ in TASKS.values()]
    from dataclasses import fields

    names = sorted({f.name for cls in classes for f in fields(cls)})
    pool = [None, True, -1, 0, 10**30, -(10**30), float("nan"), float("inf"), 1.5, "", "x",
            "nan", "-3", "1e999", "all", "0,99", [1, 2], [-1], {"a": 1}, "cuda:99",
            "../../etc"]  # fmt: skip
    records = []
    for _ in range(n):
        cls = rng.choice(classes)
        data = {rng.choice(names + ["bogus", "lrr"]): rng.choice(pool)
                for _ in range(rng.randint(1, 4))}  # fmt: skip
        try:
            build_config(cls, data)
            outcome = "built"
        except ConfigError as err:
            message = str(err)
            named = names_the_offending_key(cls, data, message)
            outcome = "named error" if named else f"unnamed error: {message} (given {data})"
        except Exception as err:  # noqa: BLE001 - the point is to catch anything else
            outcome = f"CRASH {type(err).__name__}: {err}"
        records.append({"outcome": outcome})
    return records


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--corruptions", type=int, default=40)
    p.add_argument("--bad-inputs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results/faults")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="dblocks-faults-"))
    start = time.time()
    ref_run = work / "reference"
    t0 = time.time()
    proc = dblocks("train", *TRAIN, "--out", str(ref_run))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    duration = time.time() - t0  # kills land uniformly over a whole run, start-up included
    reference = final_weights(ref_run)
    kills: list[dict] = []
    while sum(k["phase"] == "mid-training" for k in kills) < args.kills:
        if len(kills) >= 4 * args.kills:
            break  # give up: the run is too short for kills to land mid-training
        kills.append(kill_and_resume(work / f"kill-{len(kills)}", reference, rng, duration))
    mid = [k for k in kills if k["phase"] == "mid-training"]
    corruptions = corruption_trials(args.corruptions, rng, work)
    bad = bad_input_trials(args.bad_inputs, rng)
    shutil.rmtree(work, ignore_errors=True)
    summary = {
        "command": "python scripts/experiments/fault_campaign.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - start),
        "reference_run_seconds": round(duration, 1),
        "kills": len(kills),
        "kills_before_first_checkpoint": sum(
            k["phase"] == "before first checkpoint" for k in kills
        ),  # fmt: skip
        "kills_after_training_finished": sum(k["phase"] == "after training" for k in kills),
        "kills_mid_training": len(mid),
        "mid_training_kills_resumed_bit_exact": sum(k["bit_exact"] for k in mid),
        "kills_resumed_bit_exact": sum(k["bit_exact"] for k in kills),
        "kills_with_torn_files": sum(bool(k["problems"]) for k in kills),
        "kills_leaving_temporary_files_after_resume": sum(
            bool(k["leftover_temporary"]) for k in kills
        ),
        "kills_resumed_from_a_checkpoint": sum(k["resumed_from"] is not None for k in kills),
        "corruptions": len(corruptions),
        "corruptions_refused": sum(c["refused"] for c in corruptions),
        "corruptions_refused_naming_the_file": sum(
            c["refused"] and c["names_the_file"] for c in corruptions
        ),
        "bad_inputs": len(bad),
        "bad_inputs_named_errors": sum(b["outcome"] == "named error" for b in bad),
        "bad_inputs_built": sum(b["outcome"] == "built" for b in bad),
        "bad_inputs_crashes": sum(b["outcome"].startswith("CRASH") for b in bad),
        "bad_inputs_unnamed_errors": sum(b["outcome"].startswith("unnamed") for b in bad),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unnamed = [b["outcome"] for b in bad if b["outcome"].startswith("unnamed")][:20]
    protocol = {
        "selected_on": "none",
        "reported_on": "none: counts of kills, corruptions and refused configs",
        "seeds": 1,
        "baselines": ["an uninterrupted run of the same command"],
        "command": summary["command"],
        "campaign_seed": args.seed,
        "caveats": [
            "a fault campaign, not a comparison of methods: no data split is read, nothing is "
            "chosen, and there are no baseline methods (each resumed run is compared bit for bit "
            "with an uninterrupted run of the same command)",
            "seeds counts the one training configuration killed and resumed (the tiny preset at "
            "its seed, 3 epochs, a checkpoint every 3 steps; tests/faults.py::TRAIN)",
        ],
    }
    record = {"protocol": protocol, "summary": summary, "kills": kills,
              "corruptions": corruptions, "unnamed_refusals": unnamed}  # fmt: skip
    (out / "faults.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k not in ("command", "date"))
    (out / "faults.md").write_text(
        f"# Fault campaign ({summary['date']})\n\n`{summary['command']}`\n\n| measure | value |\n"
        f"|---|---|\n{rows}\n"
    )
    print(json.dumps(summary, indent=1))
    ok = (summary["kills_resumed_bit_exact"] == summary["kills"]
          and summary["kills_mid_training"] >= args.kills
          and summary["corruptions_refused_naming_the_file"] == summary["corruptions"]
          and summary["bad_inputs_unnamed_errors"] == 0
          and summary["bad_inputs_crashes"] == 0)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
