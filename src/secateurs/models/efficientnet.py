"""EfficientNet: MBConv blocks scaled in depth, width and resolution by one coefficient
(Tan & Le 2019, arXiv 1905.11946), and EfficientNet-Lite, its variant for integer
accelerators and microcontrollers (no squeeze-excite, ReLU6, stem and head not scaled)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from .._checks import check_float
from ..data.task import Task
from .layers import (
    ClassifierHead,
    FeatureMap,
    InvertedResidual,
    SqueezeExcite,
    check_cfg,
    make_divisible,
)
from .registry import register_model

# (expansion, kernel, first stride, output channels, repeats): EfficientNet-B0, Table 1.
B0 = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution: alpha * beta^2 * gamma^2 ~ 2


def compound_scaling(phi: float) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers for compound coefficient ``phi``: alpha^phi,
    beta^phi, gamma^phi. The FLOPs of a convolutional network grow with depth x width^2 x
    resolution^2, so about 2^phi."""
    return ALPHA**phi, BETA**phi, GAMMA**phi


class EfficientNet(nn.Sequential):
    """Stem, MBConv stages (inverted residuals; squeeze-excite squeezed to a quarter of the
    block's input width, swish inside, sigmoid gate), a 1x1 expansion, classifier."""


@register_model("efficientnet")
def efficientnet(
    task: Task,
    phi: float = 0,
    lite: bool = False,
    width: float = 1.0,
    depth: float = 1.0,
    resolution: float = 1.0,
    cfg: Sequence[tuple[int, int, int, int, int]] = B0,
    stem_channels: int = 32,
    last_channels: int = 1280,
    dropout: float = 0.2,
) -> nn.Module:
    """EfficientNet-B0 scaled by compound coefficient ``phi``: every stage's repeats times
    alpha^phi (rounded up) and every width times beta^phi (rounded to multiples of 8), on
    top of the ``width`` and ``depth`` multipliers. The third factor, resolution gamma^phi
    (``compound_scaling(phi)[2]``), belongs to the data: feed inputs that much larger;
    ``resolution`` (at most 1) resamples smaller ones inside the model, as in the other
    zoo models.

    ``lite=True`` builds EfficientNet-Lite: ReLU6 and no squeeze-excite (both quantize
    better), and ``phi`` does not scale the stem, the head or the repeats of the first and
    last stages (``width`` still does)."""
    phi = check_float("phi", phi, minimum=-4, maximum=8)
    d, w, _ = compound_scaling(phi)
    fixed_w = width if lite else w * width  # Lite's stem and head take no compound factor
    w, d = w * check_float("width", width, minimum=0, strict_minimum=True), d * depth
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if resize := grid.resize(resolution):
        layers["resize"] = resize
    channels = make_divisible(stem_channels * fixed_w)
    act = (lambda: nn.ReLU6(inplace=True)) if lite else nn.SiLU
    layers["stem"] = grid.conv_bn(task.input_shape[0], channels, 3, grid.stem_stride(), act=act())
    index = 0
    cfg = check_cfg("efficientnet", cfg, ("t", "k", "s", "c", "n"))
    for stage, (t, k, s, c, n) in enumerate(cfg):
        cout = make_divisible(c * w)
        fixed = lite and stage in (0, len(cfg) - 1)
        for i in range(n if fixed else math.ceil(n * d)):
            index += 1
            stride = grid.stride(s) if i == 0 else 1
            mid = channels * t
            gate = None  # squeezed to a quarter of the block's input width
            if not lite:
                gate = SqueezeExcite(grid, mid, max(1, channels // 4), nn.SiLU(), nn.Sigmoid())
            layers[f"block{index}"] = InvertedResidual(  # MBConv
                grid, channels, mid, cout, k, stride, act, gate
            )
            channels = cout
    last = make_divisible(last_channels * fixed_w)
    layers["last"] = grid.conv_bn(channels, last, 1, act=act())
    layers["head"] = ClassifierHead(grid, last, task.num_classes, dropout)
    return EfficientNet(layers)
