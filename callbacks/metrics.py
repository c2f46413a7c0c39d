"""Evaluation metrics as pure functions: tensors in, numbers out, no Lightning and no state.

The callbacks count or gather on each rank and merge across ranks (torchmetrics states, or
`strategy.reduce`); the figures are then computed here, so each definition is written once and
can be tested on constructed inputs.

Definitions:
- 2D mixtures (Srivastava et al. 2017, VEEGAN, Section 5.1; PacGAN's code does the same): a
  sample is *high quality* (HQ) if it lies within `threshold` (3) std of its nearest centre; a
  mode is *captured* if it is the nearest centre of at least one HQ sample; HQ % = HQ samples /
  all samples * 100; KL = KL(q || p) = sum_k q_k log(q_k / p_k), q the histogram of HQ samples
  over modes, p the true mixture weights: 0 when every mode gets its share, log K when one mode
  takes all, NaN when no sample is HQ (q is undefined then). Spread = the mean over captured modes
  of the HQ samples' standard deviation about their own mean (root mean squared over the D
  coordinates), in units of the modes' std: 0 for a point mass on each mode however many modes it
  covers; for samples from the modes themselves, cut at 3 std, sqrt(1 - 4.5 e^-4.5 / (1 - e^-4.5))
  = 0.974 in 2D.
- Stacked MNIST: each channel of a (3, 28, 28) sample is classified by an MNIST classifier; the
  mode is the digit triple (`datamodules.StackedMNIST.mode_of`). Modes captured = modes with at
  least one sample; KL = KL(p_gen || Uniform(1000)) = sum_m p_m log(1000 p_m).
- FID: ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of two feature sets. KID: the
  unbiased MMD^2 of the cubic polynomial kernel, averaged over random subsets.
- Improved precision / recall (Kynkaanniemi et al. 2019, k = 3): a fake is "precise" if it lies
  inside the k-NN ball of some real feature; a real is "recalled" if inside the k-NN ball of
  some fake. Density / coverage (Naeem et al. 2020, k = 5): density = mean over fakes of the
  number of real balls containing it, divided by k; coverage = fraction of reals whose own
  ball contains at least one fake.
- Matched accuracy: how well one labelling (InfoGAN's code values) predicts another (modes,
  classes) under the best one-to-one matching of their values.
- Generator mode shares (MGAN): generator k's share of the HQ samples of mode j.
- Label-free diversity, on any features: NDB / JSD (Richardson & Weiss 2018): k-means bins fitted on real
  features; NDB = the bins whose generated share differs from the real one by a two-sided pooled two-proportion
  z-test, JSD = the Jensen-Shannon divergence of the two bin histograms (nats). Duplicate rate (after Arora & Zhang
  2017's birthday-paradox test): the share of generated samples with another generated sample closer than a low
  quantile of the real samples' nearest-neighbour distances, and the support size those near-duplicate pairs imply.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------- 2D mixtures
def nearest_modes(samples: Tensor, centers: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Each sample's nearest centre (N,), and whether it is high quality (within `radius`) (N,)."""
    samples = samples.detach().float().flatten(1)
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples have dimension {samples.shape[1]} but the centres have {centers.shape[1]}")
    dist, nearest = torch.cdist(samples, centers.to(samples)).min(dim=1)
    return nearest, dist <= radius


def mode_spread(hq_per_mode: Tensor, hq_sum: Tensor, hq_sq_sum: Tensor, std: float) -> Tensor:
    """Mean over captured modes of sqrt(per-coordinate variance of the mode's HQ samples) / std, from the HQ
    count (K,), the sum of the HQ samples (K, D) and the sum of their squared norms (K,) per mode; NaN when
    no mode is captured."""
    captured = hq_per_mode > 0
    if not bool(captured.any()):
        return torch.tensor(float("nan"), dtype=torch.float64, device=hq_sum.device)
    n = hq_per_mode[captured].double()
    mean = hq_sum[captured].double() / n[:, None]
    variance = (hq_sq_sum[captured].double() / n - mean.pow(2).sum(1)).clamp(min=0) / hq_sum.shape[1]
    return (variance.sqrt() / std).mean()


def mode_coverage(hq_per_mode: Tensor, total: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Modes captured, HQ % and KL(q || weights) from the HQ count per mode and the sample count."""
    hq_total = hq_per_mode.sum()
    q = hq_per_mode.double() / hq_total.clamp(min=1)
    p = weights.double()
    kl = torch.where(q > 0, q * (q / p).log(), torch.zeros_like(q)).sum()
    if hq_total == 0:
        kl = torch.tensor(float("nan"), dtype=torch.float64, device=kl.device)
    return {
        "modes": (hq_per_mode > 0).sum().float(),
        "hq": 100.0 * hq_total.double() / total.clamp(min=1),
        "kl": kl,
    }


def generator_mode_shares(counts: Tensor) -> dict[str, Tensor]:
    """From `counts[k, j]`, generator k's HQ samples on mode j: `shares` (each generator's share of
    each mode), `mode_purity` (mean over captured modes of the largest share; NaN if none is
    captured) and `generators_used` (generators that make the most samples of some mode; argmax
    ties go to the lower index)."""
    per_mode = counts.sum(0)
    shares = counts / per_mode.clamp(min=1)
    captured = per_mode > 0
    purity = shares.max(0).values[captured].mean() if captured.any() else torch.tensor(float("nan"))
    used = shares.argmax(0)[captured].unique().numel()
    return {"shares": shares, "mode_purity": purity, "generators_used": used}


# ---------------------------------------------------------------------------------- Stacked MNIST
def stacked_mnist_modes(counts: Tensor) -> dict[str, Tensor]:
    """Modes captured, KL(p_gen || Uniform(1000)) and the sample count from the samples per mode (1000,)."""
    p = counts.double() / counts.sum().clamp(min=1)
    kl = torch.where(p > 0, p * (p * 1000).log(), torch.zeros_like(p)).sum()
    return {"modes": (counts > 0).sum().float(), "kl": kl, "num_samples": counts.sum().float()}


# ---------------------------------------------------------------------------------- feature sets
def frechet_distance(real: Tensor, fake: Tensor) -> Tensor:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of two feature sets (N, D), float64."""
    real, fake = real.double(), fake.double()
    return frechet_distance_from_moments(real.mean(0), torch.cov(real.t()), fake.mean(0), torch.cov(fake.t()))


def frechet_distance_from_moments(mu_r: Tensor, s_r: Tensor, mu_f: Tensor, s_f: Tensor) -> Tensor:
    """The Frechet distance of two Gaussians given by their means (D,) and covariances (D, D), float64."""
    mu_r, s_r, mu_f, s_f = mu_r.double(), s_r.double(), mu_f.double(), s_f.double()
    # Tr((S_r S_f)^(1/2)) = sum of sqrt of the eigenvalues of S_r^(1/2) S_f S_r^(1/2) (symmetric PSD)
    eval_r, evec_r = torch.linalg.eigh(s_r)
    sqrt_r = evec_r @ torch.diag(eval_r.clamp(min=0).sqrt()) @ evec_r.t()
    middle = torch.linalg.eigvalsh(sqrt_r @ s_f @ sqrt_r).clamp(min=0).sqrt().sum()
    return (mu_r - mu_f).pow(2).sum() + torch.trace(s_r) + torch.trace(s_f) - 2 * middle


def inception_score(logits: Tensor, splits: int = 10) -> tuple[Tensor, Tensor]:
    """Salimans et al. 2016: exp(E_x KL(p(y|x) || p(y))) in each of `splits` consecutive parts of the samples (p(y)
    the part's mean prediction), and the mean and std (n - 1) over the parts. logits (N, classes)."""
    if not 1 <= splits <= logits.shape[0]:
        raise ValueError(f"need 1 <= splits <= the number of samples; got splits {splits} for {logits.shape[0]}")
    log_p = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for part in log_p.chunk(splits):
        log_marginal = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        scores.append(torch.exp((part.exp() * (part - log_marginal)).sum(1).mean()))
    scores = torch.stack(scores)
    return scores.mean(), (scores.std() if splits > 1 else torch.zeros((), dtype=scores.dtype))


class FeatureMoments:
    """Running count, sum and sum of outer products of features (float64): their mean and covariance (n - 1)
    without keeping them, for the statistics of a whole training set."""

    def __init__(self):
        self.count, self.total, self.outer = 0, None, None

    def update(self, features: Tensor) -> None:
        x = features.double().flatten(1)
        if self.total is None:
            self.total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        self.count += x.shape[0]
        self.total += x.sum(0)
        self.outer += x.t() @ x

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples; got {self.count}")
        mean = self.total / self.count
        return mean, (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)


def kernel_distance(real: Tensor, fake: Tensor, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> Tensor:
    """KID: unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, mean over subsets.

    The subsets are drawn from a CPU generator seeded with `seed`, reals then fakes per subset (the
    order torchmetrics draws them in), so a value does not depend on the global RNG."""
    real, fake = real.double(), fake.double()
    m = min(subset_size, real.shape[0], fake.shape[0])
    d = real.shape[1]
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(real.shape[0], generator=g)[:m].to(real.device)]
        y = fake[torch.randperm(fake.shape[0], generator=g)[:m].to(fake.device)]
        k_xx, k_yy, k_xy = ((x @ x.t()) / d + 1) ** 3, ((y @ y.t()) / d + 1) ** 3, ((x @ y.t()) / d + 1) ** 3
        mmd = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1)) + (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1)) \
            - 2 * k_xy.mean()
        values.append(mmd)
    return torch.stack(values).mean()


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of x to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.topk(k + 1, dim=1, largest=False).values[:, k]  # index 0 is the point itself


def real_knn_radii(real: Tensor, k_pr: int = 3, k_dc: int = 5) -> tuple[Tensor, Tensor]:
    """The real features' k_pr- and k_dc-th nearest-neighbour radii (what precision_recall_density_coverage needs
    of the real set alone; a fixed reference can compute them once)."""
    d = torch.cdist(real.double(), real.double())
    radii = d.topk(max(k_pr, k_dc) + 1, dim=1, largest=False).values  # column 0 is the point itself
    return radii[:, k_pr], radii[:, k_dc]


def precision_recall_density_coverage(real: Tensor, fake: Tensor, k_pr: int = 3, k_dc: int = 5,
                                      real_radii: Optional[tuple[Tensor, Tensor]] = None) -> dict[str, Tensor]:
    """Improved precision / recall (k_pr) and density / coverage (k_dc) of feature sets (N, D); `real_radii`:
    `real_knn_radii(real, k_pr, k_dc)` when already computed."""
    real, fake = real.double(), fake.double()
    if min(real.shape[0], fake.shape[0]) <= max(k_pr, k_dc):
        raise ValueError(f"need more than k = {max(k_pr, k_dc)} real and fake features; got {real.shape[0]}, {fake.shape[0]}")
    d_fr = torch.cdist(fake, real)  # (F, R)
    real_r_pr, real_r_dc = real_radii if real_radii is not None else real_knn_radii(real, k_pr, k_dc)
    fake_r_pr = _knn_radii(fake, k_pr)
    precision = (d_fr <= real_r_pr[None, :]).any(1).double().mean()
    recall = (d_fr.t() <= fake_r_pr[None, :]).any(1).double().mean()
    inside = d_fr <= real_r_dc[None, :]  # fake f inside real r's ball
    density = inside.sum(1).double().mean() / k_dc
    coverage = inside.any(0).double().mean()
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


# ---------------------------------------------------------------------------------- labellings
def contingency_table(rows: Tensor, cols: Tensor, num_rows: int, num_cols: int) -> Tensor:
    """`table[i, j]`: how many positions hold label i in `rows` and label j in `cols` (float32)."""
    table = torch.zeros(num_rows, num_cols, device=rows.device)
    table.index_put_((rows, cols), torch.ones_like(cols, dtype=table.dtype), accumulate=True)
    return table


def matched_accuracy(contingency: Tensor) -> float:
    """Accuracy of the best one-to-one matching of rows (code values) to columns (classes).

    `contingency[i, j]` counts samples with code i and class j. The matching maximises the
    matched count (Hungarian algorithm, `scipy.optimize.linear_sum_assignment`); with more codes
    than classes (or fewer) the unmatched ones count as errors. NaN for an empty table.
    """
    from scipy.optimize import linear_sum_assignment

    counts = contingency.detach().double().cpu().numpy()
    total = counts.sum()
    if total == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / total)


# ---------------------------------------------------------------------------------- label-free diversity
def kmeans_bins(reference: Tensor, num_bins: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """NDB's bins (Richardson & Weiss 2018; the authors' utils/ndb.py): k-means (scikit-learn's, k-means++ with 10
    restarts, 100 iterations as theirs, seeded here) on the reference features (N, D). Returns the centres
    (num_bins, D), each the mean of its members, sorted by size, largest first, and the reference's proportion in
    each bin (from the k-means labels, as theirs)."""
    from sklearn.cluster import KMeans

    if reference.shape[0] < num_bins:
        raise ValueError(f"NDB needs at least as many reference samples as bins; got {reference.shape[0]} samples for "
                         f"{num_bins} bins: lower num_bins or give more reference samples")
    x = reference.double().cpu().numpy()
    labels = torch.from_numpy(KMeans(n_clusters=num_bins, n_init=10, max_iter=100, random_state=seed).fit(x).labels_)
    counts = torch.bincount(labels.long(), minlength=num_bins).double()
    order = torch.argsort(-counts, stable=True)
    centres = torch.stack([reference.double().cpu()[labels == i].mean(0) for i in order.tolist()])
    return centres, counts[order] / counts.sum()


def bin_proportions(samples: Tensor, centres: Tensor) -> Tensor:
    """The share of `samples` (N, D) whose nearest centre (Euclidean) is each of `centres` (K, D)."""
    nearest = torch.cdist(samples.double(), centres.double().to(samples.device)).argmin(1)
    return torch.bincount(nearest, minlength=centres.shape[0]).double() / samples.shape[0]


def ndb_jsd(reference: Tensor, n_reference: int, query: Tensor, n_query: int, significance: float = 0.05
            ) -> dict[str, Tensor]:
    """NDB and JSD from bin proportions (Richardson & Weiss 2018): a bin is *statistically different* when a
    two-sided, pooled two-proportion z-test rejects equal proportions at `significance`:
    p = (n1 p1 + n2 p2) / (n1 + n2), se = sqrt(p (1 - p) (1/n1 + 1/n2)), z = (p1 - p2) / se, |z| > z_{1 - a/2}
    (a bin empty in both never counts). NDB = how many bins differ; `ndb_fraction` = NDB / K; JSD = the
    Jensen-Shannon divergence of the two histograms in nats (at most ln 2)."""
    p1, p2 = reference.double(), query.double().to(reference.device)
    pooled = (n_reference * p1 + n_query * p2) / (n_reference + n_query)
    se = (pooled * (1 - pooled) * (1 / n_reference + 1 / n_query)).sqrt()
    z = (p1 - p2) / se
    critical = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - significance / 2, dtype=torch.float64))
    different = (z.abs() > critical) & (se > 0)
    mean = (p1 + p2) / 2

    def kl(p: Tensor, q: Tensor) -> Tensor:
        keep = p > 0
        return (p[keep] * (p[keep] / q[keep]).log()).sum()

    return {"ndb": different.sum().double(), "ndb_fraction": different.double().mean(),
            "jsd": 0.5 * (kl(p1, mean) + kl(p2, mean))}


def duplicate_threshold(real: Tensor, quantile: float = 0.01) -> Tensor:
    """The `quantile` of the real samples' distances to their nearest other real sample (duplicate_rate's t)."""
    d_real = torch.cdist(real.double(), real.double()).fill_diagonal_(float("inf"))
    return torch.quantile(d_real.min(1).values, quantile)


def duplicate_rate(real: Tensor, fake: Tensor, quantile: float = 0.01, threshold: Optional[Tensor] = None
                   ) -> dict[str, Tensor]:
    """The birthday-paradox view of diversity (Arora & Zhang 2017), without a human judge: the threshold t is the
    `quantile` of the real samples' distances to their nearest other real sample; a generated sample is a
    *near-duplicate* if its nearest other generated sample is no farther than t. Returns the near-duplicate share
    (`duplicate_rate`: 1 for a batch of exact copies; about `quantile` for samples drawn like the real ones, at as
    many samples as reals) and the support size the near-duplicate pairs imply: with N equally likely outcomes, n
    draws make n (n - 1) / (2 N) colliding pairs on average, so N = n (n - 1) / (2 pairs) (`support_size`; inf
    without a pair), in samples. `threshold`: `duplicate_threshold(real, quantile)` when already computed."""
    real, fake = real.double(), fake.double()
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"the duplicate rate needs at least 2 real and 2 generated samples; got {real.shape[0]}, "
                         f"{fake.shape[0]}")
    if threshold is None:
        threshold = duplicate_threshold(real, quantile)
    d_fake = torch.cdist(fake, fake).fill_diagonal_(float("inf"))
    close = d_fake <= threshold  # `<=`: with t = 0 (reals with exact copies) exact generated copies still count
    pairs = close.triu(1).sum().double()
    n = fake.shape[0]
    support = n * (n - 1) / (2 * pairs) if pairs > 0 else torch.tensor(float("inf"), dtype=torch.float64)
    return {"duplicate_rate": close.any(1).double().mean(), "support_size": support,
            "duplicate_threshold": threshold}
