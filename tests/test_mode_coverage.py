"""ModeCoverageMetric on samples whose answer is known by construction."""

import math

import pytest
import torch
from torch.testing import assert_close

from callbacks import ModeCoverageMetric
from datamodules import Grid, Ring


@pytest.fixture
def ring():
    return Ring()  # 8 modes, radius 2, std 0.02


def metric_for(dm, **kwargs):
    return ModeCoverageMetric(dm.centers, dm.std, dm.weights, **kwargs)


def test_all_modes_hit_evenly_within_3_std(ring):
    # 10 samples per mode, each 2.9 std from its centre in some direction
    angles = torch.linspace(0, 2 * math.pi, 10)
    offsets = 2.9 * ring.std * torch.stack([angles.cos(), angles.sin()], 1)  # (10, 2)
    samples = (ring.centers[:, None, :] + offsets[None]).reshape(-1, 2)
    m = metric_for(ring)
    m.update(samples)
    out = m.compute()
    assert out["modes"].item() == 8
    assert_close(out["hq"], torch.tensor(100.0, dtype=torch.float64))
    assert_close(out["kl"], torch.tensor(0.0, dtype=torch.float64))


def test_all_samples_on_one_mode_gives_one_mode_and_kl_log_8(ring):
    m = metric_for(ring)
    m.update(ring.centers[3].expand(100, 2))
    out = m.compute()
    assert out["modes"].item() == 1
    assert_close(out["hq"], torch.tensor(100.0, dtype=torch.float64))
    assert_close(out["kl"], torch.tensor(math.log(8), dtype=torch.float64))


def test_samples_far_from_every_centre_are_not_high_quality(ring):
    m = metric_for(ring)
    m.update(torch.zeros(50, 2))  # the ring's centre is 2 away from every mode
    m.update(ring.centers[:4] + 3.1 * ring.std)  # 3.1 * sqrt(2) std away: outside 3 std
    out = m.compute()
    assert out["modes"].item() == 0
    assert out["hq"].item() == 0.0
    assert math.isnan(out["kl"].item())  # q is undefined without HQ samples


def test_partial_coverage_counts_hq_fraction_and_kl(ring):
    # 2 modes hit with 30 and 10 HQ samples, 60 bad samples -> 40 % HQ
    samples = torch.cat([ring.centers[0].expand(30, 2), ring.centers[5].expand(10, 2), torch.zeros(60, 2)])
    m = metric_for(ring)
    m.update(samples)
    out = m.compute()
    q = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert out["modes"].item() == 2
    assert_close(out["hq"], torch.tensor(40.0, dtype=torch.float64))
    assert_close(out["kl"], (q * (q * 8).log()).sum())


def test_kl_uses_the_true_mode_weights():
    weights = [0.5, 0.25, 0.25]
    from datamodules import GaussianMixture2D

    dm = GaussianMixture2D(centers=[[0, 0], [1, 0], [0, 1]], std=0.01, weights=weights)
    m = metric_for(dm)
    # samples split 50/25/25 exactly as the weights say -> KL 0
    m.update(torch.cat([dm.centers[0].expand(2, 2), dm.centers[1:2], dm.centers[2:3]]))
    assert_close(m.compute()["kl"], torch.tensor(0.0, dtype=torch.float64))


def test_split_across_two_instances_and_merged_equals_one_instance():
    grid = Grid()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 25, (400,), generator=gen)
    samples = grid.centers[idx] + 0.1 * torch.randn(400, 2, generator=gen)  # some HQ, some not
    whole = metric_for(grid)
    whole.update(samples)
    part_a, part_b = metric_for(grid), metric_for(grid)
    part_a.update(samples[:150])
    part_b.update(samples[150:])
    part_a.merge_state(part_b)  # what the DDP sync does: sum the states
    expected, merged = whole.compute(), part_a.compute()
    assert 0 < expected["hq"].item() < 100 and 0 < expected["modes"].item() <= 25
    for key in expected:
        assert_close(merged[key], expected[key])


def test_states_are_sum_reduced():
    m = ModeCoverageMetric(torch.zeros(2, 2), 1.0)
    assert set(m._reductions) == {"hq_per_mode", "hq_sum", "hq_sq_sum", "total"}
    for fn in m._reductions.values():
        assert_close(fn(torch.tensor([[1.0, 2.0], [3.0, 4.0]])), torch.tensor([4.0, 6.0]))


def test_dimension_mismatch_is_a_clear_error(ring):
    with pytest.raises(ValueError, match="dimension 3"):
        metric_for(ring).update(torch.zeros(4, 3))


def test_spread_is_the_hq_samples_std_about_their_mean_in_units_of_std(ring):
    """Worked by hand: mode 0 gets c + (s, 0) and c - (s, 0): mean c, variance s^2 per sample over 2 coordinates,
    so sqrt(s^2 / 2) / s = 1 / sqrt 2; mode 1 gets c + (s, s) and c + (-s, -s): variance 2 s^2, so 1. Mean 0.854."""
    s, c = ring.std, ring.centers
    samples = torch.stack([c[0] + torch.tensor([s, 0.0]), c[0] - torch.tensor([s, 0.0]),
                           c[1] + torch.tensor([s, s]), c[1] - torch.tensor([s, s])])
    m = metric_for(ring)
    m.update(samples)
    assert m.compute()["spread"].item() == pytest.approx((1 / math.sqrt(2) + 1) / 2, rel=1e-5)  # float32 inputs
    point_masses = metric_for(ring)  # every mode covered, nothing of its width: perfect modes and KL, spread 0
    point_masses.update(c.repeat(10, 1))
    out = point_masses.compute()
    assert out["modes"].item() == 8 and out["kl"].item() == pytest.approx(0, abs=1e-12)
    assert out["spread"].item() == pytest.approx(0, abs=1e-6)
    nothing = metric_for(ring)
    nothing.update(c + 1.0)  # no HQ sample: undefined
    assert math.isnan(nothing.compute()["spread"].item())


def test_samples_from_the_data_have_the_spread_of_a_gaussian_cut_at_3_std():
    """A 2D Gaussian cut at radius 3 std keeps E[r^2 | r < 3] = 2 (1 - 5.5 e^-4.5) / (1 - e^-4.5) (the chi-square
    with 2 degrees of freedom), so the spread is the square root of half of it: 0.974."""
    grid = Grid()
    points, _ = grid.sample(200_000, __import__("numpy").random.default_rng(0))
    m = metric_for(grid)
    m.update(points)
    tail = math.exp(-4.5)
    expected = math.sqrt((1 - 5.5 * tail) / (1 - tail))
    assert expected == pytest.approx(0.974, abs=5e-4)
    assert m.compute()["spread"].item() == pytest.approx(expected, abs=3e-3)
