"""Helpers for the multi-process tests: a callback the DDP test adds from the command line, a
generator with BatchNorm buffers, and the worker of the gradient all-reduce test."""

import os

import lightning as L
import torch
from torch import nn


class DumpRankState(L.Callback):
    """Saves each rank's weights, buffers, counters, last batch, evaluation samples and metrics
    to $GAN_TEST_DUMP_DIR/rank<r>.pt."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_batch = batch.detach().cpu().clone()

    def on_fit_end(self, trainer, pl_module):
        folder = os.environ["GAN_TEST_DUMP_DIR"]
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
                "g_steps": pl_module.g_steps,
                "d_steps": pl_module.d_steps,
                "world_size": trainer.world_size,
                "last_batch": self.last_batch,
                "eval_samples": pl_module.sample(16, rng=pl_module.evaluation_rng()).cpu(),
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            },
            os.path.join(folder, f"rank{trainer.global_rank}.pt"),
        )


class BatchNormMLPGenerator(nn.Module):
    """A small generator with BatchNorm, so a DDP run has buffers that must stay in sync."""

    def __init__(self, latent_dim: int = 8, out_dim: int = 2, hidden_dim: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, z):
        return self.net(z)


def all_reduce_worker(rank: int, world: int, store_path: str, out_path: str) -> None:
    """Rank r has gradients [r+1, r+1] on p0, a gradient on p1 only on rank 0, none on p2."""
    import torch.distributed as dist

    from models.runtime import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    try:
        p0, p1, p2 = (nn.Parameter(torch.zeros(2)) for _ in range(3))
        p0.grad = torch.full((2,), float(rank + 1))
        if rank == 0:
            p1.grad = torch.full((2,), 4.0)
        opt = torch.optim.SGD([p0, p1, p2], lr=1.0)
        all_reduce_gradients(opt)
        torch.save({"p0": p0.grad, "p1": p1.grad, "p2": p2.grad}, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


def mdgan_shard_worker(rank: int, world: int, store_path: str, out_path: str) -> None:
    """MD-GAN with 2 discriminators on 2 ranks: rank r trains discriminator r on its own data.
    Saves, per rank, the all-reduced gradients and the gradient of its own discriminator's loss."""
    import torch.distributed as dist

    from models import MDGAN, MLPDiscriminator, MLPGenerator
    from models.losses import d_logistic_loss
    from models.runtime import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights on both ranks
        model = MDGAN(MLPGenerator(latent_dim=4, hidden_dim=8), MLPDiscriminator(hidden_dim=8), num_discriminators=2)
        model._world_and_rank = lambda: (world, rank)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        real, fake = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)
        own = model.discriminators[rank]
        own_grads = torch.autograd.grad(d_logistic_loss(own(real), own(fake)), list(own.parameters()))
        opt = torch.optim.SGD(model.discriminator_parameters(), lr=1.0)
        loss, _ = model.discriminator_loss(real, fake, None)
        loss.backward()
        all_reduce_gradients(opt)
        torch.save({"own": own_grads, "synced": [[p.grad for p in d.parameters()] for d in model.discriminators]},
                   f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


class PoisonRankOne(L.Callback):
    """From the third batch on, rank 1's discriminator weights become NaN (rank 0 stays finite), so
    only rank 1 has a non-finite loss: both ranks must still stop, at the same step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2 and trainer.global_rank == 1:
            with torch.no_grad():
                for p in pl_module.discriminator.parameters():
                    p.fill_(float("nan"))


class RankSignal(L.Callback):
    """Logs val/rank = this process's rank, unsynced, at each validation: a signal past 0.5 on rank 1 only, for a
    CollapseMonitor listed after it (every rank must act when one detects)."""

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log("val/rank", float(trainer.global_rank), sync_dist=False)
