"""Sparsity regularizers: LossTerms for ``sc.fit`` that push weights, or whole channel groups,
toward zero before pruning."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_float
from ..graph import DependencyGraph
from ..graph.slices import axis_power_sums
from ..train import LossTerm, Step

TARGETS = ("weights", "bn", "all")


def _targets(model: nn.Module, target: str) -> list[torch.Tensor]:
    """Convolution and linear weights, BatchNorm scales (network slimming), or everything."""
    if target == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if target == "bn":
        return [
            m.weight
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
        ]
    layers = (nn.modules.conv._ConvNd, nn.Linear)
    return [m.weight for m in model.modules() if isinstance(m, layers) and m.weight.requires_grad]


class _Penalty(LossTerm):
    def __init__(self, weight: float, target: str) -> None:
        self.weight = check_float("weight", weight, minimum=0.0)
        self.target = check_choice("target", target, TARGETS)
        self._params: list[torch.Tensor] = []

    def setup(self, model: nn.Module, task, teacher=None) -> None:
        self._params = _targets(model, self.target)
        if not self._params:
            raise ValueError(f"{type(self).__name__}: the model has no {self.target} to regularize")

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, step: Step) -> torch.Tensor:
        if not self._params:
            self.setup(step.model, None)
        return self.weight * sum(self.penalty(w) for w in self._params)


class L1(_Penalty):
    """weight · Σ|w| (lasso); on BatchNorm scales (``target="bn"``) it is network slimming
    (Liu et al. 2017, arXiv 1708.06519)."""

    name = "l1"

    def __init__(self, weight: float = 1e-4, target: str = "weights") -> None:
        super().__init__(weight, target)

    def penalty(self, w):
        return w.abs().sum()


class L2(_Penalty):
    """weight · Σw² (weight decay as a loss term)."""

    name = "l2"

    def __init__(self, weight: float = 1e-4, target: str = "weights") -> None:
        super().__init__(weight, target)

    def penalty(self, w):
        return w.pow(2).sum()


class ElasticNet(_Penalty):
    """weight · (l1_ratio·Σ|w| + (1 - l1_ratio)/2·Σw²) (Zou & Hastie 2005; for extreme
    learning machines, Luo, Chang & Ban 2016, whose solver the ``elm`` model uses)."""

    name = "elastic_net"

    def __init__(self, weight: float = 1e-4, l1_ratio: float = 0.5, target: str = "weights"):
        super().__init__(weight, target)
        self.l1_ratio = check_float("l1_ratio", l1_ratio, minimum=0.0, maximum=1.0)

    def penalty(self, w):
        return self.l1_ratio * w.abs().sum() + (1 - self.l1_ratio) / 2 * w.pow(2).sum()


class SmoothL12(_Penalty):
    """Smoothing L1/2 regularization (Wu et al. 2014, "Batch gradient method with smoothing
    L1/2 regularization for training of feedforward neural networks", Neural Networks 50):
    Σ|w|^½, with |w| replaced near zero (|w| < a) by the polynomial
    -w⁴/(8a³) + 3w²/(4a) + 3a/8, so the gradient stays finite."""

    name = "smooth_l12"

    def __init__(self, weight: float = 1e-4, a: float = 0.05, target: str = "weights") -> None:
        super().__init__(weight, target)
        self.a = check_float("a", a, minimum=0.0, strict_minimum=True)

    def penalty(self, w):
        a = self.a
        smooth = -(w**4) / (8 * a**3) + 3 * w**2 / (4 * a) + 3 * a / 8
        return torch.sqrt(torch.where(w.abs() >= a, w.abs(), smooth)).sum()


class GroupLasso(LossTerm):
    """weight · Σ over channels of the dependency graph of the L2 norm of all the weights of
    that channel (Yuan & Lin 2006; for channels, Wen et al. 2016, arXiv 1608.03665): whole
    channels, with their filters, BatchNorm entries and next-layer inputs, go to zero
    together, ready for ``channels(..., importance="l2", threshold=...)``."""

    name = "group_lasso"

    def __init__(self, example_inputs, weight: float = 1e-3, ignored=()) -> None:
        self.example_inputs = example_inputs
        self.weight = check_float("weight", weight, minimum=0.0)
        self.ignored = ignored
        self._graph: DependencyGraph | None = None

    def setup(self, model: nn.Module, task, teacher=None) -> None:
        self._graph = DependencyGraph(model, self.example_inputs, ignored=self.ignored)
        self._plan = []
        for g in self._graph.groups():
            members = []
            for m, member in enumerate(g.members):
                sel = g.member == m
                members.append(
                    (
                        self._graph.module(member.module),
                        member.axis,
                        torch.as_tensor(g.index[sel]),
                        torch.as_tensor(g.unit[sel]),
                    )
                )
            self._plan.append((g.channels, members))

    def __call__(self, step: Step) -> torch.Tensor:
        if self._graph is None:
            self.setup(step.model, None)
        total = 0.0
        for channels, members in self._plan:
            sums = None
            for module, axis, index, unit in members:
                per_index = axis_power_sums(module, axis, 2, values=lambda w: w)
                values = torch.zeros(channels, dtype=per_index.dtype).index_add(
                    0, unit, per_index[index]
                )
                sums = values if sums is None else sums + values
            total = total + torch.sqrt(sums + 1e-12).sum()
        return self.weight * total


class LinearRepresentability(LossTerm):
    """Pushes each channel of the given layers' outputs toward a linear combination of the
    other channels (the idea of Wang 2023's channel-correlation training before linear-
    redundancy pruning): the loss is the mean fraction of each channel's variance that a
    least-squares fit on the others leaves unexplained, 1/(P_cc·Σ_cc) with P = Σ⁻¹."""

    name = "linear_representability"

    def __init__(self, layers: list[str], weight: float = 0.1, eps: float = 1e-3) -> None:
        if not layers:
            raise ValueError("LinearRepresentability needs module paths in layers=[...]")
        self.layers = list(layers)
        self.weight = check_float("weight", weight, minimum=0.0)
        self.eps = eps
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = []

    def setup(self, model: nn.Module, task, teacher=None) -> None:
        modules = dict(model.named_modules())
        missing = [p for p in self.layers if p not in modules]
        if missing:
            raise ValueError(f"LinearRepresentability: the model has no modules {missing}")
        for path in self.layers:
            self._handles.append(
                modules[path].register_forward_hook(
                    lambda m, a, out, path=path: self._outputs.__setitem__(path, out)
                )
            )

    def teardown(self, model: nn.Module) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def unexplained(self, x: torch.Tensor) -> torch.Tensor:
        """Mean unexplained variance fraction of the channels of ``x`` (N, C, ...)."""
        rows = x.movedim(1, -1).reshape(-1, x.shape[1]) if x.dim() > 2 else x
        rows = rows - rows.mean(0)
        cov = rows.T @ rows / max(1, len(rows) - 1)
        cov = cov + self.eps * torch.eye(len(cov), dtype=cov.dtype)
        precision = torch.linalg.inv(cov)
        return (1.0 / (torch.diagonal(precision) * torch.diagonal(cov))).mean()

    def __call__(self, step: Step) -> torch.Tensor:
        return self.weight * sum(self.unexplained(self._outputs[p]) for p in self.layers)
