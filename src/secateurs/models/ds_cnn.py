"""DS-CNN, the keyword-spotting model of MLPerf Tiny (Zhang et al. 2017, arXiv 1711.07128;
Banbury et al. 2021, arXiv 2106.07597)."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from ..data.task import Task
from .layers import ClassifierHead, FeatureMap, make_divisible
from .mobilenet_v1 import DepthwiseSeparable
from .registry import register_model


def _same_padding(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one dimension: (before, after)."""
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


@register_model("ds_cnn")
def ds_cnn(
    task: Task,
    width: float = 1.0,
    channels: int = 64,
    blocks: int = 4,
    stem_kernel: tuple[int, int] = (10, 4),
    dropout: float = 0.4,
) -> nn.Module:
    """A (10, 4) stride-2 convolution with 'same' padding, ``blocks`` depthwise separable
    blocks of ``channels`` maps, global average pooling and a classifier.

    On 49x10 MFCCs this is the MLPerf Tiny reference shape. Kernels larger than a tiny input
    are clipped to it; 1-D signals use the first kernel size.
    """
    grid = FeatureMap(task.input_shape)
    kernel = tuple(min(k, n) for k, n in zip(stem_kernel[: grid.nd], grid.size))
    sizes = list(grid.size)
    stride = grid.stride(2)
    strides = stride if isinstance(stride, tuple) else (stride,) * grid.nd
    padding = [_same_padding(n, k, s) for n, k, s in zip(sizes, kernel, strides)]
    width_channels = make_divisible(channels * width, divisor=8)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    flat = [p for pair in reversed(padding) for p in pair]  # F.pad order: last dim first
    if any(flat):
        layers["pad"] = grid.pad(flat)
    stem = grid.Conv(task.input_shape[0], width_channels, kernel, strides, bias=False)
    layers["stem"] = nn.Sequential(stem, grid.bn(width_channels), nn.ReLU(inplace=True))
    for i in range(blocks):
        layers[f"block{i + 1}"] = DepthwiseSeparable(grid, width_channels, width_channels, 1)
    layers["head"] = ClassifierHead(grid, width_channels, task.num_classes, dropout)
    return nn.Sequential(layers)
