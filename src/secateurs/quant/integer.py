"""The integer reference: what every int8 kernel computes, element for element.

Each op follows TensorFlow Lite Micro's int8 reference kernels: accumulate
``(x - z_x) * w_q`` in int32, add the int32 bias, requantize per output channel with
:func:`~secateurs.quant.fixedpoint.multiply_by_quantized_multiplier`, add the output zero
point and clamp to the fused activation's range. ADD rescales both inputs to a common
scale with a 20-bit left shift first; MUL multiplies zero-point-free values; MEAN
requantizes the sum then divides with rounding; pooling keeps its input's parameters.
Elementwise nonlinearities are 256-entry tables. Products run as float64 convolutions of
integers, which are exact (every partial sum stays far below 2**53), then become int64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .executor import conv_nd, out_of_place, run_move
from .fixedpoint import (
    hard_swish_int8,
    litert_table,
    logistic_int8,
    multiply_by_quantized_multiplier_single,
    quantize_multiplier,
    tanh_int8,
)
from .fixedpoint import multiply_by_quantized_multiplier as mbqm
from .observers import QParams
from .qgraph import Node, QGraph

ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD headroom


@dataclass
class LayerConsts:
    """The integer constants of one conv/linear node."""

    weight: torch.Tensor  # int8 values (int64 storage), out channels first
    bias: torch.Tensor  # int32 values
    weight_scale: torch.Tensor  # float64 per output channel
    multiplier: torch.Tensor  # int32 per output channel
    shift: torch.Tensor  # per output channel
    bits: int = 8


@dataclass
class OpConsts:
    """Requantization constants of a non-layer node (multipliers, shifts, clamp, table)."""

    multipliers: list[tuple[int, int]] = field(default_factory=list)
    lo: int = -128
    hi: int = 127
    table: torch.Tensor | None = None
    litert_table: torch.Tensor | None = None  # where LiteRT's kernels compute another

    def table_for(self, rounding: str) -> torch.Tensor | None:
        """The table of the runtime ``rounding`` names (``ROUNDINGS``)."""
        if rounding == "litert" and self.litert_table is not None:
            return self.litert_table
        return self.table


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def activation_range(act, out: QParams) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for a real clamp [lo, hi]."""
    lo_q, hi_q = out.qmin, out.qmax
    if act is not None:
        lo, hi = act
        if lo is not None:
            lo_q = max(lo_q, out.zero_point + int(round_half_away(torch.tensor(lo / out.scale))))
        if hi is not None:
            hi_q = min(hi_q, out.zero_point + int(round_half_away(torch.tensor(hi / out.scale))))
    return lo_q, min(max(lo_q, hi_q), out.qmax)


def weight_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step: max|w| / qmax at 8 bits (TFLite); below 8 bits, the
    clipped step that minimizes the squared rounding error of each channel, since
    max-magnitude steps waste most of a 2- or 4-bit grid on rare large weights."""
    qmax = (1 << (bits - 1)) - 1
    w2 = w.detach().double().reshape(w.shape[0], -1)
    amax = w2.abs().amax(dim=1)
    best = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    if bits >= 8:
        return best
    best_err = torch.full_like(amax, float("inf"))
    for shrink in torch.linspace(1.0, 0.2, 41, dtype=torch.float64):
        step = torch.where(amax > 0, amax * shrink / qmax, torch.ones_like(amax))[:, None]
        err = ((w2 - step * torch.clamp(round_half_away(w2 / step), -qmax, qmax)) ** 2).sum(1)
        better = err < best_err
        best = torch.where(better, step[:, 0], best)
        best_err = torch.where(better, err, best_err)
    return best


def quantize_weights(w: torch.Tensor, bits: int, scale=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric weights in [-(2**(bits-1) - 1), 2**(bits-1) - 1].

    The scale is :func:`weight_scale` unless given, rounded to float32. Zero stays exactly
    zero, so pruned weights and channels survive quantization.
    """
    qmax = (1 << (bits - 1)) - 1
    w = w.detach().double()
    if scale is None:
        scale = weight_scale(w, bits)
    scale = scale.detach().float().double()  # float32-exact, as a flatbuffer stores it
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(round_half_away(w / scale.reshape(shape)), -qmax, qmax)
    return q.to(torch.int64), scale


def bias_safe_scale(w, b, x: QParams, bits: int, scale=None) -> torch.Tensor:
    """The weight step per output channel, raised where the int32 bias ``b / (s_x * s_w)``
    would leave the accumulator no room: the bias plus every product
    ``(x - z_x) * w_q`` must fit in int32, as the runtimes add them in int32 and wrap on
    overflow (the TFLite converter raises such weight steps the same way). Only degenerate
    layers are touched: a bias far larger than what the input scale resolves, as in a
    collapsed untrained layer."""
    step = weight_scale(w, bits) if scale is None else scale.detach().double()
    if b is None:
        return step
    fan_in = w[0].numel()
    products = fan_in * (x.qmax - x.qmin) * ((1 << (bits - 1)) - 1)
    room = max(2**31 - 1 - products, 2**30)
    needed = b.detach().double().abs() / (x.scale * room) * (1 + 1e-6)  # float32 rounding
    return torch.maximum(step, needed)


def layer_consts(w, b, x: QParams, y: QParams, bits: int, scale=None) -> LayerConsts:
    wq, ws = quantize_weights(w, bits, bias_safe_scale(w, b, x, bits, scale))
    bias_scale = x.scale * ws
    bq = torch.clamp(round_half_away(b.detach().double() / bias_scale), -(2**31), 2**31 - 1)
    pairs = [quantize_multiplier(float(s) / y.scale) for s in bias_scale]
    mult = torch.tensor([m for m, _ in pairs], dtype=torch.int64)
    shift = torch.tensor([s for _, s in pairs], dtype=torch.int64)
    return LayerConsts(wq, bq.to(torch.int64), ws, mult, shift, bits)


# the int8 kernels that write on a fixed quantization (TFLite's int8 specification):
# LOGISTIC in steps of 1/256 from zero point -128, TANH in steps of 1/128 around 0
FIXED_OUTPUT = {
    torch.ops.aten.sigmoid.default: QParams(1.0 / 256.0, -128),
    torch.ops.aten.tanh.default: QParams(1.0 / 128.0, 0),
}
# hard-sigmoid, relu6(x + 3) / 6, as the int8 ops a converter writes for it: ADD of the
# constant 3 with a fused RELU6 onto [0, 6] (``hard_sigmoid_sum``), then MUL by the
# constant 1/6 (each constant one int8 level, 127, on its own scale)
HARD_SIGMOID_THREE = QParams(float(np.float32(3.0 / 127.0)), 0)
HARD_SIGMOID_SIXTH = QParams(float(np.float32(1.0 / 6.0 / 127.0)), 0)


def hard_sigmoid_sum(y: QParams) -> QParams:
    """The quantization of relu6(x + 3) inside a hard-sigmoid whose output is ``y``: six
    times its scale, its zero point, so the sum's grid is the output's, the MUL by 1/6
    (a multiplier of 1/127 on the level 127) copies it, and the output is rounded once."""
    return QParams(float(np.float32(6.0 * y.scale)), y.zero_point, y.qmin, y.qmax)


# what each native table is exported as: one runtime kernel, (SiLU) LOGISTIC then MUL,
# (hard-sigmoid) ADD with RELU6, then MUL
NATIVE_OPS = {
    torch.ops.aten.hardsigmoid.default: "HARD_SIGMOID",
    torch.ops.aten.hardswish.default: "HARD_SWISH",
    torch.ops.aten.sigmoid.default: "LOGISTIC",
    torch.ops.aten.tanh.default: "TANH",
    torch.ops.aten.silu.default: "SILU",
}


def fixed_output(node: Node) -> QParams | None:
    """The quantization a lookup-table node's output must take for the runtime's own
    kernel to compute it (sigmoid, tanh), else None."""
    return FIXED_OUTPUT.get(out_of_place(node.attrs["func"])) if node.kind == "lut" else None


def native_op(node: Node, x: QParams, y: QParams) -> str | None:
    """The runtime kernel that computes this table activation exactly as its table holds
    (``NATIVE_OPS``), or None where there is none at these scales: sigmoid and tanh need
    their fixed output quantization (``FIXED_OUTPUT``), hard-swish an output multiplier
    below one. The table of an op without one rounds the float function instead."""
    func = out_of_place(node.attrs["func"])
    name = NATIVE_OPS.get(func)
    if name is None or node.attrs["args"] or node.attrs["kwargs"]:
        return None
    if func in FIXED_OUTPUT and FIXED_OUTPUT[func] != y:
        return None
    if name in ("LOGISTIC", "TANH", "SILU") and math.frexp(x.scale * (1 << 27))[1] < 0:
        return None  # an input step below 2**-28: the kernels' shifts would be negative
    if name == "HARD_SWISH" and hard_swish_int8(torch.zeros(1), x.scale, 0, y.scale, 0) is None:
        return None
    return name


def native_table(node: Node, x: QParams, y: QParams, rounding: str = "tflm") -> torch.Tensor | None:
    """A table activation's table as the runtimes' own int8 kernels compute it
    (:func:`native_op`), so the .tflite can run those kernels and stay bit for bit with the
    table; None where there is none. ``rounding`` names the runtime: TFLite Micro computes
    LOGISTIC and TANH in gemmlowp's fixed point, LiteRT from a float32 table. SiLU,
    x * sigmoid(x), is LOGISTIC onto its fixed quantization, then MUL with the input."""
    name = native_op(node, x, y)
    if name is None:
        return None
    q = torch.arange(x.qmin, x.qmax + 1)
    if name == "HARD_SWISH":
        return hard_swish_int8(q, x.scale, x.zero_point, y.scale, y.zero_point)
    if name == "HARD_SIGMOID":
        three, sixth, t = HARD_SIGMOID_THREE, HARD_SIGMOID_SIXTH, hard_sigmoid_sum(y)
        level = torch.tensor(127)
        lo, hi = activation_range((0.0, 6.0), t)
        s = add_int8(q, x, level, three, t, add_multipliers(x, three, t), lo, hi)
        return mul_int8(s, t, level, sixth, y, rounding, y.qmin, y.qmax)
    func = torch.ops.aten.tanh.default if name == "TANH" else torch.ops.aten.sigmoid.default
    kernel, gate = NATIVE_OPS[func], FIXED_OUTPUT[func]  # SiLU runs LOGISTIC first
    if rounding == "litert":
        s = litert_table(kernel, q, x.scale, x.zero_point, gate.scale, gate.zero_point)
    else:
        s = (tanh_int8 if kernel == "TANH" else logistic_int8)(q, x.scale, x.zero_point)
    if name != "SILU":
        return s
    return mul_int8(q, x, s, gate, y, rounding, y.qmin, y.qmax)


def op_consts(node: Node, qp: dict[int, QParams]) -> OpConsts:
    ins = [qp[v] for v in node.inputs]
    out = qp[node.outputs[0]]
    consts = OpConsts()
    if node.kind == "add":
        consts.multipliers = add_multipliers(ins[0], ins[1], out)
    elif node.kind == "lut":
        q = torch.arange(ins[0].qmin, ins[0].qmax + 1)
        consts.table = native_table(node, ins[0], out)
        litert = native_table(node, ins[0], out, "litert")
        if litert is not None and not torch.equal(litert, consts.table):
            consts.litert_table = litert
        if consts.table is None:
            real = out_of_place(node.attrs["func"])(
                ins[0].dequantize(q), *node.attrs["args"], **node.attrs["kwargs"]
            )
            consts.table = out.quantize(real)
    if node.kind in ("add", "mul", "clamp"):
        consts.lo, consts.hi = activation_range(node.attrs.get("act"), out)
    return consts


def add_multipliers(a: QParams, b: QParams, y: QParams) -> list[tuple[int, int]]:
    """TFLite's int8 ADD: each input rescaled to twice the larger input scale (after a
    20-bit left shift), then the sum to the output scale."""
    twice_max = 2 * max(a.scale, b.scale)
    return [
        quantize_multiplier(a.scale / twice_max),
        quantize_multiplier(b.scale / twice_max),
        quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * y.scale)),
    ]


def add_int8(a, qa: QParams, b, qb: QParams, y: QParams, multipliers, lo: int, hi: int):
    """TFLite's int8 ADD of int8 values ``a`` and ``b``, clamped to [lo, hi]."""
    (m1, s1), (m2, s2), (mo, so) = multipliers
    x1 = mbqm((a - qa.zero_point) << ADD_LEFT_SHIFT, m1, s1)
    x2 = mbqm((b - qb.zero_point) << ADD_LEFT_SHIFT, m2, s2)
    return torch.clamp(mbqm(x1 + x2, mo, so) + y.zero_point, lo, hi)


def mul_int8(a, qa: QParams, b, qb: QParams, y: QParams, rounding: str, lo: int, hi: int):
    """TFLite's int8 MUL of int8 values ``a`` and ``b``, clamped to [lo, hi]."""
    prod = (a - qa.zero_point) * (b - qb.zero_point)
    return torch.clamp(mbqm(prod, *mul_multiplier(qa, qb, y, rounding)) + y.zero_point, lo, hi)


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def run_integer(
    graph: QGraph,
    qparams: dict[int, QParams],
    layers: dict[int, LayerConsts],
    ops: dict[int, OpConsts],
    x: torch.Tensor | tuple[torch.Tensor, ...],
    rounding: str = "tflm",
    values: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Execute the graph on int8 values ``x`` (any integer dtype; a tuple, one tensor per
    input, for a graph with several inputs); int64 values out.
    ``rounding`` picks the runtime whose arithmetic is reproduced: "tflm", TensorFlow Lite
    Micro's reference kernels (double rounding everywhere, as CMSIS-NN), or "litert", the
    LiteRT runtime's, where linear layers round once (see ``ROUNDINGS``). ``values``, a
    dict, receives every value of the graph by its id (for checking one layer alone)."""
    env = {} if values is None else values
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if len(xs) != len(graph.inputs):
        raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(xs)}")
    env.update({v: t.to(torch.int64) for v, t in zip(graph.inputs, xs)})
    for index, node in enumerate(graph.nodes):
        ins = [env[v] for v in node.inputs]
        qin = [qparams[v] for v in node.inputs]
        out = qparams[node.outputs[0]]
        a = node.attrs
        if node.kind in ("conv", "linear"):
            c = layers[index]
            centered = (ins[0] - qin[0].zero_point).double()
            if node.kind == "conv":
                acc = conv_nd(centered, c.weight.double(), None, a)
            else:
                acc = centered @ c.weight.double().T
            acc = acc.to(torch.int64) + _per_channel(c.bias, acc.dim())
            single = rounding == "litert" and node.kind == "linear"
            requantize = multiply_by_quantized_multiplier_single if single else mbqm
            y = requantize(
                acc, _per_channel(c.multiplier, acc.dim()), _per_channel(c.shift, acc.dim())
            )
            lo, hi = activation_range(a["act"], out)
            outs = [torch.clamp(y + out.zero_point, lo, hi)]
        elif node.kind == "add":
            c = ops[index]
            outs = [add_int8(ins[0], qin[0], ins[1], qin[1], out, c.multipliers, c.lo, c.hi)]
        elif node.kind == "mul":
            c = ops[index]
            outs = [mul_int8(ins[0], qin[0], ins[1], qin[1], out, rounding, c.lo, c.hi)]
        elif node.kind == "mean":
            count = 1
            for d in a["dims"]:
                count *= ins[0].shape[d]
            acc = (ins[0] - qin[0].zero_point).sum(dim=a["dims"], keepdim=a["keepdim"])
            acc = mean_requantize(acc, qin[0], out, count)
            outs = [torch.clamp(acc + out.zero_point, out.qmin, out.qmax)]
        elif node.kind == "avg_pool":
            outs = [_avg_pool(ins[0], qin[0], a)]
        elif node.kind == "max_pool":
            y = F.max_pool2d(
                ins[0].double(),
                a["kernel"],
                a["stride"],
                a["padding"],
                a["dilation"],
                ceil_mode=a["ceil_mode"],
            )
            outs = [y.to(torch.int64)]
        elif node.kind == "clamp":
            outs = [torch.clamp(ins[0], ops[index].lo, ops[index].hi)]
        elif node.kind == "lut":
            outs = [ops[index].table_for(rounding)[ins[0] - qin[0].qmin]]
        else:
            outs = run_move(node, env, pad_value=qin[0].zero_point)
        for v, t in zip(node.outputs, outs):
            env[v] = t
    return env[graph.output]


def mul_multiplier(a: QParams, b: QParams, y: QParams, rounding: str) -> tuple[int, int]:
    """(multiplier, shift) of an elementwise product: s_a*s_b/s_y, computed in double by
    TensorFlow Lite Micro and in float32 (the scales' own type) by LiteRT."""
    if rounding == "litert":
        real = np.float32(np.float32(a.scale) * np.float32(b.scale)) / np.float32(y.scale)
        return quantize_multiplier(float(np.float32(real)))
    return quantize_multiplier(a.scale * b.scale / y.scale)


def mean_multiplier(x: QParams, y: QParams, count: int) -> tuple[int, int]:
    """(multiplier, shift) of a MEAN of ``count`` int8 values, applied to their sum less the
    zero point. TFLite Micro (``QuantizedMeanOrSum``) quantizes s_x/s_y, then folds 1/count
    into it in integer arithmetic: the multiplier is shifted left by floor(log2(count))
    (at most 32, and no further than a right shift of 31 allows) and divided by the count,
    truncating. LiteRT's reference MEAN does the same (measured: both runtimes, 200 random
    networks)."""
    multiplier, shift = quantize_multiplier(x.scale / y.scale)
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << fold) // count, shift - fold


def mean_requantize(acc, x: QParams, y: QParams, count: int):
    return mbqm(acc, *mean_multiplier(x, y, count))


def _avg_pool(x: torch.Tensor, params: QParams, a: dict) -> torch.Tensor:
    """Window sum over window count, rounded half away from zero (TFLite AveragePool).

    Padded positions hold real zero (the zero point) when they count, as in PyTorch.
    """
    pad = [p for p in reversed(a["padding"]) for _ in (0, 1)]
    if a["count_include_pad"]:
        sums = F.avg_pool2d(
            F.pad(x.double(), pad, value=params.zero_point),
            a["kernel"],
            a["stride"],
            divisor_override=1,
        )
        count = torch.full_like(sums, float(a["kernel"][0] * a["kernel"][1]))
    else:
        sums = F.avg_pool2d(F.pad(x.double(), pad), a["kernel"], a["stride"], divisor_override=1)
        ones = F.pad(torch.ones_like(x[:1, :1]).double(), pad)
        count = F.avg_pool2d(ones, a["kernel"], a["stride"], divisor_override=1).expand_as(sums)
    sums, count = sums.to(torch.int64), count.to(torch.int64)
    y = torch.where(sums > 0, (sums + count // 2) // count, -((-sums + count // 2) // count))
    return torch.clamp(y, params.qmin, params.qmax)
