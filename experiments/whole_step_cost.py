"""Would a compiler that fuses a whole simultaneous training step (both forwards, one backward, both Adam updates)
bring the PacGAN 2D protocol to 70 % of the machine's matmul rate? Times four ways of doing the same step,
chunk by chunk in one process:

    OMP_NUM_THREADS=1 python experiments/whole_step_cost.py experiments/ring8_pacgan/gan.yaml

- "modules + Adam": the config's generator and discriminator as `train.py fit` builds them, both gradients taken
  at the same point with autograd, then `torch.optim.Adam` for each player (what a training step does, without
  Lightning's loop around it);
- "functional, eager": the same networks called through `torch.func.functional_call`, the two gradients taken by
  one `torch.func.grad` of g_loss + d_loss in which each player sees the other's tensors detached, and Adam
  written out in place (PyTorch's formula, not its kernels);
- "functional, compiled": that function whole under `torch.compile` (inductor, CPU), so the forward, the backward
  and both optimiser updates are one graph the compiler may fuse into a few loops.

It prints the median ms per step of each, the step's GFLOP/s (FLOPs counted by torch.utils.flop_counter on one
"modules + Adam" step) against the machine's float32 matmul rate at this thread count, and the largest difference
of each variant's generator weights from the "modules + Adam" ones after the same steps from the same start.
Those weights drift apart by rounding alone (Adam's first updates are nearly lr * sign(gradient)), so the check
that compiling computes the same thing is on the gradient function (the whole step without its Adam update,
compiled on its own; the timed compiled steps, Adam included, are compared only through that weight drift) at the
start: eager and compiled float32 against
eager float64, beside eager float32 at latents changed by one part in a million, which shows how far rounding
alone moves them (D's maxout sends each unit's gradient to its largest piece, and a near tie can flip).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.benchmark import matmul_gflops  # noqa: E402
from experiments.benchmark import cpu_cli  # noqa: E402
from models.pacgan import pack  # noqa: E402
from models.pacgan_networks import BlocksBatchNorm1d  # noqa: E402

VARIANTS = ("modules + Adam", "functional, eager", "functional, compiled", "functional, compiled (max-autotune)")


def adam_(params: dict, grads: dict, exp_avg: dict, exp_avg_sq: dict, bias1: torch.Tensor, bias2: torch.Tensor,
          lr: float, betas: tuple[float, float], eps: float) -> None:
    """PyTorch's Adam update (no weight decay, no amsgrad), in place; bias1 = 1 - beta1^t, bias2 = 1 - beta2^t."""
    beta1, beta2 = betas
    for name, p in params.items():
        g = grads[name]
        exp_avg[name].lerp_(g, 1 - beta1)
        exp_avg_sq[name].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (exp_avg_sq[name].sqrt() / bias2.sqrt()).add_(eps)
        p.sub_(exp_avg[name] / denom * (lr / bias1))


def main(argv: list[str], chunks: int = 6, chunk: int = 50, warmup: int = 5) -> dict[str, float]:
    config = Path(argv[0])
    cli = cpu_cli(config)
    model, data = cli.model, cli.datamodule
    real = model.unpack_batch(next(iter(data.train_dataloader())))
    z = model.sample_latent(real.shape[0])  # before packing: one latent a sample
    hp = model.hparams
    betas, g_lr, d_lr = tuple(hp.betas), hp.g_lr, hp.d_lr
    m = getattr(model, "packing", 1)  # PacGANm: D scores groups of m samples
    real = pack(real, m)

    # modules + Adam
    G0, D0 = copy.deepcopy(model.generator).train(), copy.deepcopy(model.discriminator).train()
    opt_g = torch.optim.Adam(G0.parameters(), lr=g_lr, betas=betas)
    opt_d = torch.optim.Adam(D0.parameters(), lr=d_lr, betas=betas)

    def module_step() -> None:
        fake = G0(z)
        d_loss = F.softplus(-D0(real)).mean() + F.softplus(D0(pack(fake.detach(), m))).mean()
        g_loss = F.softplus(-D0(pack(fake, m))).mean()
        for params, loss in ((list(G0.parameters()), g_loss), (list(D0.parameters()), d_loss)):
            for p, grad in zip(params, torch.autograd.grad(loss, params, retain_graph=True)):
                p.grad = grad
        opt_g.step()
        opt_d.step()

    # functional: one state per variant (parameters, buffers, Adam moments), same start as the modules
    G, D = copy.deepcopy(model.generator).train(), copy.deepcopy(model.discriminator).train()

    def state() -> dict:
        s = {"gp": {k: v.detach().clone() for k, v in G.named_parameters()},
             "gb": {k: v.clone() for k, v in G.named_buffers()},
             "dp": {k: v.detach().clone() for k, v in D.named_parameters()},
             "db": {k: v.clone() for k, v in D.named_buffers()}}
        for player in ("g", "d"):
            s[player + "m"] = {k: torch.zeros_like(v) for k, v in s[player + "p"].items()}
            s[player + "v"] = {k: torch.zeros_like(v) for k, v in s[player + "p"].items()}
        return s

    def losses(gp, dp, gb, db, z=z, real=real):
        fake = functional_call(G, {**gp, **gb}, (z,))
        d_fixed = {k: v.detach() for k, v in dp.items()}
        g_loss = F.softplus(-functional_call(D, {**d_fixed, **db}, (pack(fake, m),))).mean()
        d_loss = (F.softplus(-functional_call(D, {**dp, **db}, (real,))).mean()
                  + F.softplus(functional_call(D, {**dp, **db}, (pack(fake.detach(), m),))).mean())
        return g_loss + d_loss

    def whole_step(gp, gb, dp, db, gm, gv, dm, dv, bias1, bias2) -> None:
        g_grads, d_grads = torch.func.grad(losses, argnums=(0, 1))(gp, dp, gb, db)
        adam_(gp, g_grads, gm, gv, bias1, bias2, g_lr, betas, 1e-8)
        adam_(dp, d_grads, dm, dv, bias1, bias2, d_lr, betas, 1e-8)

    compiled = {"functional, eager": whole_step, "functional, compiled": torch.compile(whole_step),
                "functional, compiled (max-autotune)": torch.compile(whole_step, mode="max-autotune-no-cudagraphs")}
    states = {name: state() for name in compiled}
    steps_done = {name: 0 for name in VARIANTS}

    def run(name: str) -> None:
        if name == "modules + Adam":
            module_step()
        else:
            s = states[name]
            t = steps_done[name] + 1
            bias1, bias2 = torch.tensor(1 - betas[0] ** t), torch.tensor(1 - betas[1] ** t)
            with torch.no_grad():
                compiled[name](s["gp"], s["gb"], s["dp"], s["db"], s["gm"], s["gv"], s["dm"], s["dv"], bias1, bias2)
        steps_done[name] += 1

    # the gradients at the start, before any step, eager and compiled in float32 against eager in float64: each
    # tensor's largest difference relative to its largest entry (Adam's first steps are nearly lr * sign(gradient),
    # so entries near zero that round to the other sign move the weights apart by 2 lr a step and the weights
    # drift apart; the gradients are the check that the compiled step computes the same thing)
    def gradients(fn, dtype=torch.float32, latents=z):
        s0 = state()
        args = [{k: v.to(dtype) if v.is_floating_point() else v for k, v in s0[key].items()}
                for key in ("gp", "dp", "gb", "db")]
        return fn(*args, latents.to(dtype), real.to(dtype))

    def relative_error(grads, reference) -> float:
        return max(((g[k].double() - r[k]).abs().max() / r[k].abs().max()).item()
                   for g, r in zip(grads, reference) for k in r)

    grad_fn = torch.func.grad(losses, argnums=(0, 1))
    float32_statistics = BlocksBatchNorm1d.forward  # computes its statistics in float32 whatever the input
    BlocksBatchNorm1d.forward = BlocksBatchNorm1d._normalise  # for the float64 reference only
    try:
        reference = gradients(grad_fn, torch.float64)
    finally:
        BlocksBatchNorm1d.forward = float32_statistics
    # the scale of rounding's effect: D's maxout routes each unit's gradient to its largest piece, so a change of
    # one part in a million in the samples can move a near tie and the gradients with it
    nudges = [z * (1 + 1e-6 * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)))
              for seed in range(1, 9)]
    grad_error = {"functional, eager": relative_error(gradients(grad_fn), reference),
                  "eager at latents changed by 1e-6 (relative; the largest of 8 changes)":
                      max(relative_error(gradients(grad_fn, latents=nudged), reference) for nudged in nudges),
                  "functional, compiled": relative_error(gradients(torch.compile(grad_fn)), reference)}

    with FlopCounterMode(display=False) as counter:
        fake = model.generator(z)
        d_loss = (F.softplus(-model.discriminator(real)).mean()
                  + F.softplus(model.discriminator(pack(fake.detach(), m))).mean())
        g_loss = F.softplus(-model.discriminator(pack(fake, m))).mean()
        torch.autograd.grad(g_loss, list(model.generator.parameters()), retain_graph=True)
        torch.autograd.grad(d_loss, list(model.discriminator.parameters()))
    gflop = counter.get_total_flops() / 1e9

    start = time.perf_counter()
    for name in VARIANTS:
        for _ in range(warmup):
            run(name)
    warm_s = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(chunks):
        for name in VARIANTS:
            start = time.perf_counter()
            for _ in range(chunk):
                run(name)
            times[name].append((time.perf_counter() - start) / chunk * 1000)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    rate = matmul_gflops(torch.device("cpu"))
    reference = [p.detach() for p in G0.parameters()]
    names = [n for n, _ in G0.named_parameters()]
    print(f"{config}: {warmup + chunks * chunk} simultaneous steps per variant, batch {z.shape[0]} "
          f"(packing {m}), "
          f"{torch.get_num_threads()} thread(s); {gflop:.3f} GFLOP a step; matmul rate {rate:.1f} GFLOP/s; "
          f"warm-up (compilation included) {warm_s:.0f} s")
    print("Gradients at the start against float64 (largest difference relative to a tensor's largest entry): "
          + ", ".join(f"{name} {err:.1e}" for name, err in grad_error.items()))
    print("| step | ms / step (median of chunks) | x modules + Adam | GFLOP/s | % of matmul rate "
          "| max abs. G weight difference from modules + Adam |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in VARIANTS:
        if name == "modules + Adam":
            diff = 0.0
        else:
            diff = max((states[name]["gp"][n] - r).abs().max().item() for n, r in zip(names, reference))
        ms = medians[name]
        print(f"| {name} | {ms:.2f} | {ms / medians['modules + Adam']:.3f} | {gflop / ms * 1000:.1f} "
              f"| {gflop / ms * 1000 / rate * 100:.0f} | {diff:.2g} |")
    return medians


if __name__ == "__main__":
    main(sys.argv[1:])
