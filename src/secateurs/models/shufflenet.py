"""ShuffleNet V1 (Zhang et al. 2018, arXiv 1707.01083) and V2 (Ma et al. 2018, arXiv 1807.11164)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..data.task import Task
from .layers import ChannelShuffle, ClassifierHead, FeatureMap, make_divisible
from .registry import register_model

# Output channels of stages 2-4 for each number of groups g (Table 1 of the V1 paper).
SHUFFLENET_V1_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
# Output channels of stages 2-4 and of conv5 for each width (Table 5 of the V2 paper).
SHUFFLENET_V2_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def _stem(grid: FeatureMap, cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution then 3x3 max pooling, both stride 2 on ImageNet-sized inputs only."""
    stride = grid.stem_stride()
    layers: list[nn.Module] = [grid.conv_bn(cin, cout, 3, stride, act=nn.ReLU(inplace=True))]
    if stride != 1:
        layers.append(grid.maxpool(3, grid.stride(2), padding=1))
    return nn.Sequential(*layers)


class ShuffleV1Unit(nn.Module):
    """Pointwise group convolution, channel shuffle, 3x3 depthwise, pointwise group convolution.

    Stride 1 adds the input back; stride 2 (or a width change) concatenates a 3x3
    average-pooled copy of the input, so the branch produces ``cout - cin`` channels.
    """

    def __init__(self, grid, cin: int, cout: int, groups: int, stride, first_groups: int):
        super().__init__()
        self.concat = stride != 1 or cin != cout
        branch_out = cout - cin if self.concat else cout
        mid = cout // 4
        self.branch = nn.Sequential(
            grid.conv_bn(cin, mid, 1, groups=first_groups, act=nn.ReLU(inplace=True)),
            ChannelShuffle(first_groups) if first_groups > 1 else nn.Identity(),
            grid.conv_bn(mid, mid, 3, stride, groups=mid),
            grid.conv_bn(mid, branch_out, 1, groups=groups),
        )
        self.shortcut = grid.avgpool(3, stride, padding=1) if self.concat else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.branch(x)
        if self.concat:
            return self.act(torch.cat([self.shortcut(x), y], dim=1))
        return self.act(x + y)


@register_model("shufflenet_v1")
def shufflenet_v1(
    task: Task,
    width: float = 1.0,
    groups: int = 3,
    stage_repeats: Sequence[int] = (4, 8, 4),
    stem_channels: int = 24,
) -> nn.Module:
    """ShuffleNet V1 with ``groups`` in {1, 2, 3, 4, 8} and width multiplier s.

    Channels are rounded to multiples of 4·g so that every group convolution divides evenly.
    """
    if groups not in SHUFFLENET_V1_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(SHUFFLENET_V1_CHANNELS)}, got {groups}")
    if len(stage_repeats) != 3:
        raise ValueError(f"stage_repeats must give 3 stages, got {stage_repeats}")
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = make_divisible(stem_channels * width, divisor=groups)
    layers["stem"] = _stem(grid, task.input_shape[0], channels)
    for stage, (c, repeats) in enumerate(zip(SHUFFLENET_V1_CHANNELS[groups], stage_repeats)):
        cout = make_divisible(c * width, divisor=4 * groups)
        units = []
        for i in range(repeats):
            stride = grid.stride(2) if i == 0 else 1
            # the first pointwise layer of the network sees the stem and is not grouped
            first_groups = 1 if stage == 0 and i == 0 else groups
            units.append(ShuffleV1Unit(grid, channels, cout, groups, stride, first_groups))
            channels = cout
        layers[f"stage{stage + 2}"] = nn.Sequential(*units)
    layers["head"] = ClassifierHead(grid, channels, task.num_classes)
    return nn.Sequential(layers)


class ShuffleV2Unit(nn.Module):
    """Channel split, one branch of 1x1, 3x3 depthwise, 1x1; concatenation; channel shuffle.

    With stride 2 both halves see the whole input and the left branch downsamples it. With
    ``residual``, a split unit's branch adds its input back (``b + right(b)``).
    """

    def __init__(
        self, grid: FeatureMap, cin: int, cout: int, stride, residual: bool = False
    ) -> None:
        super().__init__()
        self.split = stride == 1 and cin == cout
        self.residual = residual and self.split
        half = cout // 2
        branch_in = cin // 2 if self.split else cin
        if not self.split:
            self.left = nn.Sequential(
                grid.conv_bn(cin, cin, 3, stride, groups=cin),
                grid.conv_bn(cin, half, 1, act=nn.ReLU(inplace=True)),
            )
        self.right = nn.Sequential(
            grid.conv_bn(branch_in, half, 1, act=nn.ReLU(inplace=True)),
            grid.conv_bn(half, half, 3, stride, groups=half),
            grid.conv_bn(half, half, 1, act=nn.ReLU(inplace=True)),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        if self.split:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, b + self.right(b) if self.residual else self.right(b)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.shuffle(out)


@register_model("shufflenet_v2")
def shufflenet_v2(
    task: Task,
    width: float = 1.0,
    stage_repeats: Sequence[int] = (4, 8, 4),
    stem_channels: int = 24,
    last_channels: int | None = None,
    residual: bool = False,
) -> nn.Module:
    """ShuffleNet V2; the paper's widths 0.5, 1, 1.5, 2 take its Table 5 channels, others
    scale the 1x channels (rounded to even numbers). ``last_channels`` defaults to conv5's.
    ``residual=True`` gives every split unit's branch an identity shortcut (see
    :func:`shufflenet_residual`)."""
    if len(stage_repeats) != 3:
        raise ValueError(f"stage_repeats must give 3 stages, got {stage_repeats}")
    if width in SHUFFLENET_V2_CHANNELS:
        *stages, conv5 = SHUFFLENET_V2_CHANNELS[width]
    else:
        stages = [make_divisible(c * width, divisor=2) for c in SHUFFLENET_V2_CHANNELS[1.0][:3]]
        conv5 = make_divisible(1024 * width, divisor=8)
    conv5 = conv5 if last_channels is None else last_channels
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = stem_channels
    layers["stem"] = _stem(grid, task.input_shape[0], channels)
    for stage, (cout, repeats) in enumerate(zip(stages, stage_repeats)):
        units = []
        for i in range(repeats):
            stride = grid.stride(2) if i == 0 else 1
            units.append(ShuffleV2Unit(grid, channels, cout, stride, residual))
            channels = cout
        layers[f"stage{stage + 2}"] = nn.Sequential(*units)
    layers["conv5"] = grid.conv_bn(channels, conv5, 1, act=nn.ReLU(inplace=True))
    layers["head"] = ClassifierHead(grid, conv5, task.num_classes)
    return nn.Sequential(layers)


@register_model("shufflenet_residual")
def shufflenet_residual(task: Task, width: float = 1.0, **kwargs) -> nn.Module:
    """Shuffle units strengthened by residual structure, after Li, Li & Liu 2020 (ICIP,
    "Channel shuffle reconstruction network"): ShuffleNet V2 whose split units add the
    processed half's input back to the branch's output before the concatenation and
    shuffle, so that half learns a residual; downsampling units are V2's. Takes
    :func:`shufflenet_v2`'s arguments."""
    return shufflenet_v2(task, width, residual=True, **kwargs)
