"""A fingerprint of the library's numbers: a fixed-seed run of every task and method on its tiny
preset (sha256 of the final weights, every scalar of the full evaluation, the per-block
diagnostics of classification). Refactors that do not change the computation must leave it
bitwise the same. Compare two commits on the same machine, single-threaded:

    git worktree add /tmp/before OLD_COMMIT
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before/src python scripts/fingerprint.py /tmp/before.json
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/fingerprint.py /tmp/after.json
    cmp /tmp/before.json /tmp/after.json && echo bitwise the same

(With two or more threads autoregressive training is not bitwise reproducible on the CPU even
for the same code: docs/experiments.md, 2026-11-28.)
"""

import hashlib
import json
import sys

from diffusionblocks.registry import make_config, make_task
from diffusionblocks.training import Trainer

RUNS = [("tiny", "dblocks", {}), ("tiny", "e2e", {}),
        ("tiny", "dblocks", {"schedule": "sequential", "shared": "block-copies"}),
        ("dit-tiny", "dblocks", {"fid_samples": 0}), ("dit-tiny", "e2e", {"fid_samples": 0}),
        ("ar-tiny", "dblocks", {}), ("ar-tiny", "e2e", {}), ("recurrent-tiny", "dblocks", {}),
        ("recurrent-tiny", "bptt", {}), ("mdm-tiny", "dblocks", {})]  # fmt: skip


def main(out: str) -> None:
    result = {}
    for preset, method, extra in RUNS:
        task = make_task(make_config(preset, {"method": method, **extra}))
        trainer = Trainer(task, None, progress=False)
        fitted = trainer.fit()
        trainer.prepare_evaluation()
        digest = hashlib.sha256()
        for name, tensor in sorted(task.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        steps = [1, 2, 4, 8] if preset == "tiny" else None  # the classification sweep
        evaluation = task.evaluate(quick=False, steps=steps)
        key = "/".join([preset, method, *(f"{k}={v}" for k, v in extra.items())])
        result[key] = {
            "weights": digest.hexdigest()[:16],
            "eval": evaluation,
            "layer_evaluations": fitted["accounting"]["layer_evaluations"],
        }
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    print(f"wrote {out}: {len(result)} runs")


if __name__ == "__main__":
    main(sys.argv[1])
