"""MGAN: parameter sharing of the mixture, the classifier's loss, generator labels, diagnostics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.testing import assert_close

from callbacks import GeneratorModeShares
from models import MGAN, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, PerGeneratorLinear
from models.losses import classification_loss, d_logistic_loss, g_nonsaturating_loss
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def tiny_mgan(k: int = 3, **kwargs) -> MGAN:
    return tiny_model("MGAN", num_generators=k, **kwargs)


def test_generators_share_every_layer_but_the_first():
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim=4, hidden_dim=8, num_generators=3)
    first = g.net[0]
    assert isinstance(first, PerGeneratorLinear) and first.weight.shape == (3, 8, 4)
    # every other parameter exists once, whatever K
    single = MLPGenerator(latent_dim=4, hidden_dim=8)
    shared = {n: p.shape for n, p in g.named_parameters() if not n.startswith("net.0.")}
    assert shared == {n: p.shape for n, p in single.named_parameters() if not n.startswith("net.0.")}
    # generator k is: first layer k, then the shared rest
    z = torch.randn(6, 4)
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    out = g(z, index)
    for i in range(6):
        h = z[i] @ first.weight[index[i]].t() + first.bias[index[i]]
        assert_close(out[i], g.net[1:](h))
    # a change to a shared layer changes every generator's output...
    with torch.no_grad():
        g.net[2].weight.add_(0.1)
    out_shared = g(z, index)
    assert all(not torch.allclose(out_shared[i], out[i]) for i in range(6))
    # ...a change to generator 0's first layer changes generator 0's samples only
    with torch.no_grad():
        first.weight[0].add_(0.1)
    out_first = g(z, index)
    changed = ~torch.isclose(out_first, out_shared).all(1)
    assert changed.tolist() == (index == 0).tolist()


def test_dcgan_mixture_generator_shares_all_but_the_projection():
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=8, image_size=28, channels=1, width=8, num_generators=4)
    z, index = torch.randn(8, 8), torch.arange(8) % 4
    g.eval()
    out = g(z, index)
    assert out.shape == (8, 1, 28, 28)
    assert g.mixture_input.weight.shape == (4, 16 * 7 * 7, 8)
    assert g.mixture_input.weight.std().item() == pytest.approx(0.02, rel=0.05)  # DCGAN initialisation
    with torch.no_grad():
        g.mixture_input.weight[1].mul_(2.0)
    changed = ~torch.isclose(g(z, index), out).flatten(1).all(1)
    assert changed.tolist() == (index == 1).tolist()
    with pytest.raises(ValueError, match="pass index"):
        g(z)


def test_each_fake_carries_its_generator_label():
    model = tiny_mgan(k=3)
    z = model.sample_latent(10, rng=torch.Generator().manual_seed(1))
    index = model.generator_index(z)
    assert sorted(torch.bincount(index, minlength=3).tolist()) == [3, 3, 4]  # every generator, equally often
    with torch.no_grad():
        assert_close(model.generate(z), model.generator(z[:, :8], index))
    only_two = model.sample_latent(5, generator_index=2)
    assert model.generator_index(only_two).tolist() == [2] * 5
    with pytest.raises(ValueError, match="generator_index must be in"):
        model.sample_latent(2, generator_index=3)


def test_classifier_loss_exact_value():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]])
    labels = torch.tensor([1, 1])
    expected = (-math.log(3 / 4) - math.log(1 / (1 + math.e**2))) / 2
    assert classification_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_losses_are_the_papers():
    torch.manual_seed(0)
    model = tiny_mgan(k=3, beta=0.5)
    z = model.sample_latent(9)
    real, fake = torch.randn(9, 2), model.generate(z)
    index = model.generator_index(z)
    d, c = model.discriminator, model.classifier
    d_loss, logs = model.discriminator_loss(real, fake, z)
    ce = classification_loss(c(d.features(fake)), index)
    assert_close(d_loss, d_logistic_loss(d(real), d(fake)) + ce)
    assert_close(logs["classifier_acc"], (c(d.features(fake)).argmax(1) == index).float().mean())
    g_loss, _ = model.generator_loss(real, fake, z)
    assert_close(g_loss, g_nonsaturating_loss(d(fake)) + 0.5 * ce)


def test_discriminator_features_and_score_compose_to_forward():
    torch.manual_seed(0)
    for d, x in [(MLPDiscriminator(hidden_dim=16), torch.randn(5, 2)),
                 (MLPDiscriminator(hidden_dim=16, minibatch_kernels=3), torch.randn(5, 2)),
                 (DCGANDiscriminator(image_size=28, channels=1, width=8).eval(), torch.randn(5, 1, 28, 28)),
                 (DCGANDiscriminator(image_size=32, channels=3, width=8, minibatch_kernels=4).eval(), torch.randn(5, 3, 32, 32))]:
        f = d.features(x)
        assert f.shape == (5, d.feature_dim)
        assert_close(d.score(f), d(x))


def test_trains_and_classifier_and_generator_get_their_gradients():
    L.seed_everything(0)
    model = tiny_mgan(k=3)
    w_first, w_cls = model.generator.net[0].weight.clone(), model.classifier.weight.clone()
    quiet_trainer(max_epochs=1).fit(model, datamodule=tiny_ring(batches_per_epoch=6))
    assert model.g_steps == 6
    assert not torch.equal(w_cls, model.classifier.weight)
    assert all(not torch.equal(w_first[k], model.generator.net[0].weight[k]) for k in range(3))


def test_needs_a_mixture_generator_and_a_discriminator_with_features():
    with pytest.raises(ValueError, match="num_generators = K >= 2"):
        MGAN(MLPGenerator(latent_dim=8, hidden_dim=16), MLPDiscriminator(hidden_dim=16))
    with pytest.raises(ValueError, match="must provide `features`"):
        MGAN(MLPGenerator(latent_dim=8, hidden_dim=16, num_generators=2), torch.nn.Linear(2, 1))


def test_generator_mode_shares_on_generators_of_known_modes(tmp_path):
    # stub: generator k puts all its samples on mode k % 4 of a 4-mode ring (k = 0..5), so modes
    # 0 and 1 are shared by two generators each (share 1/2) and modes 2, 3 by one (share 1)
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    logged = {}
    module = SimpleNamespace(
        num_generators=6, device=torch.device("cpu"), g_steps=7,
        evaluation_rng=lambda: torch.Generator().manual_seed(0),
        sample=lambda n, rng, generator_index: centers[generator_index % 4].repeat(n, 1),
        log=lambda name, value, **kw: logged.__setitem__(name, float(value)),
    )
    trainer = SimpleNamespace(
        sanity_checking=False, world_size=1, global_rank=0, is_global_zero=True, log_dir=str(tmp_path),
        default_root_dir=str(tmp_path), datamodule=SimpleNamespace(centers=centers, std=0.01),
        strategy=SimpleNamespace(reduce=lambda t, reduce_op: t),
    )
    callback = GeneratorModeShares(num_samples=10)
    callback.on_validation_epoch_end(trainer, module)
    assert logged["val/mixture/mode_purity"] == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    assert logged["val/mixture/generators_used"] == 4  # argmax ties go to the lower index: 0, 1, 2, 3
    assert_close(callback.last_shares[:, 2], torch.tensor([0.0, 0, 1, 0, 0, 0]))
    counts = (tmp_path / "mixture" / "counts_g0000007.csv").read_text().splitlines()
    assert counts[1].split(",") == ["10", "0", "0", "0"] and len(counts) == 7
