"""Plain `nn.Module` networks that the GAN modules are given (never build) from YAML.

Two pairs:
- `MLPGenerator` / `MLPDiscriminator` for low-dimensional data (the 2D mixtures). Defaults are
  the Unrolled GAN toy setting (Metz et al. 2017, Appendix A): 2 hidden layers of 128 tanh
  units, a 256-d latent.
- `DCGANGenerator` / `DCGANDiscriminator` for 28, 32 and 64 pixel images (Radford et al. 2016):
  strided (transposed) convolutions, BatchNorm everywhere but D's input layer and G's output
  layer, ReLU in G, LeakyReLU(0.2) in D, tanh output, N(0, 0.02) initialisation.

Both discriminators take `minibatch_kernels > 0` to add a minibatch-discrimination layer
before their output (Salimans et al. 2016). Discriminators return raw scores of shape (B,):
logits for the logistic losses, critic values for the Wasserstein loss. Both are
`TrunkDiscriminator`s: `features(x)` and `score(features)` let extra heads share the trunk. Generators expose `latent_dim` so a model can read it. Each network
keeps `init_config` ({class_path, init_args}: what rebuilds it), which a model saves in its
checkpoints, so that a model built in Python loads from its checkpoint alone.
"""

import functools
import inspect
from typing import Literal, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .arguments import NonNegativeInt, PositiveInt

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU}


def _records_init_config(cls: type) -> type:
    """Class decorator: an instance of exactly `cls` keeps `init_config`, its class path and the
    arguments it was built with (defaults filled in). A subclass records nothing: its own
    arguments may differ (give it to the model from a config, or pass it when loading)."""
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self) is cls:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = {k: v for k, v in list(bound.arguments.items())[1:]}  # without self
            self.init_config = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": arguments}

    cls.__init__ = __init__
    return cls


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _hidden_layers(in_dim: int, hidden_dim: int, n_hidden: int, activation: str) -> tuple[list[nn.Module], int]:
    """n_hidden (Linear, activation) pairs, and the width they end with."""
    if n_hidden < 0 or hidden_dim < 1:
        raise ValueError(f"need n_hidden >= 0 and hidden_dim >= 1; got {n_hidden}, {hidden_dim}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(width, hidden_dim), _activation(activation)]
        width = hidden_dim
    return layers, width


# Weight initialisations of the MLPs: "torch", nn.Linear's own (Kaiming-uniform weights, uniform biases); "xavier",
# Glorot-uniform weights and zero biases (the default of TensorFlow's dense and slim layers, which the VEEGAN
# authors' code uses).
WEIGHT_INITS = ("torch", "xavier")


def _check_weight_init(weight_init: str) -> None:
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {list(WEIGHT_INITS)}")


def _init_linears(module: nn.Module, weight_init: str) -> None:
    """Re-draws every nn.Linear of `module` by `weight_init` (one of WEIGHT_INITS other than "torch", which
    nn.Linear has already drawn)."""
    assert weight_init == "xavier", weight_init
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _mlp(in_dim: int, hidden_dim: int, n_hidden: int, out_dim: int, activation: str) -> nn.Sequential:
    layers, width = _hidden_layers(in_dim, hidden_dim, n_hidden, activation)
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


def minibatch_similarity(m: Tensor, block: int = 256) -> Tensor:
    """o[b, i] = sum_{j != i} exp(-||m[b, i] - m[b, j]||_1) for m of shape (B, N, C): minibatch
    discrimination's features (Salimans et al. 2016, Section 3.2), differentiable in m.

    The (B, N, N) kernel matrix is symmetric, so it is computed in square blocks of `block` rows and
    columns on and above the diagonal only, each block serving the row sums of its rows and, mirrored,
    those of its columns; a block's differences are accumulated one kernel dimension at a time in place
    (never the (B, N, N, C) differences). The backward pass is written out: with w_ij = (g_i + g_j) e_ij,
    d o-weighted sum / d m[i, c] = -sum_j w_ij sign(m[i, c] - m[j, c]), whose matrix is antisymmetric, so
    the same blocks serve it. About 4 to 5 times faster than autograd through the elementwise
    expression at N = 512, B = 5, C = 3 on CPU (BENCHMARK.md). No second derivative (Unrolled GAN's
    unrolling through such a D raises).
    """
    if torch.is_grad_enabled() and m.requires_grad:
        return _MinibatchSimilarity.apply(m, block)
    return _similarity_blocks(m, block, keep=False)[0] - 1.0


def _similarity_blocks(m: Tensor, block: int, keep: bool) -> tuple[Tensor, dict]:
    """Row sums of exp(-L1) over the whole batch (self-pairs included) and, if `keep`, the upper blocks."""
    n = m.shape[1]
    cols = [m[:, :, c].contiguous() for c in range(m.shape[2])]
    starts = range(0, n, block)
    rows = torch.zeros(m.shape[0], n, dtype=m.dtype, device=m.device)
    kept = {}
    for i0 in starts:
        ri = slice(i0, min(i0 + block, n))
        for j0 in range(i0, n, block):
            rj = slice(j0, min(j0 + block, n))
            e = torch.sub(cols[0][:, ri, None], cols[0][:, None, rj]).abs_()
            for x in cols[1:]:
                e.add_(torch.sub(x[:, ri, None], x[:, None, rj]).abs_())
            e.neg_().exp_()
            rows[:, ri] += e.sum(2)
            if j0 != i0:
                rows[:, rj] += e.sum(1)
            if keep:
                kept[i0, ri.stop, j0, rj.stop] = e
    return rows, kept


class _MinibatchSimilarity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m: Tensor, block: int) -> Tensor:
        rows, kept = _similarity_blocks(m, block, keep=True)
        ctx.save_for_backward(m)
        ctx.kept = kept
        return rows - 1.0

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        (m,) = ctx.saved_tensors
        cols = [m[:, :, c].contiguous() for c in range(m.shape[2])]
        g = g.contiguous()
        grad = torch.zeros_like(m)
        for (i0, i1, j0, j1), e in ctx.kept.items():
            ri, rj = slice(i0, i1), slice(j0, j1)
            w = torch.add(g[:, ri, None], g[:, None, rj]).mul_(e)
            for c, x in enumerate(cols):
                s = torch.sub(x[:, ri, None], x[:, None, rj]).sign_().mul_(w)
                grad[:, ri, c] -= s.sum(2)
                if j0 != i0:
                    grad[:, rj, c] += s.sum(1)
        return grad, None


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, Section 3.2).

    f (N, A) -> [f, o] (N, A + B): M = f T reshaped to (N, B, C), with T in R^{A x B x C};
    c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_1); o(x_i)_b = sum_{j != i} c_b(x_i, x_j).
    Self-pairs are excluded (c_b(x_i, x_i) = exp(0) = 1 is subtracted, exactly), so a batch of n
    identical samples gives n - 1 in every output, the maximum: the discriminator can see a
    collapsed batch. The paper's code uses B = 100 kernels of C = 5 dimensions on CIFAR-10.
    """

    def __init__(self, in_features: int, num_kernels: int = 100, kernel_dim: int = 5):
        super().__init__()
        if min(in_features, num_kernels, kernel_dim) < 1:
            raise ValueError(f"need in_features, num_kernels, kernel_dim >= 1; got {in_features}, {num_kernels}, {kernel_dim}")
        self.num_kernels, self.kernel_dim = num_kernels, kernel_dim
        # std 1/sqrt(A) keeps M's entries O(|f|) whatever A, so the exp(-L1) features start
        # informative (a fixed std makes them vanish for wide conv features, A in the thousands)
        self.T = nn.Parameter(torch.empty(in_features, num_kernels * kernel_dim))  # (A, B*C)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.T.normal_(0.0, self.T.shape[0] ** -0.5)

    @property
    def out_features(self) -> int:
        return self.T.shape[0] + self.num_kernels

    def forward(self, f: Tensor) -> Tensor:
        # in float32 under mixed precision: the small distances between near-identical samples
        # are the signal, and bf16 rounds them away
        with torch.autocast(device_type=f.device.type, enabled=False):
            return self._forward(f.float() if f.element_size() < 4 else f)

    def _forward(self, f: Tensor) -> Tensor:
        m = (f @ self.T.to(f.dtype)).view(f.shape[0], self.num_kernels, self.kernel_dim).transpose(0, 1)  # (B, N, C)
        o = minibatch_similarity(m).transpose(0, 1)  # (N, B)
        return torch.cat([f, o], dim=1)  # (N, A + B)


class PerGeneratorLinear(nn.Module):
    """K linear maps in one layer; sample i goes through map `index[i]`.

    The first layer of a mixture of generators (MGAN, Hoang et al. 2018, Section 3.2: the K
    generators share every layer but the first). x (N, in_features), index (N,) in [0, K)
    -> (N, out_features). Each map is initialised as `nn.Linear` initialises its weights.
    """

    def __init__(self, in_features: int, out_features: int, num_generators: int, bias: bool = True):
        super().__init__()
        if num_generators < 1:
            raise ValueError(f"num_generators must be >= 1; got {num_generators}")
        self.in_features, self.out_features, self.num_generators = in_features, out_features, num_generators
        self.weight = nn.Parameter(torch.empty(num_generators, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_generators, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for k in range(self.num_generators):
            layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
            with torch.no_grad():
                self.weight[k].copy_(layer.weight)
                if self.bias is not None:
                    self.bias[k].copy_(layer.bias)

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        if index.shape != x.shape[:1]:
            raise ValueError(f"need one generator index per sample: x has {x.shape[0]} rows, index shape {tuple(index.shape)}")
        out = x.new_empty(x.shape[0], self.out_features)
        for k in range(self.num_generators):  # one matmul per generator on its own rows
            rows = (index == k).nonzero().squeeze(1)
            y = x.index_select(0, rows) @ self.weight[k].t()
            if self.bias is not None:
                y = y + self.bias[k]
            out = out.index_copy(0, rows, y.to(out.dtype))
        return out


def mixture_forward(net: nn.Sequential, num_generators: int, z: Tensor, index: Tensor | None) -> Tensor:
    """A generator network's forward pass whose first layer is a `PerGeneratorLinear` when num_generators > 1 (MGAN's
    mixture: sample i through first layer index[i], the rest shared); a plain pass otherwise."""
    if num_generators == 1:
        return net(z)
    if index is None:
        raise ValueError(f"this generator is a mixture of {num_generators}; pass index (B,) to forward")
    h = net[0](z, index)
    for layer in net[1:]:
        h = layer(h)
    return h


@runtime_checkable
class TrunkDiscriminator(Protocol):
    """A discriminator whose trunk other heads can share (MGAN's classifier, InfoGAN's Q):
    `forward(x) == score(features(x))`, with `features(x)` of shape (B, feature_dim)."""

    feature_dim: int

    def features(self, x: Tensor) -> Tensor: ...

    def score(self, features: Tensor) -> Tensor: ...


def require_trunk(discriminator: nn.Module, model: str, head: str) -> None:
    """Raises a clear error unless `discriminator` is a `TrunkDiscriminator` (`head` shares its trunk)."""
    if not isinstance(discriminator, TrunkDiscriminator):
        missing = [a for a in ("features", "score", "feature_dim") if not hasattr(discriminator, a)]
        raise ValueError(f"{model}'s discriminator must provide {', '.join(f'`{a}`' for a in missing)} ({head} "
                         f"shares its trunk); MLPDiscriminator and DCGANDiscriminator do")


@_records_init_config
class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> x (B, out_dim), linear output.

    With `num_generators = K > 1` it is a mixture of K generators that share every layer but
    the first (MGAN): `forward(z, index)` sends sample i through first layer `index[i]`.
    `weight_init` ("torch" or "xavier", see WEIGHT_INITS) draws the Linear layers' weights.
    """

    def __init__(self, latent_dim: PositiveInt = 256, out_dim: PositiveInt = 2, hidden_dim: PositiveInt = 128,
                 n_hidden: NonNegativeInt = 2, activation: Literal["tanh", "relu", "leaky_relu", "elu"] = "tanh",
                 num_generators: PositiveInt = 1, weight_init: Literal["torch", "xavier"] = "torch"):
        super().__init__()
        _check_weight_init(weight_init)
        if weight_init != "torch" and num_generators > 1:
            raise ValueError(f"weight_init {weight_init!r} is for num_generators 1 (MGAN's per-generator first layer "
                             f"keeps its own initialisation); got num_generators {num_generators}")
        self.latent_dim = latent_dim
        self.out_dim = out_dim
        self.num_generators = num_generators
        self.net = _mlp(latent_dim, hidden_dim, n_hidden, out_dim, activation)
        if num_generators > 1:
            first = self.net[0]
            self.net[0] = PerGeneratorLinear(first.in_features, first.out_features, num_generators)
        if weight_init != "torch":
            _init_linears(self, weight_init)

    def forward(self, z: Tensor, index: Tensor | None = None) -> Tensor:
        return mixture_forward(self.net, self.num_generators, z, index)


@_records_init_config
class MLPDiscriminator(nn.Module):
    """x (B, in_dim) -> score (B,).

    With `minibatch_kernels > 0`, a `MinibatchDiscrimination` layer sits between the last hidden
    layer and the output (Salimans et al. 2016). `weight_init` ("torch" or "xavier", see WEIGHT_INITS) draws
    the Linear layers' weights.
    """

    def __init__(self, in_dim: PositiveInt = 2, hidden_dim: PositiveInt = 128, n_hidden: NonNegativeInt = 2,
                 activation: Literal["tanh", "relu", "leaky_relu", "elu"] = "tanh",
                 minibatch_kernels: NonNegativeInt = 0, minibatch_kernel_dim: PositiveInt = 5,
                 weight_init: Literal["torch", "xavier"] = "torch"):
        super().__init__()
        _check_weight_init(weight_init)
        self.in_dim, self.weight_init = in_dim, weight_init
        if minibatch_kernels > 0 and n_hidden < 1:
            raise ValueError("minibatch discrimination needs n_hidden >= 1 (it acts on hidden features)")
        layers, width = _hidden_layers(in_dim, hidden_dim, n_hidden, activation)
        self.feature_dim = width
        self._trunk_len = len(layers)
        if minibatch_kernels > 0:
            layers.append(MinibatchDiscrimination(width, minibatch_kernels, minibatch_kernel_dim))
            width += minibatch_kernels
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        if weight_init != "torch":
            _init_linears(self, weight_init)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's output (B, feature_dim): the trunk that extra heads share."""
        return self.net[: self._trunk_len](x.flatten(1))

    def score(self, features: Tensor) -> Tensor:
        """Scores (B,) from `features(x)`: `score(features(x)) == forward(x)`."""
        return self.net[self._trunk_len :](features).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)

    def reset_parameters(self) -> None:
        """Fresh random weights, drawn as at construction."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        if self.weight_init != "torch":
            _init_linears(self, self.weight_init)


# Discriminator normalisations: BatchNorm (DCGAN), or layer norm over (C, H, W) for critics whose
# per-sample outputs must not depend on the batch (WGAN-GP, Gulrajani et al. 2017, Section 4).
_NORMS = {"batch": nn.BatchNorm2d, "layer": lambda ch: nn.GroupNorm(1, ch)}


def _image_size_and_channels(name: str, image_size: Optional[int], channels: Optional[int]) -> tuple[int, int]:
    """DCGAN networks take their size from the data: train.py fills image_size and channels from the
    datamodule's image_shape when a config leaves them out; in Python, pass them."""
    if image_size is None or channels is None:
        raise ValueError(
            f"{name} needs image_size and channels (got {image_size}, {channels}): pass them, or leave them out "
            f"of the config and train with train.py, which takes them from the datamodule's image_shape"
        )
    return int(image_size), int(channels)


def _dcgan_base_size(image_size: int) -> tuple[int, int]:
    """Splits image_size = base * 2**n_up with base in [4, 7]: 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4)."""
    base, n_up = image_size, 0
    while base % 2 == 0 and base > 7:
        base //= 2
        n_up += 1
    if not 4 <= base <= 7 or n_up < 1:
        raise ValueError(
            f"DCGAN networks need image_size = b * 2**n with 4 <= b <= 7 and n >= 1 (e.g. 28, 32, 64); "
            f"got {image_size}"
        )
    return base, n_up


def reinitialise(module: nn.Module) -> None:
    """Fresh random weights for `module`, drawn as at construction: its own `reset_parameters` if it has one,
    else each submodule's (e.g. an extra discriminator copied from the configured one)."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016, Section 4: weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, PerGeneratorLinear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@_records_init_config
class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> image (B, channels, image_size, image_size) in [-1, 1].

    A projection to (width * 2**(n-1), b, b), then n stride-2 transposed convolutions that
    double the size and halve the width; image_size = b * 2**n (28 = 7*4, 32 = 4*8, 64 = 4*16).
    """

    def __init__(self, latent_dim: PositiveInt = 100, image_size: Optional[PositiveInt] = None,
                 channels: Optional[PositiveInt] = None, width: PositiveInt = 64, num_generators: PositiveInt = 1):
        super().__init__()
        image_size, channels = _image_size_and_channels(type(self).__name__, image_size, channels)
        self.latent_dim = latent_dim
        self.num_generators = num_generators
        self.image_shape = (channels, image_size, image_size)
        base, n_up = _dcgan_base_size(image_size)
        ch = width * 2 ** (n_up - 1)
        self._base_shape = (ch, base, base)
        if num_generators > 1:
            # MGAN: one projection per generator (a b x b transposed convolution of a 1 x 1 input
            # is a linear map to ch * b * b), every later layer shared
            self.mixture_input = PerGeneratorLinear(latent_dim, ch * base * base, num_generators, bias=False)
        self.project = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, ch, kernel_size=base, bias=False) if num_generators == 1 else nn.Identity(),
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i in range(n_up):
            last = i == n_up - 1
            out = channels if last else ch // 2
            layers.append(nn.ConvTranspose2d(ch, out, kernel_size=4, stride=2, padding=1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.upsample = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, index: Tensor | None = None) -> Tensor:
        if self.num_generators == 1:
            return self.upsample(self.project(z.view(z.shape[0], -1, 1, 1)))
        if index is None:
            raise ValueError(f"this generator is a mixture of {self.num_generators}; pass index (B,) to forward")
        h = self.mixture_input(z.flatten(1), index).view(z.shape[0], *self._base_shape)
        return self.upsample(self.project(h))


def _check_norm(norm: str) -> None:
    if norm not in (*_NORMS, "none"):
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted((*_NORMS, 'none'))}")


def _dcgan_trunk(image_size: int, channels: int, width: int, norm: str) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """DCGAN's discriminator trunk: stride-2 4 x 4 convolutions that halve the size and double the width down to a
    base x base map, LeakyReLU 0.2, `norm` after every convolution but the first. Returns it and its output's shape."""
    _check_norm(norm)
    base, n_down = _dcgan_base_size(image_size)
    layers: list[nn.Module] = []
    ch_in, ch = channels, width
    for i in range(n_down):
        layers.append(nn.Conv2d(ch_in, ch, kernel_size=4, stride=2, padding=1, bias=i == 0))
        if i > 0 and norm != "none":  # no normalisation on D's input layer (Radford et al. 2016, Section 3)
            layers.append(_NORMS[norm](ch))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        ch_in, ch = ch, ch * 2
    return nn.Sequential(*layers), (ch_in, base, base)


@_records_init_config
class DCGANDiscriminator(nn.Module):
    """image (B, channels, image_size, image_size) -> score (B,).

    n stride-2 convolutions that halve the size and double the width, then a b x b
    convolution to one score. `features(x)` returns the flattened last feature map, for
    variants that attach extra heads (InfoGAN's Q, MGAN's classifier, minibatch features).
    """

    def __init__(self, image_size: Optional[int] = None, channels: Optional[int] = None, width: int = 64,
                 norm: str = "batch", minibatch_kernels: int = 0, minibatch_kernel_dim: int = 5):
        super().__init__()
        _check_norm(norm)
        image_size, channels = _image_size_and_channels(type(self).__name__, image_size, channels)
        self.image_shape = (channels, image_size, image_size)
        self.trunk, self._last_map_shape = _dcgan_trunk(image_size, channels, width, norm)
        ch_in, base, _ = self._last_map_shape
        self.feature_dim = ch_in * base * base
        if minibatch_kernels > 0:
            # minibatch features on the flattened last feature map, then a linear score
            self.minibatch = MinibatchDiscrimination(self.feature_dim, minibatch_kernels, minibatch_kernel_dim)
            self.head = nn.Linear(self.minibatch.out_features, 1)
        else:
            self.minibatch = None
            self.head = nn.Conv2d(ch_in, 1, kernel_size=base)  # (B, 1, 1, 1)
        self.apply(dcgan_init)

    def features(self, x: Tensor) -> Tensor:
        """The flattened last feature map (B, feature_dim): the trunk that extra heads share."""
        return self.trunk(x).flatten(1)

    def score(self, features: Tensor) -> Tensor:
        """Scores (B,) from `features(x)`: `score(features(x)) == forward(x)`."""
        if self.minibatch is not None:
            return self.head(self.minibatch(features)).flatten()
        return self.head(features.view(features.shape[0], *self._last_map_shape)).flatten()

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x))

    def reset_parameters(self) -> None:
        """Fresh random weights, drawn as at construction (DCGAN initialisation)."""
        if self.minibatch is not None:
            self.minibatch.reset_parameters()
        self.apply(dcgan_init)


@_records_init_config
class DCGANEncoder(nn.Module):
    """image (B, channels, image_size, image_size), or flattened (B, channels * image_size ** 2) -> (B, out_dim).

    DCGAN's discriminator trunk and a linear map from its last feature map: an encoder of images into latents
    (VEEGAN's reconstructor F for image data). Flat input is reshaped, so a model that flattens data (VEEGAN)
    can use it."""

    def __init__(self, out_dim: int, image_size: Optional[int] = None, channels: Optional[int] = None,
                 width: int = 64, norm: str = "batch"):
        super().__init__()
        _check_norm(norm)
        image_size, channels = _image_size_and_channels(type(self).__name__, image_size, channels)
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1; got {out_dim}")
        self.image_shape, self.out_dim = (channels, image_size, image_size), out_dim
        self.trunk, (ch, base, _) = _dcgan_trunk(image_size, channels, width, norm)
        self.head = nn.Linear(ch * base * base, out_dim)
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x.view(x.shape[0], *self.image_shape)).flatten(1))


@_records_init_config
class DCGANPairDiscriminator(nn.Module):
    """A (latent, image) pair, flattened and concatenated latent first, (B, code_dim + channels * image_size ** 2)
    -> score (B,): a joint discriminator for images (VEEGAN's D; ALI/BiGAN's form).

    The image goes through DCGAN's discriminator trunk, the latent through Linear(code_dim, hidden) and
    LeakyReLU 0.2; the two are concatenated and scored by Linear(hidden) -> LeakyReLU 0.2 -> Linear(1).
    `features(pair)` is that last hidden layer (B, hidden). The VEEGAN authors released no image code; this is
    the joint form their paper describes (a discriminator on (z, x)), with DCGAN's trunk as its image side."""

    def __init__(self, code_dim: int, image_size: Optional[int] = None, channels: Optional[int] = None,
                 width: int = 64, hidden: int = 512, norm: str = "batch"):
        super().__init__()
        _check_norm(norm)
        image_size, channels = _image_size_and_channels(type(self).__name__, image_size, channels)
        if code_dim < 1 or hidden < 1:
            raise ValueError(f"code_dim and hidden must be >= 1; got {code_dim}, {hidden}")
        self.image_shape, self.code_dim = (channels, image_size, image_size), code_dim
        self.in_dim = code_dim + channels * image_size * image_size
        self.trunk, (ch, base, _) = _dcgan_trunk(image_size, channels, width, norm)
        self.code = nn.Sequential(nn.Linear(code_dim, hidden), nn.LeakyReLU(0.2))
        self.joint = nn.Sequential(nn.Linear(ch * base * base + hidden, hidden), nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1)
        self.feature_dim = hidden
        self.apply(dcgan_init)

    def features(self, pair: Tensor) -> Tensor:
        if pair.ndim != 2 or pair.shape[1] != self.in_dim:
            raise ValueError(f"{type(self).__name__} takes flat (latent, image) pairs of width {self.in_dim} "
                             f"({self.code_dim} + {self.in_dim - self.code_dim}); got shape {tuple(pair.shape)}")
        z, x = pair[:, : self.code_dim], pair[:, self.code_dim:]
        image = self.trunk(x.reshape(x.shape[0], *self.image_shape)).flatten(1)
        return self.joint(torch.cat([image, self.code(z)], dim=1))

    def forward(self, pair: Tensor) -> Tensor:
        return self.head(self.features(pair)).flatten()


__all__ = [
    "MinibatchDiscrimination",
    "PerGeneratorLinear",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "DCGANEncoder",
    "DCGANPairDiscriminator",
    "dcgan_init",
    "TrunkDiscriminator",
    "require_trunk",
]
