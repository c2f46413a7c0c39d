"""Image metrics on inputs whose answers are known: Stacked MNIST modes with a stub classifier,
precision / recall / density / coverage on constructed point sets, FID and KID; and the feature
metrics against reference implementations on random features: FID and KID against torchmetrics,
precision / recall / density / coverage against `prdc` (Naeem et al. 2020's code)."""

from __future__ import annotations

import math

from pathlib import Path

import pytest
import torch
from torch import nn

from callbacks.classifier import MNISTClassifier, load_classifier, save_classifier
from callbacks.metrics import frechet_distance, kernel_distance, precision_recall_density_coverage
from callbacks.plots import SampleGrid
from callbacks.stacked_mnist import StackedMNISTModesMetric


class DigitFromBrightness(nn.Module):
    """Stub classifier: a 28 x 28 channel whose pixels all equal d / 10 is digit d."""

    def forward(self, x):
        digit = (x.mean(dim=(1, 2, 3)) * 10).round().long()
        return nn.functional.one_hot(digit, 10).float()


def stacked(d0, d1, d2):
    return torch.stack([torch.full((28, 28), d / 10) for d in (d0, d1, d2)])


def test_stacked_mnist_modes_and_kl_exact():
    metric = StackedMNISTModesMetric(DigitFromBrightness())
    # 4 samples: modes 123, 123, 456, 7 -> 3 modes; p = (1/2, 1/4, 1/4)
    metric.update(torch.stack([stacked(1, 2, 3), stacked(1, 2, 3), stacked(4, 5, 6), stacked(0, 0, 7)]))
    values = metric.compute()
    assert values["modes"].item() == 3 and values["num_samples"].item() == 4
    expected_kl = 0.5 * math.log(500) + 2 * 0.25 * math.log(250)
    assert values["kl"].item() == pytest.approx(expected_kl, rel=1e-12)
    assert metric.counts[123] == 2 and metric.counts[7] == 1
    # every one of the 1,000 modes once: KL 0
    uniform = StackedMNISTModesMetric(DigitFromBrightness())
    uniform.update(torch.stack([stacked(m // 100, m // 10 % 10, m % 10) for m in range(1000)]))
    assert uniform.compute()["modes"].item() == 1000 and abs(uniform.compute()["kl"].item()) < 1e-12
    with pytest.raises(ValueError, match=r"\(B, 3, 28, 28\)"):
        metric.update(torch.zeros(2, 1, 28, 28))


def test_precision_recall_density_coverage_on_constructed_sets():
    torch.manual_seed(0)
    real = torch.randn(200, 2)
    same = precision_recall_density_coverage(real, real.clone())
    assert same["precision"] == 1 and same["recall"] == 1 and same["coverage"] == 1
    # identical sets: every fake lies at least in the ball of the real it copies, so density >= 1/k
    assert same["density"] >= 0.2
    far = real + 100.0  # no fake near any real: precision, recall, density, coverage all 0
    zero = precision_recall_density_coverage(real, far)
    assert all(v == 0 for v in zero.values())
    # half the fakes are copies of reals, half far away: precision 1/2, density halves too
    half = torch.cat([real[:100], real[100:] + 100.0])
    mixed = precision_recall_density_coverage(real, half)
    assert mixed["precision"] == pytest.approx(0.5)
    assert 0 < mixed["density"] < same["density"] and mixed["recall"] < 1


def test_density_counts_balls_exactly_on_a_line():
    # reals at 0, 1, 2, 3, 4, 5 (k = 1 for both): 1-NN radius 1 for every real
    real = torch.arange(6.0).unsqueeze(1)
    fake = torch.tensor([[2.5], [10.0], [0.0], [5.0], [4.0], [3.0]])
    out = precision_recall_density_coverage(real, fake, k_pr=1, k_dc=1)
    # 2.5 lies in the balls of 2 and 3; 10 in none; 0 in those of 0, 1; 5 in 4, 5; 4 in 3, 4, 5; 3 in 2, 3, 4
    assert out["density"].item() == pytest.approx((2 + 0 + 2 + 2 + 3 + 3) / 6)
    assert out["precision"].item() == pytest.approx(5 / 6)
    assert out["coverage"].item() == 1.0  # every real's ball holds a fake


def test_fid_is_zero_against_itself_and_grows_with_a_shift():
    torch.manual_seed(0)
    x = torch.randn(2000, 8, dtype=torch.float64)
    assert abs(frechet_distance(x, x).item()) < 1e-8
    shifts = [frechet_distance(x, x + s).item() for s in (0.5, 1.0, 2.0)]
    # a mean shift s in every one of 8 dimensions adds exactly 8 s^2
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-9)
    # Gaussian case with known answer: N(0, I) vs N(0, 4 I) in d dims: FID = d (1 + 4 - 2 * 2) = d
    y = torch.randn(200000, 3, dtype=torch.float64)
    assert frechet_distance(y, 2 * torch.randn(200000, 3, dtype=torch.float64)).item() == pytest.approx(3.0, abs=0.05)
    assert abs(kernel_distance(x, x.clone(), subsets=3, subset_size=500).item()) < 0.02
    assert kernel_distance(x, x + 1.0, subsets=3, subset_size=500).item() > 0.5


class _GivenFeatures(nn.Module):
    """A torchmetrics "feature extractor" that returns its input, so FID / KID work on given features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim  # FrechetInceptionDistance sizes its states from this

    def forward(self, x):
        return x


def _feature_sets(n_real: int, n_fake: int, dim: int, shift: float, scale: float, mix: float, seed: int = 0):
    """float64 reals from N(0, I); fakes shift + scale * N(0, I) @ (I + mix * R), R a fixed Gaussian matrix."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n_real, dim, generator=g, dtype=torch.float64)
    mixing = torch.eye(dim, dtype=torch.float64) + mix * torch.randn(dim, dim, generator=g, dtype=torch.float64)
    fake = shift + scale * torch.randn(n_fake, dim, generator=g, dtype=torch.float64) @ mixing
    return real, fake


FEATURE_CASES = [  # (n_real, n_fake, dim, shift, scale, mix)
    (500, 537, 32, 0.5, 1.0, 0.3),  # shifted and correlated fakes, unequal counts: FID 58
    (400, 400, 16, 0.0, 1.0, 0.0),  # the same distribution: FID 0.42, KID 0.014 (near 0; can be < 0)
    (500, 520, 64, 0.3, 1.5, 0.3),  # N not far above D: ill-conditioned covariances, FID 644
]


@pytest.mark.parametrize("n_real, n_fake, dim, shift, scale, mix", FEATURE_CASES)
def test_fid_matches_torchmetrics(n_real, n_fake, dim, shift, scale, mix):
    """torchmetrics computes the covariances from running sums and Tr((S_r S_f)^1/2) from the
    eigenvalues of the non-symmetric S_r S_f; the project uses torch.cov and the symmetric
    S_r^1/2 S_f S_r^1/2. Both in float64: measured agreement at most 6e-13 absolute, 1e-14 relative; rel 1e-9 leaves
    room for other BLAS / LAPACK builds and still catches any error in a term (a mean, a 1/N
    against 1/(N - 1) covariance, the factor 2)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _feature_sets(n_real, n_fake, dim, shift, scale, mix)
    reference = FrechetInceptionDistance(feature=_GivenFeatures(dim))
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected = reference.compute()
    assert expected.dtype == torch.float64
    assert frechet_distance(real, fake).item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-9)
    # the order of the arguments does not matter (FID is symmetric)
    assert frechet_distance(fake, real).item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-9)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
@pytest.mark.parametrize("n_real, n_fake, dim, shift, scale, mix", FEATURE_CASES)
def test_kid_matches_torchmetrics(n_real, n_fake, dim, shift, scale, mix):
    """Both are the unbiased MMD^2 of the kernel (x.y / d + 1)^3 averaged over subsets.

    - One subset that is the whole set (equal counts): no randomness, the statistic itself.
    - Several subsets of 100: torchmetrics draws, per subset, a permutation of the reals then one
      of the fakes from torch's global CPU generator; the project draws them in the same order
      from a CPU generator seeded with `seed`, so seeding the global one alike gives the same subsets.
    Measured agreement: at most 4e-15 absolute (values 0.014 to 24); rel 1e-10, abs 1e-12 allowed."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _feature_sets(n_real, n_fake, dim, shift, scale, mix)
    n = min(n_real, n_fake)
    whole = KernelInceptionDistance(feature=_GivenFeatures(dim), subsets=1, subset_size=n)
    whole.update(real, real=True)
    whole.update(fake[:n], real=False)
    with torch.random.fork_rng():
        expected_whole = whole.compute()[0]
    ours_whole = kernel_distance(real, fake[:n], subsets=1, subset_size=n)
    assert ours_whole.item() == pytest.approx(expected_whole.item(), rel=1e-10, abs=1e-12)

    subsets = KernelInceptionDistance(feature=_GivenFeatures(dim), subsets=7, subset_size=100)
    subsets.update(real, real=True)
    subsets.update(fake, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        expected_subsets = subsets.compute()[0]
    ours_subsets = kernel_distance(real, fake, subsets=7, subset_size=100, seed=3)
    assert ours_subsets.item() == pytest.approx(expected_subsets.item(), rel=1e-10, abs=1e-12)
    if shift or scale != 1 or mix:  # distinct distributions: the subset mean differs from the whole-set value
        assert abs(ours_subsets.item() - ours_whole.item()) > 1e-6


PRDC_CASES = [  # (n_real, n_fake, dim, shift, scale): real N(0, I), fake N(shift, scale^2 I)
    (300, 300, 32, 0.5, 1.0),  # P 0.45, R 0.45, D 0.37, C 0.69
    (300, 400, 16, 0.0, 1.3),  # wider fakes: low precision, high recall
    (300, 250, 16, 0.3, 0.8),  # narrower fakes: density above 1
]


@pytest.mark.parametrize("n_real, n_fake, dim, shift, scale", PRDC_CASES)
def test_precision_recall_density_coverage_match_prdc(n_real, n_fake, dim, shift, scale):
    """Against `prdc.compute_prdc` (Naeem et al. 2020's code; precision / recall as Kynkaanniemi
    et al. 2019), which takes one k for all four: the project's k 3 (P / R) and k 5 (D / C) are
    compared with prdc at k 3 and at k 5, and equal k with prdc at k 1 and 10.

    The k-NN radius is the distance to the k-th nearest other point in both. prdc counts a point
    inside a ball when its distance is < the radius, the project (like Kynkaanniemi et al.'s
    code) when <=: they differ only on exact ties, which random continuous features do not have.
    So precision, recall and coverage, fractions of the same counted points, must be equal
    exactly; density, a count scaled in another order, to 1e-12."""
    import contextlib
    import io

    import prdc

    g = torch.Generator().manual_seed(1)
    real = torch.randn(n_real, dim, generator=g, dtype=torch.float64)
    fake = shift + scale * torch.randn(n_fake, dim, generator=g, dtype=torch.float64)

    def reference(k):
        with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
            return prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)

    ref3, ref5 = reference(3), reference(5)
    ours = precision_recall_density_coverage(real, fake)  # k_pr 3, k_dc 5
    assert ours["precision"].item() == ref3["precision"] and ours["recall"].item() == ref3["recall"]
    assert ours["coverage"].item() == ref5["coverage"]
    assert ours["density"].item() == pytest.approx(ref5["density"], rel=1e-12, abs=1e-12)
    for k in (1, 10):
        ref, same_k = reference(k), precision_recall_density_coverage(real, fake, k_pr=k, k_dc=k)
        for name in ("precision", "recall", "coverage"):
            assert same_k[name].item() == ref[name], (k, name)
        assert same_k["density"].item() == pytest.approx(ref["density"], rel=1e-12, abs=1e-12)
    # the cases are built so that no metric sits at a trivial 0 or 1 in every case
    if (n_real, n_fake, dim) == (300, 300, 32):
        assert all(0.1 < ours[name].item() < 0.9 for name in ("precision", "recall", "density", "coverage"))


def test_classifier_checkpoint_round_trip(tmp_path):
    model = MNISTClassifier()
    save_classifier(model, tmp_path / "c.pt", test_accuracy=0.5)
    loaded = load_classifier(tmp_path / "c.pt")
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x)) and loaded.features(x).shape == (3, 128)
    with pytest.raises(FileNotFoundError, match="train_mnist_classifier.py"):
        load_classifier(tmp_path / "missing.pt")
    # a checkpoint of another architecture (an older version's) says to retrain
    torch.save({"state_dict": {"trunk.0.weight": torch.zeros(1)}, "info": {}}, tmp_path / "old.pt")
    with pytest.raises(RuntimeError, match="retrain it with `python experiments/train_mnist_classifier.py"):
        load_classifier(tmp_path / "old.pt")


def test_relative_classifier_path_falls_back_to_the_project_root(tmp_path, monkeypatch):
    """reproduce.py trains each run in its own folder; a config's relative checkpoint path must
    still find the project's checkpoint."""
    import callbacks.classifier as classifier

    root, elsewhere = tmp_path / "project", tmp_path / "run_folder"
    (root / "checkpoints").mkdir(parents=True)
    elsewhere.mkdir()
    save_classifier(MNISTClassifier(), root / "checkpoints" / "c.pt", test_accuracy=0.5)
    monkeypatch.setattr(classifier, "PROJECT_ROOT", root)
    monkeypatch.chdir(elsewhere)
    assert classifier.resolve_checkpoint("checkpoints/c.pt") == root / "checkpoints" / "c.pt"
    assert isinstance(load_classifier("checkpoints/c.pt"), MNISTClassifier)
    # a file under the working directory wins over the project root's
    (elsewhere / "checkpoints").mkdir()
    save_classifier(MNISTClassifier(), elsewhere / "checkpoints" / "c.pt", test_accuracy=0.5)
    assert classifier.resolve_checkpoint("checkpoints/c.pt") == Path("checkpoints/c.pt")
    with pytest.raises(FileNotFoundError, match="nor under"):
        load_classifier("checkpoints/other.pt")


def test_sample_grid_writes_the_fixed_latents_grid(tmp_path):
    from types import SimpleNamespace

    from models import GAN, DCGANDiscriminator, DCGANGenerator

    model = GAN(DCGANGenerator(latent_dim=8, image_size=28, channels=1, width=4),
                DCGANDiscriminator(image_size=28, channels=1, width=4), num_fixed_latents=16)
    trainer = SimpleNamespace(sanity_checking=False, log_dir=str(tmp_path), default_root_dir=str(tmp_path),
                              is_global_zero=True, loggers=[])
    grid = SampleGrid(num_images=16, nrow=4)
    grid.on_validation_epoch_end(trainer, model)
    from PIL import Image

    assert Image.open(grid.last_path).size == (4 * 28 + 5 * 2, 4 * 28 + 5 * 2)


def test_inception_score_on_predictions_worked_by_hand():
    from callbacks.metrics import inception_score

    confident = torch.tensor([[30.0, 0.0], [30.0, 0.0], [0.0, 30.0], [0.0, 30.0]])
    # p(y|x) one-hot, p(y) = (1/2, 1/2): KL = log 2 for every sample, IS = 2; one class only: IS = 1
    assert inception_score(confident, splits=1)[0].item() == pytest.approx(2.0, abs=1e-9)
    assert inception_score(confident[:2], splits=1)[0].item() == pytest.approx(1.0, abs=1e-9)
    # uncertain predictions carry no information: IS = 1 whatever the marginal
    assert inception_score(torch.zeros(6, 5), splits=2)[0].item() == pytest.approx(1.0, abs=1e-12)
    # two splits of [class 0, class 1] pairs: 2 in each, std 0
    score, std = inception_score(confident[[0, 2, 1, 3]], splits=2)
    assert score.item() == pytest.approx(2.0, abs=1e-9) and std.item() == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    from callbacks.metrics import inception_score

    logits = torch.randn(300, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    reference = InceptionScore(feature=_GivenFeatures(10), splits=1)
    reference.update(logits)
    expected, _ = reference.compute()
    assert inception_score(logits, splits=1)[0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_feature_moments_give_torch_s_mean_and_covariance_over_batches():
    from callbacks.metrics import FeatureMoments, frechet_distance, frechet_distance_from_moments

    real, fake = _feature_sets(500, 300, 8, 0.5, 1.2, 0.3)
    moments = FeatureMoments()
    for part in real.split(97):
        moments.update(part)
    mean, covariance = moments.mean_and_covariance()
    torch.testing.assert_close(mean, real.mean(0))
    torch.testing.assert_close(covariance, torch.cov(real.t()))
    from_moments = frechet_distance_from_moments(mean, covariance, fake.mean(0), torch.cov(fake.t()))
    assert from_moments.item() == pytest.approx(frechet_distance(real, fake).item(), rel=1e-9)


class _StubInception(nn.Module):
    """A stand-in for the Inception network: logits and 'pool features' from the images' channel means."""

    def forward(self, x):
        means = x.float().mean(dim=(2, 3))  # (N, C)
        return torch.cat([means, -means], dim=1) * 4.0, torch.cat([means, means.pow(2)], dim=1)


def test_inception_scores_at_the_end_of_a_run_against_the_training_set(tmp_path):
    import lightning as L

    from callbacks import InceptionScores
    from callbacks.metrics import frechet_distance, inception_score
    from models import DCGANDiscriminator, DCGANGenerator, GAN
    from tests.factories import quiet_trainer

    class Images(L.LightningDataModule):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1)
            self.train_set = torch.utils.data.TensorDataset(torch.rand(40, 3, 8, 8, generator=g) * 2 - 1)
            self.val_set = torch.utils.data.TensorDataset(torch.rand(8, 3, 8, 8, generator=g) * 2 - 1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.train_set, batch_size=8)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(self.val_set, batch_size=8)

    torch.manual_seed(0)
    model = GAN(DCGANGenerator(latent_dim=4, image_size=8, channels=3, width=4),
                DCGANDiscriminator(image_size=8, channels=3, width=4))
    scores = InceptionScores(num_samples=30, batch_size=7, splits=3, cache_dir=str(tmp_path / "stats"))
    scores.network = _StubInception()
    data = Images()
    trainer = quiet_trainer(max_steps=10, callbacks=[scores], limit_val_batches=1)  # one epoch: 5 batches
    trainer.fit(model, datamodule=data)
    assert scores.last, "no evaluation at the run's last step"
    # the same samples again (the evaluation stream is fixed per generator step), through the stub
    stream = model.evaluation_rng()
    fake = torch.cat([model.sample(n, rng=stream) for n in (7, 7, 7, 7, 2)])
    logits, features = _StubInception()(fake)
    real_features = _StubInception()(data.train_set.tensors[0])[1]
    assert scores.last["inception_score"] == pytest.approx(inception_score(logits, 3)[0].item(), rel=1e-9)
    assert scores.last["fid_train"] == pytest.approx(frechet_distance(real_features, features).item(), rel=1e-6)
    assert scores.last["inception_num_fake"] == 30
    cached = list((tmp_path / "stats").glob("*.pt"))
    assert len(cached) == 1 and torch.load(cached[0])["count"] == 40


def test_inception_scores_say_what_is_missing_offline(monkeypatch):
    import builtins

    from callbacks.image_quality import inception_logits_and_features

    real_import = builtins.__import__

    def no_fidelity(name, *args, **kwargs):
        if name.startswith("torch_fidelity") or name == "torchmetrics.image.fid":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fidelity)
    with pytest.raises(RuntimeError, match="InceptionScores needs torch-fidelity and its Inception weights"):
        inception_logits_and_features()
