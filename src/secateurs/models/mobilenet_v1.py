"""MobileNet V1: depthwise separable convolutions (Howard et al. 2017, arXiv 1704.04861)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..data.task import Task
from .layers import ClassifierHead, FeatureMap, check_cfg
from .registry import register_model

# (output channels, stride) of the 13 depthwise separable layers of the paper's Table 1.
MOBILENET_V1_CFG = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class DepthwiseSeparable(nn.Module):
    """A 3x3 depthwise convolution then a 1x1 pointwise one, each with BatchNorm and ReLU.

    Costs D_K·D_K·M·D_F·D_F + M·N·D_F·D_F multiply-accumulates for M inputs, N outputs and
    a D_F x D_F output map (equation 5 of the paper).
    """

    def __init__(self, grid: FeatureMap, cin: int, cout: int, stride) -> None:
        super().__init__()
        self.depthwise = grid.conv_bn(cin, cin, 3, stride, groups=cin, act=nn.ReLU(inplace=True))
        self.pointwise = grid.conv_bn(cin, cout, 1, act=nn.ReLU(inplace=True))

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Sequential):
    """Stem convolution, depthwise separable layers, global pooling and a classifier."""


@register_model("mobilenet_v1")
def mobilenet_v1(
    task: Task,
    width: float = 1.0,
    resolution: float = 1.0,
    cfg: Sequence[tuple[int, int]] = MOBILENET_V1_CFG,
    stem_channels: int = 32,
    dropout: float = 0.0,
) -> nn.Module:
    """MobileNet V1 with width multiplier alpha (``width``) and resolution multiplier rho.

    ``resolution`` < 1 resamples the input to rho times its size first, cutting the MACs by
    about rho² as in the paper. Channels follow the reference rule max(8, int(c·alpha)).
    """
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if resize := grid.resize(resolution):
        layers["resize"] = resize
    channels = max(8, int(stem_channels * width))
    layers["stem"] = grid.conv_bn(
        task.input_shape[0], channels, 3, grid.stem_stride(), act=nn.ReLU(inplace=True)
    )
    cfg = check_cfg("mobilenet_v1", cfg, ("out channels", "stride"))
    for i, (cout, stride) in enumerate(cfg):
        cout = max(8, int(cout * width))
        layers[f"block{i + 1}"] = DepthwiseSeparable(grid, channels, cout, grid.stride(stride))
        channels = cout
    layers["head"] = ClassifierHead(grid, channels, task.num_classes, dropout)
    return MobileNetV1(layers)
