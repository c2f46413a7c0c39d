"""Real (tiny) training runs: the loop's step counts, gradients, resume, precision, bad input."""

from __future__ import annotations

import copy
import hashlib
import os

import lightning as L
import pytest
import torch

from models import GAN, MLPDiscriminator, MLPGenerator, NonFiniteLossError
from tests.factories import VARIANTS, quiet_trainer, tiny_data, tiny_model, tiny_ring


def adam_steps(optimizer) -> int:
    """How many times an Adam optimiser really stepped (its per-parameter 'step' state)."""
    states = [optimizer.state[p] for g in optimizer.param_groups for p in g["params"] if p in optimizer.state]
    counts = {int(s["step"]) for s in states}
    assert len(counts) == 1, counts
    return counts.pop()


@pytest.mark.parametrize("n_critic", [1, 5])
def test_training_changes_both_networks_with_n_critic_d_steps_per_g_step(n_critic):
    L.seed_everything(0)
    model = tiny_model(n_critic=n_critic)
    g0, d0 = copy.deepcopy(model.generator.state_dict()), copy.deepcopy(model.discriminator.state_dict())
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, datamodule=tiny_ring(batches_per_epoch=10))

    opt_g, opt_d = (o.optimizer for o in model.optimizers())
    assert model.d_steps == 20 and adam_steps(opt_d) == 20  # one D step per batch
    assert model.g_steps == 20 // n_critic and adam_steps(opt_g) == 20 // n_critic
    assert trainer.global_step == model.d_steps + model.g_steps  # Lightning counts both
    for name, p in model.generator.state_dict().items():
        assert not torch.equal(p, g0[name]), f"generator {name} did not change"
    for name, p in model.discriminator.state_dict().items():
        assert not torch.equal(p, d0[name]), f"discriminator {name} did not change"


def test_d_step_does_not_touch_generator_and_fakes_are_generated_once(monkeypatch):
    L.seed_everything(0)
    model = tiny_model(n_critic=2)
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda z: calls.append(z.shape) or original(z))
    g0 = copy.deepcopy(model.generator.state_dict())
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)  # one D step (no G step at n_critic 2)
    trainer.fit(model, datamodule=tiny_ring())
    assert model.d_steps == 1 and model.g_steps == 0
    assert all(torch.equal(p, g0[k]) for k, p in model.generator.state_dict().items())
    assert len([c for c in calls if c[0] == 32]) == 1  # one generator forward for the batch


@pytest.mark.parametrize("fresh, g_first", [(False, False), (True, False), (False, True), (True, True)])
def test_loss_hooks_receive_the_latents_their_fakes_were_made_from(fresh, g_first):
    # Losses that read codes in z (MGAN's generator index, InfoGAN's codes) need the latents of
    # exactly the fakes they score: the D step's z in the D step, the G step's own z with fresh latents.
    L.seed_everything(0)
    model = tiny_model(fresh_generator_latents=fresh)
    model.generator_step_first = g_first
    seen = {"d": [], "g": []}
    d_loss, g_loss = model.discriminator_loss, model.generator_loss
    batch_start = {}

    class SnapshotGenerator(L.Callback):  # every fake of a batch comes from G as the batch began
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batch_start["G"] = copy.deepcopy(pl_module.generator)

    def record(kind, loss):
        def hook(real, fake, latent):
            with torch.no_grad():
                seen[kind].append(torch.equal(batch_start["G"](latent), fake.detach()))
            seen[kind + "_z"] = seen.get(kind + "_z", []) + [latent.clone()]
            return loss(real, fake, latent)
        return hook

    model.discriminator_loss, model.generator_loss = record("d", d_loss), record("g", g_loss)
    quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=[SnapshotGenerator()]).fit(model, datamodule=tiny_data())
    assert len(seen["d"]) == len(seen["g"]) == 3 and all(seen["d"]) and all(seen["g"])
    same = [torch.equal(d, g) for d, g in zip(seen["d_z"], seen["g_z"])]
    assert same == [not fresh] * 3  # one z for both steps unless the G step draws its own


def test_each_backward_reaches_only_the_stepping_network():
    """Without toggling, the generator's backward through D would add to D's gradients."""
    L.seed_everything(0)
    model = tiny_model()
    seen = []

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = lambda net: [None if p.grad is None else p.grad.clone() for p in net.parameters()]  # noqa: E731
            seen.append((grads(pl_module.generator), grads(pl_module.discriminator)))

    trainer = quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[Spy()])  # D, G, D, G
    trainer.fit(model, datamodule=tiny_ring())
    (g0, d0), (g1, d1), (g2, d2), (g3, d3) = seen
    assert all(g is None for g in g0)  # the first D step gave G no gradient
    assert all(torch.equal(a, b) for a, b in zip(d0, d1))  # the G step left D's gradients alone
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))  # the D step left G's gradients alone
    assert not any(torch.equal(a, b) for a, b in zip(d1, d2))  # a new D step, new D gradients
    assert all(p.requires_grad for p in model.parameters())  # toggling was undone


def test_resume_from_checkpoint_gives_exactly_the_uninterrupted_weights(tmp_path):
    def run(max_epochs, ckpt=None, save_to=None):
        L.seed_everything(7)
        model = tiny_model()
        trainer = quiet_trainer(max_epochs=max_epochs, limit_val_batches=0)
        trainer.fit(model, datamodule=tiny_ring(seed=None), ckpt_path=ckpt)
        if save_to:
            trainer.save_checkpoint(save_to)
        return model

    full = run(4)
    run(2, save_to=tmp_path / "half.ckpt")
    resumed = run(4, ckpt=str(tmp_path / "half.ckpt"))
    assert resumed.g_steps == full.g_steps == 20 and resumed.d_steps == full.d_steps
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    # and the run really depended on the seed: another seed gives other weights
    L.seed_everything(8)
    other = tiny_model()
    quiet_trainer(max_epochs=4, limit_val_batches=0).fit(other, datamodule=tiny_ring(seed=None))
    assert not torch.equal(other.generator.net[0].weight, full.generator.net[0].weight)


def test_resume_from_a_checkpoint_written_at_validation_end(tmp_path):
    """The configs' checkpoints are written when validation ends, before the epoch counter moves."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks import ModeCoverage

    def run(max_epochs, ckpt=None):
        L.seed_everything(3)
        model = tiny_model()
        checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
        trainer = quiet_trainer(max_epochs=max_epochs, enable_checkpointing=True,
                                callbacks=[checkpoints, ModeCoverage(num_samples=100)])
        trainer.fit(model, datamodule=tiny_ring(seed=None), ckpt_path=ckpt)
        return model

    full = run(4)
    resumed = run(4, ckpt=str(tmp_path / "epoch=1.ckpt"))
    assert resumed.g_steps == full.g_steps == 20
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_bf16_mixed_trains():
    L.seed_everything(0)
    model = tiny_model()
    w0 = model.generator.net[0].weight.clone()
    quiet_trainer(max_epochs=1, precision="bf16-mixed").fit(model, datamodule=tiny_ring())
    assert model.g_steps == 5
    assert torch.isfinite(model.generator.net[0].weight).all()
    assert not torch.equal(model.generator.net[0].weight, w0)


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_gradient_clipping_bounds_the_gradient_norm(clip):
    L.seed_everything(0)
    model = tiny_model(gradient_clip_val=clip)
    norms = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):  # D's grads are from its own step
            norms.append(torch.stack([p.grad.norm() for p in pl_module.discriminator.parameters()]).norm().item())

    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[Spy()]).fit(model, datamodule=tiny_ring())
    if clip is None:
        assert norms[0] > 10 * 1e-3  # the control: unclipped gradients are far larger
    else:
        assert norms[0] <= clip * (1 + 1e-4)


def test_lr_scheduler_steps_once_per_generator_step():
    from functools import partial

    L.seed_everything(0)
    model = tiny_model(n_critic=2, g_lr=1e-3, d_lr=1e-3,
                     lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=tiny_ring(batches_per_epoch=6))
    assert model.g_steps == 3
    for opt in model.optimizers():
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)


# ---------------------------------------------------------------- bad input
def test_n_critic_below_one_is_rejected():
    with pytest.raises(ValueError, match="n_critic must be an integer >= 1"):
        tiny_model(n_critic=0)


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="unknown loss 'wgan'"):
        tiny_model(loss="wgan")


def test_generator_latent_size_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"generator rejects latents of shape \(2, 16\)"):
        GAN(MLPGenerator(latent_dim=8), MLPDiscriminator(), latent_dim=16)


def test_generator_output_size_mismatch_is_rejected_before_training():
    model = GAN(MLPGenerator(latent_dim=8, out_dim=3), MLPDiscriminator(in_dim=3))
    with pytest.raises(ValueError, match=r"samples of shape \(3,\) but the data have shape \(2,\)"):
        quiet_trainer(max_steps=2).fit(model, datamodule=tiny_ring())
    assert model.d_steps == 0


def test_discriminator_input_size_mismatch_is_rejected_before_training():
    model = GAN(MLPGenerator(latent_dim=8), MLPDiscriminator(in_dim=5))
    with pytest.raises(ValueError, match=r"discriminator rejects data of shape \(2,\)"):
        quiet_trainer(max_steps=2).fit(model, datamodule=tiny_ring())


def test_non_finite_loss_stops_with_step_and_loss_and_keeps_the_last_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(0)
    model = tiny_model()
    original = model.generator_loss
    at_poison = {}

    def poisoned(real, fake, latent):
        loss, logs = original(real, fake, latent)
        if model.g_steps == 7:
            at_poison["ckpt"] = hashlib.sha256((tmp_path / "last.ckpt").read_bytes()).hexdigest()
            at_poison["generator"] = copy.deepcopy(model.generator.state_dict())
            return loss * float("nan"), logs
        return loss, logs

    model.generator_loss = poisoned
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt])
    with pytest.raises(NonFiniteLossError, match=r"g_loss is nan at generator step 7, discriminator step 8"):
        trainer.fit(model, datamodule=tiny_ring())
    last = tmp_path / "last.ckpt"
    assert hashlib.sha256(last.read_bytes()).hexdigest() == at_poison["ckpt"]  # not overwritten
    steps = torch.load(last, weights_only=False)["gan_steps"]
    assert (steps["d_steps"], steps["g_steps"]) == (5, 5)  # epoch 0's
    for name, value in model.generator.state_dict().items():  # the poisoned step changed nothing
        assert torch.equal(value, at_poison["generator"][name]), name
    assert model.g_steps == 7


def test_clipping_under_16_mixed_acts_on_unscaled_gradients():
    """With a GradScaler at 2**16, clipping the scaled gradients would leave a norm of clip / 2**16."""
    from lightning.pytorch.plugins import MixedPrecision

    L.seed_everything(0)
    clip = 1e-3
    model = tiny_model(gradient_clip_val=clip)
    norms = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            norms.append(torch.stack([p.grad.norm() for p in pl_module.discriminator.parameters()]).norm().item())

    plugin = MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
    quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=[Spy()], plugins=[plugin]).fit(model, datamodule=tiny_ring())
    assert model.g_steps == 3 and plugin.scaler.get_scale() > 1
    for norm in norms:
        assert clip * 0.99 <= norm <= clip * (1 + 1e-4)


def test_minimax_loss_is_selectable():
    from models import losses

    L.seed_everything(0)
    model = tiny_model(loss="minimax")
    fake = torch.randn(6, 2)
    loss, _ = model.generator_loss(None, fake, None)
    torch.testing.assert_close(loss, losses.g_minimax_loss(model.discriminator(fake)))
    d_loss, _ = model.discriminator_loss(fake + 1, fake, None)
    torch.testing.assert_close(d_loss, losses.d_logistic_loss(model.discriminator(fake + 1), model.discriminator(fake)))


def test_dcgan_pair_trains_on_images():
    from torch.utils.data import DataLoader, TensorDataset

    from models import DCGANDiscriminator, DCGANGenerator
    from models.checks import check_data_shape

    L.seed_everything(0)
    model = GAN(DCGANGenerator(latent_dim=16, image_size=28, channels=1, width=8),
                DCGANDiscriminator(image_size=28, channels=1, width=8))
    check_data_shape(model, (1, 28, 28))
    with pytest.raises(ValueError, match=r"samples of shape \(1, 28, 28\) but the data have shape \(3, 32, 32\)"):
        check_data_shape(model, (3, 32, 32))
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    w0 = model.generator.project[0].weight.clone()
    quiet_trainer(max_steps=4).fit(model, train_dataloaders=DataLoader(TensorDataset(images), batch_size=16))
    assert model.g_steps == 2 and not torch.equal(w0, model.generator.project[0].weight)
    assert model.sample(5).shape == (5, 1, 28, 28)
    assert model.generator.training  # sample() restored training mode


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_train_under_bf16_mixed(name):
    L.seed_everything(0)
    model = tiny_model(name)
    quiet_trainer(max_epochs=1, precision="bf16-mixed").fit(model, datamodule=tiny_data(name, batches_per_epoch=10))
    assert model.g_steps == 10 // model.n_critic
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["GAN", *VARIANTS])
def test_every_model_trains_under_16_mixed_with_gradient_scaling(name):
    """float16 autocast with a GradScaler (the GPU recipe), on CPU: the scaled double backward of
    WGAN-GP's penalty and Unrolled GAN's look-ahead included."""
    from lightning.pytorch.plugins import MixedPrecision

    L.seed_everything(0)
    model = tiny_model(name)
    before = [p.detach().clone() for p in model.generator.parameters()]
    plugin = MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    quiet_trainer(max_epochs=1, plugins=[plugin]).fit(model, datamodule=tiny_data(name, batches_per_epoch=10))
    assert model.g_steps == 10 // model.n_critic
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, model.generator.parameters()))  # G stepped
    assert plugin.scaler.get_scale() > 0


def test_cpu_training_without_gpus_stops_adam_from_probing_nvml(monkeypatch):
    from models.runtime import skip_nvml_probe_without_gpus

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    skip_nvml_probe_without_gpus(torch.device("cpu"))
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"  # a GPU machine keeps the fork-safe check
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    skip_nvml_probe_without_gpus(torch.device("cpu"))
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"


@pytest.mark.parametrize("name", ["GAN", *VARIANTS])
def test_benchmark_plain_loop_does_the_lightning_loop_s_math(name):
    """The benchmark's plain loop, started from the same weights, data and noise, ends with the
    same weights as the Lightning loop, for every model: the ratio it reports compares identical
    work."""
    from experiments.benchmark import PlainLoop

    L.seed_everything(0)
    model = tiny_model(name)
    dm = tiny_data(name, batches_per_epoch=6 * model.n_critic, num_parts=model.data_parts)
    dm.setup("fit")
    plain = PlainLoop(model, dm.train_dataloader())
    plain.model.noise = model.seeded_stream(0, 0)  # the stream the base uses in epoch 0
    plain.run(6 * model.n_critic)
    quiet_trainer(max_epochs=1).fit(model, datamodule=dm)
    assert model.g_steps == 6
    for (name, a), b in zip(model.state_dict().items(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _train_dcgan(steps: int = 6, **kwargs) -> GAN:
    from torch.utils.data import DataLoader, TensorDataset

    from models import DCGANDiscriminator, DCGANGenerator

    L.seed_everything(0)
    model = GAN(DCGANGenerator(latent_dim=16, image_size=28, channels=3, width=8),
                DCGANDiscriminator(image_size=28, channels=3, width=8), **kwargs)
    images = torch.rand(96, 3, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    quiet_trainer(max_steps=steps).fit(model, train_dataloaders=DataLoader(TensorDataset(images), batch_size=16))
    return model


def test_channels_last_trains_to_the_same_weights():
    eager, nhwc = _train_dcgan(), _train_dcgan(channels_last=True)
    four_d = [p for p in nhwc.parameters() if p.ndim == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    assert not all(p.is_contiguous() for p in four_d)  # really NHWC, not only the default layout
    for (name, a), b in zip(eager.state_dict().items(), nhwc.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_networks_train_to_the_same_weights():
    """compile_networks goes through torch.compile (dynamo + AOT autograd; the aot_eager backend
    skips the C++ code generation so the test stays fast on CPU) and changes no number."""
    L.seed_everything(0)
    eager = tiny_model()
    L.seed_everything(0)
    compiled = tiny_model(compile_networks={"backend": "aot_eager"})
    for model in (eager, compiled):
        quiet_trainer(max_epochs=1).fit(model, datamodule=tiny_ring(batches_per_epoch=6))
    assert compiled.generator._compiled_call_impl is not None and compiled.discriminator._compiled_call_impl is not None
    assert set(eager.state_dict()) == set(compiled.state_dict())  # checkpoints keep their keys
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["WGANGP", "UnrolledGAN"])
def test_compile_leaves_a_double_backward_discriminator_eager(name):
    L.seed_everything(0)
    model = tiny_model(name, compile_networks={"backend": "aot_eager"})
    quiet_trainer(max_epochs=1).fit(model, datamodule=tiny_ring(batches_per_epoch=2 * model.n_critic))
    assert model.generator._compiled_call_impl is not None
    assert model.discriminator._compiled_call_impl is None
    assert model.g_steps == 2 and all(torch.isfinite(p).all() for p in model.parameters())


def test_compile_networks_rejects_a_non_dict():
    with pytest.raises(ValueError, match="compile_networks must be"):
        tiny_model(compile_networks="max-autotune")


@pytest.mark.parametrize("name", ["GAN", *(v for v in VARIANTS if v != "VEEGAN")])  # VEEGAN: flat pairs only
def test_every_model_trains_compiled_and_channels_last_on_images(name):
    """Both GPU options on the DCGAN pair of every model (compiled with the aot_eager backend, so no
    C++ toolchain is needed): a few steps train and every weight stays finite."""
    from torch.utils.data import DataLoader, TensorDataset

    import models
    from models import DCGANDiscriminator, DCGANGenerator

    L.seed_everything(0)
    latent = 16 + (10 if name == "InfoGAN" else 0)
    gen = DCGANGenerator(latent_dim=latent, image_size=28, channels=3, width=4, num_generators=3 if name == "MGAN" else 1)
    channels = 6 if name == "PacGAN" else 3  # PacGAN2's D sees two 3-channel images stacked on channels
    disc = DCGANDiscriminator(image_size=28, channels=channels, width=4, norm="layer" if name == "WGANGP" else "batch",
                              minibatch_kernels=3 if name == "MinibatchDiscriminationGAN" else 0)
    kwargs = {"UnrolledGAN": {"unrolled_steps": 1}, "MDGAN": {"num_discriminators": 2},
              "InfoGAN": {"categorical_codes": [8], "continuous_codes": 2}, "WGANGP": {"n_critic": 2}}.get(name, {})
    model = getattr(models, name)(gen, disc, compile_networks={"backend": "aot_eager"}, channels_last=True, **kwargs)
    images = torch.rand(32, 3, 28, 28) * 2 - 1
    if name == "MDGAN":  # its discriminators need a datamodule that cuts the data into parts
        from datamodules.images import _ImageDataModule

        class Images(_ImageDataModule):
            image_shape = (3, 28, 28)

            def setup(self, stage):
                self._split(TensorDataset(images, torch.zeros(32)))

        quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=Images(batch_size=8, val_size=0))
    else:
        quiet_trainer(max_epochs=1).fit(model, train_dataloaders=DataLoader(TensorDataset(images), batch_size=8))
    assert model.d_steps == 4 and model.g_steps == 4 // model.n_critic
    assert model.generator._compiled_call_impl is not None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.sample(2).shape == (2, 3, 28, 28)
