"""Extreme learning machine with an elastic-net output solve (Huang et al. 2006; Luo, Chang &
Ban 2016, "Regression and classification using extreme learning machine based on L1-norm and
L2-norm", Neurocomputing 174)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._checks import check_float
from ..data.task import Task
from .registry import register_model


class ExtremeLearningMachine(nn.Module):
    """A fixed random hidden layer and a linear output layer solved in closed form.

    The hidden weights never train (``requires_grad=False``); :meth:`fit_closed_form` solves
    the output weights by elastic net: mean squared error to one-hot targets plus
    ``alpha·(l1_ratio·|β|₁ + (1 - l1_ratio)/2·|β|²)``. The L1 part makes the output sparse.
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.flatten = nn.Flatten(1)
        self.hidden = nn.Linear(in_features, hidden)
        self.act = nn.Sigmoid()
        self.output = nn.Linear(hidden, num_classes)
        generator = torch.Generator().manual_seed(seed)
        bound = math.sqrt(3.0 / in_features)  # unit-variance pre-activations for unit inputs
        with torch.no_grad():
            self.hidden.weight.uniform_(-bound, bound, generator=generator)
            self.hidden.bias.uniform_(-1.0, 1.0, generator=generator)
        self.hidden.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.hidden(self.flatten(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(x))

    @torch.no_grad()
    def fit_closed_form(self, task: Task, alpha: float = 1e-3, l1_ratio: float = 0.5) -> None:
        """Solve the output layer on ``task.train`` by elastic net (scikit-learn's solver)."""
        from sklearn.linear_model import ElasticNet

        alpha = check_float("alpha", alpha, minimum=0.0, strict_minimum=True)
        l1_ratio = check_float("l1_ratio", l1_ratio, minimum=0.0, maximum=1.0)
        x, y = (torch.stack(t) for t in zip(*[task.train[i] for i in range(len(task.train))]))
        h = self.features(x).double().numpy()
        targets = np.eye(task.num_classes)[y.numpy()]
        solver = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, max_iter=5000, tol=1e-5)
        solver.fit(h, targets)
        self.output.weight.copy_(torch.from_numpy(solver.coef_))
        self.output.bias.copy_(torch.from_numpy(solver.intercept_))


@register_model("elm")
def elm(task: Task, width: float = 1.0, hidden: int = 512, seed: int = 0) -> nn.Module:
    """An extreme learning machine with ``hidden`` x ``width`` random sigmoid units."""
    units = max(1, round(hidden * width))
    return ExtremeLearningMachine(math.prod(task.input_shape), units, task.num_classes, seed)
