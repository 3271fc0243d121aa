"""Xception: depthwise separable convolutions in entry, middle and exit flows with residual
connections (Chollet 2017, arXiv 1610.02357)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..data.task import Task
from .layers import ClassifierHead, FeatureMap, make_divisible
from .registry import register_model


def separable(grid: FeatureMap, cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, no activation between them, BatchNorm after."""
    return nn.Sequential(grid.conv(cin, cin, 3, groups=cin), grid.conv(cin, cout, 1), grid.bn(cout))


class XceptionBlock(nn.Module):
    """Separable convolutions, each after a ReLU (the first one's left out at the start of
    the entry flow), then a 3x3 max-pool when the block downsamples; the shortcut is the
    identity, or a strided 1x1 convolution with BatchNorm where the width or size
    changes. A pool that would not downsample (a tiny input) is left out."""

    def __init__(self, grid: FeatureMap, widths: Sequence[int], stride, first_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
            if i or first_relu:
                layers.append(nn.ReLU())  # not in place: the shortcut reads the input
            layers.append(separable(grid, cin, cout))
        if stride != 1:
            layers.append(grid.maxpool(3, stride, padding=1))
        self.body = nn.Sequential(*layers)
        cin, cout = widths[0], widths[-1]
        self.shortcut = (
            nn.Sequential(grid.conv(cin, cout, 1, stride), grid.bn(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class Xception(nn.Sequential):
    """Stem (two 3x3 convolutions), entry flow, middle flow, exit flow, classifier."""


@register_model("xception")
def xception(
    task: Task,
    width: float = 1.0,
    middle_blocks: int = 8,
    stem_channels: Sequence[int] = (32, 64),
    entry_channels: Sequence[int] = (128, 256, 728),
    exit_channels: Sequence[int] = (728, 1024, 1536, 2048),
    dropout: float = 0.0,
) -> nn.Module:
    """Xception with a width multiplier on every layer (channels rounded to multiples of 8)
    and ``middle_blocks`` blocks of three 728-wide separable convolutions in the middle
    flow (8 in the paper). The entry flow's three blocks and the exit flow's first block
    downsample by 2 where the input allows (see ``FeatureMap``); the stem's stride-2 convolution
    only on ImageNet-sized inputs."""
    if isinstance(middle_blocks, bool) or not isinstance(middle_blocks, int) or middle_blocks < 0:
        raise ValueError(f"middle_blocks must be a whole number >= 0, got {middle_blocks!r}")
    grid = FeatureMap(task.input_shape)
    ch = [make_divisible(c * width) for c in stem_channels]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    relu = nn.ReLU(inplace=True)
    layers["stem1"] = grid.conv_bn(task.input_shape[0], ch[0], 3, grid.stem_stride(), act=relu)
    layers["stem2"] = grid.conv_bn(ch[0], ch[1], 3, act=nn.ReLU(inplace=True))
    channels = ch[1]
    for i, c in enumerate(entry_channels, 1):
        cout = make_divisible(c * width)
        widths = (channels, cout, cout)
        layers[f"entry{i}"] = XceptionBlock(grid, widths, grid.stride(2), first_relu=i > 1)
        channels = cout
    middle = make_divisible(entry_channels[-1] * width)
    for i in range(1, middle_blocks + 1):
        layers[f"middle{i}"] = XceptionBlock(grid, (channels, middle, middle, middle), 1)
        channels = middle
    e = [make_divisible(c * width) for c in exit_channels]
    layers["exit"] = XceptionBlock(grid, (channels, e[0], e[1]), grid.stride(2))
    layers["exit_conv1"] = nn.Sequential(separable(grid, e[1], e[2]), nn.ReLU(inplace=True))
    layers["exit_conv2"] = nn.Sequential(separable(grid, e[2], e[3]), nn.ReLU(inplace=True))
    layers["head"] = ClassifierHead(grid, e[3], task.num_classes, dropout)
    return Xception(layers)
