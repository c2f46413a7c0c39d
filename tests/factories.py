"""The one place tests build tiny models, data and trainers, so that each real training run takes a
second or two and every test module builds them the same way."""

from __future__ import annotations

from typing import Optional

import lightning as L
from torch import nn

import models
from datamodules import Ring
from models import MLPDiscriminator, MLPGenerator

MODELS = ("GAN", "UnrolledGAN", "MinibatchDiscriminationGAN", "WGANGP", "MGAN", "MDGAN", "InfoGAN", "D2GAN", "PacGAN", "VEEGAN")
VARIANTS = MODELS[1:]

# What each variant needs to show its mechanism at tiny size (model arguments).
MODEL_DEFAULTS = {
    "UnrolledGAN": {"unrolled_steps": 2},
    "MDGAN": {"num_discriminators": 3},
    "InfoGAN": {"categorical_codes": [8], "continuous_codes": 2},
    "PacGAN": {"packing": 2},
    "VEEGAN": {"extra_noise_dim": 2},
}


def tiny_model(name: str = "GAN", *, noise_dim: int = 8, hidden_dim: int = 16, num_generators: Optional[int] = None,
               minibatch_kernels: Optional[int] = None, generator: Optional[nn.Module] = None,
               discriminator: Optional[nn.Module] = None, **kwargs) -> models.GANBase:
    """A 2D model of class `name` on MLPs of width `hidden_dim`.

    `noise_dim` is the generator's noise; InfoGAN's codes are added to it (the generator's latent is
    noise + codes). MGAN gets 4 generators and minibatch discrimination 3 kernels unless
    `num_generators` / `minibatch_kernels` say otherwise. `generator` / `discriminator` replace the
    MLPs; other keyword arguments go to the model, over MODEL_DEFAULTS."""
    kwargs = {**MODEL_DEFAULTS.get(name, {}), **kwargs}
    if num_generators is None:
        num_generators = 4 if name == "MGAN" else 1
    if minibatch_kernels is None:
        minibatch_kernels = 3 if name == "MinibatchDiscriminationGAN" else 0
    codes = sum(kwargs["categorical_codes"]) + kwargs["continuous_codes"] if name == "InfoGAN" else 0
    if generator is None:
        generator = MLPGenerator(latent_dim=noise_dim + codes, hidden_dim=hidden_dim, num_generators=num_generators)
    if discriminator is None:
        in_dim = 2 * kwargs.get("packing", 1)  # PacGAN's D sees `packing` samples at once
        if name == "VEEGAN":  # D judges (z, x) pairs: the reconstructed latents and the sample
            in_dim += generator.latent_dim - kwargs["extra_noise_dim"]
        discriminator = MLPDiscriminator(in_dim=in_dim, hidden_dim=hidden_dim, minibatch_kernels=minibatch_kernels)
    if name == "VEEGAN" and "reconstructor" not in kwargs:
        kwargs["reconstructor"] = MLPGenerator(latent_dim=2, out_dim=generator.latent_dim - kwargs["extra_noise_dim"],
                                               hidden_dim=hidden_dim)
    return getattr(models, name)(generator, discriminator, **kwargs)


def tiny_ring(**kwargs) -> Ring:
    """The 8-Gaussian ring in batches of 32, 5 batches an epoch."""
    return Ring(**{"batch_size": 32, "batches_per_epoch": 5, "val_size": 64, "seed": 0, **kwargs})


def tiny_data(name: str = "GAN", **kwargs) -> Ring:
    """tiny_ring for model `name`: MD-GAN's gets the finite training set its parts are cut from."""
    return tiny_ring(**({"train_size": 480} if name == "MDGAN" else {}), **kwargs)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU trainer without loggers, checkpoints, progress bar, summary or sanity check."""
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})
