"""`GANBase`: the alternating generator/discriminator loop every variant shares.

One training batch is one discriminator step; every `n_critic`-th batch also has one
generator step. Per batch:

    z ~ p(z)                          (the module's own noise stream, see below)
    fake = G(z)                       generated once; with a graph only if G steps on it
    D step:  minimise discriminator_loss(real, fake.detach(), z)
    G step:  minimise generator_loss(real, fake, z)   (every n_critic batches; after the D step,
                                                       or before it: simultaneous updates)
             with fresh_generator_latents, on fake = G(z') for a new z' instead

The order is a choice: `simultaneous=True` (an argument of every model) takes both gradients at the
same point, G's against the D that both updates start from, and applies both in the step (the
PacGAN/ALI code's update); the default alternates, G answering the updated D. A variant whose
paper fixes the order sets the class attribute `generator_step_first` (Unrolled GAN). The latents
reach the loss hooks as an argument, for losses that read codes in them (MGAN's generator index,
InfoGAN's codes).

A variant overrides the small hooks (`discriminator_loss`, `generator_loss`, `sample_latent`,
`generate`, `discriminate`, `configure_networks`, `discriminator_modules`) and rewrites `training_step` only where
its algorithm really changes the loop, then still through `optimize()`.

What the base takes care of, so variants do not have to:
- manual optimisation with `toggled_optimizer` (only the stepping network gets gradients) and
  `manual_backward` (loss scaling under 16-mixed); gradient clipping in
  `on_before_optimizer_step`, i.e. after the AMP scaler has unscaled the gradients; LR
  schedulers stepped once per generator step, for both networks;
- DDP without `find_unused_parameters`: the reducer is off during the step and the gradients of
  exactly the parameters being stepped are averaged after each backward (`models.runtime`);
  buffers (BatchNorm statistics) are broadcast from rank 0 before every validation and at the end;
- counters of D and G steps, saved in checkpoints (`trainer.global_step` counts D and G
  optimizer steps together, so it is not the generator step count). Under 16-mixed a step the
  GradScaler skips still counts, as in Lightning's own step counts;
- a non-finite loss stops training with an error naming the step and the loss, before the
  update (under DDP every rank's flag rides in the gradient all-reduce, so all ranks stop at
  the same step);
- a noise stream (`self.noise`) reseeded from (seed, rank, epoch) at every epoch start, so that
  ranks draw different latents and a run resumed from an end-of-epoch checkpoint continues
  exactly as the uninterrupted run would. Variants draw all training randomness from it.
  Evaluation draws from `evaluation_rng()`, seeded by (seed, rank, generator step).
"""

import copy
import math
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable
from torch import Tensor, nn

from .checkpoints import CheckpointHooks, network_configs
from .regularizers import knn_entropy, mode_seeking_loss
from .checks import check_data_shape, check_generator_accepts_latents
from .runtime import (all_reduce_gradients, broadcast_buffers, compile_modules, disable_ddp_reducer, distributed,
                      non_finite_loss_error, seeded_rng, skip_nvml_probe_without_gpus)
from .arguments import NonNegativeFloat, OpenUnitInterval, PositiveFloat, PositiveInt


_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # keys that keep the training and evaluation noise streams apart


class GANBase(CheckpointHooks, L.LightningModule):
    """Shared base of every GAN variant. See the module docstring for the loop it owns; what it
    saves in and restores from checkpoints is in `models.checkpoints.CheckpointHooks`.

    Args:
        generator: maps latents (B, latent_dim) to data (B, *data_shape).
        discriminator: maps data (B, *data_shape) to scores (B,).
        latent_dim: size of z; defaults to `generator.latent_dim`.
        n_critic: discriminator steps (= training batches) per generator step.
        g_lr, d_lr: Adam learning rates of the generator and the discriminator.
        betas: Adam betas, shared by both optimisers.
        lr_scheduler: optional scheduler factory, applied to both optimisers and stepped once
            per generator step (so `total_iters`-style arguments count generator steps).
        gradient_clip_val: clip each network's gradients to this norm (or value) before its
            step; None disables. Applied to unscaled gradients under 16-mixed.
        gradient_clip_algorithm: "norm" or "value".
        num_fixed_latents: size of the fixed validation latent batch `val_z` (a buffer saved
            with the weights), for plots that follow the same z through training.
        compile_networks: `torch.compile` the networks' forward passes when fitting: True for
            the defaults, or a dict of `torch.compile` arguments (e.g. {mode: max-autotune},
            {backend: aot_eager}). In place (`nn.Module.compile`), so checkpoints keep their
            keys. The discriminators of models that differentiate through D's gradient (the
            WGAN-GP penalty, Unrolled GAN's second-order unrolling) stay eager: compiled
            graphs do not support double backward. A GPU option; on CPU it needs a C++ compiler.
        simultaneous: on batches with a generator step, take G's gradient at the point D's is taken at
            (G steps first, against the D both updates start from; D's fakes are the pre-update G's)
            instead of letting G answer the updated D. Both gradients come from one forward pass.
        fresh_generator_latents: on batches with a generator step, draw a new z for it instead of
            reusing the discriminator step's fakes (WGAN-GP's Algorithm 1, line 11; the InfoGAN
            authors' code). Draws from the same noise stream, after the discriminator's z.
        entropy_weight: lambda of the entropy regulariser: G's loss minus lambda x the k-NN (k 1) entropy estimate
            of the generated batch (`models.regularizers.knn_entropy`); 0 turns it off. Any variant.
        entropy_space: where the entropy is estimated: "data" (the samples, flattened) or "features" (the
            discriminator's trunk features, for discriminators with `features`).
        mode_seeking_weight: lambda of MSGAN's mode-seeking term (`models.regularizers.mode_seeking_loss`); 0 off.
            Both weights are attributes (`entropy_weight`, `mode_seeking_weight`) that a callback may change.
        d_skip_accuracy: an adaptive update ratio: skip the discriminator's step on a batch when its accuracy on the
            batch before (real scored > 0, fake < 0; averaged over DDP ranks) exceeded this, so a discriminator that
            wins outright waits for the generator; G steps as scheduled. None (default) never skips. Needs a model
            whose discriminator loss reports `d_accuracy` (GAN and the variants on its loss: PacGAN, minibatch
            discrimination, Unrolled GAN; and VEEGAN), with a loss that has a decision point (not wasserstein). Skips are counted
            (`d_skips`, logged as train/d_skips) and saved in checkpoints.
        g_skip_accuracy: the other side: skip the generator's step on a batch when the discriminator's accuracy on
            the batch before was below this, so a losing discriminator gets extra steps. Counted as `g_skips`
            (train/g_skips); g_steps counts the steps taken. Same models as d_skip_accuracy.
        channels_last: store 4-D weights and image batches in channels-last memory format (NHWC),
            the layout GPU convolution kernels prefer under mixed precision. Same results.
    """

    # True where a loss differentiates through D's input or parameter gradient (double backward):
    # torch.compile cannot compile such a discriminator, so compile_networks leaves it eager.
    double_backward_through_discriminator: bool = False

    # On batches with a generator step: False, D steps first and G answers the updated D (the
    # usual alternation); True, G steps first against the D both updates started from, i.e. a
    # simultaneous update (Unrolled GAN, Metz et al. 2017, Eq. 6-7).
    generator_step_first: bool = False

    # Samples the discriminator judges together, one score per group (`discriminate`): 1 for every model but
    # PacGAN, whose D sees `packing` samples at once.
    packing: int = 1

    # The arguments that are networks: kept out of the hyperparameters as modules, recorded as the configs that
    # rebuild them (load_from_checkpoint). A variant with an extra network argument (VEEGAN's reconstructor) adds
    # its name and calls `record_network_configs` for it.
    network_arguments: tuple[str, ...] = ("generator", "discriminator")

    # Fixed, disjoint parts of the training set the model trains on, one batch share each
    # (`datamodules.parts`): 1 for every model but those that give each network its own data (MD-GAN).
    data_parts: int = 1

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: Optional[int] = None,
        n_critic: PositiveInt = 1,
        g_lr: PositiveFloat = 2e-4,
        d_lr: PositiveFloat = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        gradient_clip_val: Optional[PositiveFloat] = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        num_fixed_latents: PositiveInt = 64,
        compile_networks: bool | dict[str, Any] = False,
        channels_last: bool = False,
        fresh_generator_latents: bool = False,
        simultaneous: bool = False,
        entropy_weight: NonNegativeFloat = 0.0,
        entropy_space: Literal["data", "features"] = "data",
        mode_seeking_weight: NonNegativeFloat = 0.0,
        d_skip_accuracy: Optional[OpenUnitInterval] = None,
        g_skip_accuracy: Optional[OpenUnitInterval] = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=[*self.network_arguments, "lr_scheduler"])
        # so a checkpoint loads on its own (a variant's extra networks: see record_network_configs)
        self._hparams.update(network_configs({"generator": generator, "discriminator": discriminator}))
        self._hparams_initial = copy.deepcopy(self._hparams)
        if not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"n_critic must be an integer >= 1 (discriminator steps per generator step); got {n_critic!r}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value'; got {gradient_clip_algorithm!r}")
        if not isinstance(compile_networks, (bool, dict)):
            raise ValueError(f"compile_networks must be true/false or a dict of torch.compile arguments; got {compile_networks!r}")
        for name, value in (("entropy_weight", entropy_weight), ("mode_seeking_weight", mode_seeking_weight)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (0 turns the regulariser off); got {value!r}")
        for name, value in (("d_skip_accuracy", d_skip_accuracy), ("g_skip_accuracy", g_skip_accuracy)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"{name} must be in (0, 1) (a discriminator accuracy, e.g. 0.9) or null; got {value!r}")
        if d_skip_accuracy is not None and g_skip_accuracy is not None and g_skip_accuracy >= d_skip_accuracy:
            raise ValueError(f"g_skip_accuracy ({g_skip_accuracy}) must be below d_skip_accuracy ({d_skip_accuracy}): "
                             f"between them both players step")
        if entropy_space not in ("data", "features"):
            raise ValueError(f"entropy_space must be 'data' or 'features'; got {entropy_space!r}")
        if entropy_space == "features" and not hasattr(discriminator, "features"):
            raise ValueError(f"entropy_space 'features' needs a discriminator with `features` (its trunk); "
                             f"{type(discriminator).__name__} has none: use entropy_space 'data'")
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise ValueError(f"gradient_clip_val must be positive or None; got {gradient_clip_val}")
        if latent_dim is None:
            latent_dim = getattr(generator, "latent_dim", None)
            if latent_dim is None:
                raise ValueError("latent_dim is not set and the generator has no `latent_dim` attribute; pass latent_dim")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.n_critic = n_critic
        self.lr_scheduler = lr_scheduler
        self.entropy_weight, self.mode_seeking_weight = float(entropy_weight), float(mode_seeking_weight)
        self.configure_networks()
        self.register_buffer("val_z", self.sample_latent(num_fixed_latents, rng=torch.Generator().manual_seed(0)))
        check_generator_accepts_latents(self)
        # Step counters (saved in checkpoints by on_save_checkpoint).
        self.d_steps = 0
        self.g_steps = 0
        self.d_skips = 0  # batches whose discriminator step d_skip_accuracy skipped (counted in d_steps too)
        self.g_skips = 0  # generator steps g_skip_accuracy skipped (not counted in g_steps)
        self.last_d_accuracy: Optional[float] = None
        if self.adapts_update_ratio() and not self.reports_discriminator_accuracy():
            raise ValueError(f"d_skip_accuracy and g_skip_accuracy need the discriminator's accuracy, and {type(self).__name__}'s "
                             f"discriminator loss does not report d_accuracy: use GAN (not with the wasserstein loss), "
                             f"PacGAN, minibatch discrimination, Unrolled GAN or VEEGAN, or set them to null")
        self.noise: Optional[torch.Generator] = None
        self.last_validated_g_step: Optional[int] = None

    def record_network_configs(self, **networks: nn.Module) -> None:
        """Records the configs that rebuild a variant's extra network arguments (named in `network_arguments`)
        in the hyperparameters, as the base does for G and D, so that its checkpoints load on their own."""
        self._hparams.update(network_configs(networks))
        self._hparams_initial = copy.deepcopy(self._hparams)

    # ------------------------------------------------------------------ hooks for variants
    def configure_networks(self) -> None:
        """Builds a variant's extra networks (heads, extra discriminators). Called in __init__."""

    def sample_latent(self, n: int, rng: Optional[torch.Generator] = None) -> Tensor:
        """Draws n latents z ~ N(0, I), shape (n, latent_dim), on the module's device."""
        return torch.randn(n, self.latent_dim, device=self.device, generator=rng)

    def generate(self, z: Tensor) -> Tensor:
        """Maps latents to data space."""
        return self.generator(z)

    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The discriminator's loss on a real batch and a (detached) fake batch made from `latent`,
        and values to log."""
        raise NotImplementedError

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator's loss on fakes made from `latent` that carry G's graph, and values to log."""
        raise NotImplementedError

    def discriminate(self, x: Tensor) -> Tensor:
        """The discriminator's scores for data x: one per sample, or per group of `packing` samples (PacGAN)."""
        return self.discriminator(x)

    def discriminator_features(self, x: Tensor) -> Tensor:
        """The discriminator's trunk features of data x, one row per sample D judges (the entropy regulariser's and
        DiversityMetrics' "features"): D's own input form, so PacGAN packs and VEEGAN pairs first (override)."""
        return self.discriminator.features(x)

    def discriminator_loss_nonnegative(self) -> bool:
        """Whether the discriminator's loss is >= 0 with 0 meaning "D wins outright" (cross-entropy, hinge, least
        squares), which CollapseMonitor's loss-curve warning relies on; False for a Wasserstein critic."""
        return True

    def discriminator_modules(self) -> list[nn.Module]:
        """The modules the discriminator's optimiser steps: D, and a variant's heads or extra
        discriminators (override). Compilation and per-discriminator clipping act on these."""
        return [self.discriminator]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters stepped by the discriminator's optimiser."""
        return [p for module in self.discriminator_modules() for p in module.parameters()]

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters stepped by the generator's optimiser (override to add e.g. learned codes)."""
        return list(self.generator.parameters())

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def sample(self, n: int, z: Optional[Tensor] = None, rng: Optional[torch.Generator] = None) -> Tensor:
        """n generated samples in data space (generator in eval mode; training mode restored).

        Latents come from `rng`, a torch.Generator (default: the global RNG), never from the training noise
        stream, so evaluating does not change training. Pass `z` to generate from given latents.
        """
        if z is None:
            z = self.sample_latent(n, rng=rng)
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generate(z.to(self.device))
        finally:
            self.generator.train(was_training)

    # ------------------------------------------------------------------ the loop
    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = self.unpack_batch(batch)
        g_step_now = self.generator_steps_this_batch()
        if g_step_now and self.skip_generator_step():
            g_step_now = False
            self.g_skips += 1
        fresh = g_step_now and self.hparams.get("fresh_generator_latents", False)
        d_latent = self.sample_latent(real.shape[0], rng=self.noise)
        with torch.set_grad_enabled(g_step_now and not fresh):  # G's graph only where its step uses these fakes
            d_fake = self.generate(d_latent)
        g_latent, g_fake = d_latent, d_fake
        if fresh:  # the generator step's own z, drawn after the discriminator's
            g_latent = self.sample_latent(real.shape[0], rng=self.noise)
        opt_g, opt_d = self.optimizers()

        logs: dict[str, Tensor] = {}
        g_first = self.generator_steps_first()
        if g_step_now and g_first:
            logs |= self._generator_step_on(opt_g, real, g_latent, g_fake if not fresh else None)
        if self.skip_discriminator_step():
            with torch.no_grad():  # D's accuracy now, for the next decision, without a step
                loss, d_logs = self.discriminator_loss(real, d_fake.detach(), d_latent)
            logs |= {"d_loss": loss.detach(), **d_logs}
            self.d_skips += 1
        else:
            logs |= self.optimize(opt_d, self.discriminator_loss, real, d_fake.detach(), d_latent, name="d_loss")
        if self.adapts_update_ratio():
            self.record_d_accuracy(logs)
            logs["d_skips"] = torch.tensor(float(self.d_skips))
            logs["g_skips"] = torch.tensor(float(self.g_skips))
        self.d_steps += 1
        if g_step_now and not g_first:
            logs |= self._generator_step_on(opt_g, real, g_latent, g_fake if not fresh else None)
        if self.d_steps % self.trainer.log_every_n_steps == 0:
            # Lightning writes to the loggers only every log_every_n_steps batches, but each
            # self.log call costs ~0.3 ms whether written or not: skip the ones never written.
            self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=False)
            self.log("train/g_step", float(self.g_steps), prog_bar=True)

    def _generator_step_on(self, optimizer, real: Tensor, latent: Tensor, fake: Optional[Tensor]) -> dict[str, Tensor]:
        # fake is None for fresh latents: generated here, after any D step, so G's graph is
        # built by the generator that steps (the same weights either way: D steps leave G alone)
        if fake is None:
            fake = self.generate(latent)
        return self.generator_step(optimizer, real, fake, latent)

    def generator_step(self, optimizer, real: Tensor, fake: Tensor, latent: Tensor) -> dict[str, Tensor]:
        """One generator step, counted, with the LR schedulers stepped."""
        logs = self.optimize(optimizer, self.regularized_generator_loss, real, fake, latent, name="g_loss")
        self.g_steps += 1
        self.step_lr_schedulers()
        return logs

    def regularized_generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The variant's `generator_loss` plus `generator_regularization`: what the generator step minimises."""
        loss, logs = self.generator_loss(real, fake, latent)
        term, more = self.generator_regularization(real, fake, latent)
        return (loss + term if term is not None else loss), {**logs, **more}

    def generator_regularization(self, real: Tensor, fake: Tensor, latent: Tensor
                                 ) -> tuple[Optional[Tensor], dict[str, Tensor]]:
        """The regularisers added to every variant's generator loss (None when all are off), and values to log:
        - entropy_weight > 0: -entropy_weight x the k-NN entropy of the batch (data or D's features);
        - mode_seeking_weight > 0: mode_seeking_weight x MSGAN's 1 / (ratio + 1e-5).
        Override (calling super) to add a variant's own."""
        term: Optional[Tensor] = None
        logs: dict[str, Tensor] = {}
        if self.entropy_weight > 0:
            x = self.discriminator_features(fake) if self.hparams.get("entropy_space") == "features" else fake
            entropy = knn_entropy(x.float())
            term = -self.entropy_weight * entropy
            logs["entropy"] = entropy.detach()
        if self.mode_seeking_weight > 0:
            loss, ratio = mode_seeking_loss(fake.float(), latent.float())
            term = (term if term is not None else 0) + self.mode_seeking_weight * loss
            logs["mode_seeking_ratio"] = ratio.detach()
        return term, logs

    def reports_discriminator_accuracy(self) -> bool:
        """Whether `discriminator_loss` reports `d_accuracy` (what d_skip_accuracy needs). Variants that do say so."""
        return False

    def on_fit_start(self) -> None:
        skip_nvml_probe_without_gpus(self.device)

    def adapts_update_ratio(self) -> bool:
        return self.hparams.get("d_skip_accuracy") is not None or self.hparams.get("g_skip_accuracy") is not None

    def skip_generator_step(self) -> bool:
        """Whether this batch's scheduled generator step is skipped (g_skip_accuracy; see __init__)."""
        threshold = self.hparams.get("g_skip_accuracy")
        return threshold is not None and self.last_d_accuracy is not None and self.last_d_accuracy < threshold

    def skip_discriminator_step(self) -> bool:
        """Whether this batch's discriminator step is skipped (d_skip_accuracy; see __init__)."""
        threshold = self.hparams.get("d_skip_accuracy")
        return threshold is not None and self.last_d_accuracy is not None and self.last_d_accuracy > threshold

    def record_d_accuracy(self, logs: dict[str, Tensor]) -> None:
        """Keeps the discriminator's accuracy on this batch (averaged over DDP ranks, so every rank decides alike)."""
        if "d_accuracy" not in logs:
            raise ValueError(f"d_skip_accuracy needs the discriminator's accuracy, and {type(self).__name__}'s "
                             f"discriminator loss does not report d_accuracy: use a model of the GAN family or VEEGAN, "
                             f"or set d_skip_accuracy to null")
        accuracy = logs["d_accuracy"].detach().float()
        if distributed():
            accuracy = self.trainer.strategy.reduce(accuracy, reduce_op="mean")
        self.last_d_accuracy = float(accuracy)

    def generator_steps_first(self) -> bool:
        """Whether G steps before D on batches with both: simultaneous updates, chosen or fixed by the variant."""
        return self.generator_step_first or bool(self.hparams.get("simultaneous", False))

    def generator_steps_this_batch(self) -> bool:
        """True on the batches that end with a generator step (every n_critic-th D step)."""
        return (self.d_steps + 1) % self.n_critic == 0

    def unpack_batch(self, batch: Any) -> Tensor:
        """The real samples of a batch: the batch itself, or its first element for (x, y) pairs."""
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        if real.ndim == 4 and self.hparams.get("channels_last"):
            real = real.contiguous(memory_format=torch.channels_last)
        return real

    def optimize(self, optimizer, loss_fn, *args, name: str) -> dict[str, Tensor]:
        """One optimiser step on `loss_fn(*args)`, with only `optimizer`'s parameters trainable.

        `loss_fn` returns (loss, logs). A NaN/inf loss stops training before the update: on one
        process it is checked before the backward; under DDP the gradients are averaged across
        ranks before the step, and each rank's "loss is finite" flag travels in that same
        all-reduce, so every rank learns of a non-finite loss anywhere without a collective of its own.
        """
        disable_ddp_reducer(self._trainer)
        with self.toggled_optimizer(optimizer):
            loss, logs = loss_fn(*args)
            several_ranks = distributed()
            if not several_ranks and not bool(torch.isfinite(loss).all()):
                raise non_finite_loss_error(name, loss, self._where())
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if several_ranks:
                bad_ranks = all_reduce_gradients(optimizer, finite=torch.isfinite(loss.detach()).all())
                if bad_ranks:
                    raise non_finite_loss_error(name, loss, self._where(), bad_ranks)
            optimizer.step()  # clipping happens in on_before_optimizer_step
        return {name: loss.detach(), **logs}

    def _where(self) -> str:
        return (f"generator step {self.g_steps}, discriminator step {self.d_steps} (trainer.global_step "
                f"{self.trainer.global_step}, epoch {self.current_epoch})")

    def generator_optimizer(self) -> torch.optim.Optimizer:
        """The generator's torch optimiser (unwrapped from Lightning's)."""
        return self.optimizers()[0].optimizer

    def discriminator_optimizer(self) -> torch.optim.Optimizer:
        """The discriminator's torch optimiser (unwrapped from Lightning's)."""
        return self.optimizers()[1].optimizer

    def step_lr_schedulers(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Called by Lightning inside optimizer.step(), after the AMP scaler unscaled the gradients.
        if self.hparams.gradient_clip_val is not None:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.hparams.gradient_clip_val,
                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm,
            )

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        opt_g = torch.optim.Adam(self.generator_parameters(), lr=self.hparams.g_lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator_parameters(), lr=self.hparams.d_lr, betas=betas)
        if self.lr_scheduler is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self.lr_scheduler(opt_g), self.lr_scheduler(opt_d)]

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Mean discriminator score on held-out real data and on fresh fakes (the D gap).

        The benchmark metrics (modes, HQ %, KL, FID...) come from callbacks, on `sample(n)`.
        """
        real = self.unpack_batch(batch)
        real = real[: real.shape[0] // self.packing * self.packing]  # whole groups of `packing`
        fake = self.sample(real.shape[0], rng=self.evaluation_rng())
        self.log("val/d_real", self.discriminate(real).float().mean(), sync_dist=True)
        self.log("val/d_fake", self.discriminate(fake).float().mean(), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.last_validated_g_step = self.g_steps

    # ------------------------------------------------------------------ checks and plumbing
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_shape = getattr(datamodule, "data_shape", None)
        if data_shape is not None:
            check_data_shape(self, tuple(data_shape))
        if stage == "fit":
            if self.hparams.get("channels_last"):
                self.to(memory_format=torch.channels_last)  # 4-D weights only; other tensors unchanged
            if self.hparams.get("compile_networks"):
                self.compile_networks()

    def networks_to_compile(self) -> list[nn.Module]:
        """The modules `compile_networks` compiles: G, and D's modules unless a loss needs D's double backward."""
        if self.double_backward_through_discriminator:
            return [self.generator]
        return [self.generator, *self.discriminator_modules()]

    def compile_networks(self) -> None:
        compile_modules(self.networks_to_compile(), self.hparams.compile_networks)

    def on_validation_epoch_start(self) -> None:
        broadcast_buffers(self, skip=("val_z",))  # all ranks evaluate one model

    def on_train_end(self) -> None:
        broadcast_buffers(self, skip=("val_z",))  # and end with one

    def seeded_stream(self, *keys: int) -> torch.Generator:
        """A torch.Generator on the module's device seeded by (run seed, rank, *keys): independent streams."""
        return seeded_rng(self.device, self.global_rank, *keys)

    def evaluation_rng(self) -> torch.Generator:
        """The latent stream for evaluating at the current generator step: differs across ranks
        (so samples split across DDP ranks are distinct) and is reproducible per (seed, step)."""
        return self.seeded_stream(_EVAL_STREAM, self.g_steps)

    def on_train_epoch_start(self) -> None:
        # Training noise depends only on (seed, rank, epoch): ranks differ, resumes are exact.
        self.noise = self.seeded_stream(_TRAIN_STREAM, self.current_epoch)
