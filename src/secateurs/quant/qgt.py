"""Quantization-guided training and the per-layer sensitivity that exposes bottlenecks.

QGT (Ghamari et al. 2021, arXiv 2103.06231) trains the float model with a regularizer that
pulls every weight toward its nearest level of a low-bit grid, so that quantizing it later
costs little. :func:`sensitivity` quantizes one layer at a time and reports the accuracy
each costs; :func:`mixed_precision` spends a flash budget where it hurts least.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._checks import check_float, check_int
from ..data import Task
from ..train import LossTerm, Step, evaluate
from .integer import quantize_weights, round_half_away, weight_scale
from .ptq import WEIGHT_BITS

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)]


def grid_distance(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Mean squared distance of each weight to its nearest grid level, in grid steps."""
    qmax = (1 << (bits - 1)) - 1
    step = weight_scale(w.detach(), bits).to(w.dtype).reshape(-1, *([1] * (w.dim() - 1)))
    levels = torch.clamp(round_half_away(w.detach() / step), -qmax, qmax)
    return ((w / step - levels) ** 2).mean()


class QuantizationGuided(LossTerm):
    """``weight · Σ_layers mean((w/s - round(w/s))²)``: QGT's pull toward a ``bits``-bit grid.

    The grid of each layer is the one :func:`sc.quant.quantize` will use (per output
    channel, symmetric); distances are in grid steps, so every layer counts alike whatever
    its scale. ``distances(model)`` reports each layer's term, the layers that resist the
    grid (Ghamari et al. 2021, arXiv 2103.06231).
    """

    name = "qgt"

    def __init__(self, bits: int = 4, weight: float = 1.0) -> None:
        if bits not in WEIGHT_BITS:
            raise ValueError(f"bits must be one of {WEIGHT_BITS}, got {bits!r}")
        self.bits = bits
        self.weight = check_float("weight", weight, minimum=0.0)

    def __call__(self, step: Step) -> torch.Tensor:
        terms = [grid_distance(m.weight, self.bits) for _, m in _layers(step.model)]
        if not terms:
            raise ValueError("QuantizationGuided: the model has no convolution or linear layer")
        return self.weight * torch.stack(terms).sum()

    def distances(self, model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {n: float(grid_distance(m.weight, self.bits)) for n, m in _layers(model)}


@dataclass
class LayerSensitivity:
    layer: str
    params: int
    bits: int
    accuracy: float
    drop: float  # baseline accuracy minus accuracy with only this layer quantized


@dataclass
class SensitivityReport:
    baseline: float
    rows: list[LayerSensitivity]

    def bottlenecks(self, k: int = 3) -> list[LayerSensitivity]:
        """The ``k`` layers whose quantization alone costs the most accuracy."""
        return sorted(self.rows, key=lambda r: -r.drop)[:k]

    def __str__(self) -> str:
        lines = [f"baseline accuracy {self.baseline:.4f}", "layer  params  bits  accuracy  drop"]
        lines += [
            f"{r.layer}  {r.params}  {r.bits}  {r.accuracy:.4f}  {r.drop:+.4f}" for r in self.rows
        ]
        return "\n".join(lines)


def _set_weight(module: nn.Module, value: torch.Tensor) -> None:
    if parametrize.is_parametrized(module, "weight"):
        target = module.parametrizations.weight.original
    else:
        target = module.weight
    with torch.no_grad():
        target.copy_(value.to(target.dtype))


def sensitivity(model: nn.Module, task: Task, *, bits: int = 4, split: str = "val"):
    """Accuracy of ``model`` on ``split`` of ``task`` when only one layer's weights are
    quantized to ``bits`` (per output channel), for each layer; everything else stays float
    (QGT's bottleneck probe)."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"bits must be one of {WEIGHT_BITS}, got {bits!r}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a secateurs Task, got {type(task).__name__}")
    baseline = evaluate(model, task, split=split)
    rows = []
    for name, module in _layers(model):
        probe = copy.deepcopy(model)
        layer = probe.get_submodule(name)
        q, scale = quantize_weights(layer.weight, bits)
        _set_weight(layer, q.double() * scale.reshape(-1, *([1] * (q.dim() - 1))))
        accuracy = evaluate(probe, task, split=split)
        drop = baseline - accuracy
        rows.append(LayerSensitivity(name, module.weight.numel(), bits, accuracy, drop))
    return SensitivityReport(baseline, rows)


def mixed_precision(
    model: nn.Module,
    task: Task,
    budget_bytes: int,
    *,
    bits: tuple[int, ...] = (8, 4, 2),
    split: str = "val",
) -> dict[str, int]:
    """Weight bits per layer of ``model`` (each one of ``bits``) so that the packed weights
    fit ``budget_bytes``, lowering first the layers whose sensitivity (accuracy on ``split``
    of ``task``) costs the least accuracy per byte saved (greedy).

    Returns ``{module path: bits}`` for ``sc.quant.quantize(..., weight_bits=...)``.
    """
    budget_bytes = check_int("budget_bytes", budget_bytes, minimum=1)
    choices = sorted(set(bits), reverse=True)
    for b in choices:
        if b not in WEIGHT_BITS:
            raise ValueError(f"bits must be drawn from {WEIGHT_BITS}, got {bits!r}")
    sizes = {name: m.weight.numel() for name, m in _layers(model)}
    plan = dict.fromkeys(sizes, choices[0])
    size = lambda p: sum(math.ceil(sizes[n] * b / 8) for n, b in p.items())  # noqa: E731
    smallest = size(dict.fromkeys(sizes, choices[-1]))
    if smallest > budget_bytes:
        raise ValueError(
            f"budget_bytes={budget_bytes} cannot be met: the weights take "
            f"{smallest} bytes even at {choices[-1]} bits; raise the budget or "
            f"prune first"
        )
    drops = {
        b: {r.layer: r.drop for r in sensitivity(model, task, bits=b, split=split).rows}
        for b in choices[1:]
    }
    while size(plan) > budget_bytes:
        best = None
        for name, b in plan.items():
            lower = [c for c in choices if c < b]
            if not lower:
                continue
            saved = math.ceil(sizes[name] * b / 8) - math.ceil(sizes[name] * lower[0] / 8)
            cost = max(drops[lower[0]][name], 0.0) + 1e-9
            key = (cost / max(saved, 1), -saved)
            if best is None or key < best[0]:
                best = (key, name, lower[0])
        plan[best[1]] = best[2]
    return plan
