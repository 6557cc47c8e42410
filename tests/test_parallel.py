"""Block-parallel training (torchrun + gloo on 127.0.0.1), per-block checkpoints, assembly."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusionblocks.assemble import AssembleError, assemble
from diffusionblocks.cli import main
from diffusionblocks.loading import load_run
from diffusionblocks.registry import read_run_config
from diffusionblocks.training.checkpoint import Checkpoint, latest_checkpoint
from diffusionblocks.training.weights import read_weights

SRC = str(Path(__file__).resolve().parents[1] / "src")


def torchrun(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "diffusionblocks", "train", "--no-progress",
           *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def two_block_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("par") / "run"
    proc = torchrun(2, "--preset", "tiny", "--set", "parallel=true", "--set", "device=cpu",
                    "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_each_rank_holds_only_its_block(two_block_run):
    results = json.loads((two_block_run / "results.json").read_text())
    assert results["parallel"]["world"] == 2
    for rank in results["ranks"]:
        assert rank["materialized_blocks"] == [rank["block"]]
        assert rank["optimizer_units"] == [rank["block"]]
    assert sorted(r["block"] for r in results["ranks"]) == [0, 1]
    assert results["accounting"]["steps_per_unit"] == [20, 20]  # 1,293 digits // 64
    assert 0 <= results["eval"]["accuracy"] <= 1


def test_parallel_equals_the_single_process_synchronous_run(two_block_run, tmp_path):
    single = tmp_path / "single"
    assert main(["train", "--preset", "tiny", "--set", "schedule=synchronous", "--set",
                 "device=cpu", "--out", str(single), "--no-progress"]) == 0  # fmt: skip
    a = load_file(assemble(single) / "model.safetensors")
    b = load_file(two_block_run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # bitwise: the same computation in one process and in two
        assert torch.equal(a[k], b[k]), k
    # Its evaluation, shared by the ranks (one split each), is the single process's.
    par = json.loads((two_block_run / "results.json").read_text())
    one = json.loads((single / "results.json").read_text())
    assert par["parallel"]["evaluated_by_rank"] == {"test": [0], "val": [1]}
    for key in ("eval", "eval_val"):
        assert par[key]["split"] == one[key]["split"]
        assert par[key]["accuracy"] == one[key]["accuracy"]
        assert par[key]["steps_sweep"] == one[key]["steps_sweep"]


def test_assembled_model_is_the_union_of_the_blocks_bitwise(two_block_run):
    model = load_file(two_block_run / "model" / "model.safetensors")
    for b in (0, 1):
        block = Checkpoint(latest_checkpoint(two_block_run / "blocks" / f"block-{b}"))
        for k, v in block.tensors("block").items():
            assert torch.equal(model[f"blocks.{b}.{k}"], v)
        assert block.meta["noise_interval"] and block.meta["block"] == b
    shared = Checkpoint(latest_checkpoint(two_block_run / "shared")).tensors("shared")
    for k, v in shared.items():
        assert torch.equal(model[k], v)
    card = json.loads((two_block_run / "model" / "config.json").read_text())
    assert card["shared_policy"] == "sync" and set(card["blocks"]) == {"0", "1"}


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "model")
    return dest


def _edit_meta(folder: Path, **changes):
    meta_path = latest_checkpoint(folder) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def test_assemble_errors(two_block_run, tmp_path):
    run = _copy(two_block_run, tmp_path)
    shutil.rmtree(run / "blocks" / "block-1")
    with pytest.raises(AssembleError, match=r"blocks \[1\] are missing"):
        assemble(run)

    run = _copy(two_block_run, tmp_path / "b")
    shutil.copytree(run / "blocks" / "block-0", run / "blocks" / "block-0-old")
    with pytest.raises(AssembleError, match="block 0 is present more than once"):
        assemble(run)

    run = _copy(two_block_run, tmp_path / "c")
    _edit_meta(run / "blocks" / "block-1", config_hash="0000000000000000")
    with pytest.raises(AssembleError, match="block 1 .* belongs to another config"):
        assemble(run)

    run = _copy(two_block_run, tmp_path / "d")
    _edit_meta(run / "blocks" / "block-0", shared_version="feedfeedfeedfeed")
    with pytest.raises(AssembleError, match=r"blocks \[0\] trained with another version"):
        assemble(run)

    run = _copy(two_block_run, tmp_path / "e")
    _edit_meta(run / "blocks" / "block-1", block=5)
    with pytest.raises(AssembleError, match=r"blocks \[5\] do not exist"):
        assemble(run)

    run = _copy(two_block_run, tmp_path / "f")
    shutil.rmtree(run / "shared")
    with pytest.raises(AssembleError, match="no checkpoint of the shared modules"):
        assemble(run)


def test_retrain_one_block_alone_against_frozen_shared(two_block_run, tmp_path):
    run = _copy(two_block_run, tmp_path)
    before = {
        p.name: p.read_bytes() for p in latest_checkpoint(run / "blocks" / "block-0").iterdir()
    }
    code = main(["train", "--preset", "tiny", "--set", "parallel=true", "--set", "blocks=1",
                 "--set", "shared=frozen", "--set", f"shared_init={run}", "--set", "device=cpu",
                 "--set", "seed=0", "--out", str(run), "--no-progress"])  # fmt: skip
    assert code == 0
    after = {
        p.name: p.read_bytes() for p in latest_checkpoint(run / "blocks" / "block-0").iterdir()
    }
    assert before == after  # block 0 untouched
    model = load_file(assemble(run) / "model.safetensors")
    old = load_file(two_block_run / "model" / "model.safetensors")
    assert not torch.equal(model["blocks.1.layers.0.attn.qkv.weight"],
                           old["blocks.1.layers.0.attn.qkv.weight"])  # fmt: skip
    for k in old:
        if not k.startswith("blocks.1."):
            assert torch.equal(model[k], old[k]), k


def test_one_reader_for_every_layout(two_block_run, tmp_path, capsys):
    """A block-parallel run's blocks, its assembled model folder and a single-process run's
    checkpoint are read by one reader (the same tensors, torch.equal); a parallel run loads and
    evaluates without being assembled first, also with an inference key changed."""
    config = read_run_config(two_block_run)
    from_blocks = read_weights(two_block_run, config)
    assert from_blocks.info["layout"] == "per-block checkpoints" and from_blocks.step == 20
    blocks_state = from_blocks.state_dict()
    model_state = read_weights(two_block_run / "model", config).state_dict()
    assert blocks_state.keys() == model_state.keys()
    assert all(torch.equal(blocks_state[k], model_state[k]) for k in model_state)
    run = _copy(two_block_run, tmp_path)  # no model folder
    task, weights = load_run(run, overrides={"inference_steps": "2"})
    assert weights.step == 20 and task.config.inference_steps == 2
    loaded = task.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model_state.items())
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint_step"] == 20
    assert not (run / "model").exists()  # reading assembles nothing on disk
    single = tmp_path / "single"
    assert main(["train", "--preset", "tiny", "--set", "schedule=synchronous", "--set",
                 "device=cpu", "--set", "epochs=0.2", "--out", str(single),
                 "--no-progress"]) == 0  # fmt: skip
    ckpt = Checkpoint(latest_checkpoint(single / "checkpoints"))
    one = read_weights(single, read_run_config(single))
    assert one.info == {"layout": "single-process checkpoint", "step": ckpt.step}
    state = one.state_dict()
    assert all(torch.equal(state[f"blocks.1.{k}"], v) for k, v in ckpt.tensors("block-1").items())
    assembled = load_file(assemble(single) / "model.safetensors")
    assert assembled.keys() == state.keys()
    assert all(torch.equal(assembled[k], state[k]) for k in state)


def test_a_parallel_run_measures_the_flops_of_the_synchronous_run(two_block_run, tmp_path):
    """Each rank measures its block's step; together they are the single-process synchronous
    run's training FLOPs (the same batches and steps), and the trivial baseline is recorded."""
    from diffusionblocks.registry import make_config
    from diffusionblocks.runs import train_run

    single = train_run(make_config("tiny", {"schedule": "synchronous", "device": "cpu"}),
                       tmp_path / "single", progress=False, log=lambda s: None)  # fmt: skip
    parallel = json.loads((two_block_run / "results.json").read_text())
    assert parallel["compute"]["step_flops_by_block"] == single["compute"]["step_flops_by_block"]
    assert parallel["compute"]["train_flops"] == single["compute"]["train_flops"] > 0
    assert parallel["trivial"] == single["trivial"] and "test" in parallel["trivial"]


def test_three_processes_and_a_bad_world_size(tmp_path):
    out = tmp_path / "three"
    # The light evaluation of the chain readout, shared by the three ranks batch by batch.
    light = ["--set", "final_eval=readout", "--set", "readout=chain", "--set", "eval_batch_size=32"]
    proc = torchrun(3, "--preset", "tiny", "--set", "depth=6", "--set", "num_blocks=3", *light,
                    "--set", "parallel=true", "--set", "device=cpu", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["block"] for r in results["ranks"]) == [0, 1, 2]
    assert all(r["materialized_blocks"] == [r["block"]] for r in results["ranks"])
    # bitwise the single-process synchronous run, also with three processes (the shared
    # gradients are added in rank order, as one process adds its blocks' gradients)
    single = tmp_path / "single"
    assert main(["train", "--preset", "tiny", "--set", "depth=6", "--set", "num_blocks=3",
                 *light, "--set", "schedule=synchronous", "--set", "device=cpu", "--out",
                 str(single), "--no-progress"]) == 0  # fmt: skip
    a = load_file(assemble(single) / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ... and so is its evaluation, every split tallied by every rank and merged.
    one = json.loads((single / "results.json").read_text())
    assert results["parallel"]["evaluated_by_rank"] == {"test": [0, 1, 2], "val": [0, 1, 2]}
    for key in ("eval", "eval_val"):
        assert results[key] == one[key]
    proc = torchrun(3, "--preset", "tiny", "--set", "parallel=true", "--set", "device=cpu",
                    "--out", str(tmp_path / "bad"))  # fmt: skip
    assert proc.returncode != 0 and "needs a world size that is a multiple of 2" in proc.stderr


def test_per_block_shared_policy(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--set", "parallel=true", "--set", "blocks=0",
                 "--set", "shared=per-block", "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "invalid value for 'shared': 'per-block'" in err and "label embeddings" in err
    assert not (tmp_path / "x").exists()  # refused before the run folder was created
    assert main(["train", "--preset", "recurrent-tiny", "--set", "parallel=true",
                 "--out", str(tmp_path / "rec")]) == 2  # fmt: skip
    assert "invalid value for 'parallel'" in capsys.readouterr().err
    out = tmp_path / "mdm"
    proc = torchrun(2, "--preset", "mdm-tiny", "--set", "parallel=true", "--set",
                    "shared=per-block", "--set", "device=cpu", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_file(out / "model" / "model.safetensors")
    assert "shared_per_block.0.token_embed.weight" in model
    assert not torch.equal(model["shared_per_block.0.token_embed.weight"],
                           model["shared_per_block.1.token_embed.weight"])  # fmt: skip
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bpc"] > 0


def test_parallel_without_torchrun_needs_one_block(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--set", "parallel=true",
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    assert "needs torchrun" in capsys.readouterr().err


def test_data_parallel_ranks_of_a_block_read_disjoint_shards(tmp_path):
    """2 blocks x 2 data-parallel ranks: over one epoch the two ranks of a block train on
    disjoint examples that together make the epoch (all but the remainder of a global batch)."""
    out = tmp_path / "dp"
    proc = torchrun(4, "--preset", "tiny", "--set", "parallel=true", "--set", "device=cpu",
                    "--set", "epochs=1", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    n = results["task"]["train_examples"]
    global_batch = 2 * 64
    for block in (0, 1):
        ranks = [r for r in results["ranks"] if r["block"] == block]
        assert sorted(r["data_shard"][0] for r in ranks) == [0, 1]
        a, b = (set(r["first_epoch_indices"]) for r in ranks)
        assert len(a) == len(b) == (n // global_batch) * 64
        assert not a & b
        assert len(a | b) == (n // global_batch) * global_batch > n - global_batch
        assert all(0 <= i < n for i in a | b)
    # the blocks read the same batches: block 0's rank r and block 1's rank r see the same data
    by = {(r["block"], r["data_shard"][0]): r["first_epoch_indices"] for r in results["ranks"]}
    assert by[(0, 0)] == by[(1, 0)] and by[(0, 1)] == by[(1, 1)]
    assert results["accounting"]["steps_per_unit"] == [n // global_batch] * 2


def test_a_parallel_run_resumes_with_a_safe_change(tmp_path, capsys):
    """`--resume --set k=v --allow-safe-changes` on a one-block parallel run (no torchrun): the
    checkpoints' config hash leaves out the safe keys, so the run resumes, then resumes again."""
    out = str(tmp_path / "par")
    assert main(["train", "--preset", "tiny", "--set", "parallel=true", "--set", "blocks=0",
                 "--set", "num_blocks=1", "--set", "device=cpu", "--set", "checkpoint_every=5",
                 "--out", out, "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    resume = ["train", "--out", out, "--resume", "--no-progress"]
    assert main([*resume, "--set", "log_every=3", "--allow-safe-changes"]) == 0, (
        capsys.readouterr().err
    )
    assert main(resume) == 0, capsys.readouterr().err


def test_a_numerical_fault_in_a_parallel_rank_names_its_blocks_checkpoint(tmp_path):
    """A block-parallel rank writes its checkpoints under blocks/block-{b}: an abort on a
    non-finite loss must name the last one there (not the single-process checkpoints/ folder)."""
    from diffusionblocks.registry import make_config, make_task
    from diffusionblocks.training.faults import NumericalFault
    from diffusionblocks.training.parallel import ParallelTrainer, layout

    config = make_config("tiny", {"parallel": "true", "blocks": "1", "nan_policy": "abort",
                                  "checkpoint_every": "4", "device": "cpu"})  # fmt: skip
    task = make_task(config)
    trainer = ParallelTrainer(task, tmp_path / "run", layout((1,), 1, 0), progress=False)
    real, calls = task.loss, []

    def loss(block, batch, generator):
        value, logs = real(block, batch, generator)
        calls.append(block)
        return (value * float("nan"), logs) if len(calls) > 6 else (value, logs)

    task.loss = loss
    with pytest.raises(NumericalFault) as err:
        trainer.fit()
    assert str(tmp_path / "run" / "blocks" / "block-1" / "step-") in str(err.value)


def test_a_users_network_trains_block_parallel_as_in_one_process(tmp_path):
    """Your own network (``stack``): each rank imports the model file, holds its block only, and
    the assembled model equals the single-process synchronous run's bitwise."""
    from helpers import FIXTURES, stack_data

    sets = ["--preset", "your-model", "--set", f"model={FIXTURES}/stack_models.py:mixer4",
            "--set", f"data={stack_data()}", "--set", "num_blocks=2", "--set", "epochs=0.3",
            "--set", "device=cpu"]  # fmt: skip
    proc = torchrun(2, *sets, "--set", "parallel=true", "--out", str(tmp_path / "par"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "par" / "results.json").read_text())
    assert [r["materialized_blocks"] for r in results["ranks"]] == [[0], [1]]
    single = tmp_path / "single"
    assert main(["train", *sets, "--set", "schedule=synchronous", "--out", str(single),
                 "--no-progress"]) == 0  # fmt: skip
    a = load_file(assemble(single) / "model.safetensors")
    b = load_file(tmp_path / "par" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
