"""Training options measured for the chain research: dropout, image augmentation,
self-conditioning of the classifier's blocks, and noise on the AR model's clean context. Each is
off by default and draws nothing when off; each is reproducible and resumes exactly."""

import pytest
import torch
from helpers import same_state, snapshot, tiny_task

from diffusionblocks.config import ConfigError
from diffusionblocks.diffusion import soft_bridge
from diffusionblocks.networks.layers import AdaLNLayer
from diffusionblocks.registry import make_config, make_task
from diffusionblocks.tasks.images import augment_images
from diffusionblocks.training import Trainer


def ar_task(**overrides):
    return make_task(make_config("ar-tiny", {"device": "cpu", **overrides}), torch.device("cpu"))


# ---------------------------------------------------------------------- augmentation
def test_shift_moves_each_image_by_its_drawn_offset_and_fills_with_the_background():
    images = torch.randn(6, 2, 5, 7)
    gen = torch.Generator().manual_seed(3)
    out = augment_images(images, 2, False, -9.0, gen)
    dy, dx = torch.randint(-2, 3, (2, 6), generator=torch.Generator().manual_seed(3))
    for i in range(6):
        expected = torch.full((2, 5, 7), -9.0)
        for r in range(5):
            for c in range(7):
                rs, cs = r - int(dy[i]), c - int(dx[i])  # the source pixel of (r, c)
                if 0 <= rs < 5 and 0 <= cs < 7:
                    expected[:, r, c] = images[i, :, rs, cs]
        assert torch.equal(out[i], expected), f"image {i} (shift {int(dy[i])}, {int(dx[i])})"
    assert (dy != 0).any() and (dx != 0).any()  # the draws did move images


def test_flip_mirrors_about_half_of_the_images_left_right():
    images = torch.randn(400, 1, 3, 4)
    out = augment_images(images, 0, True, 0.0, torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert torch.all(mirrored ^ kept)
    assert 150 < int(mirrored.sum()) < 250


def test_augmentation_off_returns_the_batch_and_draws_nothing():
    images = torch.randn(4, 1, 8, 8)
    gen = torch.Generator().manual_seed(1)
    before = gen.get_state()
    assert augment_images(images, 0, False, 0.0, gen) is images
    assert torch.equal(gen.get_state(), before)


# ---------------------------------------------------------------------- dropout
def test_dropout_acts_on_the_residual_branches_in_training_mode_only():
    layer = AdaLNLayer(16, 2, dropout=0.5)
    torch.nn.init.normal_(layer.modulation[1].weight)  # open the adaLN-Zero gates
    x, cond = torch.randn(3, 5, 16), torch.randn(3, 16)
    layer.train()
    assert not torch.equal(layer(x, cond), layer(x, cond))
    layer.eval()
    assert torch.equal(layer(x, cond), layer(x, cond))
    assert isinstance(AdaLNLayer(16, 2).dropout, torch.nn.Identity)  # 0: no module at all


@pytest.mark.parametrize("method", ["dblocks", "e2e"])
def test_dropout_masks_come_from_the_training_generator_not_the_global_one(method):
    task = tiny_task(method=method, dropout=0.3)
    Trainer(task, None, progress=False).fit(stop_at=6)  # open the zero-initialised gates and head
    batch = task.train_batch(torch.arange(32))
    losses = []
    for _ in range(2):
        torch.manual_seed(123 + len(losses))  # a different global state each time
        state = torch.get_rng_state()
        losses.append(task.loss(0, batch, torch.Generator().manual_seed(7))[0])
        assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(losses[0], losses[1])
    # the masks matter: another training-generator state gives another loss (e2e draws nothing
    # else from it, so there only the masks differ)
    assert not torch.equal(losses[0], task.loss(0, batch, torch.Generator().manual_seed(8))[0])


def test_held_out_losses_are_recorded_without_dropout_or_augmentation():
    task = tiny_task(method="e2e", dropout=0.5, augment_shift=2, augment_flip=True)
    trainer = Trainer(task, None, progress=False)
    trainer.fit(stop_at=6)
    held_out = trainer.heldout.record([0])
    task.model.eval()
    images, labels = task.heldout_batch()
    expected = torch.nn.functional.cross_entropy(task.logits(images), labels).item()
    task.model.train()
    assert abs(held_out["val_ce_block_0"] - expected) < 1e-6
    assert task.model.training  # training mode is back


# ---------------------------------------------------------------------- self-conditioning
def test_self_conditioning_starts_as_the_model_without_it():
    """The projection is zero-initialised and created after everything else: every other weight
    and every prediction at initialisation are those of the model without it."""
    plain, sc = tiny_task(readout="chain"), tiny_task(readout="chain", self_condition=0.5)
    shared = {k: v for k, v in snapshot(sc.model).items() if not k.startswith("self_cond.")}
    assert same_state(snapshot(plain.model), shared)
    Trainer(plain, None, progress=False).fit(stop_at=6)  # open the zero-initialised head
    sc.model.load_state_dict({**snapshot(sc.model), **snapshot(plain.model)})
    images = plain.train_batch(torch.arange(16))[0]
    assert torch.equal(plain.predict(images)[0], sc.predict(images)[0])


def test_training_gives_a_share_of_the_examples_the_blocks_own_first_estimate():
    task = tiny_task(self_condition=0.5)
    Trainer(task, None, progress=False).fit(stop_at=6)
    seen = []
    original = task.block_output

    def record(block, z, sigma, features, previous=None):
        seen.append(previous)
        return original(block, z, sigma, features, previous)

    task.block_output = record
    images, labels = task.train_batch(torch.arange(64))
    task.loss(1, (images, labels), torch.Generator().manual_seed(0))
    first_pass, previous = seen  # the estimate without a previous one, then the one trained
    assert first_pass is None
    estimate = soft_bridge(original(1, *_zsp(task, images, labels)), task.label_table())
    read = previous.abs().sum(-1) > 0
    assert 16 < int(read.sum()) < 48  # about half of the 64
    assert torch.allclose(previous[read], estimate[read], atol=1e-6)
    assert torch.equal(previous[~read], torch.zeros_like(previous[~read]))


def _zsp(task, images, labels):
    """The (z, sigma, features) the loss draws from generator seed 0 for block 1."""
    gen = torch.Generator().manual_seed(0)
    sigma = task.partition.sample_sigma(1, len(labels), gen)
    target = task.label_table()[labels]
    z = target + sigma[:, None] * torch.randn(target.shape, generator=gen)
    return z, sigma, task.block_features(1, images)


def test_each_chain_call_reads_the_previous_calls_estimate():
    task = tiny_task(readout="chain", self_condition=0.5, num_blocks=2)
    Trainer(task, None, progress=False).fit(stop_at=6)
    seen = []
    original = task.block_output

    def record(block, z, sigma, features, previous=None):
        logits = original(block, z, sigma, features, previous)
        seen.append((previous, logits))
        return logits

    task.block_output = record
    task.predict(task.train_batch(torch.arange(8))[0], steps=3)
    assert len(seen) == 3 and seen[0][0] is None
    for (_, before), (previous, _) in zip(seen, seen[1:], strict=False):
        assert torch.equal(previous, soft_bridge(before, task.label_table()))


# ---------------------------------------------------------------------- context noise (AR)
def test_context_noise_corrupts_the_clean_stream_only():
    task = ar_task(context_noise=0.3)
    batch = torch.stack([task.train_seqs[i] for i in range(16)])
    seen = []
    original = task.denoise_logits

    seen_z = []

    def record(block, ids, z, sigma):
        seen.append(ids)
        seen_z.append(z)
        return original(block, ids, z, sigma)

    task.denoise_logits = record
    task.loss(0, batch, torch.Generator().manual_seed(0))
    changed = (seen[0] != batch).float().mean()
    assert 0.15 < float(changed) < 0.35  # 0.3 replaced, a few by the same character
    # the noisy targets are built around the true characters, drawn before the context's noise
    gen = torch.Generator().manual_seed(0)
    sigma = task._sigmas(0, *batch.shape, gen)
    target = task.table()[batch]
    expected_z = target + sigma[..., None] * torch.randn(target.shape, generator=gen)
    assert torch.equal(seen_z[0], expected_z)
    plain = ar_task()
    gen = torch.Generator().manual_seed(0)
    assert plain._noisy_context(batch, gen) is batch
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())


# ---------------------------------------------------------------------- resume and refusals
@pytest.mark.parametrize(
    "overrides",
    [
        {"dropout": 0.2, "augment_shift": 1, "augment_flip": True},
        {"method": "e2e", "dropout": 0.2, "augment_shift": 1},
        {"self_condition": 0.5, "readout": "chain"},
    ],
    ids=["dblocks-regularised", "e2e-regularised", "self-condition"],
)
def test_runs_with_the_options_resume_from_a_mid_training_checkpoint_bitwise(tmp_path, overrides):
    full_task = tiny_task(**overrides)
    full = Trainer(full_task, tmp_path / "full", progress=False)
    full.fit()
    full.materialize_all()
    first = tiny_task(**overrides)
    t1 = Trainer(first, tmp_path / "split", progress=False)
    stop = t1.total_steps // 2 + 1
    t1.fit(stop_at=stop)
    t1.save()
    second = tiny_task(**overrides)
    t2 = Trainer(second, tmp_path / "split", progress=False)
    assert t2.resume() and t2.step == stop
    t2.fit()
    t2.materialize_all()
    assert same_state(snapshot(full_task.model), snapshot(second.model))
    plain = tiny_task(**{k: v for k, v in overrides.items() if k in ("method", "readout")})
    Trainer(plain, None, progress=False).fit()
    assert not same_state(snapshot(plain.model), snapshot(second.model))  # the options acted


@pytest.mark.parametrize(
    "preset, overrides, key",
    [
        ("tiny", {"dropout": 1.0}, "dropout"),
        ("tiny", {"augment_shift": -1}, "augment_shift"),
        ("tiny", {"data": "mnist1d", "augment_shift": 1}, "augment_shift"),
        ("tiny", {"data": "mnist1d", "augment_flip": True}, "augment_flip"),
        ("tiny", {"self_condition": 1.5}, "self_condition"),
        ("tiny", {"self_condition": 1.0}, "self_condition"),
        ("tiny", {"self_condition": 0.5, "shared": "frozen"}, "self_condition"),
        (
            "tiny",
            {"self_condition": 0.5, "schedule": "sequential", "shared": "first-block"},
            "self_condition",
        ),
        ("tiny", {"method": "e2e", "self_condition": 0.5}, "self_condition"),
        ("ar-tiny", {"context_noise": 1.0}, "context_noise"),
        ("ar-tiny", {"method": "e2e", "context_noise": 0.1}, "context_noise"),
        ("recurrent-tiny", {"context_noise": 0.1}, "context_noise"),
    ],
)
def test_bad_values_are_refused_naming_their_key(preset, overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        make_config(preset, {"device": "cpu", **overrides})
