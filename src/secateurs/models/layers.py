"""Building blocks shared by the zoo, generic over 1-D signals and 2-D images.

A ``FeatureMap`` follows the feature-map size while a network is built, so that each builder can
ask for the strides of the original architecture and get only those a tiny input allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_PAD = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d}

IMAGENET_SIZE = 64  # inputs at least this large keep the stride-2 stems of ImageNet models


def make_divisible(value: float, *, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``
    nor below ``min_value`` (default: ``divisor``).

    The rounding of the MobileNet reference implementations (Sandler et al. 2018).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_cfg(builder: str, cfg, fields: Sequence[str]) -> list[tuple]:
    """``cfg`` as a list of tuples, after failing, naming the entry, unless every entry is
    a sequence of ``len(fields)`` values."""
    if isinstance(cfg, (str, bytes)) or not isinstance(cfg, Sequence) or not cfg:
        raise ValueError(
            f"{builder}: cfg must be a non-empty list of ({', '.join(fields)}) "
            f"entries, got {cfg!r}"[:300]
        )
    for i, entry in enumerate(cfg):
        if (
            isinstance(entry, (str, bytes))
            or not isinstance(entry, Sequence)
            or len(entry) != len(fields)
        ):
            raise ValueError(
                f"{builder}: each cfg entry is ({', '.join(fields)}); entry {i} is {entry!r}"[:300]
            )
    return [tuple(e) for e in cfg]


class FeatureMap:
    """The spatial size of the feature map while a network is built, and the layers that fit it.

    ``stride(s)`` returns ``s`` along each dimension that stays at least ``min_size`` long
    after it, else 1, and records the new size. Layers pad by ``k // 2``, so a stride ``s``
    maps a length ``n`` to ``ceil(n / s)``.
    """

    def __init__(self, input_shape: Sequence[int], min_size: int = 2) -> None:
        self.nd = len(input_shape) - 1
        if self.nd not in _CONV:
            raise ValueError(f"input_shape must be (C, L) or (C, H, W), got {tuple(input_shape)}")
        self.channels = int(input_shape[0])
        self.Conv, self.MaxPool = _CONV[self.nd], _MAXPOOL[self.nd]
        self.size = [int(n) for n in input_shape[1:]]
        self.min_size = min_size

    def stride(self, stride: int) -> int | tuple[int, ...]:
        planned = []
        for d, n in enumerate(self.size):
            s = stride if math.ceil(n / stride) >= self.min_size else 1
            self.size[d] = math.ceil(n / s)
            planned.append(s)
        return planned[0] if len(set(planned)) == 1 else tuple(planned)

    def stem_stride(self, stride: int = 2) -> int | tuple[int, ...]:
        """The stem's stride: ``stride`` for ImageNet-sized inputs, 1 for tiny ones."""
        return self.stride(stride) if min(self.size) >= IMAGENET_SIZE else 1

    def conv(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, ...] = 3,
        stride: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> nn.Module:
        """Convolution padded by ``kernel // 2``; ``stride`` must come from :meth:`stride`."""
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
        return _CONV[self.nd](cin, cout, kernel, stride, padding, groups=groups, bias=bias)

    def bn(self, channels: int) -> nn.Module:
        return _BN[self.nd](channels)

    def conv_bn(self, cin, cout, kernel=3, stride=1, groups=1, act: nn.Module | None = None):
        """Convolution, BatchNorm and an optional activation, as one Sequential."""
        layers = [self.conv(cin, cout, kernel, stride, groups), self.bn(cout)]
        return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)

    def global_pool(self) -> nn.Module:
        """Global average pooling to one value per channel."""
        return nn.AdaptiveAvgPool1d(1) if self.nd == 1 else nn.AdaptiveAvgPool2d(1)

    def avgpool(self, kernel: int, stride, padding: int = 0) -> nn.Module:
        return _AVGPOOL[self.nd](kernel, stride, padding)

    def maxpool(self, kernel: int, stride, padding: int = 0) -> nn.Module:
        return _MAXPOOL[self.nd](kernel, stride, padding)

    def pad(self, padding: Sequence[int]) -> nn.Module:
        """Zero padding as F.pad orders it: last dimension first, (before, after) pairs."""
        return _PAD[self.nd](tuple(padding), 0.0)

    def resize(self, resolution: float) -> Resize | None:
        """The resolution multiplier rho of Howard et al. 2017: resample the input to rho times
        its size (None for rho = 1)."""
        if isinstance(resolution, bool) or not isinstance(resolution, (int, float)):
            raise TypeError(f"resolution must be a number in (0, 1], got {resolution!r}")
        if not 0 < resolution <= 1:
            raise ValueError(f"resolution must be in (0, 1], got {resolution}")
        if resolution == 1:
            return None
        self.size = [max(1, round(n * resolution)) for n in self.size]
        return Resize(tuple(self.size))


class Resize(nn.Module):
    """Resample the input to a fixed spatial size by area averaging."""

    def __init__(self, size: tuple[int, ...]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="area")

    def extra_repr(self) -> str:
        return f"size={self.size}"


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (Zhang et al. 2018, arXiv 1707.01083)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        spatial = x.shape[2:]
        x = x.reshape(n, self.groups, c // self.groups, *spatial).transpose(1, 2)
        return x.reshape(n, c, *spatial)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (Hu et al. 2018, arXiv 1709.01507): global pooling, a
    1x1 squeeze with ``act`` (ReLU), a 1x1 excite and ``gate`` (a hard sigmoid, as in
    MobileNet V3 and GhostNet; EfficientNet takes swish and the sigmoid)."""

    def __init__(
        self,
        grid: FeatureMap,
        channels: int,
        reduced: int,
        act: nn.Module | None = None,
        gate: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pool = grid.global_pool()
        self.reduce = grid.conv(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True) if act is None else act
        self.expand = grid.conv(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid() if gate is None else gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class ClassifierHead(nn.Module):
    """Global average pooling, flatten, optional dropout, then a Linear classifier."""

    def __init__(self, grid: FeatureMap, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.pool = grid.global_pool()
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(x))))


class InvertedResidual(nn.Module):
    """Inverted residual (Sandler et al. 2018, arXiv 1801.04381): 1x1 expansion to ``mid``
    (skipped when ``mid == cin``), depthwise k x k, an optional ``gate`` on the expanded
    maps (squeeze-excite in MobileNet V3 and EfficientNet), linear 1x1 projection; a
    residual connection when the stride is 1 and the widths match."""

    def __init__(
        self,
        grid: FeatureMap,
        cin: int,
        mid: int,
        cout: int,
        kernel: int = 3,
        stride=1,
        act: Callable[[], nn.Module] = lambda: nn.ReLU6(inplace=True),
        gate: nn.Module | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(grid.conv_bn(cin, mid, 1, act=act()))
        layers.append(grid.conv_bn(mid, mid, kernel, stride, groups=mid, act=act()))
        if gate is not None:
            layers.append(gate)
        layers.append(grid.conv_bn(mid, cout, 1))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class ConvHead(nn.Module):
    """Global pooling, a 1x1 convolution with bias (no BatchNorm) and ``act``, optional
    dropout, Linear classifier: the heads of GhostNet and MobileNet V3."""

    def __init__(
        self,
        grid: FeatureMap,
        cin: int,
        hidden: int,
        num_classes: int,
        dropout: float,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pool = grid.global_pool()
        self.conv = grid.conv(cin, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True) if act is None else act
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.act(self.conv(self.pool(x))))))
