"""MobileNet V2: inverted residuals, linear bottlenecks (Sandler et al. 2018, arXiv 1801.04381)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..data.task import Task
from .layers import ClassifierHead, FeatureMap, InvertedResidual, check_cfg, make_divisible
from .registry import register_model

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
MOBILENET_V2_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Sequential):
    """Stem, inverted residual blocks, a 1x1 expansion to ``last_channels``, classifier."""


@register_model("mobilenet_v2")
def mobilenet_v2(
    task: Task,
    width: float = 1.0,
    resolution: float = 1.0,
    cfg: Sequence[tuple[int, int, int, int]] = MOBILENET_V2_CFG,
    stem_channels: int = 32,
    last_channels: int = 1280,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNet V2 with a width multiplier (channels rounded to multiples of 8, as in the
    reference) and a resolution multiplier; the last layer is not thinned below
    ``last_channels`` for width < 1, as in the paper."""
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if resize := grid.resize(resolution):
        layers["resize"] = resize
    channels = make_divisible(stem_channels * width)
    layers["stem"] = grid.conv_bn(
        task.input_shape[0], channels, 3, grid.stem_stride(), act=nn.ReLU6(inplace=True)
    )
    index = 0
    cfg = check_cfg("mobilenet_v2", cfg, ("t", "c", "n", "s"))
    for t, c, n, s in cfg:
        cout = make_divisible(c * width)
        for i in range(n):
            index += 1
            stride = grid.stride(s) if i == 0 else 1
            block = InvertedResidual(grid, channels, channels * t, cout, 3, stride)
            layers[f"block{index}"] = block
            channels = cout
    last = make_divisible(last_channels * max(1.0, width))
    layers["last"] = grid.conv_bn(channels, last, 1, act=nn.ReLU6(inplace=True))
    layers["head"] = ClassifierHead(grid, last, task.num_classes, dropout)
    return MobileNetV2(layers)
