"""Output shapes of the network pairs, and clear errors for sizes they cannot make."""

import pytest
import torch

from models import DCGANDiscriminator, DCGANGenerator, InfoGAN, MGAN, MLPDiscriminator, MLPGenerator
from models.networks import TrunkDiscriminator


def test_mlp_pair_shapes_and_architecture():
    g, d = MLPGenerator(), MLPDiscriminator()
    x = g(torch.randn(5, 256))
    assert x.shape == (5, 2) and d(x).shape == (5,)
    linears = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 128), (128, 128), (128, 2)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in d.modules()) == 2


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_pair_shapes(size, channels):
    g = DCGANGenerator(latent_dim=16, image_size=size, channels=channels, width=8)
    d = DCGANDiscriminator(image_size=size, channels=channels, width=8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, size, size)
    assert x.abs().max() <= 1.0  # tanh output
    assert d(x).shape == (3,)
    assert d.features(x).shape == (3, d.feature_dim)


@pytest.mark.parametrize("size", [30, 8 * 9, 4])
def test_dcgan_rejects_sizes_it_cannot_build(size):
    with pytest.raises(ValueError, match="image_size"):
        DCGANGenerator(image_size=size)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        MLPGenerator(activation="gelu")


@pytest.mark.parametrize("norm, layer", [("batch", torch.nn.BatchNorm2d), ("layer", torch.nn.GroupNorm), ("none", None)])
def test_dcgan_discriminator_normalisations(norm, layer):
    d = DCGANDiscriminator(image_size=32, channels=3, width=8, norm=norm)
    assert d(torch.randn(2, 3, 32, 32)).shape == (2,)
    norms = [m for m in d.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    assert len(norms) == (0 if layer is None else 2) and all(isinstance(m, layer) for m in norms)
    with pytest.raises(ValueError, match="unknown norm"):
        DCGANDiscriminator(norm="instance")


@pytest.mark.parametrize("discriminator, x", [(MLPDiscriminator(hidden_dim=8), torch.randn(3, 2)),
                                              (DCGANDiscriminator(image_size=28, channels=1, width=4), torch.randn(3, 1, 28, 28))])
def test_shipped_discriminators_are_trunk_discriminators(discriminator, x):
    assert isinstance(discriminator, TrunkDiscriminator)
    features = discriminator.features(x)
    assert features.shape == (3, discriminator.feature_dim)
    torch.testing.assert_close(discriminator.score(features), discriminator(x))


class FeaturesOnly(torch.nn.Module):
    def features(self, x):
        return x

    def forward(self, x):
        return x.sum(1)


@pytest.mark.parametrize("build, head", [
    (lambda d: MGAN(MLPGenerator(latent_dim=8, hidden_dim=8, num_generators=2), d), "the classifier"),
    (lambda d: InfoGAN(MLPGenerator(latent_dim=20, hidden_dim=8), d), "Q"),
])
def test_models_with_heads_on_the_trunk_refuse_other_discriminators_naming_what_is_missing(build, head):
    with pytest.raises(ValueError, match=rf"must provide `score`, `feature_dim` \({head} shares its trunk\)"):
        build(FeaturesOnly())


def test_xavier_weight_init_draws_glorot_uniform_weights_and_zero_biases():
    """Glorot & Bengio 2010, Eq. 16: W ~ U[-a, a], a = sqrt(6 / (fan_in + fan_out)), variance a^2 / 3; biases 0."""
    torch.manual_seed(0)
    net = MLPDiscriminator(in_dim=300, hidden_dim=500, n_hidden=1, activation="relu", weight_init="xavier")
    first = net.net[0]
    bound = (6 / (300 + 500)) ** 0.5
    assert first.weight.abs().max().item() <= bound and first.weight.abs().max().item() > 0.99 * bound
    assert first.weight.var().item() == pytest.approx(bound ** 2 / 3, rel=0.02)
    assert all(m.bias.abs().sum().item() == 0 for m in net.modules() if isinstance(m, torch.nn.Linear))
    generator = MLPGenerator(latent_dim=8, out_dim=2, weight_init="xavier")
    assert all(m.bias.abs().sum().item() == 0 for m in generator.modules() if isinstance(m, torch.nn.Linear))
    net.reset_parameters()  # redrawn the same way
    assert net.net[0].bias.abs().sum().item() == 0 and net.net[0].weight.abs().max().item() <= bound


def test_torch_weight_init_is_nn_linears_own_draw():
    """weight_init "torch" leaves the layers as nn.Linear draws them: the same numbers as before the option."""
    torch.manual_seed(0)
    expected = [torch.nn.Linear(4, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 2)]
    torch.manual_seed(0)
    generator = MLPGenerator(latent_dim=4, out_dim=2, hidden_dim=16)
    linears = [m for m in generator.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) for a, b in zip(expected, linears))


def test_unknown_weight_init_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown weight_init 'he'; choose one of"):
        MLPDiscriminator(weight_init="he")
    with pytest.raises(ValueError, match="weight_init 'xavier' is for num_generators 1"):
        MLPGenerator(num_generators=3, weight_init="xavier")
