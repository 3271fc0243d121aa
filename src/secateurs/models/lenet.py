"""LeNet-5 (LeCun et al. 1998), for 1-D signals and 2-D images."""

from __future__ import annotations

import math

from torch import nn

from ..data.task import Task
from .layers import FeatureMap
from .registry import register_model


@register_model("lenet5")
def lenet5(task: Task, width: float = 1.0) -> nn.Module:
    """Two 5-wide convolutions with pooling, then 120-84-classes fully connected layers.

    Inputs smaller than the original 32x32 are padded by 2 in each convolution (the usual
    28x28 MNIST variant) and pooled only while the map stays at least 2 long.
    """
    grid = FeatureMap(task.input_shape)
    c1, c2 = max(1, round(6 * width)), max(1, round(16 * width))
    f1, f2 = max(1, round(120 * width)), max(1, round(84 * width))
    pad = 0 if min(grid.size) >= 32 else 2
    layers: list[nn.Module] = []
    cin = task.input_shape[0]
    for cout in (c1, c2):
        layers += [grid.Conv(cin, cout, 5, padding=pad), nn.ReLU(inplace=True)]
        grid.size = [n + 2 * pad - 4 for n in grid.size]
        if min(grid.size) < 1:
            raise ValueError(f"lenet5 needs inputs of at least 5 per side, got {task.input_shape}")
        s = grid.stride(2)
        if s != 1:  # the pooling window is the stride; ceil_mode keeps a tail of odd length
            layers.append(grid.MaxPool(s, s, ceil_mode=True))
        cin = cout
    features = c2 * math.prod(grid.size)
    layers += [
        nn.Flatten(1),
        nn.Linear(features, f1),
        nn.ReLU(inplace=True),
        nn.Linear(f1, f2),
        nn.ReLU(inplace=True),
        nn.Linear(f2, task.num_classes),
    ]
    return nn.Sequential(*layers)
