"""VEEGAN: the losses on hand-set networks against values worked by hand, the data pairs' z drawn from F's Normal,
which player learns from which term, and bad arguments."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn

from models import VEEGAN, DCGANDiscriminator, GANBase, MLPDiscriminator, MLPGenerator
from tests.factories import quiet_trainer, tiny_model, tiny_ring


class _Linear(nn.Linear):
    """A bias-free linear map with set weights; `latent_dim`/`out_dim`/`in_dim` as the zoo's networks have them."""

    def __init__(self, weight: list[list[float]], squeeze: bool = False):
        super().__init__(len(weight[0]), len(weight), bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.tensor(weight))
        self.latent_dim = self.in_dim = len(weight[0])
        self.out_dim, self.squeeze = len(weight), squeeze

    def forward(self, x):
        out = super().forward(x)
        return out.squeeze(1) if self.squeeze else out


def _hand_set(reconstructor_std: float = 0.0) -> VEEGAN:
    # latent [z, eps] (1 + 1); G(z, eps) = z + eps; F(x) = 2 x; D([z, x]) = z - x.
    return VEEGAN(_Linear([[1.0, 1.0]]), _Linear([[1.0, -1.0]], squeeze=True), _Linear([[2.0]]),
                  extra_noise_dim=1, reconstructor_std=reconstructor_std)


def softplus(a: float) -> float:
    return math.log1p(math.exp(a))


def test_losses_on_hand_set_networks_match_values_worked_by_hand():
    model = _hand_set()
    latent, real = torch.tensor([[1.0, 0.5], [-1.0, 2.0]]), torch.tensor([[2.0], [0.5]])
    fake = model.generate(latent)
    assert fake.flatten().tolist() == [1.5, 1.0]
    # Generated pairs (z, x): (1, 1.5) and (-1, 1) score -0.5 and -2 (label 1); data pairs (F(x), x) = (4, 2) and
    # (1, 0.5) score 2 and 0.5 (label 0).
    d_loss, logs = model.discriminator_loss(real, fake, latent)
    expected = (softplus(0.5) + softplus(2.0)) / 2 + (softplus(2.0) + softplus(0.5)) / 2
    assert d_loss.item() == pytest.approx(expected, rel=1e-6)
    assert logs["d_fake"].item() == pytest.approx(-1.25) and logs["d_real"].item() == pytest.approx(1.25)
    # G and F: mean logit of the generated pairs, (-0.5 - 2) / 2, plus 0.5 (z - F(G(z)))^2 averaged:
    # z = 1, F(1.5) = 3 -> 2; z = -1, F(1) = 2 -> 4.5.
    g_loss, logs = model.generator_loss(real, fake, latent)
    assert logs["adversarial"].item() == pytest.approx(-1.25)
    assert logs["reconstruction"].item() == pytest.approx((2.0 + 4.5) / 2)
    assert g_loss.item() == pytest.approx(-1.25 + 3.25)


def test_reconstruction_sums_over_the_latent_dimensions():
    # z 2-d, F(x) = (x, -x), G(z) = z1 + z2; z = (1, 2): G = 3, F = (3, -3), 0.5 * ((1 - 3)^2 + (2 + 3)^2) = 14.5.
    model = VEEGAN(_Linear([[1.0, 1.0]]), _Linear([[0.0, 0.0, 1.0]], squeeze=True), _Linear([[1.0], [-1.0]]))
    latent = torch.tensor([[1.0, 2.0]])
    _, logs = model.generator_loss(torch.zeros(1, 1), model.generate(latent), latent)
    assert logs["reconstruction"].item() == pytest.approx(14.5)


def test_data_pairs_draw_z_from_the_reconstructors_unit_normal():
    model = _hand_set(reconstructor_std=1.0)
    x = torch.full((20000, 1), 1.5)  # F(x) = 3
    z = model.data_codes(x, rng=torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(3.0, abs=0.03) and z.std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(_hand_set(reconstructor_std=0.0).data_codes(x), torch.full((20000, 1), 3.0))


def test_the_discriminators_data_pairs_hold_a_draw_from_f_not_its_mean():
    # D([z, x]) = z - x and F(x) = 2 x: a data pair scores F(x) + n - x = x + n, n the draw from N(0, 1) that the
    # model's noise stream gives next; with F's mean it would score x.
    model = _hand_set(reconstructor_std=1.0)
    model.noise = torch.Generator().manual_seed(3)
    n = torch.randn((3, 1), generator=torch.Generator().manual_seed(3))
    real, latent = torch.tensor([[1.0], [2.0], [-0.5]]), torch.tensor([[0.0, 0.0]] * 3)
    _, logs = model.discriminator_loss(real, model.generate(latent), latent)
    assert logs["d_real"].item() == pytest.approx((real + n).mean().item(), rel=1e-6)
    assert abs(logs["d_real"].item() - real.mean().item()) > 1e-3  # the draw moved it off the mean's score


def test_only_the_reconstruction_term_trains_the_reconstructor_and_g_gets_both():
    model = _hand_set()
    latent, real = torch.tensor([[1.0, 0.5]]), torch.tensor([[2.0]])
    fake = model.generate(latent)
    _, logs = model.generator_loss(real, fake, latent)
    adversarial = model.pair_scores(model.code(latent), fake).mean()
    assert torch.autograd.grad(adversarial, model.reconstructor.weight, allow_unused=True)[0] is None
    # d/dW_G of D(z, G) = -(z + eps) (D(z, x) = z - x); of 0.5 (z - 2 G)^2 = -2 (z - 2 G) * (z, eps) = 4 * (1, 0.5)
    g_loss, _ = model.generator_loss(real, fake, latent)
    grad = torch.autograd.grad(g_loss, model.generator.weight)[0]
    assert grad.flatten().tolist() == pytest.approx([-1.0 + 4.0, -0.5 + 2.0])
    assert {id(p) for p in model.generator_parameters()} == {id(model.generator.weight), id(model.reconstructor.weight)}
    assert [id(p) for p in model.discriminator_parameters()] == [id(model.discriminator.weight)]


def test_a_training_step_moves_g_and_f_with_the_generator_and_d_with_the_discriminator():
    torch.manual_seed(0)
    model = tiny_model("VEEGAN", simultaneous=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    quiet_trainer(max_steps=2, limit_val_batches=0).fit(model, tiny_ring())
    moved = {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert moved == {"generator", "discriminator", "reconstructor"}


def test_simultaneous_updates_take_the_data_pairs_from_f_before_it_steps():
    """With simultaneous updates both players' gradients are taken at the same parameters: D's data pairs use F as
    it was before the G + F step of the same batch (which does move F)."""
    torch.manual_seed(0)
    model = tiny_model("VEEGAN", simultaneous=True, reconstructor_std=0.0, g_lr=0.5)
    seen = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                seen["batch"], seen["before"] = batch.clone(), pl_module.reconstruct(batch)

    original = model.discriminator_loss

    def discriminator_loss(real, fake, latent):
        seen["used"] = model.__dict__.get("_data_codes")  # what the D step is about to pair the data with
        return original(real, fake, latent)

    model.discriminator_loss = discriminator_loss
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[Spy()]).fit(model, tiny_ring())
    assert torch.equal(seen["used"], seen["before"])
    with torch.no_grad():
        assert not torch.allclose(model.reconstruct(seen["batch"]), seen["before"])  # F did step in between


def test_checkpoint_loads_with_its_reconstructor(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("VEEGAN")
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(model, tiny_ring())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = GANBase.load_from_checkpoint(path)
    assert type(loaded) is VEEGAN and loaded.code_dim == model.code_dim
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


@pytest.mark.parametrize("kwargs, message", [
    ({"extra_noise_dim": -1}, "extra_noise_dim must be an integer >= 0"),
    ({"extra_noise_dim": 8}, "leaves no latent to reconstruct"),
    ({"reconstructor_std": float("nan")}, "reconstructor_std must be a finite number"),
    ({"reconstructor": MLPGenerator(latent_dim=2, out_dim=5)}, "set reconstructor.init_args.out_dim to 6"),
    ({"discriminator": MLPDiscriminator(in_dim=2)}, "its in_dim must be 6 \\(z\\) plus"),
    ({"discriminator": DCGANDiscriminator(image_size=28, channels=1)}, "DCGANDiscriminator has none"),
])
def test_bad_arguments_are_refused_with_what_to_do(kwargs, message):
    generator = MLPGenerator(latent_dim=8)
    arguments = {"generator": generator, "discriminator": MLPDiscriminator(in_dim=8),
                 "reconstructor": MLPGenerator(latent_dim=2, out_dim=6), "extra_noise_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        VEEGAN(**arguments)


def _image_pair_networks(code_dim: int = 6):
    from models import DCGANEncoder, DCGANGenerator, DCGANPairDiscriminator

    return (DCGANGenerator(latent_dim=code_dim, image_size=8, channels=2, width=4),
            DCGANPairDiscriminator(code_dim=code_dim, image_size=8, channels=2, width=4, hidden=8),
            DCGANEncoder(out_dim=code_dim, image_size=8, channels=2, width=4))


def test_image_pair_discriminator_reads_the_latent_first_then_the_image_in_its_layout():
    torch.manual_seed(0)
    _, pair_d, _ = _image_pair_networks(code_dim=3)
    pair_d.eval()
    z, x = torch.randn(5, 3), torch.randn(5, 2, 8, 8)
    pair = torch.cat([z, x.flatten(1)], dim=1)
    assert pair_d.in_dim == 3 + 2 * 8 * 8 and pair_d(pair).shape == (5,)
    # the image side sees the images as given (channel-major layout restored), the code side sees z
    joint = torch.cat([pair_d.trunk(x).flatten(1), pair_d.code(z)], dim=1)
    torch.testing.assert_close(pair_d(pair), pair_d.head(pair_d.joint(joint)).flatten())
    # z reaches the score through the code embedding alone: zero it, and z no longer matters while x does
    with torch.no_grad():
        pair_d.code[0].weight.zero_()
    other_z = torch.cat([torch.randn(5, 3), x.flatten(1)], dim=1)
    other_x = torch.cat([z, torch.randn(5, 2 * 8 * 8)], dim=1)
    torch.testing.assert_close(pair_d(other_z), pair_d(pair))
    assert not torch.allclose(pair_d(other_x), pair_d(pair))
    with pytest.raises(ValueError, match="flat \\(latent, image\\) pairs of width 131"):
        pair_d(x)


def test_image_encoder_takes_images_flat_or_shaped():
    torch.manual_seed(0)
    *_, encoder = _image_pair_networks(code_dim=4)
    encoder.eval()
    x = torch.randn(3, 2, 8, 8)
    assert encoder(x).shape == (3, 4)
    torch.testing.assert_close(encoder(x.flatten(1)), encoder(x))


def test_veegan_trains_on_images_with_the_pair_discriminator_and_encoder():
    torch.manual_seed(0)
    generator, pair_d, encoder = _image_pair_networks()
    model = VEEGAN(generator, pair_d, encoder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    images = torch.utils.data.TensorDataset(torch.rand(32, 2, 8, 8) * 2 - 1)
    trainer = quiet_trainer(max_steps=6, limit_val_batches=0)
    trainer.fit(model, torch.utils.data.DataLoader(images, batch_size=8))
    for prefix in ("generator.", "discriminator.", "reconstructor."):
        moved = [n for n, p in model.named_parameters() if n.startswith(prefix) and not torch.equal(p, before[n])]
        assert moved, f"no {prefix[:-1]} parameter moved"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_image_pair_discriminator_must_split_after_the_reconstructed_latents():
    generator, pair_d, encoder = _image_pair_networks(code_dim=6)
    with pytest.raises(ValueError, match="set discriminator.init_args.code_dim to 4"):
        VEEGAN(generator, pair_d, _image_pair_networks(code_dim=4)[2], extra_noise_dim=2)
