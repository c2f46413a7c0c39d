"""Would training several runs of the PacGAN 2D protocol in one process, as one batched model, make a run's step
cheaper? Times K runs' simultaneous steps done together, for K = 1, 2, 4, 8, twice each.

    OMP_NUM_THREADS=1 python experiments/ensemble_step_cost.py

The networks of experiments/ring8_pacgan/protocol.yaml, written out batched over a leading run dimension of K:
G 2 -> 4 x [400 without bias -> BatchNorm (batch statistics) -> ReLU] -> 2, D 3 maxout layers (200 units, 5
pieces) -> 1, batch 100, the non-saturating loss, both gradients at the same point, then Adam (lr 1e-4, betas
0.2, 0.999) on the K-stacked weights: every product a `bmm` over K, every elementwise kernel K times larger. If
the step's time outside the products (BENCHMARK.md, "Where the PacGAN-protocol batch goes") were the fixed cost of
launching kernels, the time per run would fall with K; it prints the milliseconds per K-run step and per run.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F


def step_ms(runs: int, chunks: int = 5, chunk: int = 40, warmup: int = 5) -> float:
    """Median ms of one simultaneous step of `runs` stacked runs."""
    gen = torch.Generator().manual_seed(0)

    def weight(n_in: int, n_out: int) -> torch.Tensor:
        return (torch.randn(runs, n_in, n_out, generator=gen) * 0.02).requires_grad_()

    def zeros(n_out: int) -> torch.Tensor:
        return torch.zeros(runs, 1, n_out, requires_grad=True)

    g_weights = [weight(2, 400)] + [weight(400, 400) for _ in range(3)]
    g_norms = [(torch.ones(runs, 1, 400, requires_grad=True), zeros(400)) for _ in range(4)]
    g_out = (weight(400, 2), zeros(2))
    d_layers = [(weight(2, 1000), zeros(1000))] + [(weight(200, 1000), zeros(1000)) for _ in range(2)]
    d_out = (weight(200, 1), zeros(1))
    g_params = g_weights + [t for pair in g_norms for t in pair] + list(g_out)
    d_params = [t for pair in d_layers for t in pair] + list(d_out)
    g_adam = torch.optim.Adam(g_params, lr=1e-4, betas=(0.2, 0.999))
    d_adam = torch.optim.Adam(d_params, lr=1e-4, betas=(0.2, 0.999))

    def generator(z: torch.Tensor) -> torch.Tensor:
        h = z
        for w, (gamma, beta) in zip(g_weights, g_norms):
            h = torch.bmm(h, w)
            mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
            h = F.relu((h - mean) / torch.sqrt(var + 1e-4) * gamma + beta)
        return torch.baddbmm(g_out[1], h, g_out[0])

    def discriminator(x: torch.Tensor) -> torch.Tensor:
        h = x
        for w, b in d_layers:
            h = torch.baddbmm(b, h, w).view(runs, h.shape[1], 200, 5).max(-1).values
        return torch.baddbmm(d_out[1], h, d_out[0])

    real, z = torch.randn(runs, 100, 2, generator=gen), torch.randn(runs, 100, 2, generator=gen)

    def step() -> None:
        fake = generator(z)
        d_loss = (F.softplus(-discriminator(real)).mean((1, 2)) + F.softplus(discriminator(fake.detach())).mean((1, 2))).sum()
        g_loss = F.softplus(-discriminator(fake)).mean((1, 2)).sum()
        for params, loss in ((g_params, g_loss), (d_params, d_loss)):
            for p, grad in zip(params, torch.autograd.grad(loss, params, retain_graph=True)):
                p.grad = grad
        g_adam.step()
        d_adam.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(chunk):
            step()
        times.append((time.perf_counter() - start) / chunk * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    print(f"{torch.get_num_threads()} thread(s)")
    print("| round | runs K | ms / K-run step | ms / run-step |")
    print("| --- | --- | --- | --- |")
    for round_ in (1, 2):
        for runs in (1, 2, 4, 8):
            ms = step_ms(runs)
            print(f"| {round_} | {runs} | {ms:.2f} | {ms / runs:.2f} |", flush=True)
