"""Quantization-aware training: ``prepare_qat`` -> ``sc.fit`` -> ``convert``.

The model is captured once and run through its QGraph with fake quantizers: weights per
output channel (BatchNorm folded in with its running statistics frozen), activations per
tensor at every point the int8 model requantizes. Rounding passes gradients straight
through (Bengio et al. 2013, arXiv 1308.3432; Jacob et al. 2018, arXiv 1712.05877).
Ranges follow an exponential moving average of what training sees, or, with ``lsq=True``,
the step sizes are learned (LSQ, Esser et al. 2020, arXiv 1902.08153). The model's own
parameters are the ones trained: ``QATModel.model`` is the model passed in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_float
from .executor import folded_weights, run_float
from .integer import weight_scale
from .observers import QParams, affine_qparams
from .ptq import QuantizedModel, build, calibrate, fixed_ranges
from .qgraph import QGraph


class ActivationQuantizer(nn.Module):
    """Fake-quantizes one activation (asymmetric, per tensor) with an EMA or learned range;
    a ``fixed`` one keeps ``params``, which the runtime's kernel requires (``fixed_ranges``)."""

    def __init__(self, params: QParams, momentum: float, lsq: bool, fixed: bool = False) -> None:
        super().__init__()
        self.qmin, self.qmax, self.momentum = params.qmin, params.qmax, momentum
        self.lsq, self.fixed = lsq and not fixed, params if fixed else None
        lo = params.scale * (params.qmin - params.zero_point)
        hi = params.scale * (params.qmax - params.zero_point)
        self.register_buffer("lo", torch.tensor(float(lo)))
        self.register_buffer("hi", torch.tensor(float(hi)))
        self.register_buffer("zero_point", torch.tensor([float(params.zero_point)]))
        self.scale = nn.Parameter(torch.tensor([float(params.scale)]), requires_grad=self.lsq)

    def qparams(self) -> QParams:
        if self.fixed is not None:
            return self.fixed
        if self.lsq:
            scale = max(float(self.scale.detach().abs()), 1e-12)
            return QParams(scale, int(self.zero_point[0]), self.qmin, self.qmax)
        return affine_qparams(float(self.lo), float(self.hi))

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        if self.lsq:
            grad = 1.0 / math.sqrt(x[0].numel() * self.qmax)  # LSQ's step-size gradient scale
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, self.scale, self.zero_point, self.qmin, self.qmax, grad
            )
        if self.training and update and self.fixed is None:
            with torch.no_grad():
                m = self.momentum
                self.lo.mul_(1 - m).add_(m * torch.clamp(x.min(), max=0.0))
                self.hi.mul_(1 - m).add_(m * torch.clamp(x.max(), min=0.0))
        p = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, p.scale, p.zero_point, p.qmin, p.qmax)


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight per output channel (symmetric, narrow range); with LSQ the
    per-channel step sizes are parameters, else they follow the weights' max magnitude."""

    def __init__(self, weight: torch.Tensor, bits: int, lsq: bool) -> None:
        super().__init__()
        self.bits, self.lsq = bits, lsq
        self.qmax = (1 << (bits - 1)) - 1
        self.scale = nn.Parameter(self.grid_scale(weight.detach()), requires_grad=lsq)

    def grid_scale(self, w: torch.Tensor) -> torch.Tensor:
        return weight_scale(w, self.bits).to(w.dtype)

    def current_scale(self, w: torch.Tensor) -> torch.Tensor:
        return self.scale.detach().abs().clamp_min(1e-12) if self.lsq else self.grid_scale(w)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        if self.lsq:
            grad = 1.0 / math.sqrt(w[0].numel() * self.qmax)
            return torch._fake_quantize_learnable_per_channel_affine(
                w, self.scale, zero.float(), 0, -self.qmax, self.qmax, grad
            )
        scale = self.grid_scale(w.detach()).float()
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)


class QATModel(nn.Module):
    """The model run through its int8 graph with fake quantizers; train it with ``sc.fit``."""

    def __init__(self, model, graph: QGraph, qparams, scheme, bits, momentum, lsq) -> None:
        super().__init__()
        self.model = model
        self.graph, self.scheme, self.bits = graph, scheme, bits
        self.ties = graph.ties()
        self.sources = graph.sources()
        self.rounded = {v for n in graph.nodes if n.kind == "avg_pool" for v in n.outputs}
        roots = sorted(set(self.ties.values()))
        fixed = fixed_ranges(graph)
        self.activations = nn.ModuleDict(
            {str(r): ActivationQuantizer(qparams[r], momentum, lsq, r in fixed) for r in roots}
        )
        self.weights = nn.ModuleDict(
            {
                str(i): WeightQuantizer(folded_weights(model, graph.nodes[i])[0], bits[i], lsq)
                for i in bits
            }
        )
        self._index = {id(n): i for i, n in enumerate(graph.nodes)}

    def _observe(self, v: int, t: torch.Tensor) -> torch.Tensor:
        if v in self.sources or v in self.rounded:
            return self.activations[str(self.ties[v])](t, update=v in self.sources)
        return t

    def _weight(self, node, w: torch.Tensor, b: torch.Tensor):
        """Fake-quantized weight, and the bias rounded to its int32 grid s_x * s_w."""
        quantizer = self.weights[str(self._index[id(node)])]
        x_scale = self.activations[str(self.ties[node.inputs[0]])].qparams().scale
        step = (x_scale * quantizer.current_scale(w.detach())).to(b.dtype)
        b_q = b + (torch.round(b / step) * step - b).detach()
        return quantizer(w), b_q

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        inputs = x[0] if len(x) == 1 else x
        return run_float(self.graph, self.model, inputs, observe=self._observe, weight=self._weight)


def prepare_qat(
    model: nn.Module,
    data,
    *,
    scheme: str = "int8",
    weight_bits: int | dict[str, int] | None = None,
    lsq: bool = False,
    calibration: str = "minmax",
    num_batches: int = 8,
    momentum: float = 0.01,
) -> QATModel:
    """Wrap ``model`` for quantization-aware training; ranges start from a PTQ calibration
    on ``data`` (``calibration``, ``num_batches`` and ``scheme``/``weight_bits`` as in
    ``quantize``). Train the result with ``sc.fit``, then call :func:`convert`. The ranges
    move as exponential averages (``momentum``), or are learned with ``lsq=True`` (LSQ,
    Esser et al. 2020, arXiv 1902.08153)."""
    momentum = check_float("momentum", momentum, minimum=0.0, maximum=1.0)
    graph, scheme_obj, bits, qparams = calibrate(
        model, data, scheme, calibration, num_batches, weight_bits
    )
    return QATModel(model, graph, qparams, scheme_obj, bits, momentum, bool(lsq))


def convert(qat: QATModel) -> QuantizedModel:
    """The int8 model whose ranges and weights QAT trained in ``qat`` (a QATModel)."""
    if not isinstance(qat, QATModel):
        raise TypeError(f"convert takes the QATModel from prepare_qat, got {type(qat).__name__}")
    roots = {int(r): q.qparams() for r, q in qat.activations.items()}
    qparams = {v: roots[r] for v, r in qat.ties.items()}
    scales = {}
    for i, quantizer in qat.weights.items():
        w = folded_weights(qat.model, qat.graph.nodes[int(i)])[0]
        scales[int(i)] = quantizer.current_scale(w.detach()).double()
    was_training = qat.model.training
    qat.model.eval()
    try:
        with torch.no_grad():
            return build(qat.graph, qat.model, qparams, qat.scheme, qat.bits, scales)
    finally:
        qat.model.train(was_training)
