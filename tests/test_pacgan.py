"""PacGAN (Lin et al. 2018) and the networks of its 2D protocol: packing, exact loss values worked by hand,
m = 1 as the GAN exactly, the Blocks BatchNorm and maxout layers, simultaneous updates, and the protocol's
settings against the authors' code (fjxmlzn/PacGAN, synthetic_data_experiments)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from experiments.configs import model_configs, resolve
from models import GAN, BatchNormMLPGenerator, BlocksBatchNorm1d, Maxout, MaxoutDiscriminator, PacGAN
from models.pacgan import pack
from tests.factories import quiet_trainer, tiny_ring

ROOT = Path(__file__).resolve().parents[1]


class SumDiscriminator(nn.Module):
    """Scores a (packed) sample by the sum of its coordinates: losses can be worked by hand."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.unused = nn.Parameter(torch.zeros(1))  # an optimiser needs a parameter

    def forward(self, x):
        assert x.shape[1] == self.in_dim, x.shape
        return x.flatten(1).sum(1) + 0 * self.unused


def test_packing_groups_samples_i_B_plus_i_and_so_on():
    x = torch.arange(12.0).reshape(6, 2)  # m = 2, B = 3: groups (0, 3), (1, 4), (2, 5)
    assert pack(x, 2).tolist() == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]]
    assert pack(x, 3).tolist() == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert torch.equal(pack(x, 1), x)
    images = torch.arange(16.0).reshape(4, 1, 2, 2)  # images stack on channels: (2, 2, 2, 2)
    packed = pack(images, 2)
    assert packed.shape == (2, 2, 2, 2)
    assert torch.equal(packed[0, 0], images[0, 0]) and torch.equal(packed[0, 1], images[2, 0])
    assert torch.equal(packed[1, 0], images[1, 0]) and torch.equal(packed[1, 1], images[3, 0])
    with pytest.raises(ValueError, match=r"batch of 5 samples cannot be packed in groups of 2.*data.init_args.batch_size"):
        pack(torch.zeros(5, 2), 2)


def test_losses_on_packed_groups_match_values_worked_by_hand():
    model = PacGAN(BatchNormMLPGenerator(hidden_dim=8, n_hidden=1), SumDiscriminator(4), packing=2)
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])  # groups sum to 4 and 6
    fake = torch.tensor([[0.5, 0.0], [0.0, -1.0], [0.5, 0.0], [0.0, -2.0]])  # groups sum to 1 and -3
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d_loss, logs = model.discriminator_loss(real, fake, torch.zeros(4, 2))
    expected_d = (softplus(-4) + softplus(-6)) / 2 + (softplus(1) + softplus(-3)) / 2
    assert d_loss.item() == pytest.approx(expected_d, rel=1e-6)
    assert logs["d_real"].item() == 5.0 and logs["d_fake"].item() == -1.0
    g_loss, _ = model.generator_loss(real, fake, torch.zeros(4, 2))  # non-saturating: softplus(-D(fake))
    assert g_loss.item() == pytest.approx((softplus(-1) + softplus(3)) / 2, rel=1e-6)


def test_the_discriminator_input_must_be_packing_samples_wide():
    model = PacGAN(BatchNormMLPGenerator(hidden_dim=8, n_hidden=1), MaxoutDiscriminator(in_dim=2, hidden_dim=8), packing=2)
    with pytest.raises(ValueError, match=r"discriminator rejects data of shape \(2,\).*in_dim"):
        quiet_trainer(max_steps=2).fit(model, datamodule=tiny_ring())
    with pytest.raises(ValueError, match="packing must be an integer >= 1"):
        PacGAN(BatchNormMLPGenerator(), MaxoutDiscriminator(), packing=0)


def _train(model, steps=6, **data):
    L.seed_everything(0)
    quiet_trainer(max_steps=steps, limit_val_batches=0).fit(model, datamodule=tiny_ring(**data))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_packing_one_is_the_gan_exactly():
    torch.manual_seed(0)
    generator, discriminator = BatchNormMLPGenerator(hidden_dim=16, n_hidden=2), MaxoutDiscriminator(hidden_dim=8)
    pac = _train(PacGAN(copy.deepcopy(generator), copy.deepcopy(discriminator), packing=1, simultaneous=True))
    gan = _train(GAN(copy.deepcopy(generator), copy.deepcopy(discriminator), simultaneous=True))
    assert pac.keys() == gan.keys()
    for name in gan:
        assert torch.equal(pac[name], gan[name]), name
    assert not torch.equal(gan["generator.net.0.weight"], generator.state_dict()["net.0.weight"])  # it trained


def test_packed_fakes_are_normalised_per_block_as_m_calls_of_the_generator_would_be():
    torch.manual_seed(0)
    generator = BatchNormMLPGenerator(latent_dim=2, hidden_dim=16, n_hidden=2)
    model = PacGAN(generator, MaxoutDiscriminator(in_dim=6, hidden_dim=8), packing=3)
    reference = copy.deepcopy(generator)
    for module in reference.modules():
        if isinstance(module, BlocksBatchNorm1d):
            module.groups = 1
    z = torch.randn(3 * 5, 2)
    together = model.generate(z)  # one call on 3 blocks of 5
    separately = torch.cat([reference(block) for block in z.split(5)])  # the authors' 3 calls on 5 each
    torch.testing.assert_close(together, separately, rtol=0, atol=1e-6)
    for ours, theirs in zip(generator.modules(), reference.modules()):
        if isinstance(ours, BlocksBatchNorm1d):  # 3 updates of 0.05 each there, one of the average here
            assert not torch.allclose(ours.running_mean, theirs.running_mean)


def test_blocks_batchnorm_matches_values_worked_by_hand():
    bn = BlocksBatchNorm1d(1, momentum=0.05, eps=1e-4)
    bn.groups = 2
    x = torch.tensor([[1.0], [3.0], [5.0], [9.0]])  # groups (1, 3): mean 2, var 1; (5, 9): mean 7, var 4
    s1, s2 = math.sqrt(1 + 1e-4), math.sqrt(4 + 1e-4)
    out = bn(x)
    assert out.squeeze(1).tolist() == pytest.approx([-1 / s1, 1 / s1, -2 / s2, 2 / s2], rel=1e-6)
    assert bn.running_mean.item() == pytest.approx(0.05 * (2 + 7) / 2, rel=1e-6)  # p <- 0.95 p + 0.05 mean of groups
    assert bn.running_stdev.item() == pytest.approx(0.95 * 1 + 0.05 * (s1 + s2) / 2, rel=1e-6)
    bn.eval()  # inference: the running values as they are, no eps
    rm, rs = bn.running_mean.item(), bn.running_stdev.item()
    assert bn(torch.tensor([[2.0]])).item() == pytest.approx((2 - rm) / rs, rel=1e-6)
    bn.train()
    with pytest.raises(ValueError, match="cannot be cut into 2 equal groups"):
        bn(torch.zeros(3, 1))


def test_maxout_takes_the_max_of_consecutive_pieces():
    layer = Maxout(1, units=2, pieces=2)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0], [2.0], [3.0], [-1.0]]))
        layer.linear.bias.zero_()
    assert layer(torch.tensor([[1.0], [-1.0]])).tolist() == [[2.0, 3.0], [-1.0, 1.0]]


def test_maxout_gradient_goes_to_the_winning_piece_only():
    # Worked by hand: piece weights 1, 2 (unit 1) and 3, -1 (unit 2). x = 1 is won by the pieces of weight 2 and 3,
    # x = -1 by those of weight 1 and -1; d(sum of outputs)/d(weight) of a piece is the sum of the x it won.
    layer = Maxout(1, units=2, pieces=2)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0], [2.0], [3.0], [-1.0]]))
        layer.linear.bias.zero_()
    layer(torch.tensor([[1.0], [-1.0]])).sum().backward()
    assert layer.linear.weight.grad.flatten().tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert layer.linear.bias.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_protocol_networks_have_the_authors_shapes_and_initialisation():
    torch.manual_seed(0)
    g, d = BatchNormMLPGenerator(), MaxoutDiscriminator(in_dim=4)
    linears = [m for m in g.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == [
        (2, 400, False), (400, 400, False), (400, 400, False), (400, 400, False), (400, 2, True)]
    assert sum(isinstance(m, BlocksBatchNorm1d) for m in g.net) == 4
    assert [m.linear.weight.shape for m in d.trunk] == [(1000, 4), (1000, 200), (1000, 200)]
    weights = torch.cat([m.weight.flatten() for m in [*linears, *(x.linear for x in d.trunk), d.head]])
    assert weights.std().item() == pytest.approx(0.02, rel=0.01) and abs(weights.mean().item()) < 1e-3
    assert all(float(m.bias.abs().max()) == 0 for m in [linears[-1], *(x.linear for x in d.trunk), d.head])


def test_simultaneous_updates_take_both_gradients_at_the_same_point():
    """Simultaneous: G's step is the one it takes against a D that does not move, and D's step is the one it
    takes when G steps after it. Alternating: G answers the updated D, so its step differs."""
    torch.manual_seed(0)
    generator, discriminator = BatchNormMLPGenerator(hidden_dim=16, n_hidden=2), MaxoutDiscriminator(hidden_dim=8)

    def run(simultaneous, d_lr):
        model = GAN(copy.deepcopy(generator), copy.deepcopy(discriminator), simultaneous=simultaneous, d_lr=d_lr,
                    g_lr=1e-2)
        return _train(model, steps=2)  # one batch: one D step and one G step

    sim, alt, frozen_d = run(True, 1e-2), run(False, 1e-2), run(False, 0.0)
    g_keys = [k for k in sim if k.startswith("generator.")]
    d_keys = [k for k in sim if k.startswith("discriminator.")]
    for k in g_keys:
        torch.testing.assert_close(sim[k], frozen_d[k], rtol=0, atol=0)
    for k in d_keys:
        torch.testing.assert_close(sim[k], alt[k], rtol=0, atol=0)
    assert any(not torch.equal(sim[k], alt[k]) for k in g_keys if "weight" in k)


@pytest.mark.parametrize("table", ["ring8_pacgan", "grid25_pacgan"])
def test_the_protocol_configs_hold_the_authors_settings(table):
    for model, m in (("gan", 1), ("pacgan2", 2), ("pacgan3", 3), ("pacgan4", 4)):
        config = resolve(model_configs(table, model))
        args, data = config["model"]["init_args"], config["data"]["init_args"]
        assert config["model"]["class_path"] == ("models.GAN" if m == 1 else "models.PacGAN")
        assert args.get("packing", 1) == m and args["simultaneous"] is True and args["loss"] == "nonsaturating"
        assert args["g_lr"] == args["d_lr"] == 1e-4 and args["betas"] == [0.2, 0.999] and args["n_critic"] == 1
        g, d = args["generator"]["init_args"], args["discriminator"]["init_args"]
        assert (g["latent_dim"], g["hidden_dim"], g["n_hidden"], g["bn_momentum"], g["init_std"]) == (2, 400, 4, 0.05, 0.02)
        assert (d["in_dim"], d["hidden_dim"], d["n_hidden"], d["pieces"], d["init_std"]) == (2 * m, 200, 3, 5, 0.02)
        assert data["train_size"] == 100000 and data["batch_size"] == 100 * m and data["val_size"] == 2500
        epochs = config["trainer"]["max_steps"] / (2 * data["batches_per_epoch"])  # D and G step each batch
        assert epochs == 400 and data["batches_per_epoch"] * 100 == data["train_size"]
        if table == "ring8_pacgan":
            assert (data["num_modes"], data["radius"], data["std"]) == (8, 1.0, 0.01)
        else:
            assert (data["side"], data["spacing"], data["std"]) == (5, 2.0, 0.05)


def test_pacgan_with_the_blocks_batchnorm_generator_trains_under_bf16_mixed():
    torch.manual_seed(0)
    model = PacGAN(BatchNormMLPGenerator(hidden_dim=16, n_hidden=2), MaxoutDiscriminator(in_dim=4, hidden_dim=8),
                   packing=2, simultaneous=True)
    quiet_trainer(max_steps=6, limit_val_batches=0, precision="bf16-mixed").fit(model, datamodule=tiny_ring())
    assert model.g_steps == 3 and all(torch.isfinite(p).all() for p in model.parameters())
    bn = next(m for m in model.generator.modules() if isinstance(m, BlocksBatchNorm1d))
    assert bn.running_mean.dtype == torch.float32 and torch.isfinite(bn.running_stdev).all()


def test_the_mixture_generator_is_k_protocol_generators_sharing_all_but_their_first_layer():
    """MGAN's form of the protocol's generator: in inference (BatchNorm on its running statistics, so rows do not
    interact), sample i's output is that of a single protocol generator whose first layer is map index[i] and whose
    other layers are the shared ones. Its first layers draw N(0, 0.02) as the rest; without an index it refuses."""
    torch.manual_seed(0)
    mixture = BatchNormMLPGenerator(hidden_dim=16, n_hidden=2, num_generators=3)
    assert mixture.num_generators == 3 and mixture.net[0].bias is None
    assert mixture.net[0].weight.std().item() == pytest.approx(0.02, rel=0.2)
    mixture.train()
    mixture(torch.randn(64, 2), torch.arange(64) % 3)  # running statistics away from their start
    mixture.eval()
    z, index = torch.randn(12, 2), torch.tensor([2, 0, 1, 1, 0, 2, 2, 2, 0, 1, 0, 1])
    out = mixture(z, index)
    single = BatchNormMLPGenerator(hidden_dim=16, n_hidden=2).eval()
    shared = {k: v for k, v in mixture.state_dict().items() if not k.startswith("net.0.")}
    for k in range(3):
        single.load_state_dict({**shared, "net.0.weight": mixture.net[0].weight[k]})
        rows = index == k
        torch.testing.assert_close(out[rows], single(z[rows]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="mixture of 3; pass index"):
        mixture(z)


def test_the_maxout_discriminator_s_minibatch_layer_matches_the_definition_pair_by_pair():
    """With minibatch_kernels B: score = head([f, o]) with f the last maxout layer's output and
    o_b(i) = sum_{j != i} exp(-||M_ib - M_jb||_1), M = f T (Salimans et al. 2016), computed here pair by pair in
    float64; score(features(x)) == forward(x); a batch of one repeated point gives o = n - 1 in every kernel. Without
    it the network and its state are the protocol's."""
    torch.manual_seed(0)
    d = MaxoutDiscriminator(in_dim=4, hidden_dim=6, n_hidden=2, pieces=3, minibatch_kernels=4, minibatch_kernel_dim=2)
    x = torch.randn(5, 4)
    f = d.features(x).double()
    m = (f @ d.minibatch.T.double()).view(5, 4, 2)
    o = torch.tensor([[sum(math.exp(-(m[i, b] - m[j, b]).abs().sum().item()) for j in range(5) if j != i)
                       for b in range(4)] for i in range(5)], dtype=torch.float64)
    expected = torch.cat([f, o], 1) @ d.head.weight.double().t() + d.head.bias.double()
    torch.testing.assert_close(d(x).double(), expected.squeeze(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.score(d.features(x)), d(x))
    assert d.head.in_features == 6 + 4
    same = d.minibatch(d.features(torch.ones(7, 4)))[:, 6:]
    torch.testing.assert_close(same, torch.full((7, 4), 6.0))
    plain = MaxoutDiscriminator(in_dim=4)
    assert plain.minibatch is None and set(plain.state_dict()) == {
        *(f"trunk.{i}.linear.{p}" for i in range(3) for p in ("weight", "bias")), "head.weight", "head.bias"}


def test_mgan_and_minibatch_discrimination_train_on_the_protocol_networks():
    """The two rows the PacGAN paper does not have, built from the protocol's networks: a few simultaneous steps
    move every network, MGAN's classifier included."""
    from models import MGAN, MinibatchDiscriminationGAN

    torch.manual_seed(0)
    for model in (MGAN(BatchNormMLPGenerator(hidden_dim=16, n_hidden=2, num_generators=4),
                       MaxoutDiscriminator(hidden_dim=8), beta=0.01, simultaneous=True),
                  MinibatchDiscriminationGAN(BatchNormMLPGenerator(hidden_dim=16, n_hidden=2),
                                             MaxoutDiscriminator(hidden_dim=8, minibatch_kernels=3,
                                                                 minibatch_kernel_dim=2), simultaneous=True)):
        before = copy.deepcopy(model.state_dict())
        quiet_trainer(max_steps=6, limit_val_batches=0).fit(model, datamodule=tiny_ring())
        moved = {k.split(".")[0] for k, v in model.state_dict().items() if v.is_floating_point()
                 and not torch.equal(v, before[k])}
        assert {"generator", "discriminator"} <= moved and model.g_steps == 3, (type(model).__name__, moved)
        if isinstance(model, MGAN):
            assert "classifier" in moved
