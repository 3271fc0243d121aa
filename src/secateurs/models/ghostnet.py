"""GhostNet: cheap operations make half the feature maps (Han et al. 2020, arXiv 1911.11907)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..data.task import Task
from .layers import ConvHead, FeatureMap, SqueezeExcite, check_cfg, make_divisible
from .registry import register_model

# (kernel, expansion channels, output channels, SE ratio, stride) of the paper's Table 1.
GHOSTNET_CFG = (
    (3, 16, 16, 0, 1),
    (3, 48, 24, 0, 2),
    (3, 72, 24, 0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0, 2),
    (3, 200, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
)


class GhostModule(nn.Module):
    """A 1x1 convolution makes ceil(out/ratio) intrinsic maps; a 3x3 depthwise "cheap
    operation" makes ratio-1 ghosts of each; the first ``cout`` maps are kept."""

    def __init__(self, grid: FeatureMap, cin: int, cout: int, ratio: int = 2, relu: bool = True):
        super().__init__()
        self.cout = cout
        intrinsic = math.ceil(cout / ratio)
        act = nn.ReLU(inplace=True) if relu else None
        self.primary = grid.conv_bn(cin, intrinsic, 1, act=act)
        act = nn.ReLU(inplace=True) if relu else None
        self.cheap = grid.conv_bn(intrinsic, intrinsic * (ratio - 1), 3, groups=intrinsic, act=act)

    def forward(self, x):
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, : self.cout]


class GhostBottleneck(nn.Module):
    """Ghost module (expand), depthwise downsampling when strided, optional SE, ghost module
    (project, linear), plus an identity or depthwise+pointwise shortcut."""

    def __init__(self, grid, cin, mid, cout, kernel: int, stride, se_ratio: float) -> None:
        super().__init__()
        self.expand = GhostModule(grid, cin, mid, relu=True)
        strided = stride != 1
        self.downsample = (
            grid.conv_bn(mid, mid, kernel, stride, groups=mid) if strided else nn.Identity()
        )
        self.se = (
            SqueezeExcite(grid, mid, make_divisible(mid * se_ratio, divisor=4))
            if se_ratio > 0
            else nn.Identity()
        )
        self.project = GhostModule(grid, mid, cout, relu=False)
        if cin == cout and not strided:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                grid.conv_bn(cin, cin, kernel, stride, groups=cin), grid.conv_bn(cin, cout, 1)
            )

    def forward(self, x):
        return self.project(self.se(self.downsample(self.expand(x)))) + self.shortcut(x)


@register_model("ghostnet")
def ghostnet(
    task: Task,
    width: float = 1.0,
    cfg: Sequence[tuple[int, int, int, float, int]] = GHOSTNET_CFG,
    stem_channels: int = 16,
    head_channels: int = 1280,
    dropout: float = 0.2,
) -> nn.Module:
    """GhostNet with a width multiplier (channels rounded to multiples of 4, as in the
    reference); the last bottleneck's expansion width feeds a 1x1 convolution before pooling."""
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = make_divisible(stem_channels * width, divisor=4)
    layers["stem"] = grid.conv_bn(
        task.input_shape[0], channels, 3, grid.stem_stride(), act=nn.ReLU(inplace=True)
    )
    cfg = check_cfg("ghostnet", cfg, ("k", "exp", "c", "se", "s"))
    for i, (k, exp, c, se, s) in enumerate(cfg):
        mid, cout = make_divisible(exp * width, divisor=4), make_divisible(c * width, divisor=4)
        stride = grid.stride(s)
        layers[f"block{i + 1}"] = GhostBottleneck(grid, channels, mid, cout, k, stride, se)
        channels = cout
    last = make_divisible(cfg[-1][1] * width, divisor=4)
    layers["last"] = grid.conv_bn(channels, last, 1, act=nn.ReLU(inplace=True))
    layers["head"] = ConvHead(grid, last, head_channels, task.num_classes, dropout)
    return nn.Sequential(layers)
