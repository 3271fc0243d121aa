"""Random convolutional networks, for checking that every exporter and runtime computes the
same int8 numbers on architectures nobody wrote by hand.

net = sc.models.random_net(seed=3)                 # input shape drawn from the seed
x = torch.randn(64, *net.input_shape)

A seed fixes the architecture and the weights. The blocks are drawn from what small
networks for microcontrollers are made of: dense, grouped and depthwise convolutions
(kernels 1 to 5, strides 1 and 2, padded or not, BatchNorm), residual additions,
channel concatenations, squeeze-excite gates (a product), max and average pooling,
ReLU-family clamps and table activations (sigmoid, tanh, hard-sigmoid, hard-swish, SiLU),
ending in a global mean over whatever positions remain (1 to 49 and more) or a flatten,
then a fully connected classifier.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d}
ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardtanh": nn.Hardtanh,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "hardsigmoid": nn.Hardsigmoid,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "none": nn.Identity,
}


class _Conv(nn.Module):
    """Convolution, BatchNorm, activation."""

    def __init__(self, nd, cin, cout, kernel, stride, padding, groups, act) -> None:
        super().__init__()
        self.conv = _CONV[nd](cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = _BN[nd](cout)
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class _Residual(nn.Module):
    def __init__(self, body: nn.Module, act: str) -> None:
        super().__init__()
        self.body, self.act = body, ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.body(x) + x)


class _Concat(nn.Module):
    def __init__(self, left: nn.Module, right: nn.Module) -> None:
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], 1)


class _SqueezeExcite(nn.Module):
    """Hu et al. 2018 (arXiv 1709.01507): a channel gate from the global mean."""

    def __init__(self, nd: int, channels: int, reduced: int, gate: str) -> None:
        super().__init__()
        self.dims = tuple(range(2, 2 + nd))
        self.reduce = _CONV[nd](channels, reduced, 1)
        self.expand = _CONV[nd](reduced, channels, 1)
        self.gate = ACTIVATIONS[gate]()

    def forward(self, x):
        s = x.mean(self.dims, keepdim=True)
        return x * self.gate(self.expand(torch.relu(self.reduce(s))))


class _Head(nn.Module):
    def __init__(self, nd: int, features: int, num_classes: int, pool: bool) -> None:
        super().__init__()
        self.dims = tuple(range(2, 2 + nd)) if pool else None
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        x = x.mean(self.dims) if self.dims else x.flatten(1)
        return self.fc(x)


def random_input_shape(seed: int) -> tuple[int, ...]:
    """An input shape drawn from ``seed``: one in three a 1-D signal (C, L) of 8 to 39
    positions, else a square image (C, H, W) of side 4 to 15; 1 to 3 channels."""
    rng = random.Random(seed)
    channels = rng.randint(1, 3)
    if seed % 3 == 0:
        return (channels, rng.randint(8, 39))
    side = rng.randint(4, 15)
    return (channels, side, side)


def random_net(
    seed: int,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int = 10,
    depth: int = 4,
) -> nn.Module:
    """A random network for ``input_shape`` ((C, L) or (C, H, W); drawn from the seed when
    None, see :func:`random_input_shape`, and kept as ``net.input_shape``), with random
    BatchNorm statistics and affine parameters, in eval mode, ``depth`` blocks deep and
    ending in ``num_classes`` outputs. The same ``seed`` gives the same network."""
    input_shape = random_input_shape(seed) if input_shape is None else input_shape
    shape = tuple(int(n) for n in input_shape)
    nd = len(shape) - 1
    if nd not in _CONV or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, L) or (C, H, W), got {tuple(input_shape)}")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    channels, size = shape[0], list(shape[1:])
    blocks: list[nn.Module] = []

    def conv(cin, cout, groups=1, stride=1, act=None):
        kernel = rng.choice((1, 3, 3, 5)) if min(size) >= 5 else rng.choice((1, 3))
        padding = kernel // 2 if rng.random() < 0.8 or min(size) < kernel + stride else 0
        act = act or rng.choice(list(ACTIVATIONS))
        for d, n in enumerate(size):
            size[d] = (n + 2 * padding - kernel) // stride + 1
        return _Conv(nd, cin, cout, kernel, stride, padding, groups, act)

    for _ in range(depth):
        kind = rng.choice(
            ("conv", "conv", "depthwise", "grouped", "residual", "concat", "se", "pool")
        )
        stride = 2 if min(size) >= 6 and rng.random() < 0.4 else 1
        if kind == "conv" or (kind == "grouped" and channels % 2):
            cout = rng.choice((4, 6, 8, 12, 16))
            blocks.append(conv(channels, cout, stride=stride))
            channels = cout
        elif kind == "depthwise":
            blocks.append(conv(channels, channels, groups=channels, stride=stride))
        elif kind == "grouped":
            cout = 2 * rng.choice((2, 3, 4, 6))
            blocks.append(conv(channels, cout, groups=2, stride=stride))
            channels = cout
        elif kind == "residual":
            before = list(size)
            body = _Conv(nd, channels, channels, 3, 1, 1, 1, "none")
            blocks.append(_Residual(body, rng.choice(("relu", "relu6", "none"))))
            size[:] = before
        elif kind == "concat":
            k1, k2 = rng.choice((1, 3, 5)), rng.choice((1, 3))
            left = _Conv(
                nd,
                channels,
                rng.choice((2, 4, 6)),
                k1,
                1,
                k1 // 2,
                1,
                rng.choice(list(ACTIVATIONS)),
            )
            right = _Conv(nd, channels, rng.choice((2, 4)), k2, 1, k2 // 2, 1, "relu")
            blocks.append(_Concat(left, right))
            channels = left.conv.out_channels + right.conv.out_channels
        elif kind == "se":
            gate = rng.choice(("sigmoid", "hardsigmoid"))
            blocks.append(_SqueezeExcite(nd, channels, max(2, channels // 2), gate))
        elif min(size) >= 2:
            kernel = rng.choice((2, 3)) if min(size) >= 3 else 2
            padding = 1 if kernel == 3 and rng.random() < 0.5 else 0
            if rng.random() < 0.5:
                blocks.append(_MAXPOOL[nd](kernel, 2, padding))
            else:
                # padding left out of the count: only on odd sizes, where TFLite's SAME
                # pooling places the windows as PyTorch does
                counted = rng.random() < 0.5 or any(n % 2 == 0 for n in size)
                blocks.append(_AVGPOOL[nd](kernel, 2, padding, count_include_pad=counted))
            size[:] = [(n + 2 * padding - kernel) // 2 + 1 for n in size]
    pool = rng.random() < 0.7
    features = channels if pool else channels * math.prod(size)
    net = nn.Sequential(*blocks, _Head(nd, features, num_classes, pool))
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net.input_shape = shape
    return net.eval()
