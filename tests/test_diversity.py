"""Label-free diversity metrics: NDB / JSD against values worked by hand and scipy, on constructed samples with
known answers (a collapsed set, i.i.d. draws from the reference), the duplicate rate and support size, and the
callback on a real training run."""

from __future__ import annotations

import math
import types

import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm

from callbacks.diversity import DiversityMetrics
from callbacks.metrics import bin_proportions, duplicate_rate, kmeans_bins, ndb_jsd
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def test_ndb_and_jsd_match_values_worked_by_hand():
    # reference (0.5, 0.5) of 100 against (0.8, 0.2) of 100: pooled 0.65, se sqrt(0.65 * 0.35 * 0.02) = 0.0675,
    # z = -0.3 / 0.0675 = -4.45: both bins differ at 0.05 (|z| > 1.96)
    out = ndb_jsd(torch.tensor([0.5, 0.5], dtype=torch.float64), 100, torch.tensor([0.8, 0.2], dtype=torch.float64), 100)
    assert out["ndb"].item() == 2 and out["ndb_fraction"].item() == 1.0
    m = (0.65, 0.35)
    jsd = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) \
        + 0.5 * (0.8 * math.log(0.8 / m[0]) + 0.2 * math.log(0.2 / m[1]))
    assert out["jsd"].item() == pytest.approx(jsd, rel=1e-12)
    assert out["jsd"].item() == pytest.approx(jensenshannon([0.5, 0.5], [0.8, 0.2]) ** 2, rel=1e-9)  # nats
    # (0.55, 0.45): pooled 0.525, se 0.0706, z = -0.71: no bin differs
    assert ndb_jsd(torch.tensor([0.5, 0.5]), 100, torch.tensor([0.55, 0.45]), 100)["ndb"].item() == 0
    # the same shift is significant with more samples: se shrinks as 1 / sqrt(n); z = -0.05 / 0.00706 = -7.1
    assert ndb_jsd(torch.tensor([0.5, 0.5]), 10000, torch.tensor([0.55, 0.45]), 10000)["ndb"].item() == 2
    # a bin empty in both never counts; disjoint histograms have the largest JSD, ln 2
    out = ndb_jsd(torch.tensor([1.0, 0.0, 0.0]), 50, torch.tensor([0.0, 1.0, 0.0]), 50)
    assert out["ndb"].item() == 2 and out["jsd"].item() == pytest.approx(math.log(2))


def test_ndb_near_the_critical_value_follows_the_stated_level_and_the_pooled_standard_error():
    # 0.5 of 150 against 0.6 of 150: pooled 0.55, se sqrt(0.55 * 0.45 * 2 / 150) = 0.05745, |z| = 1.741, between
    # the two-sided critical values at 0.05 (1.960) and at 0.10 (1.645): counted at 0.10 only (a one-sided test at
    # 0.05, critical 1.645, would count it).
    ref, query = torch.tensor([0.5, 0.5]), torch.tensor([0.6, 0.4])
    assert ndb_jsd(ref, 150, query, 150, significance=0.05)["ndb"].item() == 0
    assert ndb_jsd(ref, 150, query, 150, significance=0.10)["ndb"].item() == 2
    # unequal sizes, where pooled and unpooled errors fall either side of 1.96: 0.1 of 1,000 against 0.05 of 100
    # pools to 0.0955, se sqrt(0.0955 * 0.9045 * (1/1000 + 1/100)) = 0.03083, |z| = 1.62 (not counted); the
    # unpooled se sqrt(0.1 * 0.9 / 1000 + 0.05 * 0.95 / 100) = 0.02347 would give |z| = 2.13 (counted)
    p1, p2, n1, n2 = 0.1, 0.05, 1000, 100
    pooled = (n1 * p1 + n2 * p2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert 2 * norm.sf(abs(z)) > 0.05  # scipy's p-value: not significant
    out = ndb_jsd(torch.tensor([p1, 1 - p1]), n1, torch.tensor([p2, 1 - p2]), n2)
    assert out["ndb"].item() == 0


def test_kmeans_bins_are_the_clusters_sorted_by_size_with_their_shares():
    torch.manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    sizes = [100, 400, 200, 300]
    x = torch.cat([m + 0.1 * torch.randn(n, 2) for m, n in zip(means, sizes)])
    centres, proportions = kmeans_bins(x, 4, seed=0)
    assert proportions.tolist() == [0.4, 0.3, 0.2, 0.1]
    assert torch.allclose(centres, means[[1, 3, 2, 0]].double(), atol=0.05)
    assert bin_proportions(means[[1, 1, 3, 0]], centres).tolist() == [0.5, 0.25, 0.0, 0.25]
    with pytest.raises(ValueError, match="at least as many reference samples as bins"):
        kmeans_bins(x[:3], 4)


def _reference(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g)


def test_a_collapsed_sample_differs_in_every_bin_and_iid_draws_at_about_the_false_positive_rate():
    reference = _reference(5000, 0)
    centres, proportions = kmeans_bins(reference, 20, seed=0)
    # all mass in the neighbourhood of 3 centres: the 17 empty bins and the 3 over-full ones all differ
    collapsed = centres[:3].repeat(700, 1) + 0.01 * _reference(2100, 1)
    out = ndb_jsd(proportions, 5000, bin_proportions(collapsed, centres), 2100)
    assert out["ndb"].item() == 20 and out["jsd"].item() > 0.3
    # fresh draws from the reference's distribution: about significance x bins differ (5 % of 20 = 1)
    ndbs = [ndb_jsd(proportions, 5000, bin_proportions(_reference(5000, s), centres), 5000)["ndb"].item()
            for s in range(1, 11)]
    assert sum(ndbs) / len(ndbs) <= 3 and max(ndbs) <= 5


def test_duplicate_rate_of_copies_is_one_and_of_iid_draws_about_the_quantile():
    real = _reference(2000, 0)
    copies = real[:1].repeat(2000, 1)
    out = duplicate_rate(real, copies, quantile=0.01)
    assert out["duplicate_rate"].item() == 1.0 and out["support_size"].item() == pytest.approx(1.0)
    fresh = duplicate_rate(real, _reference(2000, 1), quantile=0.01)
    assert fresh["duplicate_rate"].item() < 0.05  # about 2 x 1 % (both members of a close pair count)
    # n draws among N = 50 distinct points: n (n - 1) / (2 N) colliding pairs on average, so N comes back
    g = torch.Generator().manual_seed(2)
    draws = real[torch.randint(0, 50, (2000,), generator=g)]
    assert duplicate_rate(real, draws)["support_size"].item() == pytest.approx(50, rel=0.1)
    # reals with exact copies (quantized data, repeated images) put the threshold at 0: exact generated copies are
    # still duplicates, distinct samples are not
    quantized = torch.cat([real[:100], real[:100]])  # every real has a copy: t = 0
    out = duplicate_rate(quantized, copies[:50], quantile=0.01)
    assert out["duplicate_threshold"].item() == 0.0 and out["duplicate_rate"].item() == 1.0
    assert duplicate_rate(quantized, real[200:300], quantile=0.01)["duplicate_rate"].item() == 0.0


def test_callback_logs_every_signal_and_sees_a_collapsed_generator():
    torch.manual_seed(0)
    model = tiny_model("GAN")
    callback = DiversityMetrics(num_bins=8, num_samples=256, batch_size=128)
    trainer = quiet_trainer(max_steps=10, callbacks=[callback])
    data = tiny_ring(val_size=256)
    trainer.fit(model, data)
    names = {"ndb", "ndb_fraction", "jsd", "duplicate_rate", "support_size", "recall", "coverage"}
    assert names <= set(callback.last) and all(f"val/{n}" in trainer.callback_metrics for n in names)
    assert "data features; NDB over 8 k-means bins of 256 reference samples" in callback.protocol
    with torch.no_grad():  # a generator that ignores z: one point, over and over
        last = model.generator.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([2.0, 0.0]))
    trainer.validate(model, data, verbose=False)
    assert callback.last["duplicate_rate"] == 1.0 and callback.last["ndb"] >= 7 and callback.last["recall"] < 0.2


def test_discriminator_trunk_features_refit_the_bins_at_every_evaluation():
    torch.manual_seed(0)
    model = tiny_model("GAN")
    callback = DiversityMetrics(features="discriminator", num_bins=8, num_samples=256, batch_size=128)
    trainer = quiet_trainer(max_steps=20, callbacks=[callback])
    trainer.fit(model, tiny_ring(val_size=256))
    assert "discriminator features" in callback.protocol and {"ndb", "duplicate_rate"} <= set(callback.last)
    assert callback._reference[0][-1] == trainer.global_step  # the bins of the last evaluation's discriminator
    assert model.discriminator.training  # the trunk was read in eval mode and left as it was
    for name in ("PacGAN", "VEEGAN"):  # D's own input form: packed groups, (F(x), x) pairs
        torch.manual_seed(0)
        other = tiny_model(name)
        callback = DiversityMetrics(features="discriminator", num_bins=4, num_samples=256, batch_size=128)
        quiet_trainer(max_steps=10, callbacks=[callback]).fit(other, tiny_ring(val_size=256))
        assert "ndb" in callback.last, name
    without_trunk = types.SimpleNamespace(discriminator=torch.nn.Identity())
    with pytest.raises(ValueError, match="needs a discriminator with `features`"):
        DiversityMetrics(features="discriminator").setup(None, without_trunk, "fit")


@pytest.mark.parametrize("kwargs, message", [
    ({"features": "pixels"}, "features must be one of"),
    ({"num_bins": 1}, "num_bins must be an integer >= 2"),
    ({"significance": 5}, "significance must be in \\(0, 1\\)"),
    ({"duplicate_quantile": 0}, "duplicate_quantile must be in \\(0, 1\\)"),
    ({"num_samples": 10, "num_bins": 20}, "num_samples \\(10\\) must be at least num_bins \\(20\\)"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiversityMetrics(**kwargs)
