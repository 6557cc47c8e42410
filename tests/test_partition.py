"""Equi-probability partition, ownership and overlap (docs/method.md §3)."""

import pytest
import torch

from diffusionblocks.diffusion import BlockPartition, NoiseSchedule, partition_boundaries

S = NoiseSchedule()

REFERENCE_BOUNDARIES = {
    2: [0.002, 0.3012, 80],
    3: [0.002, 0.1796, 0.5050, 80],
    4: [0.002, 0.1341, 0.3012, 0.6766, 80],
    6: [0.002, 0.0943, 0.1796, 0.3012, 0.5050, 0.9617, 80],
}


@pytest.mark.parametrize("blocks", sorted(REFERENCE_BOUNDARIES))
def test_equi_probability_boundaries_match_spec(blocks):
    got = partition_boundaries(blocks, S).tolist()
    assert got == pytest.approx(REFERENCE_BOUNDARIES[blocks], rel=1e-3)


def test_uniform_log_and_uniform_alternatives():
    assert partition_boundaries(3, S, "uniform-log").tolist() == pytest.approx(
        [0.002, 0.0684, 2.339, 80], rel=1e-3
    )
    uniform = partition_boundaries(4, S, "uniform")
    assert torch.allclose(uniform.diff(), torch.full((4,), (80 - 0.002) / 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown partition"):
        partition_boundaries(3, S, "quantile")
    with pytest.raises(ValueError, match="num_blocks"):
        partition_boundaries(0, S)


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 6, 12])
def test_equal_mass(blocks):
    p = BlockPartition.create(blocks)
    masses = [p.mass(b) for b in range(blocks)]
    assert masses == pytest.approx([1 / blocks] * blocks, abs=1e-9)
    assert sum(masses) == pytest.approx(1.0)


def test_unequal_mass_for_uniform_log():
    p = BlockPartition.create(3, kind="uniform-log")
    masses = [p.mass(b) for b in range(3)]
    assert sum(masses) == pytest.approx(1.0)
    assert max(masses) - min(masses) > 0.1


def test_block_zero_owns_the_noisiest_interval():
    p = BlockPartition.create(3)
    assert p.interval(0) == pytest.approx((0.5050, 80), rel=1e-3)
    assert p.interval(2) == pytest.approx((0.002, 0.1796), rel=1e-3)
    assert int(p.block_of(80.0)) == 0
    assert int(p.block_of(0.002)) == 2
    assert int(p.block_of(1e-5)) == 2 and int(p.block_of(1e5)) == 0  # clamped


@pytest.mark.parametrize("blocks", [2, 3, 4, 6])
@pytest.mark.parametrize("kind", ["equi-probability", "uniform-log", "uniform"])
def test_ownership_round_trip(blocks, kind):
    p = BlockPartition.create(blocks, kind=kind, overlap=0.0)
    gen = torch.Generator().manual_seed(0)
    for b in range(blocks):
        sigma = p.sample_sigma(b, 500, gen)
        lo, hi = p.interval(b)
        inside = sigma[(sigma > lo * 1.0001) & (sigma < hi * 0.9999)]
        assert torch.all(p.block_of(inside) == b)
        # A boundary belongs to the cleaner block, the one that runs next when sampling.
        if b < blocks - 1:
            assert int(p.block_of(lo)) == b + 1
        assert int(p.block_of(hi)) == b


def test_widened_intervals_b3_gamma_005():
    p = BlockPartition.create(3, overlap=0.05)
    expect = [(0.392, 80), (0.171, 0.532), (0.002, 0.225)]
    for b, (lo, hi) in enumerate(expect):
        assert p.train_interval(b) == pytest.approx((lo, hi), rel=3e-3)


def test_overlap_samples_reach_into_neighbours():
    p = BlockPartition.create(3, overlap=0.05)
    sigma = p.sample_sigma(1, 20_000, torch.Generator().manual_seed(0))
    owners = p.block_of(sigma)
    assert set(owners.tolist()) == {0, 1, 2}
    assert (owners == 1).float().mean() > 0.8


def test_describe_has_the_documented_keys():
    d = BlockPartition.create(4, overlap=0.1).describe()
    assert len(d["boundaries"]) == 5 and d["boundaries"] == sorted(d["boundaries"])
    assert [b["block"] for b in d["blocks"]] == [0, 1, 2, 3]
    for b in d["blocks"]:
        assert set(b) >= {"sigma_lo", "sigma_hi", "train_lo", "train_hi", "mass"}
        assert b["train_lo"] <= b["sigma_lo"] < b["sigma_hi"] <= b["train_hi"]


def test_bad_partition_arguments():
    with pytest.raises(ValueError, match="overlap"):
        BlockPartition.create(3, overlap=-0.1)
    with pytest.raises(IndexError):
        BlockPartition.create(3).interval(3)
