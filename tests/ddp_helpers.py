"""A callback the DDP test adds from the command line: each rank dumps what it ended with."""

import os

import lightning as L
import torch


class DumpRankState(L.Callback):
    """Saves each rank's weights, step counters, last batch and metrics to $GAN_TEST_DUMP_DIR/rank<r>.pt."""

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
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            },
            os.path.join(folder, f"rank{trainer.global_rank}.pt"),
        )
