"""MobileNet V3: inverted residuals with squeeze-excite and hard-swish, blocks found by
platform-aware NAS and NetAdapt (Howard et al. 2019, arXiv 1905.02244)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..data.task import Task
from .layers import ConvHead, FeatureMap, InvertedResidual, SqueezeExcite, check_cfg, make_divisible
from .registry import register_model

# (kernel, expansion channels, output channels, squeeze-excite, hard-swish, stride):
# Tables 1 and 2 of the paper.
LARGE = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)
SMALL = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)
LAYOUTS = {"large": (LARGE, 960, 1280), "small": (SMALL, 576, 1024)}


def _act(hard_swish: bool):
    return nn.Hardswish if hard_swish else lambda: nn.ReLU(inplace=True)


class MobileNetV3(nn.Sequential):
    """Stem, bneck blocks (inverted residuals, squeeze-excite squeezed to a quarter of the
    expanded width and rounded to 8), a 1x1 expansion, then the pooled head: the paper's
    two 1x1 convolutions without BatchNorm after the pool (the last one a Linear here)."""


@register_model("mobilenet_v3")
def mobilenet_v3(
    task: Task,
    layout: str = "small",
    width: float = 1.0,
    resolution: float = 1.0,
    cfg: Sequence[tuple[int, int, int, bool, bool, int]] | None = None,
    stem_channels: int = 16,
    last_channels: int | None = None,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNet V3-Small or -Large (``layout``), with a width multiplier on every layer but
    the stem (channels rounded to multiples of 8, as in the reference) and a resolution
    multiplier. ``last_channels`` is the hidden width of the head (default: 1024 small, 1280
    large, times ``width``). ``cfg`` replaces the layout's blocks: (kernel, expansion
    channels, output channels, squeeze-excite, hard-swish, stride) each."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    blocks, expand, head = LAYOUTS[layout]
    blocks = (
        blocks
        if cfg is None
        else check_cfg("mobilenet_v3", cfg, ("k", "exp", "c", "se", "hs", "s"))
    )
    grid = FeatureMap(task.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if resize := grid.resize(resolution):
        layers["resize"] = resize
    channels = make_divisible(stem_channels)
    layers["stem"] = grid.conv_bn(
        task.input_shape[0], channels, 3, grid.stem_stride(), act=nn.Hardswish()
    )
    for i, (kernel, mid, cout, se, hs, stride) in enumerate(blocks, 1):
        mid, cout = make_divisible(mid * width), make_divisible(cout * width)
        gate = SqueezeExcite(grid, mid, make_divisible(mid / 4)) if se else None
        layers[f"block{i}"] = InvertedResidual(  # the paper's "bneck"
            grid, channels, mid, cout, kernel, grid.stride(stride), _act(hs), gate
        )
        channels = cout
    last = make_divisible(expand * width)
    layers["last"] = grid.conv_bn(channels, last, 1, act=nn.Hardswish())
    hidden = make_divisible(head * width) if last_channels is None else last_channels
    layers["head"] = ConvHead(grid, last, hidden, task.num_classes, dropout, nn.Hardswish())
    return MobileNetV3(layers)
