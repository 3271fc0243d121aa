"""Fully connected classifiers: a configurable MLP and LeNet-300-100."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

from torch import nn

from ..data.task import Task
from .registry import register_model


def _mlp(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten(1)]
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU(inplace=True)]
        in_features = h
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


@register_model("mlp")
def mlp(task: Task, width: float = 1.0, hidden: Sequence[int] = (128, 64)) -> nn.Module:
    """Flatten, then Linear+ReLU layers of ``hidden`` x ``width`` units, then a classifier."""
    bad = [h for h in hidden if isinstance(h, bool) or not isinstance(h, Integral) or h < 1]
    if bad:
        raise ValueError(
            f"mlp: hidden sizes must be whole numbers of at least 1, got {bad!r}"[:200]
        )
    widths = [max(1, round(h * width)) for h in hidden]
    return _mlp(math.prod(task.input_shape), widths, task.num_classes)


@register_model("lenet_300_100")
def lenet_300_100(task: Task, width: float = 1.0) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998), the fully connected net of Han et al. 2015's pruning."""
    return mlp(task, width=width, hidden=(300, 100))
