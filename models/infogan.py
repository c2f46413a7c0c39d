"""`InfoGAN`: structured latent codes whose mutual information with the samples is maximised.

Chen, Duan, Houthooft, Schulman, Sutskever, Abbeel, "InfoGAN: Interpretable Representation
Learning by Information Maximizing Generative Adversarial Nets", NeurIPS 2016, Eq. 5-6:

    min_{G, Q} max_D  V(D, G) - lambda * L_I(G, Q),
    L_I = E_{c ~ p(c), x ~ G(z, c)}[log Q(c | x)] + H(c)   (a lower bound on I(c; G(z, c))).

The latent is [noise, one_hot(c_1), ..., one_hot(c_m), c_cont]: noise N(0, I) or U(-1, 1)
(`noise`), categorical codes drawn uniformly, continuous codes uniform in [-range, range]
(MNIST: 62-d noise, one Cat(10), two U(-1, 1); Section 7.1). Q is a head on the
discriminator's trunk (`discriminator.features`): one hidden layer (the paper's FC 128 with
leaky ReLU 0.1), then logits for each categorical code and a Gaussian per continuous code
(Section 6). The information loss we minimise is -L_I up to the constant H(c):

    info = categorical_weight * sum_j CE(logits_j, c_j) + continuous_weight * NLL_Gaussian(c_cont).

The paper (Section 6) puts lambda = 1 on categorical codes and a smaller one on continuous
codes (0.1 by default here); the authors' MNIST code uses 1 for both, with sigma fixed.

The Gaussian's standard deviation is fixed at 1 by default, as in the authors' code for MNIST
(openai/InfoGAN: `Uniform(1, fix_std=True)`): Q predicts only the means, and the continuous
term is 0.5 * ||c - mu||^2 + const. With a learned sigma, G's effective weight on the squared
error is continuous_weight / sigma^2, and an unbounded log sigma lets Q shrink sigma and scale
that weight up by orders of magnitude while training; so `learn_continuous_std=True` bounds it,
log sigma = b * tanh(raw / b) with b = `log_std_bound`.

Both steps minimise the information loss, as the authors' code does: the D step adds it for Q
(Q's head and D's shared trunk, on the detached fakes), the G step adds it for G. The G step
draws its own latents (`fresh_generator_latents`, True here), as the authors' code does (its
generator update samples the prior anew).
"""

from typing import Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GANBase
from .losses import classification_loss, d_logistic_loss, g_nonsaturating_loss, gaussian_nll
from .networks import require_trunk
from .arguments import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

Codes = Union[int, float, Sequence[float], Tensor, None]


class InfoGAN(GANBase):
    """InfoGAN. Args as `GANBase`, plus:

    Args:
        generator: takes latents of size noise + sum(categorical_codes) + continuous_codes
            (its `latent_dim`).
        discriminator: a `TrunkDiscriminator` (`features(x)`, `score(features)`, `feature_dim`); Q shares the trunk.
        categorical_codes: number of values of each categorical code, e.g. [10].
        continuous_codes: number of continuous codes.
        continuous_range: continuous codes are drawn from U(-range, range).
        categorical_weight, continuous_weight: lambda of the two parts of the information loss.
        q_hidden_dim: width of Q's hidden layer.
        learn_continuous_std: Q also predicts log sigma of each continuous code (bounded);
            False (default) fixes sigma = 1, as the authors' code.
        log_std_bound: b, the bound |log sigma| <= b of a learned sigma.
        noise: "normal" (N(0, I), default) or "uniform" (U(-1, 1), the authors' MNIST code).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        categorical_codes: Sequence[int] = (10,),
        continuous_codes: NonNegativeInt = 2,
        continuous_range: PositiveFloat = 1.0,
        categorical_weight: NonNegativeFloat = 1.0,
        continuous_weight: NonNegativeFloat = 0.1,
        q_hidden_dim: PositiveInt = 128,
        learn_continuous_std: bool = False,
        log_std_bound: PositiveFloat = 1.0,
        noise: Literal["normal", "uniform"] = "normal",
        g_lr: PositiveFloat = 1e-3,
        d_lr: PositiveFloat = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        fresh_generator_latents: bool = True,
        **kwargs,
    ):
        categorical_codes = [int(k) for k in categorical_codes]
        if any(k < 2 for k in categorical_codes) or continuous_codes < 0 or continuous_range <= 0:
            raise ValueError(f"need categorical codes with >= 2 values, continuous_codes >= 0 and "
                             f"continuous_range > 0; got {categorical_codes}, {continuous_codes}, {continuous_range}")
        if noise not in ("normal", "uniform"):
            raise ValueError(f"noise must be 'normal' (N(0, I)) or 'uniform' (U(-1, 1)); got {noise!r}")
        if not log_std_bound > 0:
            raise ValueError(f"log_std_bound must be > 0 (|log sigma| <= log_std_bound); got {log_std_bound}")
        if not categorical_codes and continuous_codes == 0:
            raise ValueError("InfoGAN needs at least one code (categorical_codes or continuous_codes)")
        require_trunk(discriminator, "InfoGAN", "Q")
        latent_dim = kwargs.pop("latent_dim", None) or getattr(generator, "latent_dim", None)
        code_dim = sum(categorical_codes) + continuous_codes
        if latent_dim is None or latent_dim <= code_dim:
            raise ValueError(
                f"the generator's latent_dim ({latent_dim}) must exceed the codes' size {code_dim} "
                f"(sum of categorical sizes {categorical_codes} + {continuous_codes} continuous): it is "
                f"noise + codes, e.g. 62 + 10 + 2 = 74 for the paper's MNIST setting"
            )
        self.categorical_codes = categorical_codes
        self.continuous_codes = continuous_codes
        self.continuous_range = float(continuous_range)
        self.noise_dim = latent_dim - code_dim
        self.q_hidden_dim = q_hidden_dim
        self.learn_continuous_std = bool(learn_continuous_std)
        self.log_std_bound = float(log_std_bound)
        self.noise_distribution = noise
        super().__init__(generator, discriminator, latent_dim=latent_dim, g_lr=g_lr, d_lr=d_lr, betas=betas,
                         fresh_generator_latents=fresh_generator_latents, **kwargs)
        self.categorical_weight = categorical_weight
        self.continuous_weight = continuous_weight

    def configure_networks(self) -> None:
        # logits; a mean per continuous code, and a log-std per code where sigma is learned
        out = sum(self.categorical_codes) + (2 if self.learn_continuous_std else 1) * self.continuous_codes
        self.q_head = nn.Sequential(
            nn.Linear(self.discriminator.feature_dim, self.q_hidden_dim), nn.LeakyReLU(0.1),
            nn.Linear(self.q_hidden_dim, out),
        )

    def discriminator_modules(self) -> list[nn.Module]:
        return [self.discriminator, self.q_head]

    # ------------------------------------------------------------------ latents and codes
    def sample_latent(self, n: int, rng: Optional[torch.Generator] = None) -> Tensor:
        return self.make_latent(n, rng=rng)

    def make_latent(self, n: int, categorical: Codes = None, continuous: Codes = None,
                    rng: Optional[torch.Generator] = None) -> Tensor:
        """Latents (n, latent_dim): given codes where passed, drawn from their priors otherwise.

        `categorical`: one value per categorical code (an int if there is one code), or a
        (n, m) integer tensor. `continuous`: one value per continuous code, or (n, J).
        """
        dev = self.device
        if self.noise_distribution == "uniform":
            noise = torch.rand(n, self.noise_dim, device=dev, generator=rng) * 2 - 1
        else:
            noise = torch.randn(n, self.noise_dim, device=dev, generator=rng)
        m, J = len(self.categorical_codes), self.continuous_codes
        if categorical is None:
            cats = torch.stack([torch.randint(k, (n,), device=dev, generator=rng) for k in self.categorical_codes], 1) \
                if m else torch.zeros(n, 0, dtype=torch.long, device=dev)
        else:
            cats = torch.as_tensor(categorical, device=dev, dtype=torch.long).reshape(-1, m).expand(n, m)
            for j, k in enumerate(self.categorical_codes):
                if not ((cats[:, j] >= 0) & (cats[:, j] < k)).all():
                    raise ValueError(f"categorical code {j} takes values in [0, {k}); got {cats[:, j].unique().tolist()}")
        if continuous is None:
            cont = (torch.rand(n, J, device=dev, generator=rng) * 2 - 1) * self.continuous_range
        else:
            cont = torch.as_tensor(continuous, device=dev, dtype=noise.dtype).reshape(-1, J).expand(n, J)
        onehots = [F.one_hot(cats[:, j], k).to(noise.dtype) for j, k in enumerate(self.categorical_codes)]
        return torch.cat([noise, *onehots, cont], dim=1)

    def categorical_slices(self) -> list[slice]:
        """Where each categorical code's one-hot block sits in a latent vector (after the noise)."""
        slices, offset = [], self.noise_dim
        for k in self.categorical_codes:
            slices.append(slice(offset, offset + k))
            offset += k
        return slices

    def continuous_index(self, j: int) -> int:
        """Where continuous code j sits in a latent vector (the last `continuous_codes` entries)."""
        return self.latent_dim - self.continuous_codes + j

    def split_codes(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The codes of latents z: categorical values (B, m) as integers, continuous (B, J)."""
        cats = [z[:, block].argmax(1) for block in self.categorical_slices()]
        cat = torch.stack(cats, 1) if cats else z.new_zeros(z.shape[0], 0, dtype=torch.long)
        return cat, z[:, self.latent_dim - self.continuous_codes :]

    def replace_codes(self, z: Tensor, categorical: Optional[dict[int, Codes]] = None,
                      continuous: Optional[dict[int, Codes]] = None) -> Tensor:
        """A copy of latents z (..., latent_dim) with some codes set, the rest (noise included) kept.

        `categorical` maps a categorical code's index to its new values (integers), `continuous` a
        continuous code's index to its new values; values broadcast over z's leading dimensions
        (a number sets every latent; a tensor of shape z.shape[:-1] sets each its own).
        """
        z = z.clone()
        blocks = self.categorical_slices()
        for j, values in (categorical or {}).items():
            k = self.categorical_codes[j]
            values = torch.as_tensor(values, device=z.device, dtype=torch.long).expand(z.shape[:-1])
            if not ((values >= 0) & (values < k)).all():
                raise ValueError(f"categorical code {j} takes values in [0, {k}); got {values.unique().tolist()}")
            z[..., blocks[j]] = F.one_hot(values, k).to(z.dtype)
        for j, values in (continuous or {}).items():
            if not 0 <= j < self.continuous_codes:
                raise ValueError(f"continuous code {j} does not exist: the model has {self.continuous_codes}")
            z[..., self.continuous_index(j)] = torch.as_tensor(values).to(z).expand(z.shape[:-1])
        return z

    @torch.no_grad()
    def sample(self, n: int, z: Optional[Tensor] = None, rng: Optional[torch.Generator] = None,
               categorical: Codes = None, continuous: Codes = None) -> Tensor:
        """n samples; `categorical` / `continuous` fix the codes (see `make_latent`)."""
        if z is None:
            z = self.make_latent(n, categorical, continuous, rng=rng)
        return super().sample(n, z=z)

    def q(self, features: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Q's outputs from D's features: per-code logits, and continuous means and log-stds
        (zeros, i.e. sigma = 1, unless sigma is learned)."""
        out = self.q_head(features)
        logits, offset = [], 0
        for k in self.categorical_codes:  # Q's output: per-code logits, then means, then log-stds
            logits.append(out[:, offset : offset + k])
            offset += k
        mean = out[:, offset : offset + self.continuous_codes]
        if self.learn_continuous_std:
            b = self.log_std_bound
            log_std = b * torch.tanh(out[:, offset + self.continuous_codes :] / b)
        else:
            log_std = torch.zeros_like(mean)
        return logits, mean, log_std

    def information_loss(self, features: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """-L_I (up to H(c)) of the codes in z, from D's features of G(z)."""
        cat, cont = self.split_codes(z)
        logits, mean, log_std = self.q(features)
        loss = features.new_zeros((), dtype=torch.float32)
        logs = {}
        for j, l in enumerate(logits):
            ce = classification_loss(l, cat[:, j])
            loss = loss + self.categorical_weight * ce
            logs[f"info_cat{j}"] = ce.detach()
            logs[f"q_acc_cat{j}"] = (l.detach().argmax(1) == cat[:, j]).float().mean()
        if self.continuous_codes:
            nll = gaussian_nll(mean, log_std, cont)
            loss = loss + self.continuous_weight * nll
            logs["info_cont_nll"] = nll.detach()
            if self.learn_continuous_std:
                logs["q_sigma_min"] = log_std.detach().exp().min()
        return loss, logs

    # ------------------------------------------------------------------ losses
    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_scores = self.discriminator(real)
        features = self.discriminator.features(fake)
        fake_scores = self.discriminator.score(features)
        adversarial = d_logistic_loss(real_scores, fake_scores)
        info, logs = self.information_loss(features, latent)
        logs |= {"d_adversarial": adversarial.detach(), "d_real": real_scores.detach().float().mean(),
                 "d_fake": fake_scores.detach().float().mean()}
        return adversarial + info, logs

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.discriminator.features(fake)
        adversarial = g_nonsaturating_loss(self.discriminator.score(features))
        info, _ = self.information_loss(features, latent)
        return adversarial + info, {"g_adversarial": adversarial.detach(), "g_info": info.detach()}
