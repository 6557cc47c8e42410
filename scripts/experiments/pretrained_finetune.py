"""Fine-tuning a pretrained causal LM (``pretrained=FOLDER``): what DiffusionBlocks keeps of the
pretrained model, against end-to-end fine-tuning, the depth-L/B model and the model before any
fine-tuning, with each method's measured peak of weights, gradients and optimizer state.

    python scripts/experiments/pretrained_finetune.py --out /tmp/ft \
        --json docs/results/pretrained/finetune/results.json

The pretrained model is the stand-in of ``examples/hf_finetune.py`` (a 4-layer Llama of width 64
and a 512-token BPE, pretrained there on the first million characters of Shakespeare's training
text for 200 steps): no real pretrained model can be downloaded here. Fine-tuning: Shakespeare
(training text; val and test as in docs/data.md), ``ar-text`` with the example's settings
(sequences of 64 tokens, the first 1,024 training sequences, ``epochs`` per block, lr 1e-3),
B = 2, DiffusionBlocks block-resident (``schedule=sequential``) and interleaved
(``schedule=random``); 3 seeds of the fine-tuning (one stand-in). The settings were fixed
before any run (nothing selected); val and test reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from protocol import add_caveat_argument, protocol  # noqa: E402

import diffusionblocks as db  # noqa: E402
from diffusionblocks.registry import make_config, make_task  # noqa: E402

# name -> the overrides of the run: DiffusionBlocks block-resident (one block after another:
# the memory-saving mode) and interleaved (every block in memory, the blocks' steps mixed)
METHODS = {"e2e": {"method": "e2e"}, "e2e-shallow": {"method": "e2e-shallow"},
           "dblocks": {"method": "dblocks", "schedule": "sequential"},
           "dblocks-interleaved": {"method": "dblocks", "schedule": "random"}}  # fmt: skip
SETTINGS = dict(data="shakespeare", num_blocks=2, lr=1e-3, seq_len=64, train_subset=1024,
                eval_sequences=256, gen_prompts=0, threads=1)  # fmt: skip


def stand_in(folder: Path) -> Path:
    """The example's stand-in pretrained model, made in ``folder``."""
    spec = importlib.util.spec_from_file_location("hf_finetune", ROOT / "examples/hf_finetune.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not (folder / "model.safetensors").is_file():
        module.stand_in_model(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the stand-in and the runs")
    parser.add_argument("--json", required=True, help="the results file to write")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=4)
    add_caveat_argument(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = str(stand_in(out / "stand-in"))
    # Before fine-tuning: the pretrained model itself (the end-to-end network at its start is
    # the pretrained model exactly: tests/test_pretrained.py), and DiffusionBlocks' readout of
    # the same weights before any block has trained.
    before = {}
    for method in ("e2e", "dblocks"):
        values = {**SETTINGS, "pretrained": folder, "method": method, "schedule": "random"}
        task = make_task(make_config("ar-text", values))  # every block built (not resident)
        before[method] = {s: task.evaluate(split=s)["heldout_ce"] for s in ("val", "test")}
        print("before fine-tuning", method, before[method], flush=True)
    rows = []
    for method, overrides in METHODS.items():
        for seed in range(args.seeds):
            run = out / f"{method}-s{seed}"
            model = db.train("ar-text", out=run, progress=False, pretrained=folder, seed=seed,
                             epochs=args.epochs, **SETTINGS, **overrides)  # fmt: skip
            r = model.results
            rows.append({
                "method": method, "seed": seed, "run": str(run),
                "val_ce": r["eval_val"]["heldout_ce"], "test_ce": r["eval"]["heldout_ce"],
                "peak_state_bytes": r["memory"]["peak_state_bytes"],
                "train_seconds": r["timing"]["train_seconds"], "config": r["config"],
            })  # fmt: skip
            print(method, seed, rows[-1]["val_ce"], rows[-1]["peak_state_bytes"], flush=True)
    trivial = model.results["trivial"]  # the unigram model of the training tokens
    summary: dict[str, object] = {
        "before fine-tuning (pretrained model, end to end)": before["e2e"],
        "before fine-tuning (DiffusionBlocks readout)": before["dblocks"],
        "trivial (unigram)": {s: trivial[s]["heldout_ce"] for s in ("val", "test")},
    }
    for method in METHODS:
        group = [r for r in rows if r["method"] == method]
        summary[method] = {
            split: {"mean": statistics.mean(r[f"{split}_ce"] for r in group),
                    "std": statistics.stdev(r[f"{split}_ce"] for r in group),
                    "seeds": [r[f"{split}_ce"] for r in group]}
            for split in ("val", "test")
        }  # fmt: skip
        summary[method]["peak_state_bytes"] = max(r["peak_state_bytes"] for r in group)
    record = {
        "protocol": protocol(
            selected_on="none (the settings were fixed before any run)",
            reported_on="val and test",
            seeds=args.seeds,
            baselines=["e2e", "e2e-shallow", "before fine-tuning", "trivial"],
            caveats=[
                "a stand-in pretrained model (4 layers, width 64, 200 steps of pretraining), "
                "not a real checkpoint; one stand-in, seeds vary the fine-tuning only; "
                "CE in nats per character",
                *args.caveat,
            ],
            argv=argv,
            script=__file__,
        ),
        "summary": summary,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
