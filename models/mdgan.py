"""`MDGAN`: one generator against K discriminators, each trained on its own share of the data.

Hardy, Le Merrer, Sericola, "MD-GAN: Multi-Discriminator Generative Adversarial Networks for
Distributed Datasets", IPDPS 2019 (Algorithm 1), with the aggregation of the discriminators'
feedback from GMAN (Durugkar, Gemp, Mahadevan, "Generative Multi-Adversarial Networks", ICLR
2017, Section 3). Not Che et al.'s mode-regularised "MDGAN", a different method.

- K discriminators, copies of the one passed in, each re-initialised with its own weights.
- Data: Hardy's workers each hold a fixed local dataset. The datamodule cuts a finite training
  set into K fixed, disjoint parts (`num_parts = K`; for the 2D mixtures also `train_size`; see
  `datamodules.parts`), and every batch is K contiguous shares, share s drawn from part s only.
  Under DDP with W processes rank r holds parts [r K / W, (r + 1) K / W) (K must be a multiple
  of W), so a part never leaves its rank. Share s goes to discriminator `assignment[s]`: within
  a swap period each discriminator sees only its own part's samples; every `swap_every_epochs`
  epochs the assignment is permuted at random (the same permutation on every rank), Hardy's
  exchange of discriminators between workers (Section 4.3), after which each discriminator
  trains on another part, so none overfits its local data. The fakes are split the same way.
- D step: each discriminator minimises its own logistic loss on its share; the total is the
  sum, so each discriminator's gradient is exactly that of its own loss.
- G step: every discriminator scores the whole fake batch, giving K non-saturating losses
  V_1..V_K, combined by `models.losses.aggregate_losses`: "mean" (Hardy et al.), "max", or
  "softmax" (GMAN's soft-mean, w_i proportional to exp(lambda V_i)); lambda fixed, or learned as
  softplus(theta) by the generator's optimiser, with GMAN*'s penalty -lambda_penalty * lambda in
  the generator's loss (without it, minimising over lambda would drive it to 0, the mean).

Gradient clipping (`gradient_clip_val`) clips each discriminator's gradient on its own, as each
worker would clip its own discriminator.

Logged: each discriminator's loss (`train/d_loss_<i>`), its generator loss and its weight in
the aggregation (`train/g_loss_<i>`, `train/weight_<i>`), lambda.
Validation's `val/d_real`, `val/d_fake` are the first discriminator's.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GANBase
from .networks import reinitialise
from datamodules.parts import share_bounds

from .losses import AGGREGATIONS, aggregate_losses, d_logistic_loss, g_nonsaturating_loss
from .arguments import AggregationName, NonNegativeFloat, NonNegativeInt, PositiveInt

_SWAP_STREAM = 2  # key of the share-permutation stream (same on every rank)


class MDGAN(GANBase):
    """MD-GAN. Args as `GANBase`, plus:

    Args:
        num_discriminators: K.
        aggregation: "mean", "max" or "softmax" (see the module docstring).
        softmax_lambda: GMAN's lambda for "softmax" (its initial value when learned).
        learn_lambda: learn lambda = softplus(theta) with the generator (GMAN*).
        lambda_penalty: weight of GMAN*'s -lambda term when lambda is learned.
        swap_every_epochs: permute the discriminators' data shares every this many epochs;
            0 never swaps.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        num_discriminators: PositiveInt = 5,
        aggregation: AggregationName = "mean",
        softmax_lambda: float = 1.0,
        learn_lambda: bool = False,
        lambda_penalty: NonNegativeFloat = 1e-3,
        swap_every_epochs: NonNegativeInt = 1,
        **kwargs,
    ):
        if not isinstance(num_discriminators, int) or num_discriminators < 1:
            raise ValueError(f"num_discriminators must be an integer >= 1; got {num_discriminators!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
        if learn_lambda and aggregation != "softmax":
            raise ValueError("learn_lambda needs aggregation='softmax' (lambda is the soft-mean's temperature)")
        if learn_lambda and softmax_lambda <= 0:
            raise ValueError(f"a learned lambda = softplus(theta) starts > 0; got softmax_lambda {softmax_lambda}")
        if swap_every_epochs < 0:
            raise ValueError(f"swap_every_epochs must be >= 0 (0: never swap); got {swap_every_epochs}")
        self.num_discriminators = num_discriminators
        super().__init__(generator, discriminator, **kwargs)
        self.aggregation = aggregation
        self.learn_lambda = learn_lambda
        self.lambda_penalty = lambda_penalty
        self.swap_every_epochs = swap_every_epochs
        if learn_lambda:  # softplus(theta) = softmax_lambda at the start
            self.lambda_raw = nn.Parameter(torch.tensor(softmax_lambda + math.log(-math.expm1(-softmax_lambda))))
        else:
            self.register_buffer("lambda_raw", torch.tensor(float(softmax_lambda)), persistent=False)
        self.assignment = list(range(num_discriminators))  # share s -> discriminator assignment[s]
        self.data_parts = num_discriminators  # the datamodule cuts its training set into one part each

    def configure_networks(self) -> None:
        copies = []
        for _ in range(self.num_discriminators - 1):
            d = copy.deepcopy(self.discriminator)
            reinitialise(d)
            copies.append(d)
        self.other_discriminators = nn.ModuleList(copies)

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.discriminator, *self.other_discriminators]

    def discriminator_modules(self) -> list[nn.Module]:
        return self.discriminators

    @property
    def softmax_lambda(self) -> Tensor:
        return F.softplus(self.lambda_raw) if self.learn_lambda else self.lambda_raw

    def generator_parameters(self) -> list[nn.Parameter]:
        extra = [self.lambda_raw] if self.learn_lambda else []
        return list(self.generator.parameters()) + extra

    # ------------------------------------------------------------------ data shares
    def setup(self, stage: str) -> None:
        super().setup(stage)
        world = self.trainer.world_size
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit":
            if not hasattr(datamodule, "parts_for"):
                raise ValueError(
                    f"MDGAN's {self.num_discriminators} discriminators each train on a fixed part of the data; the "
                    f"datamodule {type(datamodule).__name__} cannot cut its training set into parts (use "
                    f"datamodules.Ring / Grid with train_size, or an image datamodule)"
                )
            datamodule.parts_for(self)  # its errors name the setting to change, before training starts
        if self.num_discriminators % world:
            raise ValueError(
                f"MDGAN's {self.num_discriminators} discriminators cannot own whole shares of {world} processes' "
                f"data: make num_discriminators a multiple of the number of processes (devices x nodes)"
            )

    def share_assignment(self, epoch: int) -> list[int]:
        """Discriminator of each data share at `epoch`: the identity until the first swap, then a
        random permutation per swap period, drawn from (seed, period) so every rank agrees."""
        period = epoch // self.swap_every_epochs if self.swap_every_epochs else 0
        if period == 0:
            return list(range(self.num_discriminators))
        rng = np.random.default_rng([torch.initial_seed(), _SWAP_STREAM, period])
        return rng.permutation(self.num_discriminators).tolist()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.assignment = self.share_assignment(self.current_epoch)

    def _world_and_rank(self) -> tuple[int, int]:
        return (self.trainer.world_size, self.global_rank) if self._trainer is not None else (1, 0)

    def local_shares(self, batch_size: int, world: int = 1, rank: int = 0) -> list[tuple[int, slice]]:
        """(discriminator, rows of this rank's batch) for the shares that live on rank `rank` of
        `world`: the batch split into K / world contiguous shares of near-equal size."""
        per_rank = self.num_discriminators // world
        bounds = share_bounds(batch_size, per_rank)  # the datamodule's shares, part by part
        return [(self.assignment[rank * per_rank + c], slice(bounds[c], bounds[c + 1])) for c in range(per_rank)]

    def on_before_optimizer_step(self, optimizer) -> None:
        clip = self.hparams.gradient_clip_val
        if clip is None or optimizer is not self.discriminator_optimizer():
            return super().on_before_optimizer_step(optimizer)
        # each discriminator on its own (gradients are unscaled here, see GANBase)
        for d in self.discriminators:
            params = [p for p in d.parameters() if p.grad is not None]
            if self.hparams.gradient_clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(params, clip)
            else:
                torch.nn.utils.clip_grad_value_(params, clip)

    # ------------------------------------------------------------------ losses
    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        total, logs = 0.0, {}
        world, rank = self._world_and_rank()
        for index, rows in self.local_shares(real.shape[0], world, rank):
            d = self.discriminators[index]
            loss = d_logistic_loss(d(real[rows]), d(fake[rows]))
            total = total + loss
            logs[f"d_loss_{index}"] = loss.detach()
        # Under DDP a discriminator's gradient exists on its own rank only and the base averages
        # gradients over the W ranks: scaling by W makes the result exactly its own gradient.
        return total * world, logs

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        losses = torch.stack([g_nonsaturating_loss(d(fake)) for d in self.discriminators])
        loss, weights = aggregate_losses(losses, self.aggregation, self.softmax_lambda)
        logs = {f"g_loss_{i}": v for i, v in enumerate(losses.detach())}
        logs |= {f"weight_{i}": w for i, w in enumerate(weights.detach())}
        if self.learn_lambda:
            loss = loss - self.lambda_penalty * self.softmax_lambda
            logs["lambda"] = self.softmax_lambda.detach()
        return loss, logs
