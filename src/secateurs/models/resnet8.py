"""ResNet-8, the image-classification model of MLPerf Tiny (He et al. 2016, arXiv 1512.03385;
Banbury et al. 2021, arXiv 2106.07597)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..data.task import Task
from .layers import ClassifierHead, FeatureMap
from .registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; a 1x1 convolution on the shortcut when the shape
    changes, as in the MLPerf Tiny reference."""

    def __init__(self, grid: FeatureMap, cin: int, cout: int, stride) -> None:
        super().__init__()
        self.conv1 = grid.conv_bn(cin, cout, 3, stride, act=nn.ReLU(inplace=True))
        self.conv2 = grid.conv_bn(cout, cout, 3)
        self.shortcut = (
            grid.conv(cin, cout, 1, stride, bias=True)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


@register_model("resnet8")
def resnet8(task: Task, width: float = 1.0) -> nn.Module:
    """A 3x3 stem and three residual stacks of 16, 32, 64 maps (strides 1, 2, 2) times width."""
    grid = FeatureMap(task.input_shape)
    c = [max(1, round(n * width)) for n in (16, 16, 32, 64)]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = grid.conv_bn(task.input_shape[0], c[0], 3, act=nn.ReLU(inplace=True))
    for i, stride in enumerate((1, 2, 2)):
        layers[f"stack{i + 1}"] = BasicBlock(grid, c[i], c[i + 1], grid.stride(stride))
    layers["head"] = ClassifierHead(grid, c[-1], task.num_classes)
    return nn.Sequential(layers)
