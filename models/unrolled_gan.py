"""`UnrolledGAN`: the generator plays against the discriminator k optimiser steps ahead.

Metz, Poole, Pfau, Sohl-Dickstein 2017, "Unrolled Generative Adversarial Networks",
Section 2.2, Eq. 4-7. With theta_D^0 the discriminator's current parameters and

    theta_D^{k+1} = theta_D^k + eta^k * d f(theta_G, theta_D^k) / d theta_D^k      (Eq. 4)

the generator minimises the surrogate f_K(theta_G, theta_D) = f(theta_G, theta_D^K(theta_G, theta_D))
(Eq. 5), and its gradient flows back through the K updates (Eq. 7, the second term is what
makes the generator anticipate the discriminator's reaction). The discriminator itself is
trained on f with theta_D^0 only (Eq. 6): the real discriminator is changed only by its own
optimiser step; the unrolled parameters are functional copies (`torch.func.functional_call`).
Both updates start from the same theta_D (Eq. 6-7 update simultaneously), so on generator
batches the G step runs before the D step (`generator_step_first`).

Update rule: the paper unrolls the discriminator's own optimiser (Adam in its experiments), so
`unrolled_adam` replays `torch.optim.Adam`'s update (bias-corrected moments, eps outside the
square root, L2 weight decay) starting from the discriminator optimiser's current moments and
step count, with its learning rate, betas, eps and weight decay. Each unrolled step uses this
batch's real and generated samples. K = 5 by default (the paper also uses 1 and 10); K = 0 is the
plain GAN. `second_order=False` drops the gradient through the updates (the paper's cheap
approximation, not its method).

Gradient clipping (`gradient_clip_val`) is replayed in the unrolled steps as the real D step
applies it. Under DDP each rank unrolls with its own batch's gradients (the real D step uses
the averaged ones), so the look-ahead is a per-rank estimate, as with any per-device batch.

BatchNorm / spectral norm in D: the unrolled forwards run on copies of D's buffers, so running
statistics and power-iteration vectors of the real discriminator are not touched.

Generator objective. f is the full value function, real and fake terms:
f(theta_G, theta_D) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]. Through theta_D^K, the real term
depends on theta_G too, and Eq. 7's second term carries its gradient. With D_K the discriminator
at theta_D^K:

    loss="minimax":        L_G = E_x[log D_K(x)] + E_z[log(1 - D_K(G(z)))]  = f_K = -L_D(theta_D^K)
    loss="nonsaturating":  L_G = E_x[log D_K(x)] - E_z[log D_K(G(z))]      (the default)

i.e. the loss's own generator term at theta_D^K minus the real part of the discriminator's loss
at theta_D^K (`GANLoss.discriminator_real`); the same rule holds for the other named losses.
The authors' notebook minimises -(unrolled D loss), the minimax line; the non-saturating default
keeps the baseline's generator term, so that a comparison with `GAN` changes one thing, the
unrolling. At K = 0 the real term has no gradient with respect to theta_G and the loss is the
plain GAN's.
"""

from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .gan import GAN
from .arguments import GANLossName, NonNegativeInt


def unrolled_adam(
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    params: dict[str, Tensor],
    state: dict[str, dict[str, Tensor]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    steps: int,
    create_graph: bool = True,
    clip_val: Optional[float] = None,
    clip_algorithm: str = "norm",
) -> dict[str, Tensor]:
    """`steps` Adam updates of `params` on `loss_fn(params)`, differentiable end to end.

    `state[name]` holds Adam's `exp_avg`, `exp_avg_sq` and `step` for each parameter (missing:
    a fresh optimiser). Nothing passed in is modified. With `create_graph=False` the gradients
    are treated as constants (first-order unrolling). `clip_val` clips the gradients first, as
    `torch.nn.utils.clip_grad_norm_` (total norm, eps 1e-6) or `clip_grad_value_` would.
    """
    beta1, beta2 = betas
    names = list(params)
    theta = dict(params)
    m = {n: state.get(n, {}).get("exp_avg", torch.zeros_like(params[n])).detach() for n in names}
    v = {n: state.get(n, {}).get("exp_avg_sq", torch.zeros_like(params[n])).detach() for n in names}
    t = {n: float(state.get(n, {}).get("step", 0.0)) for n in names}
    for _ in range(steps):
        loss = loss_fn(theta)
        grads = list(torch.autograd.grad(loss, [theta[n] for n in names], create_graph=create_graph))
        if clip_val is not None and clip_algorithm == "norm":
            total = torch.stack([g.norm(2) for g in grads]).norm(2)
            scale = (clip_val / (total + 1e-6)).clamp(max=1.0)
            grads = [g * scale for g in grads]
        elif clip_val is not None:
            grads = [g.clamp(-clip_val, clip_val) for g in grads]
        new_theta = {}
        for n, g in zip(names, grads):
            if weight_decay:
                g = g + weight_decay * theta[n]
            t[n] += 1
            m[n] = beta1 * m[n] + (1 - beta1) * g
            v[n] = beta2 * v[n] + (1 - beta2) * g * g
            m_hat = m[n] / (1 - beta1 ** t[n])
            v_hat = v[n] / (1 - beta2 ** t[n])
            # clamp: d sqrt(v)/dv is infinite at v = 0; the clamp changes no value that matters
            # (sqrt(1e-30) << eps) and keeps the second-order graph finite
            new_theta[n] = theta[n] - lr * m_hat / (v_hat.clamp_min(1e-30).sqrt() + eps)
        theta = new_theta
    return theta


class UnrolledGAN(GAN):
    """Unrolled GAN. Args as `GAN`, plus:

    Args:
        unrolled_steps: K, discriminator updates the generator looks ahead (0 = plain GAN).
        second_order: backpropagate through the unrolled updates (the paper's method).
    """

    generator_step_first = True  # G and D both update from the same theta_D (Eq. 6-7)
    double_backward_through_discriminator = True  # unrolled D steps go through torch.func.functional_call and autograd.grad

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        unrolled_steps: NonNegativeInt = 5,
        second_order: bool = True,
        loss: GANLossName = "nonsaturating",
        **kwargs,
    ):
        if not isinstance(unrolled_steps, int) or unrolled_steps < 0:
            raise ValueError(f"unrolled_steps must be an integer >= 0; got {unrolled_steps!r}")
        super().__init__(generator, discriminator, loss=loss, **kwargs)
        self.unrolled_steps = unrolled_steps
        self.second_order = second_order
        self._unroll_optimizer: Optional[torch.optim.Optimizer] = None  # set for use without a trainer

    def discriminator_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser whose update rule and state the unrolling replays (`_unroll_optimizer`
        where the model is used without a trainer)."""
        if self._unroll_optimizer is not None:
            return self._unroll_optimizer
        return super().discriminator_optimizer()

    def unrolled_discriminator(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """theta_D^K as a dict of tensors (params and copied buffers) that depend on `fake`."""
        opt = self.discriminator_optimizer()
        group = opt.param_groups[0]
        unsupported = [flag for flag in ("amsgrad", "maximize", "decoupled_weight_decay") if group.get(flag)]
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or unsupported:
            raise TypeError(
                f"UnrolledGAN replays plain Adam with one parameter group; the discriminator's optimiser is "
                f"{type(opt).__name__} with {len(opt.param_groups)} group(s){' and ' + ', '.join(unsupported) if unsupported else ''}"
            )
        named = dict(self.discriminator.named_parameters())
        by_param = {p: n for n, p in named.items()}
        state = {by_param[p]: s for p, s in opt.state.items() if p in by_param}
        params = {n: p.detach().requires_grad_(True) for n, p in named.items()}
        buffers = {n: b.clone() for n, b in self.discriminator.named_buffers()}

        def d_loss(theta: dict[str, Tensor]) -> Tensor:
            both = {**theta, **buffers}
            return self.loss_fns.discriminator(
                functional_call(self.discriminator, both, (real,)), functional_call(self.discriminator, both, (fake,))
            )

        lr = group["lr"].item() if torch.is_tensor(group["lr"]) else group["lr"]
        theta = unrolled_adam(d_loss, params, state, lr=lr, betas=tuple(group["betas"]), eps=group["eps"],
                              weight_decay=group["weight_decay"], steps=self.unrolled_steps,
                              create_graph=self.second_order, clip_val=self.hparams.gradient_clip_val,
                              clip_algorithm=self.hparams.gradient_clip_algorithm)
        return {**theta, **buffers}

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.unrolled_steps == 0:
            return super().generator_loss(real, fake, latent)
        theta = self.unrolled_discriminator(real, fake)
        fake_term = self.loss_fns.generator(functional_call(self.discriminator, theta, (fake,)))
        # -(real part of L_D) at theta_D^K: E_x[log D_K(x)] for the logistic losses
        real_term = -self.loss_fns.discriminator_real(functional_call(self.discriminator, theta, (real,)))
        return fake_term + real_term, {"g_fake_term": fake_term.detach(), "g_real_term": real_term.detach()}
