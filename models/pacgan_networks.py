"""The 2D networks of the PacGAN synthetic experiments (Lin et al. 2018; fjxmlzn/PacGAN, built on ALI's
gan_mixture), usable by any model: a generator of Linear-BatchNorm-ReLU blocks and a maxout discriminator.

What the authors' Theano/Blocks code does and these reproduce:
- G: z -> [Linear without bias -> BatchNorm -> ReLU] x n_hidden -> Linear with bias. Blocks' BatchNorm
  normalises by sqrt(biased variance + 1e-4), keeps a running mean and a running *standard deviation*
  (p <- 0.95 p + 0.05 batch value) and uses them as they are in inference; its scale and shift start at 1
  and 0. `BlocksBatchNorm1d` is that layer.
- D: [maxout: Linear(in, units * pieces), max over each consecutive group of `pieces`] x n_hidden -> Linear(1),
  no normalisation; its input is `in_dim` wide (2 * m for a PacGAN of packing m).
- Every Linear weight ~ N(0, 0.02), every bias 0.

For the other models of the PacGAN-protocol tables: `num_generators = K > 1` makes the generator MGAN's mixture
(K first layers, every later layer shared, as `MLPGenerator` does), and `minibatch_kernels > 0` puts a
minibatch-discrimination layer between the discriminator's last maxout layer and its output, as `MLPDiscriminator`
does. Neither is in the authors' code: the PacGAN paper compares with neither.

With packing m the authors call G m times, on 100 latents each, so each call normalises by its own batch
statistics, and the running statistics take the average of the m calls' statistics. `BlocksBatchNorm1d.groups`
does the same within one call: the batch is m consecutive equal groups, each normalised by its own statistics
(`models.PacGAN` sets it).
"""

import torch
from torch import Tensor, nn

from .networks import MinibatchDiscrimination, PerGeneratorLinear, _records_init_config, mixture_forward
from .arguments import NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt


class BlocksBatchNorm1d(nn.Module):
    """BatchNorm over (B, C) as Blocks computes it (see the module docstring).

    Training: each of `groups` consecutive equal slices of the batch is normalised by its own mean and
    stdev = sqrt(biased variance + eps); the running mean and stdev move by `momentum` towards the average of
    the slices' values. Inference: (x - running_mean) / running_stdev, no eps. Then scale and shift.
    """

    def __init__(self, num_features: int, momentum: float = 0.05, eps: float = 1e-4):
        super().__init__()
        self.momentum, self.eps, self.groups = momentum, eps, 1
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_stdev", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        dtype, x = x.dtype, x.float()  # statistics in float32 under mixed precision, as BatchNorm's are
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._normalise(x).to(dtype)

    def _normalise(self, x: Tensor) -> Tensor:
        if not self.training:
            return (x - self.running_mean) / self.running_stdev * self.weight + self.bias
        if x.shape[0] % self.groups:
            raise ValueError(f"a batch of {x.shape[0]} cannot be cut into {self.groups} equal groups "
                             f"(BlocksBatchNorm1d.groups): make the batch a multiple of it")
        g = x.reshape(self.groups, -1, x.shape[1])
        mean = g.mean(1, keepdim=True)
        stdev = ((g - mean).pow(2).mean(1, keepdim=True) + self.eps).sqrt()
        with torch.no_grad():
            self.running_mean.lerp_(mean.mean(0).squeeze(0), self.momentum)
            self.running_stdev.lerp_(stdev.mean(0).squeeze(0), self.momentum)
        return ((g - mean) / stdev).reshape_as(x) * self.weight + self.bias


class Maxout(nn.Module):
    """Linear(in, units * pieces), then the max over each consecutive group of `pieces` outputs (Blocks'
    LinearMaxout).

    The max is `max(-1).values`, whose backward scatters the gradient to the arg-max; `amax`'s backward builds a
    tie mask and divides by the tie count, which made a PacGAN-protocol batch about 4 % slower on CPU (BENCHMARK.md). The two
    differ only on exact ties, which continuous inputs never produce."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (self.units, self.pieces)).max(-1).values


def _normal_init(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, PerGeneratorLinear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@_records_init_config
class BatchNormMLPGenerator(nn.Module):
    """z (B, latent_dim) -> x (B, out_dim): [Linear (no bias) -> BlocksBatchNorm1d -> ReLU] x n_hidden -> Linear.

    Defaults are the PacGAN 2D generator: z 2-d, 4 hidden layers of 400, BatchNorm momentum 0.05 (running
    value p <- 0.95 p + 0.05 batch value), weights N(0, init_std). With `num_generators = K > 1` it is MGAN's
    mixture of K generators sharing every layer but the first (its K maps, without bias, all before the shared
    BatchNorm): `forward(z, index)` sends sample i through first layer `index[i]`."""

    def __init__(self, latent_dim: PositiveInt = 2, out_dim: PositiveInt = 2, hidden_dim: PositiveInt = 400,
                 n_hidden: PositiveInt = 4, bn_momentum: OpenUnitInterval = 0.05, bn_eps: PositiveFloat = 1e-4,
                 init_std: PositiveFloat = 0.02, num_generators: PositiveInt = 1):
        super().__init__()
        if n_hidden < 1 or hidden_dim < 1:
            raise ValueError(f"need n_hidden >= 1 and hidden_dim >= 1; got {n_hidden}, {hidden_dim}")
        self.latent_dim, self.out_dim, self.num_generators = latent_dim, out_dim, num_generators
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden_dim, bias=False), BlocksBatchNorm1d(hidden_dim, bn_momentum, bn_eps),
                       nn.ReLU()]
            width = hidden_dim
        if num_generators > 1:
            layers[0] = PerGeneratorLinear(latent_dim, hidden_dim, num_generators, bias=False)
        self.net = nn.Sequential(*layers, nn.Linear(width, out_dim))
        _normal_init(self, init_std)

    def forward(self, z: Tensor, index: Tensor | None = None) -> Tensor:
        return mixture_forward(self.net, self.num_generators, z, index)


@_records_init_config
class MaxoutDiscriminator(nn.Module):
    """x (B, in_dim) -> score (B,): [Maxout(units, pieces)] x n_hidden -> Linear(1), weights N(0, init_std).

    Defaults are the PacGAN 2D discriminator for one sample (in_dim 2): 3 maxout layers of 200 units, 5
    pieces. With packing m, in_dim = 2 * m. With `minibatch_kernels > 0` a `MinibatchDiscrimination` layer
    (Salimans et al. 2016) sits between the last maxout layer and the output, which then takes
    hidden_dim + minibatch_kernels inputs; the layer keeps its own initialisation."""

    def __init__(self, in_dim: PositiveInt = 2, hidden_dim: PositiveInt = 200, n_hidden: PositiveInt = 3,
                 pieces: PositiveInt = 5, init_std: PositiveFloat = 0.02, minibatch_kernels: NonNegativeInt = 0,
                 minibatch_kernel_dim: PositiveInt = 5):
        super().__init__()
        if n_hidden < 1 or hidden_dim < 1 or pieces < 1:
            raise ValueError(f"need n_hidden, hidden_dim and pieces >= 1; got {n_hidden}, {hidden_dim}, {pieces}")
        self.in_dim, self.feature_dim = in_dim, hidden_dim
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_hidden):
            layers.append(Maxout(width, hidden_dim, pieces))
            width = hidden_dim
        self.trunk = nn.Sequential(*layers)
        self.minibatch = (MinibatchDiscrimination(width, minibatch_kernels, minibatch_kernel_dim)
                          if minibatch_kernels > 0 else None)
        self.head = nn.Linear(width + minibatch_kernels, 1)
        self.init_std = init_std
        _normal_init(self, init_std)

    def features(self, x: Tensor) -> Tensor:
        """The last maxout layer's output (B, feature_dim)."""
        return self.trunk(x.flatten(1))

    def score(self, features: Tensor) -> Tensor:
        """Scores (B,) from `features(x)` (through the minibatch layer, where there is one)."""
        return self.head(features if self.minibatch is None else self.minibatch(features)).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x))

    def reset_parameters(self) -> None:
        """Fresh random weights, drawn as at construction."""
        _normal_init(self, self.init_std)
        if self.minibatch is not None:
            self.minibatch.reset_parameters()
