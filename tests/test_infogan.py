"""InfoGAN: code priors, the information loss's exact value, its gradients, the code metric."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.testing import assert_close

from callbacks import CodeModeAccuracy, LatentTraversal, matched_accuracy
from models import InfoGAN, MLPDiscriminator, MLPGenerator
from models.losses import classification_loss, gaussian_nll
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def tiny_infogan(cats=(4, 3), cont: int = 2, **kwargs) -> InfoGAN:
    return tiny_model("InfoGAN", noise_dim=6, categorical_codes=list(cats), continuous_codes=cont, **kwargs)


def test_codes_are_drawn_from_their_declared_distributions():
    model = tiny_infogan(continuous_range=2.0)
    assert model.noise_dim == 6
    z = model.sample_latent(40000, rng=torch.Generator().manual_seed(0))
    onehot_a, onehot_b, cont = z[:, 6:10], z[:, 10:13], z[:, 13:]
    for onehot, k in ((onehot_a, 4), (onehot_b, 3)):
        assert torch.equal(onehot.sum(1), torch.ones(40000)) and set(onehot.unique().tolist()) == {0.0, 1.0}
        freq = onehot.mean(0)
        assert torch.allclose(freq, torch.full((k,), 1 / k), atol=0.01)  # uniform: 4 s.e. is about 0.01
    assert cont.min() >= -2.0 and cont.max() <= 2.0
    assert abs(cont.mean().item()) < 0.03 and cont.var(0).tolist() == pytest.approx([4 / 3, 4 / 3], rel=0.03)
    noise = z[:, :6]
    assert abs(noise.mean().item()) < 0.01 and noise.std().item() == pytest.approx(1.0, rel=0.01)
    cat, c = model.split_codes(z)
    assert torch.equal(cat[:, 0], onehot_a.argmax(1)) and torch.equal(c, cont)


def test_sample_with_chosen_codes():
    model = tiny_infogan()
    z = model.make_latent(5, categorical=[3, 1], continuous=[0.5, -1.0])
    cat, cont = model.split_codes(z)
    assert cat.tolist() == [[3, 1]] * 5 and cont.tolist() == [[0.5, -1.0]] * 5
    assert model.sample(5, categorical=[3, 1]).shape == (5, 2)
    with pytest.raises(ValueError, match=r"categorical code 0 takes values in \[0, 4\)"):
        model.make_latent(2, categorical=[4, 0])


def test_gaussian_nll_exact_value():
    mean = torch.tensor([[0.0, 1.0]])
    log_std = torch.tensor([[0.0, math.log(2.0)]])
    target = torch.tensor([[1.0, 1.0]])
    expected = (0.5 + 0.5 * math.log(2 * math.pi)) + (math.log(2.0) + 0.5 * math.log(2 * math.pi))
    assert gaussian_nll(mean, log_std, target).item() == pytest.approx(expected, abs=1e-6)


def test_information_loss_exact_value_on_a_known_q():
    model = tiny_infogan(cats=(2,), cont=1, categorical_weight=1.0, continuous_weight=0.1)
    # Q's last layer outputs constants: logits (0, log 3), mean 0.5; sigma is fixed at 1
    last = model.q_head[-1]
    assert last.out_features == 3
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, math.log(3.0), 0.5]))
    z = model.make_latent(2, categorical=1, continuous=[1.5])
    loss, logs = model.information_loss(torch.randn(2, model.discriminator.feature_dim), z)
    ce = -math.log(3 / 4)
    nll = 0.5 * 1.0**2 + 0.5 * math.log(2 * math.pi)
    assert loss.item() == pytest.approx(ce + 0.1 * nll, abs=1e-6)
    assert logs["q_acc_cat0"].item() == 1.0


def test_information_loss_reaches_both_g_and_q():
    torch.manual_seed(0)
    model = tiny_infogan()
    z = model.sample_latent(16)
    loss, _ = model.information_loss(model.discriminator.features(model.generate(z)), z)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.q_head.parameters())
    # and both optimisers step it: Q's head with the discriminator, G alone
    assert {id(p) for p in model.q_head.parameters()} <= {id(p) for p in model.discriminator_parameters()}


def test_losses_add_the_information_term_to_both_steps():
    torch.manual_seed(0)
    model = tiny_infogan()
    z = model.sample_latent(8)
    real, fake = torch.randn(8, 2), model.generate(z)
    d = model.discriminator
    info, _ = model.information_loss(d.features(fake), z)
    d_loss, _ = model.discriminator_loss(real, fake, z)
    cat, _ = model.split_codes(z)
    assert_close(d_loss, torch.nn.functional.softplus(-d(real)).mean() + torch.nn.functional.softplus(d(fake)).mean() + info)
    g_loss, _ = model.generator_loss(real, fake, z)
    assert_close(g_loss, torch.nn.functional.softplus(-d(fake)).mean() + info)
    assert_close(classification_loss(model.q(d.features(fake))[0][0], cat[:, 0]),
                 torch.nn.functional.cross_entropy(model.q(d.features(fake))[0][0], cat[:, 0]))


def test_matched_accuracy_finds_the_best_one_to_one_matching():
    # codes 0, 1, 2 make classes 2, 0, 1 (mostly); the best matching scores (8 + 9 + 7) / 30
    table = torch.tensor([[1.0, 1.0, 8.0], [9.0, 1.0, 0.0], [0.0, 7.0, 3.0]])
    assert matched_accuracy(table) == pytest.approx(24 / 30)
    assert matched_accuracy(torch.eye(4)[torch.tensor([3, 0, 2, 1])] * 5) == 1.0
    # a code that makes two classes can be matched to one of them only
    assert matched_accuracy(torch.tensor([[5.0, 5.0]])) == pytest.approx(0.5)
    assert math.isnan(matched_accuracy(torch.zeros(2, 2)))


def test_code_mode_accuracy_on_a_generator_whose_codes_are_modes():
    centers = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0]])
    model = tiny_infogan(cats=(3,), cont=0)
    perm = torch.tensor([2, 0, 1])  # code c makes mode perm[c]: accuracy 1 after matching
    model.generate = lambda z: centers[perm[model.split_codes(z)[0][:, 0]]]
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value)
    model.evaluation_rng = lambda: torch.Generator().manual_seed(0)
    trainer = SimpleNamespace(sanity_checking=False, world_size=1, global_rank=0,
                              datamodule=SimpleNamespace(centers=centers, std=0.02),
                              strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    CodeModeAccuracy(num_samples=300).on_validation_epoch_end(trainer, model)
    assert logged["val/info/code_accuracy"] == 1.0
    perm = torch.tensor([0, 0, 1])  # two codes make mode 0: one of them cannot be matched
    CodeModeAccuracy(num_samples=3000).on_validation_epoch_end(trainer, model)
    assert logged["val/info/code_accuracy"] == pytest.approx(2 / 3, abs=0.03)


def test_trains_and_writes_a_traversal(tmp_path):
    L.seed_everything(0)
    model = tiny_infogan(cats=(8,), cont=1)
    q0 = model.q_head[0].weight.clone()
    traversal = LatentTraversal(steps=4, num_noise=2)
    # a huge HQ radius counts every sample, so the table is never empty (after 6 steps no sample
    # lies within 3 std of a mode) and the accuracy is a number that can be checked
    accuracy = CodeModeAccuracy(200, threshold=1e6)
    data = tiny_ring(batches_per_epoch=6)
    trainer = quiet_trainer(max_epochs=1, default_root_dir=str(tmp_path), callbacks=[traversal, accuracy])
    trainer.fit(model, datamodule=data)
    assert model.g_steps == 6 and not torch.equal(q0, model.q_head[0].weight)
    assert traversal.last_path and (tmp_path / "traversal").exists()
    # the logged accuracy against one computed here: the evaluation latents of step 6, their code
    # read off the one-hot block (noise_dim 6, then Cat(8)), each sample's nearest centre, the
    # contingency table counted by hand and its best one-to-one matching by scipy
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    z = model.sample_latent(200, rng=model.evaluation_rng())
    code = z[:, 6:14].argmax(1).numpy()
    mode = torch.cdist(model.sample(200, z=z).detach().double(), data.centers.double()).argmin(1).numpy()
    table = np.zeros((8, data.centers.shape[0]))
    np.add.at(table, (code, mode), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    expected = table[rows, cols].sum() / 200
    assert accuracy.last["val/info/code_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert float(trainer.callback_metrics["val/info/code_accuracy"]) == pytest.approx(expected, abs=1e-6)  # float32 log


def test_latent_must_hold_the_codes():
    with pytest.raises(ValueError, match="must exceed the codes' size 12"):
        InfoGAN(MLPGenerator(latent_dim=12, hidden_dim=8), MLPDiscriminator(hidden_dim=8),
                categorical_codes=[10], continuous_codes=2)


def test_latent_traversal_of_images_is_a_grid(tmp_path):
    from models import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    model = InfoGAN(DCGANGenerator(latent_dim=16 + 10 + 2, image_size=28, channels=1, width=8),
                    DCGANDiscriminator(image_size=28, channels=1, width=8), categorical_codes=[10], continuous_codes=2)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, log_dir=str(tmp_path),
                              default_root_dir=str(tmp_path), loggers=[], datamodule=None)
    traversal = LatentTraversal(steps=5, num_noise=1)
    traversal.on_validation_epoch_end(trainer, model)
    from PIL import Image

    width, height = Image.open(traversal.last_path).size
    # two panels side by side (one per continuous code), each 10 rows x 5 columns of 28 px tiles
    assert height > 10 * 28 and width > 2 * 5 * 28


def test_code_accuracy_on_images_uses_the_classifier(tmp_path):
    from models import DCGANDiscriminator, DCGANGenerator
    from callbacks.classifier import MNISTClassifier, save_classifier

    save_classifier(MNISTClassifier(), tmp_path / "c.pt")
    model = InfoGAN(DCGANGenerator(latent_dim=8 + 10, image_size=28, channels=1, width=4),
                    DCGANDiscriminator(image_size=28, channels=1, width=4), categorical_codes=[10], continuous_codes=0)
    callback = CodeModeAccuracy(num_samples=200, classifier_path=str(tmp_path / "c.pt"))
    callback.setup(None, model, "fit")
    # stub classifier: the digit is the code itself, shifted by 3 (a permutation): accuracy 1
    model.generate = lambda z: model.split_codes(z)[0][:, :1].float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28)
    class ShiftedDigit(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot((x[:, 0, 0, 0].long() + 3) % 10, 10).float()

    callback.classifier = ShiftedDigit()
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value)
    model.evaluation_rng = lambda: torch.Generator().manual_seed(0)
    trainer = SimpleNamespace(sanity_checking=False, world_size=1, global_rank=0, datamodule=None,
                              strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    callback.on_validation_epoch_end(trainer, model)
    assert logged["val/info/code_accuracy"] == 1.0


def test_learned_sigma_is_bounded_and_enters_the_loss_exactly():
    """A learned log sigma is b * tanh(raw / b): even a raw output of -100 gives sigma = e^-b, so
    G's weight on the squared error is at most continuous_weight * e^(2b)."""
    model = tiny_infogan(cats=(2,), cont=1, continuous_weight=0.1, learn_continuous_std=True, log_std_bound=1.0)
    last = model.q_head[-1]
    assert last.out_features == 4
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 0.5, -100.0]))  # logits, mean, raw log-std
    z = model.make_latent(2, categorical=0, continuous=[1.5])
    loss, _ = model.information_loss(torch.randn(2, model.discriminator.feature_dim), z)
    sigma = math.exp(-1.0)
    nll = math.log(sigma) + 0.5 * (1.0 / sigma) ** 2 + 0.5 * math.log(2 * math.pi)
    assert loss.item() == pytest.approx(math.log(2.0) + 0.1 * nll, abs=1e-5)
    with pytest.raises(ValueError, match="log_std_bound must be > 0"):
        tiny_infogan(learn_continuous_std=True, log_std_bound=0.0)


def test_fixed_sigma_weight_on_codes_does_not_drift_in_training():
    """With sigma fixed (the default), the continuous term is 0.5 * (c - mu)^2 + const per code at
    every step: its gradient with respect to Q's mean is (mu - c) / B whatever Q has learned."""
    L.seed_everything(0)
    model = tiny_infogan(cats=(8,), cont=2)
    quiet_trainer(max_steps=20, limit_val_batches=0).fit(model, datamodule=tiny_ring())
    z = model.sample_latent(16, rng=torch.Generator().manual_seed(1))
    features = model.discriminator.features(model.generate(z)).detach()
    _, mean, log_std = model.q(features)
    assert torch.equal(log_std, torch.zeros_like(mean))
    _, cont = model.split_codes(z)
    mean = mean.detach().requires_grad_(True)
    nll = gaussian_nll(mean, torch.zeros_like(mean), cont)
    (grad,) = torch.autograd.grad(nll, mean)
    assert_close(grad, (mean - cont).detach() / 16)


def test_uniform_noise_and_fresh_generator_latents_follow_the_authors_code():
    model = tiny_infogan(noise="uniform")
    z = model.sample_latent(20000, rng=torch.Generator().manual_seed(0))
    noise = z[:, : model.noise_dim]
    assert noise.min() >= -1 and noise.max() <= 1 and noise.var().item() == pytest.approx(1 / 3, rel=0.02)
    assert tiny_infogan().hparams.fresh_generator_latents is True
    with pytest.raises(ValueError, match="noise must be 'normal'"):
        tiny_infogan(noise="gauss")


def test_replace_codes_sets_exactly_the_named_codes_positions_worked_by_hand():
    # latent = [noise (2) | Cat(3) | Cat(2) | U, U]: positions 0-1, 2-4, 5-6, 7, 8
    model = InfoGAN(MLPGenerator(latent_dim=9, hidden_dim=8), MLPDiscriminator(hidden_dim=8),
                    categorical_codes=[3, 2], continuous_codes=2)
    z = torch.arange(18, dtype=torch.float32).reshape(2, 9)
    out = model.replace_codes(z, categorical={1: torch.tensor([1, 0])}, continuous={0: 0.5})
    expected = z.clone()
    expected[0, 5:7] = torch.tensor([0.0, 1.0])
    expected[1, 5:7] = torch.tensor([1.0, 0.0])
    expected[:, 7] = 0.5
    assert torch.equal(out, expected)
    assert torch.equal(z, torch.arange(18, dtype=torch.float32).reshape(2, 9))  # a copy; z untouched
    cat, cont = model.split_codes(model.replace_codes(model.sample_latent(4), categorical={0: 2}, continuous={1: -0.3}))
    assert cat[:, 0].tolist() == [2] * 4 and torch.allclose(cont[:, 1], torch.full((4,), -0.3))
    with pytest.raises(ValueError, match=r"categorical code 0 takes values in \[0, 3\)"):
        model.replace_codes(z, categorical={0: 3})
    with pytest.raises(ValueError, match="continuous code 2 does not exist"):
        model.replace_codes(z, continuous={2: 0.0})
