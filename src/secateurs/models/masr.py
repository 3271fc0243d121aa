"""A classifier built from multi-branch aware modules with channel-shuffle pixel-wise
attention, after MASRN (Gao et al. 2023, Multimedia Systems 29(1)); the pixel-wise
attention is PAN's (Zhao et al. 2020, arXiv 2010.01073).

The paper's text was not reachable from here; what the module does is assumed from its
name and the review's description (several branches, channel shuffle across them, a
pixel-wise attention gating the shuffled features), and docs/models.md lists each
assumption.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..data.task import Task
from .layers import ChannelShuffle, ClassifierHead, FeatureMap, make_divisible
from .registry import register_model


class MultiBranchAware(nn.Module):
    """Branches of growing receptive field (a 1x1 convolution, then a depthwise k x k for
    k in ``kernels`` past the first), concatenated and shuffled across branches; a
    pixel-wise attention (1x1 convolution, sigmoid: one gate per channel and position)
    multiplies the shuffled maps; a 1x1 convolution fuses them back to the input width,
    added to the input."""

    def __init__(self, grid: FeatureMap, channels: int, kernels: Sequence[int] = (1, 3, 5)):
        super().__init__()
        mid = make_divisible(channels / len(kernels), divisor=4)
        self.branches = nn.ModuleList(
            nn.Sequential(
                grid.conv_bn(channels, mid, 1, act=nn.ReLU(inplace=True)),
                *([grid.conv_bn(mid, mid, k, groups=mid)] if k > 1 else []),
            )
            for k in kernels
        )
        width = mid * len(kernels)
        self.shuffle = ChannelShuffle(len(kernels))
        self.attention = nn.Sequential(grid.conv_bn(width, width, 1), nn.Sigmoid())
        self.fuse = grid.conv_bn(width, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.shuffle(torch.cat([b(x) for b in self.branches], dim=1))
        return self.act(x + self.fuse(y * self.attention(y)))


class MASRClassifier(nn.Sequential):
    """Stem, stages of multi-branch aware modules joined by strided 3x3 convolutions,
    classifier."""


@register_model("masr_classifier")
def masr_classifier(
    task: Task,
    width: float = 1.0,
    channels: Sequence[int] = (16, 32, 64),
    blocks: Sequence[int] = (1, 1, 1),
    kernels: Sequence[int] = (1, 3, 5),
    dropout: float = 0.0,
) -> nn.Module:
    """A 3x3 stem at ``channels[0]``, then per stage ``blocks[i]`` multi-branch aware
    modules; a 3x3 convolution with stride 2 (where the input allows) widens to the next
    stage. Channels times ``width``, rounded to multiples of 8."""
    if len(channels) != len(blocks):
        raise ValueError(f"channels and blocks give one entry per stage; got {channels}, {blocks}")
    grid = FeatureMap(task.input_shape)
    widths = [make_divisible(c * width) for c in channels]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = grid.conv_bn(
        task.input_shape[0], widths[0], 3, grid.stem_stride(), act=nn.ReLU(inplace=True)
    )
    for stage, (c, n) in enumerate(zip(widths, blocks), 1):
        if stage > 1:
            layers[f"down{stage}"] = grid.conv_bn(
                widths[stage - 2], c, 3, grid.stride(2), act=nn.ReLU(inplace=True)
            )
        for i in range(1, n + 1):
            layers[f"stage{stage}_{i}"] = MultiBranchAware(grid, c, kernels)
    layers["head"] = ClassifierHead(grid, widths[-1], task.num_classes, dropout)
    return MASRClassifier(layers)
