"""The adaptive update ratio (d_skip_accuracy): D's accuracy by hand, D's step skipped exactly after batches on
which its accuracy exceeded the threshold (its weights unchanged there, G's still moving), the counters through a
checkpoint, and the errors."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import models
from models.losses import discriminator_accuracy
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def test_discriminator_accuracy_by_hand():
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0, 1.0])
    assert discriminator_accuracy(real, fake).item() == pytest.approx(4 / 6)  # 2 reals above 0, 2 fakes at or below
    assert discriminator_accuracy(real, fake, threshold=0.5).item() == pytest.approx(3 / 6)  # LSGAN's midpoint


class ScriptedAccuracy(models.GAN):
    """A GAN whose discriminator loss reports accuracies from a script, one per batch."""

    script: list[float] = []

    def reports_discriminator_accuracy(self) -> bool:
        return True

    def discriminator_loss(self, real, fake, latent):
        loss, logs = super().discriminator_loss(real, fake, latent)
        logs["d_accuracy"] = torch.tensor(self.script[self.d_steps % len(self.script)])
        return loss, logs


class Snapshots(L.Callback):
    def __init__(self):
        self.d, self.g = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.d.append(pl_module.discriminator.net[0].weight.detach().clone())
        self.g.append(pl_module.generator.net[0].weight.detach().clone())


def test_the_discriminator_step_is_skipped_exactly_after_batches_it_won():
    torch.manual_seed(0)
    base = tiny_model("GAN")
    model = ScriptedAccuracy(base.generator, base.discriminator, d_skip_accuracy=0.8)
    model.script = [0.5, 0.9, 0.6, 0.95, 0.99, 0.4, 0.7, 0.85, 0.2, 0.5]
    snapshots = Snapshots()
    quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[snapshots]).fit(model, tiny_ring())
    # batch b is skipped when the accuracy of batch b - 1 exceeded 0.8: after 0.9, 0.95, 0.99 and 0.85
    skipped = [2, 4, 5, 8]
    assert model.d_skips == len(skipped) and model.d_steps == 10 and model.g_steps == 10
    for b in range(1, 10):
        unchanged = torch.equal(snapshots.d[b], snapshots.d[b - 1])
        assert unchanged == (b in skipped), b
        assert not torch.equal(snapshots.g[b], snapshots.g[b - 1])  # G steps on every batch


def test_the_generator_step_is_skipped_exactly_after_batches_the_discriminator_lost():
    torch.manual_seed(0)
    base = tiny_model("GAN")
    model = ScriptedAccuracy(base.generator, base.discriminator, d_skip_accuracy=0.8, g_skip_accuracy=0.3)
    model.script = [0.5, 0.2, 0.6, 0.1, 0.25, 0.9, 0.7, 0.5, 0.5, 0.5]
    snapshots = Snapshots()
    quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[snapshots]).fit(model, tiny_ring())
    # G skips after 0.2, 0.1, 0.25 (batches 2, 4, 5); D skips after 0.9 (batch 6)
    g_skipped, d_skipped = [2, 4, 5], [6]
    assert (model.g_skips, model.d_skips, model.g_steps, model.d_steps) == (3, 1, 7, 10)
    for b in range(1, 10):
        assert torch.equal(snapshots.g[b], snapshots.g[b - 1]) == (b in g_skipped), b
        assert torch.equal(snapshots.d[b], snapshots.d[b - 1]) == (b in d_skipped), b


def test_counters_travel_in_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("GAN", d_skip_accuracy=0.6)
    trainer = quiet_trainer(max_steps=20, limit_val_batches=0)
    trainer.fit(model, tiny_ring())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = models.GANBase.load_from_checkpoint(tmp_path / "m.ckpt")
    loaded.on_load_checkpoint(torch.load(tmp_path / "m.ckpt", weights_only=True))
    assert (loaded.d_skips, loaded.last_d_accuracy) == (model.d_skips, model.last_d_accuracy)
    assert model.last_d_accuracy is not None


def test_a_model_without_an_accuracy_and_bad_values_are_refused():
    with pytest.raises(ValueError, match="d_skip_accuracy must be in \\(0, 1\\)"):
        tiny_model("GAN", d_skip_accuracy=1.5)
    with pytest.raises(ValueError, match="g_skip_accuracy \\(0.9\\) must be below d_skip_accuracy \\(0.8\\)"):
        tiny_model("GAN", d_skip_accuracy=0.8, g_skip_accuracy=0.9)
    with pytest.raises(ValueError, match="MGAN's discriminator loss does not report d_accuracy"):
        tiny_model("MGAN", d_skip_accuracy=0.9)
    with pytest.raises(ValueError, match="does not report d_accuracy: use GAN \\(not with the wasserstein loss\\)"):
        tiny_model("GAN", loss="wasserstein", d_skip_accuracy=0.9)
    for name in ("PacGAN", "MinibatchDiscriminationGAN", "UnrolledGAN", "VEEGAN"):
        assert tiny_model(name, d_skip_accuracy=0.9).reports_discriminator_accuracy(), name
