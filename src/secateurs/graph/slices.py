"""The weights behind each index of a module axis: their norms (what importance criteria
score) and zeroing them (soft pruning, verification), vectorized per axis."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .attention import projection_biases, projections
from .tracer import BATCHNORM, CONV, CONV_T, RNN, param_axis

PRODUCER_AXES = ("out", "embed", "heads", "hidden")
NORMS = (*BATCHNORM, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


def _detached(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


def _power(t: torch.Tensor, p: float, values) -> torch.Tensor:
    t = values(t).abs()
    return t if p == 1 else t.pow(p)


def _rows(t: torch.Tensor, dim: int, p: float, values) -> torch.Tensor:
    """p-th power sums of ``t`` over every dimension but ``dim``."""
    t = _power(t, p, values)
    return t.sum([d for d in range(t.dim()) if d != dim]) if t.dim() > 1 else t


def _conv_in(m: nn.Module, p: float, values) -> torch.Tensor:
    """Per input channel of a convolution with any groups."""
    groups = m.groups
    ipg, opg = m.in_channels // groups, m.out_channels // groups
    per = _power(m.weight, p, values).reshape(groups, opg, ipg, -1).sum((1, 3))
    return per.reshape(-1)  # groups x ipg, flattened: global input channel order


def rnn_gates(m: nn.Module) -> int:
    return {nn.LSTM: 4, nn.GRU: 3}.get(type(m), 1)


def rnn_cells(m: nn.Module):
    """(layer, direction, parameter-name suffix) of each cell of a recurrent layer, in the
    order of its "hidden" axis."""
    for layer in range(m.num_layers):
        for d in range(2 if m.bidirectional else 1):
            yield layer, d, f"l{layer}" + ("_reverse" if d else "")


def _rnn_power_sums(m: nn.Module, axis: str, p: float, values) -> torch.Tensor:
    gates, h = rnn_gates(m), m.hidden_size
    if axis == "in":
        return sum(
            _rows(getattr(m, f"weight_ih_{sfx}"), 1, p, values)
            for layer, _, sfx in rnn_cells(m)
            if layer == 0
        )
    sums = []
    for _, _, sfx in rnn_cells(m):
        per_unit = 0
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            t = getattr(m, f"{name}_{sfx}", None)
            if t is not None:
                per_unit = per_unit + _rows(t, 0, p, values).reshape(gates, h).sum(0)
        sums.append(per_unit)
    return torch.cat(sums)


def axis_power_sums(module: nn.Module, axis: str, p: float, values=None) -> torch.Tensor:
    """For each index of ``axis``, the sum of |v(w)|^p over the weights w it covers, where
    ``values`` maps a weight tensor to what is measured (default: the detached weight;
    ``lambda w: w`` keeps gradients, ``lambda w: w * grads[w]`` gives Taylor terms)."""
    values = values or _detached
    if axis.startswith("param:"):
        t, dim = param_axis(module, axis)
        return _rows(t, dim, p, values).reshape(-1)
    if isinstance(module, RNN):
        return _rnn_power_sums(module, axis, p, values)
    sums = []
    if isinstance(module, CONV):
        if axis == "out":
            sums.append(_rows(module.weight, 0, p, values))
        else:
            sums.append(_conv_in(module, p, values))
    elif isinstance(module, CONV_T):
        sums.append(_rows(module.weight, 1 if axis == "out" else 0, p, values))
    elif isinstance(module, nn.Linear):
        sums.append(_rows(module.weight, 0 if axis == "out" else 1, p, values))
    elif isinstance(module, NORMS):
        sums.append(_power(module.weight, p, values))
    elif isinstance(module, nn.MultiheadAttention) and axis == "heads":
        sums.extend(_rows(w, 0, p, values) for w in projections(module))
    elif isinstance(module, nn.MultiheadAttention):
        sums.append(_rows(module.out_proj.weight, 0, p, values))
    if axis == "out" and getattr(module, "bias", None) is not None:
        sums.append(_power(module.bias, p, values))
    return sum(sums)


def axis_norms(module: nn.Module, axis: str, p: float, values=None) -> np.ndarray:
    """The p-norm of the weights behind each index of ``axis``."""
    sums = axis_power_sums(module, axis, p, values).detach()
    return (sums if p == 1 else sums.pow(1.0 / p)).double().numpy()


@torch.no_grad()
def zero_axis(module: nn.Module, axis: str, idx: torch.Tensor) -> None:
    """Zero every weight behind the indices ``idx`` of ``axis``, keeping all shapes."""
    if axis.startswith("param:"):
        t, dim = param_axis(module, axis)
        t.index_fill_(dim, idx, 0)
    elif isinstance(module, RNN):
        _zero_rnn(module, axis, idx)
    elif isinstance(module, CONV):
        groups = module.groups
        ipg, opg = module.in_channels // groups, module.out_channels // groups
        if axis == "out":
            module.weight[idx] = 0
            if module.bias is not None:
                module.bias[idx] = 0
        else:
            w = module.weight.view(groups, opg, ipg, *module.weight.shape[2:])
            w[idx // ipg, :, idx % ipg] = 0
    elif isinstance(module, CONV_T):
        if axis == "out":
            module.weight[:, idx] = 0
            if module.bias is not None:
                module.bias[idx] = 0
        else:
            module.weight[idx] = 0
    elif isinstance(module, nn.Linear):
        if axis == "out":
            module.weight[idx] = 0
            if module.bias is not None:
                module.bias[idx] = 0
        else:
            module.weight[:, idx] = 0
    elif isinstance(module, NORMS):
        for t in (
            module.weight,
            getattr(module, "bias", None),
            getattr(module, "running_mean", None),
        ):
            if t is not None:
                t[idx] = 0
    elif isinstance(module, nn.MultiheadAttention):
        out = module.out_proj
        if axis == "heads":
            for w, b in zip(projections(module), projection_biases(module)):
                w[idx] = 0
                if b is not None:
                    b[idx] = 0
            out.weight[:, idx] = 0
        else:
            for w in projections(module):
                w[:, idx] = 0
            out.weight[idx] = 0
            if out.bias is not None:
                out.bias[idx] = 0


def _zero_rnn(m: nn.Module, axis: str, idx: torch.Tensor) -> None:
    """Input features: their columns in the first layer. Hidden units: their gate rows,
    their recurrent columns and the next layer's input columns."""
    gates, h = rnn_gates(m), m.hidden_size
    dirs = 2 if m.bidirectional else 1
    for layer, d, sfx in rnn_cells(m):
        w_ih, w_hh = getattr(m, f"weight_ih_{sfx}"), getattr(m, f"weight_hh_{sfx}")
        if axis == "in":
            if layer == 0:
                w_ih[:, idx] = 0
            continue
        cell = layer * dirs + d
        units = idx[(idx >= cell * h) & (idx < (cell + 1) * h)] - cell * h
        rows = (units[None] + h * torch.arange(gates)[:, None]).reshape(-1)
        for t in (
            w_ih,
            w_hh,
            getattr(m, f"bias_ih_{sfx}", None),
            getattr(m, f"bias_hh_{sfx}", None),
        ):
            if t is not None:
                t[rows] = 0
        w_hh[:, units] = 0
        below = idx[(idx >= (layer - 1) * dirs * h) & (idx < layer * dirs * h)]
        if layer > 0:
            w_ih[:, below - (layer - 1) * dirs * h] = 0
