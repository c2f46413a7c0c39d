"""Checks that a model's networks fit together and fit the data, run before training starts so a
mismatch is a clear message naming the setting to change rather than a shape error mid-step."""

from __future__ import annotations

import torch

from .runtime import eval_mode


def check_generator_accepts_latents(model) -> None:
    """The generator takes the model's latents (`model.latent_dim` wide)."""
    with torch.no_grad(), eval_mode(model.generator):
        try:
            model.generate(model.sample_latent(2))
        except RuntimeError as err:
            raise ValueError(
                f"the generator rejects latents of shape (2, {model.latent_dim}): {err}. Make the model's "
                f"latent_dim and the generator's input size agree"
            ) from err


def check_data_shape(model, data_shape: tuple[int, ...]) -> None:
    """The generator makes samples of the data's shape and the discriminator scores them, one score each."""
    with torch.no_grad(), eval_mode(model.generator, model.discriminator):
        out = model.generate(model.sample_latent(2))
        if tuple(out.shape[1:]) != data_shape:
            raise ValueError(
                f"the generator makes samples of shape {tuple(out.shape[1:])} but the data have shape "
                f"{data_shape}; set the generator's output size to match the data "
                f"(e.g. --model.init_args.generator.init_args.out_dim {data_shape[0]} for an MLP)"
            )
        try:
            scores = model.discriminate(torch.zeros(2 * model.packing, *data_shape, device=model.device))
        except RuntimeError as err:
            raise ValueError(
                f"the discriminator rejects data of shape {data_shape}: {err}. Set its input size to match "
                f"the data (e.g. --model.init_args.discriminator.init_args.in_dim {data_shape[0]} for an MLP)"
            ) from err
        if tuple(scores.shape) != (2,):
            raise ValueError(
                f"the discriminator must return one score per sample (per group of {model.packing} for a packing "
                f"of {model.packing}), shape (B,); it returned {tuple(scores.shape)} for a batch of {2 * model.packing}"
            )
