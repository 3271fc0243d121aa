"""``export_tflite``: a QuantizedModel as a fully int8 .tflite flatbuffer, for TensorFlow
Lite Micro, built with the flatbuffers schema that the ai-edge-litert package ships (no
TensorFlow needed).

TFLite tensors are channel-last (NHWC); 1-D feature maps (N, C, L) become (1, 1, L, C).
Weights are per-channel int8 with their float32 scales, biases int32,
activations int8 with the scales and zero points of the QuantizedModel, so a runtime
derives the very multipliers ``run_int8`` uses. Convolution and pooling padding is SAME
where SAME places every window where PyTorch does (stride 1, or an odd size under stride
2); elsewhere SAME would put the odd pixel on the other side from PyTorch, so a
convolution gains zero taps or a PAD precedes a VALID one, whichever takes fewer bytes
(PADV2 with -128 before max pooling). The file carries an offline memory plan (the C
arena's layout, for TFLM) and, for TFLM, only the quantization parameters it reads.
Flattening a feature map transposes it to NCHW first, so that FULLY_CONNECTED sees
PyTorch's order, unless the two orders agree (one channel, or one position) and only
FULLY_CONNECTED layers read it: those flatten their input themselves, so nothing is
copied. Operator versions are those the TFLite converter writes for int8 tensors.

Supported: conv (dense, depthwise, and grouped as one CONV_2D whose filter holds a group's
input channels: operator version 6), linear, add, mul, global mean, average and max
pooling, ReLU-family clamps, lookup tables (the runtimes' own kernels where the table is
what they compute: HARD_SWISH, LOGISTIC, TANH, LOGISTIC + MUL for SiLU, ADD + MUL for
hard-sigmoid; else CAST to int32, ADD the offset, GATHER from the table), concatenation,
and data movement that selects or reorders channels (channel shuffle, channel splits: a
chain of moves through a higher rank, such as a shuffle's (N, groups, C/groups, H, W)
view, is composed and written as one GATHER along channels). Other moves are refused with
the op and its module; ``export_c`` covers them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .._io import check_output_path, write_atomic
from ..quant.executor import run_move
from ..quant.integer import (
    FIXED_OUTPUT,
    HARD_SIGMOID_SIXTH,
    HARD_SIGMOID_THREE,
    hard_sigmoid_sum,
    native_op,
)
from ..quant.ptq import QuantizedModel
from ..quant.qgraph import Node, QuantError

PAD_ND = torch.ops.aten.constant_pad_nd
CAT = torch.ops.aten.cat
SIGMOID = torch.ops.aten.sigmoid.default
# PyTorch dimension (batch included) -> TFLite axis, by rank: NCHW -> NHWC, (N, C, L) ->
# (1, 1, L, C), (N, F) -> (1, F)
CAT_AXES = {4: {1: 3, 2: 1, 3: 2}, 3: {1: 3, 2: 2}, 2: {1: 1}}
# the operator versions the TFLite converter writes for int8 tensors (op_version.cc)
OP_VERSIONS = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 4,
    "ADD": 2,
    "MUL": 2,
    "MEAN": 2,
    "AVERAGE_POOL_2D": 2,
    "MAX_POOL_2D": 2,
    "CONCATENATION": 2,
    "PAD": 2,
    "PADV2": 2,
    "SPLIT": 2,
    "GATHER": 2,
    "TRANSPOSE": 2,
    "RELU": 2,
    "RELU6": 2,
    "RELU_N1_TO_1": 2,
    "LOGISTIC": 2,
    "TANH": 2,
}
RELU_FAMILY = {(0.0, None): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}


def _schema():
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as err:
        raise ImportError(
            "export_tflite needs the ai-edge-litert package (its flatbuffers schema): "
            "pip install ai-edge-litert"
        ) from err
    return flatbuffers, schema


class _Writer:
    def __init__(self, schema, qmodel: QuantizedModel, widen, compact: bool) -> None:
        self.s = schema
        self.q = qmodel
        self.widen = widen  # zero taps instead of a PAD where that makes SAME fit
        # (None: where the taps cost fewer bytes than the PAD's output)
        self.compact = compact  # TFLM's leaner layout (see tflite_model)
        self.buffers = [schema.BufferT()]
        self.tensors: list = []
        self.ops: list = []
        self.codes: dict[tuple[str, int], int] = {}  # (operator, version) -> index
        self.values: dict[int, int] = {}  # graph value id -> tensor index
        # graph value id -> (materialized value, flat NCHW offsets into it, -1 for padding)
        # for moves through tensors TFLite does not hold (of a higher rank: a shuffle's view)
        self.pending: dict[int, tuple[int, torch.Tensor]] = {}

    def tensor(self, shape, qparams=None, dtype="int8", data=None, name="", axis=0, scales=None):
        """A tensor; ``scales``: per-channel scales along ``axis`` (zero points 0)."""
        s = self.s
        t = s.TensorT()
        t.shape = [int(d) for d in shape]
        t.type = {"int8": s.TensorType.INT8, "int32": s.TensorType.INT32}[dtype]
        kept = name == "output" or (name or "").startswith("input")  # the interface's names
        t.name = None if self.compact and not kept else name
        if self.compact and dtype == "int32" and scales is not None and len(scales) > 1:
            scales = None  # a per-channel bias: TFLM derives its scale, never reads it
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.ascontiguousarray(data).view(np.uint8).reshape(-1).tolist()
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if qparams is not None or scales is not None:
            qp = s.QuantizationParametersT()
            if scales is not None:
                qp.scale = [float(np.float32(v)) for v in scales]
                # TFLM reads one zero point as every channel's (weights are symmetric)
                qp.zeroPoint = [0] * (1 if self.compact else len(scales))
                qp.quantizedDimension = axis
            else:
                qp.scale, qp.zeroPoint = [float(qparams.scale)], [int(qparams.zero_point)]
            t.quantization = qp
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name: str, inputs, outputs, options=None, options_name=None, version=None):
        s = self.s
        key = (name, version or OP_VERSIONS.get(name, 1))
        self.codes.setdefault(key, len(self.codes))
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes[key], list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_name)
            o.builtinOptions = options
        self.ops.append(o)

    def activation(self, node: Node, value: int):
        qp = self.q.qparams[value]
        shape = self.q.graph.shapes[value][1:]
        return self.tensor(_nhwc(shape), qp, name=f"v{value}")


def _nhwc(shape) -> list[int]:
    """Per-sample PyTorch shape to the TFLite tensor shape (batch 1)."""
    if len(shape) == 3:
        c, h, w = shape
        return [1, h, w, c]
    if len(shape) == 2:
        c, length = shape
        return [1, 1, length, c]
    return [1, *shape]


def _fail(node: Node, why: str):
    raise QuantError(
        f"export_tflite: {node.kind} in module '{node.module}' {why}; export_c supports it"
    )


def _relu_name(w: _Writer, node: Node) -> str | None:
    """The RELU-family name of ``node``'s clamp (None for no clamp). A bound whose quantized
    value would not fit in int32 (an output scale near zero, as in a collapsed untrained
    layer) is dropped: it clamps nothing in int8, and TFLite refuses to quantize it."""
    act = node.attrs.get("act")
    if act is None:
        return None
    scale = w.q.qparams[node.outputs[0]].scale
    act = tuple(None if v is None or abs(float(v) / scale) >= 2**31 else float(v) for v in act)
    if act == (None, None):
        return None
    name = RELU_FAMILY.get(act)
    if name is None:
        _fail(node, f"clamps to {node.attrs['act']}, which no TFLite activation expresses")
    return name


def _fused(w: _Writer, node: Node) -> int:
    name = _relu_name(w, node)
    return getattr(w.s.ActivationFunctionType, "NONE" if name is None else name)


def _padded(w: _Writer, node: Node, x: int, pads: list[tuple[int, int]], fill: int | None):
    """PAD (or PADV2 with ``fill``) the NHWC tensor ``x`` by ``pads`` = [(top, bottom),
    (left, right)]; returns the padded tensor."""
    if not any(a or b for a, b in pads):
        return x
    t = w.tensors[x]
    n, h, wd, c = t.shape
    shape = [n, h + sum(pads[0]), wd + sum(pads[1]), c]
    spec = np.array([[0, 0], list(pads[0]), list(pads[1]), [0, 0]], dtype=np.int32)
    paddings = w.tensor([4, 2], dtype="int32", data=spec)
    qp = w.q.qparams[node.inputs[0]]
    out = w.tensor(shape, qp, name=f"pad{len(w.tensors)}")
    if fill is None:
        w.op("PAD", [x, paddings], [out], w.s.PadOptionsT(), "PadOptions")
    else:
        value = w.tensor([], qp, data=np.array([fill], dtype=np.int8))
        w.op("PADV2", [x, paddings, value], [out], w.s.PadV2OptionsT(), "PadV2Options")
    return out


def _same_fits(sizes, outs, pads, kernel, stride, dil) -> bool:
    """Whether TFLite's SAME padding places every window where PyTorch's ``pads`` do: the
    same output size, ceil(n / stride), and the same padding before (SAME puts the odd
    pixel after)."""
    extra = _widening(sizes, outs, pads, kernel, stride, dil)
    return extra is not None and not any(extra)


def _widening(sizes, outs, pads, kernel, stride, dil) -> list[int] | None:
    """Zero taps to append to the kernel, per dimension, so that SAME places every window
    where PyTorch's ``pads`` do (a stride-2 3x3 convolution padded by 1 on an even size
    becomes a 4x4 one whose last row and column are zero); None where no widening does."""
    extra = []
    for n, o, (before, _), k, st, d in zip(sizes, outs, pads, kernel, stride, dil):
        total = max((o - 1) * st + d * (k - 1) + 1 - n, 0)
        if o != -(-n // st):
            return None
        e = next((e for e in range(0, 2 * before + 2) if (total + d * e) // 2 == before), None)
        if e is None:
            return None
        extra.append(e)
    return extra


def _conv_padding(w: _Writer, node: Node, pads, weight, stride, dil):
    """The convolution's input, padding and (HW-last) weight: VALID without padding; SAME
    where it equals PyTorch's, or where it does once the kernel gains trailing zero taps
    (``w.widen``: more MACs and weight bytes, no padded copy of the input in RAM; None:
    where the zero taps take fewer bytes than the copy); else an explicit PAD (filled with
    the zero point) before a VALID one."""
    x = w.values[node.inputs[0]]
    if not any(a or b for a, b in pads):
        return x, w.s.Padding.VALID, weight
    sizes = w.tensors[x].shape[1:3]
    outs = _nhwc(w.q.graph.shapes[node.outputs[0]][1:])[1:3]
    extra = _widening(sizes, outs, pads, weight.shape[2:], stride, dil)
    if extra is not None and w.widen is None:  # the cheaper in bytes: zero taps or a copy
        kh, kw = weight.shape[2:]
        taps = weight.shape[0] * weight.shape[1] * ((kh + extra[0]) * (kw + extra[1]) - kh * kw)
        n, h, wd, c = w.tensors[x].shape
        copy = n * (h + sum(pads[0])) * (wd + sum(pads[1])) * c
        widen = taps <= copy
    else:
        widen = w.widen
    if extra is not None and (not any(extra) or widen):
        widened = np.pad(weight, [(0, 0), (0, 0), (0, extra[0]), (0, extra[1])])
        return x, w.s.Padding.SAME, widened
    return _padded(w, node, x, pads, None), w.s.Padding.VALID, weight


def _conv(w: _Writer, index: int, node: Node) -> None:
    s, q = w.s, w.q
    c = q.layers[index]
    a = node.attrs
    x_shape = q.graph.shapes[node.inputs[0]][1:]
    one_d = len(x_shape) == 2
    cin = x_shape[0]
    weight = c.weight.numpy().astype(np.int8)
    if one_d:
        weight = weight[:, :, None, :]  # (Cout, Cin/g, 1, K)
    groups = a["groups"]
    stride = [1, a["stride"][0]] if one_d else a["stride"]
    dil = [1, a["dilation"][0]] if one_d else a["dilation"]
    pads = [(0, 0), tuple(a["padding"][0])] if one_d else [tuple(p) for p in a["padding"]]
    x, padding, weight = _conv_padding(w, node, pads, weight, stride, dil)
    cout, cin_g, kh, kw = weight.shape
    bias = w.tensor(
        [cout],
        dtype="int32",
        data=c.bias.numpy().astype(np.int32),
        scales=(q.qparams[node.inputs[0]].scale * c.weight_scale).tolist(),
    )
    y = w.activation(node, node.outputs[0])
    act = _fused(w, node)
    if 1 < groups == cin and cin_g == 1:
        filt = w.tensor(
            [1, kh, kw, cout],
            data=weight.transpose(1, 2, 3, 0),
            scales=c.weight_scale.tolist(),
            axis=3,
        )
        opt = s.DepthwiseConv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = padding, stride[0], stride[1]
        opt.depthMultiplier = cout // cin
        opt.dilationHFactor, opt.dilationWFactor, opt.fusedActivationFunction = *dil, act
        w.op("DEPTHWISE_CONV_2D", [x, filt, bias], [y], opt, "DepthwiseConv2DOptions")
    else:  # dense or grouped: the filter's depth is the group's (version 6 when grouped)
        filt = w.tensor(
            [cout, kh, kw, cin_g],
            data=weight.transpose(0, 2, 3, 1),
            scales=c.weight_scale.tolist(),
            axis=0,
        )
        opt = s.Conv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = padding, stride[0], stride[1]
        opt.dilationHFactor, opt.dilationWFactor, opt.fusedActivationFunction = *dil, act
        w.op("CONV_2D", [x, filt, bias], [y], opt, "Conv2DOptions", 6 if groups > 1 else None)
    w.values[node.outputs[0]] = y


def _linear(w: _Writer, index: int, node: Node) -> None:
    s, q = w.s, w.q
    c = q.layers[index]
    out_f, in_f = c.weight.shape
    filt = w.tensor(
        [out_f, in_f], data=c.weight.numpy().astype(np.int8), scales=c.weight_scale.tolist(), axis=0
    )
    bias = w.tensor(
        [out_f],
        dtype="int32",
        data=c.bias.numpy().astype(np.int32),
        scales=(q.qparams[node.inputs[0]].scale * c.weight_scale).tolist(),
    )
    y = w.activation(node, node.outputs[0])
    opt = s.FullyConnectedOptionsT()
    opt.fusedActivationFunction = _fused(w, node)
    w.op(
        "FULLY_CONNECTED", [w.values[node.inputs[0]], filt, bias], [y], opt, "FullyConnectedOptions"
    )
    w.values[node.outputs[0]] = y


def _concat(w: _Writer, node: Node) -> None:
    """CONCATENATION; every input shares the output's scale and zero point (the quantizer
    sees to that), so LiteRT copies bytes as ``run_int8`` does."""
    q, args = w.q, node.attrs["args"]
    values = [v for _, v in args[0]]
    dim = args[1] if len(args) > 1 else node.attrs["kwargs"].get("dim", 0)
    rank = len(q.graph.shapes[values[0]])
    axis = CAT_AXES.get(rank, {}).get(dim % rank)
    if axis is None:
        _fail(node, f"concatenates along dimension {dim} of a rank-{rank} tensor")
    out = node.outputs[0]
    if any(q.qparams[v] != q.qparams[out] for v in values):
        _fail(node, "concatenates tensors of different scales")
    y = w.activation(node, out)
    opt = w.s.ConcatenationOptionsT()
    opt.axis, opt.fusedActivationFunction = axis, w.s.ActivationFunctionType.NONE
    w.op("CONCATENATION", [w.values[v] for v in values], [y], opt, "ConcatenationOptions")
    w.values[out] = y


def _move(w: _Writer, node: Node) -> None:
    """Shape-only moves (an alias when the TFLite shape stays), zero padding, flattening a
    feature map to (N, F), and concatenation."""
    q = w.q
    if node.attrs["func"].overloadpacket is CAT and len(node.outputs) == 1:
        _concat(w, node)
        return
    if len(set(node.inputs)) != 1:
        _fail(node, "moves data between several tensors")
    (src,) = node.inputs[:1]
    out = node.outputs[0]
    s_shape, o_shape = q.graph.shapes[src][1:], q.graph.shapes[out][1:]
    same = src not in w.pending and len(node.outputs) == 1 and _nhwc(s_shape) == _nhwc(o_shape)
    if same and (_offsets(w, node, src)[0].reshape(-1) == torch.arange(np.prod(o_shape))).all():
        w.values[out] = w.values[src]  # the same bytes in the same order: an alias
        return
    if src in w.pending or len(node.outputs) != 1 or len(o_shape) > len(s_shape):
        _compose(w, node, src)
        return
    x = w.values[src]
    if node.attrs["func"].overloadpacket is PAD_ND and len(s_shape) in (2, 3):
        spec = list(node.attrs["args"][1]) + [0] * 4  # last dim first, as torch orders it
        if any(v < 0 for v in spec) or any(spec[2 * (len(s_shape) - 1) :]):
            _fail(node, "pads the channel axis or crops")
        pads = (
            [(0, 0), (spec[0], spec[1])]
            if len(s_shape) == 2
            else [(spec[2], spec[3]), (spec[0], spec[1])]
        )
        w.values[out] = _padded(w, node, x, pads, None)
        return
    if len(o_shape) != 1 or int(np.prod(s_shape)) != o_shape[0]:
        _fail(node, f"moves data from {tuple(s_shape)} to {tuple(o_shape)}")
    consumers = [n for n in q.graph.nodes if out in n.inputs]
    same_order = len(s_shape) < 2 or s_shape[0] == 1 or int(np.prod(s_shape[1:])) == 1
    if (
        same_order
        and consumers
        and all(n.kind == "linear" for n in consumers)
        and (out != q.graph.output)
    ):  # FULLY_CONNECTED flattens its input itself: no copy
        w.values[out] = x
        return
    if not same_order:  # NHWC -> NCHW order first
        t = w.tensors[x]
        perm = w.tensor([4], dtype="int32", data=np.array([0, 3, 1, 2], dtype=np.int32))
        nchw = w.tensor([t.shape[0], t.shape[3], t.shape[1], t.shape[2]], q.qparams[src])
        w.op("TRANSPOSE", [x, perm], [nchw], w.s.TransposeOptionsT(), "TransposeOptions")
        x = nchw
    shape = w.tensor([2], dtype="int32", data=np.array([1, o_shape[0]], dtype=np.int32))
    y = w.activation(node, out)
    opt = w.s.ReshapeOptionsT()
    opt.newShape = [1, int(o_shape[0])]
    w.op("RESHAPE", [x, shape], [y], opt, "ReshapeOptions")
    w.values[out] = y


def _offsets(w: _Writer, node: Node, src: int) -> list[torch.Tensor]:
    """For each output of a move, the flat (NCHW) offset of each element in the tensor
    TFLite holds for ``src`` (the base of a pending chain), -1 for padding."""
    if src in w.pending:
        index = w.pending[src][1]
    else:
        shape = w.q.graph.shapes[src][1:]
        index = torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(1, *shape)
    return run_move(node, {src: index}, pad_value=-1)


def _compose(w: _Writer, node: Node, src: int) -> None:
    """Follow a chain of moves on element offsets into the last tensor TFLite holds; write
    an output of that tensor's rank as a GATHER of channels (or an alias), keep one of a
    higher rank (a channel shuffle's (N, groups, C/groups, H, W)) pending."""
    base = w.pending[src][0] if src in w.pending else src
    rank = len(w.q.graph.shapes[base])
    for v, idx in zip(node.outputs, _offsets(w, node, src)):
        if idx.dim() > rank:
            w.pending[v] = (base, idx)
        else:
            w.values[v] = _gather_channels(w, node, base, idx[0], v)


def _gather_channels(w: _Writer, node: Node, base: int, idx: torch.Tensor, v: int) -> int:
    """``idx`` (offsets into ``base``, shaped like ``v``) as one GATHER along channels."""
    q = w.q
    b_shape = tuple(q.graph.shapes[base][1:])
    o_shape = tuple(idx.shape)
    spatial = int(np.prod(b_shape[1:])) if len(b_shape) > 1 else 1
    channels = idx // spatial
    ok = len(b_shape) in (2, 3) and o_shape[1:] == b_shape[1:] and bool((idx >= 0).all())
    if ok:
        pos = torch.arange(spatial).reshape(b_shape[1:])
        sel = channels.reshape(len(idx), -1)[:, 0]
        ok = bool((idx == sel.reshape(-1, *[1] * (idx.dim() - 1)) * spatial + pos).all())
    if not ok:
        _fail(node, f"moves data from {b_shape} to {o_shape} other than by selecting channels")
    if o_shape == b_shape and bool((sel == torch.arange(b_shape[0])).all()):
        return w.values[base]
    if q.qparams[v] != q.qparams[base]:
        _fail(node, "moves channels into a tensor of another scale")
    indices = w.tensor([len(sel)], dtype="int32", data=sel.numpy().astype(np.int32))
    y = w.activation(node, v)
    opt = w.s.GatherOptionsT()
    opt.axis, opt.batchDims = 3, 0
    w.op("GATHER", [w.values[base], indices], [y], opt, "GatherOptions")
    return y


def _options(options, activation: int):
    """``options`` (ADD's, MUL's) with its fused activation set."""
    options.fusedActivationFunction = activation
    return options


def _lut(w: _Writer, index: int, node: Node) -> None:
    """A lookup table: the runtime's own int8 kernels where the table is what they compute
    (``native_op``: HARD_SWISH, LOGISTIC, TANH; LOGISTIC then MUL for SiLU; ADD of 3 with
    a fused RELU6, then MUL by 1/6, for hard-sigmoid), else
    integer ops every TFLite runtime has: CAST the int8 input to int32, ADD the offset of
    its smallest value, GATHER from the table (a constant)."""
    q = w.q
    x, qx = w.values[node.inputs[0]], q.qparams[node.inputs[0]]
    qy = q.qparams[node.outputs[0]]
    native = native_op(node, qx, qy)
    if native is not None:
        y = w.activation(node, node.outputs[0])
        shape = w.tensors[x].shape
        none = w.s.ActivationFunctionType.NONE
        if native == "SILU":
            gate = w.tensor(shape, FIXED_OUTPUT[SIGMOID], name=f"gate{index}")
            w.op("LOGISTIC", [x], [gate])
            w.op("MUL", [x, gate], [y], _options(w.s.MulOptionsT(), none), "MulOptions")
        elif native == "HARD_SIGMOID":
            level = np.array([127], dtype=np.int8)
            three = w.tensor([1], HARD_SIGMOID_THREE, data=level, name=f"three{index}")
            total = w.tensor(shape, hard_sigmoid_sum(qy), name=f"sum{index}")
            relu6 = w.s.ActivationFunctionType.RELU6
            w.op("ADD", [x, three], [total], _options(w.s.AddOptionsT(), relu6), "AddOptions")
            sixth = w.tensor([1], HARD_SIGMOID_SIXTH, data=level, name=f"sixth{index}")
            w.op("MUL", [total, sixth], [y], _options(w.s.MulOptionsT(), none), "MulOptions")
        else:
            w.op(native, [x], [y])
        w.values[node.outputs[0]] = y
        return
    shape = w.tensors[x].shape
    wide = w.tensor(shape, dtype="int32", name=f"cast{index}")
    w.op("CAST", [x], [wide], w.s.CastOptionsT(), "CastOptions")
    offset = w.tensor([], dtype="int32", data=np.array([-qx.qmin], dtype=np.int32))
    at = w.tensor(shape, dtype="int32", name=f"index{index}")
    none = w.s.ActivationFunctionType.NONE
    w.op("ADD", [wide, offset], [at], _options(w.s.AddOptionsT(), none), "AddOptions")
    table = q.ops[index].table_for(q.rounding).numpy().astype(np.int8)
    values = w.tensor([len(table)], qy, data=table, name=f"table{index}")
    y = w.activation(node, node.outputs[0])
    opt = w.s.GatherOptionsT()
    opt.axis, opt.batchDims = 0, 0
    w.op("GATHER", [values, at], [y], opt, "GatherOptions")
    w.values[node.outputs[0]] = y


def _mean(w: _Writer, index: int, node: Node) -> None:
    q = w.q
    x_shape = q.graph.shapes[node.inputs[0]][1:]
    if len(x_shape) not in (2, 3) or sorted(node.attrs["dims"]) != list(range(2, len(x_shape) + 1)):
        _fail(node, f"reduces dims {node.attrs['dims']}; only global pooling is exported")
    t = w.tensors[w.values[node.inputs[0]]]
    pooled = w.tensor([1, 1, 1, t.shape[3]], q.qparams[node.outputs[0]], name=f"mean{index}")
    axis = w.tensor([2], dtype="int32", data=np.array([1, 2], dtype=np.int32))
    opt = w.s.ReducerOptionsT()
    opt.keepDims = True
    w.op("MEAN", [w.values[node.inputs[0]], axis], [pooled], opt, "ReducerOptions")
    out_shape = q.graph.shapes[node.outputs[0]][1:]
    if len(out_shape) == 1:
        shape = w.tensor([2], dtype="int32", data=np.array([1, out_shape[0]], dtype=np.int32))
        y = w.activation(node, node.outputs[0])
        ropt = w.s.ReshapeOptionsT()
        ropt.newShape = [1, int(out_shape[0])]
        w.op("RESHAPE", [pooled, shape], [y], ropt, "ReshapeOptions")
        pooled = y
    w.values[node.outputs[0]] = pooled


def _pool(w: _Writer, node: Node) -> None:
    """Pooling. Padded max pooling, and average pooling that does not count the padding,
    are SAME where that places the windows as PyTorch does (TFLite's SAME pooling skips
    padded positions); otherwise a PAD (-128 before max pooling, the zero point before
    average pooling that counts it) before a VALID op."""
    s, a = w.s, node.attrs
    if node.kind == "max_pool" and a["dilation"] != [1, 1]:
        _fail(node, "uses dilation")
    x_shape = w.q.graph.shapes[node.inputs[0]][2:]
    y_shape = w.q.graph.shapes[node.outputs[0]][2:]
    pads = []
    for size, out, k, st, p in zip(x_shape, y_shape, a["kernel"], a["stride"], a["padding"]):
        extra = (out - 1) * st + k - (size + 2 * p)  # ceil_mode's windows past the end
        pads.append((p, p + max(extra, 0)))
    skips_padding = node.kind == "max_pool" or not a["count_include_pad"]
    x, padding = w.values[node.inputs[0]], s.Padding.VALID
    if any(p for pair in pads for p in pair):
        if skips_padding and _same_fits(x_shape, y_shape, pads, a["kernel"], a["stride"], [1, 1]):
            padding = s.Padding.SAME
        elif node.kind == "avg_pool" and not a["count_include_pad"]:
            _fail(
                node,
                "pads without counting the padding where SAME places the windows "
                "elsewhere, which TFLite cannot express",
            )
        else:
            x = _padded(w, node, x, pads, -128 if node.kind == "max_pool" else None)
    y = w.activation(node, node.outputs[0])
    opt = s.Pool2DOptionsT()
    opt.padding, opt.strideH, opt.strideW = padding, *a["stride"]
    opt.filterHeight, opt.filterWidth = a["kernel"]
    name = "MAX_POOL_2D" if node.kind == "max_pool" else "AVERAGE_POOL_2D"
    w.op(name, [x], [y], opt, "Pool2DOptions")
    w.values[node.outputs[0]] = y


def _binary(w: _Writer, node: Node) -> None:
    s = w.s
    y = w.activation(node, node.outputs[0])
    inputs = [w.values[v] for v in node.inputs]
    if node.kind == "add":
        w.op("ADD", inputs, [y], _options(s.AddOptionsT(), _fused(w, node)), "AddOptions")
    else:
        w.op("MUL", inputs, [y], _options(s.MulOptionsT(), _fused(w, node)), "MulOptions")
    w.values[node.outputs[0]] = y


def _clamp(w: _Writer, node: Node) -> None:
    name = _relu_name(w, node)
    if name is None:
        _fail(node, "clamps nothing at its output scale, and TFLite has no identity op")
    y = w.activation(node, node.outputs[0])
    w.op(name, [w.values[node.inputs[0]]], [y])
    w.values[node.outputs[0]] = y


def tflite_model(
    qmodel: QuantizedModel,
    *,
    widen_kernels: bool | None = None,
    compact: bool | None = None,
    memory_plan: bool = True,
) -> bytes:
    """The flatbuffer bytes of ``qmodel`` as an int8 TFLite model; ``memory_plan`` stores the C
    arena's layout as TFLM's offline memory plan.

    ``widen_kernels``: where SAME padding would place a convolution's windows one pixel off
    PyTorch's (stride 2 on an even size), append zero taps to the kernel so that SAME fits
    (True), or write a PAD whose output the runtime holds in RAM beside its input (False);
    by default (None), whichever takes fewer bytes, layer by layer (the taps of a depthwise
    convolution are few, those of a dense one many).

    ``compact`` (default: when ``qmodel`` was quantized for TensorFlow Lite Micro,
    ``rounding="tflm"``) writes what TFLM reads and nothing more: one zero point for a
    per-channel weight tensor (TFLM takes it for every channel; LiteRT refuses it), no
    quantization parameters on per-channel biases (TFLM derives their scale from the
    input's and the weights'), and no names but "input" (or "input0", "input1", ...) and
    "output". It saves
    20 bytes per output channel of every layer. ``compact=False`` writes the layout the
    TFLite converter writes, which every runtime loads.
    """
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(
            f"export_tflite takes a QuantizedModel (sc.quant.quantize), got {type(qmodel).__name__}"
        )
    flatbuffers, s = _schema()
    w = _Writer(s, qmodel, widen_kernels, qmodel.rounding == "tflm" if compact is None else compact)
    graph = qmodel.graph
    for k, v in enumerate(graph.inputs):  # "input", or "input0", "input1", ... for several
        name = "input" if len(graph.inputs) == 1 else f"input{k}"
        w.values[v] = w.tensor(_nhwc(graph.shapes[v][1:]), qmodel.qparams[v], name=name)
    for index, node in enumerate(graph.nodes):
        if node.kind != "move" and w.pending.keys() & set(node.inputs):
            _fail(node, "computes on an intermediate of a data move, which TFLite does not hold")
        if node.kind == "conv":
            _conv(w, index, node)
        elif node.kind == "linear":
            _linear(w, index, node)
        elif node.kind == "move":
            _move(w, node)
        elif node.kind == "mean":
            _mean(w, index, node)
        elif node.kind in ("avg_pool", "max_pool"):
            _pool(w, node)
        elif node.kind in ("add", "mul"):
            _binary(w, node)
        elif node.kind == "clamp":
            _clamp(w, node)
        elif node.kind == "lut":
            _lut(w, index, node)
        else:
            _fail(node, "has no bit-exact TFLite counterpart")
    w.tensors[w.values[graph.output]].name = "output"
    sub = s.SubGraphT()
    sub.tensors, sub.operators = w.tensors, w.ops
    sub.inputs, sub.outputs = [w.values[v] for v in graph.inputs], [w.values[graph.output]]
    sub.name = "main"
    model = s.ModelT()
    model.version, model.description = 3, "secateurs int8"
    model.subgraphs, model.buffers = [sub], w.buffers
    if memory_plan:
        offsets = np.array(memory_plan_offsets(sub, [n for n, _ in w.codes]), dtype="<i4")
        header = np.array([0, 0, len(offsets)], dtype="<i4")  # format 0, subgraph 0, count
        buf = s.BufferT()
        buf.data = np.concatenate([header, offsets]).view(np.uint8).tolist()
        w.buffers.append(buf)
        meta = s.MetadataT()
        meta.name, meta.buffer = "OfflineMemoryAllocation", len(w.buffers) - 1
        model.metadata = [meta]
    model.operatorCodes = []
    for name, version in w.codes:  # in index order (a dict keeps insertion order)
        oc = s.OperatorCodeT()
        oc.builtinCode = getattr(s.BuiltinOperator, name)
        oc.deprecatedBuiltinCode, oc.version = min(oc.builtinCode, 127), version
        model.operatorCodes.append(oc)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# TFLM aligns every arena buffer to 16 bytes (MicroArenaBufferAlignment)
TFLM_ALIGN = 16
# operators whose TFLM reference kernels compute output element i from input element i
# alone, reading it before writing: an input of the output's shape that dies there may
# share its buffer
IN_PLACE = {"ADD", "MUL", "RELU", "RELU6", "RELU_N1_TO_1", "HARD_SWISH", "LOGISTIC", "TANH"}
# the arena scratch a TFLM kernel requests, by its output's byte count: MEAN sums into
# int32, one per output element. The offline plan leaves a hole for it while the operator
# runs, which TFLM's planner, placing scratch first fit around the offline buffers, finds
SCRATCH = {"MEAN": lambda output_bytes: 4 * output_bytes}


def memory_plan_offsets(sub, operators: list[str]) -> list[int]:
    """An arena offset for every tensor of the subgraph ``sub`` (-1 for constants), as
    TFLM's offline memory plan (the "OfflineMemoryAllocation" metadata). Lifetimes run
    over the operator order; an in-place operator (``IN_PLACE``) writes over an input that
    dies there; the kernels' scratch (``SCRATCH``) is planned as a buffer of its operator;
    buffers are placed as the C arena's are (``deploy.plan.place``). The model's
    inputs and output are never written over, as in the C. ``operators``: the operator name
    of each opcode index."""
    from .plan import place

    types = _schema()[1].TensorType
    width = {types.INT8: 1, types.INT32: 4}  # the element types the writer emits
    const = {i for i, t in enumerate(sub.tensors) if t.buffer != 0}
    size = {
        i: int(np.prod(t.shape, dtype=np.int64)) * width[t.type] for i, t in enumerate(sub.tensors)
    }
    last = len(sub.operators) - 1
    first_use, last_use = dict.fromkeys(sub.inputs, 0), {sub.outputs[0]: last}
    for k, op in enumerate(sub.operators):
        for t in op.inputs:
            last_use[t] = max(last_use.get(t, k), k)
        for t in op.outputs:
            first_use.setdefault(t, k)
            last_use.setdefault(t, k)
    root = {}
    protected = {*sub.inputs, sub.outputs[0]}
    for k, op in enumerate(sub.operators):
        if operators[op.opcodeIndex] not in IN_PLACE or len(op.outputs) != 1:
            continue
        y = op.outputs[0]
        for t in op.inputs:
            b = root.get(t, t)
            if (
                t not in const
                and b not in protected
                and y not in protected
                and last_use[t] == k
                and list(sub.tensors[t].shape) == list(sub.tensors[y].shape)
                and size[t] == size[y]
            ):
                root[y] = b
                break
    lives, sizes = {}, {}
    for t in first_use:
        if t in const:
            continue
        b = root.get(t, t)
        f, la = lives.get(b, (first_use[t], last_use[t]))
        lives[b] = (min(f, first_use[t]), max(la, last_use[t]))
        sizes[b] = -(-max(sizes.get(b, 0), size[t]) // TFLM_ALIGN) * TFLM_ALIGN
    for k, op in enumerate(sub.operators):  # room for the kernels' own scratch
        scratch = SCRATCH.get(operators[op.opcodeIndex], lambda _: 0)(size[op.outputs[0]])
        if scratch:
            lives[("scratch", k)] = (k, k)
            sizes[("scratch", k)] = -(-scratch // TFLM_ALIGN) * TFLM_ALIGN
    offsets, _arena, _bound = place(lives, sizes)
    return [
        -1 if i in const or i not in first_use else offsets[root.get(i, i)]
        for i in range(len(sub.tensors))
    ]


def tflite_operators(model: str | os.PathLike | bytes) -> list[str]:
    """The builtin operator names of ``model``, a ``.tflite`` file (or its bytes), in execution
    order: what a runtime will run, for checking an export."""
    _, s = _schema()
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    m = s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names[c.builtinCode] for c in m.operatorCodes]
    return [codes[op.opcodeIndex] for op in m.subgraphs[0].operators]


def export_tflite(
    qmodel: QuantizedModel,
    path: str | os.PathLike,
    *,
    widen_kernels: bool | None = None,
    compact: bool | None = None,
    memory_plan: bool = True,
) -> Path:
    """Write ``qmodel`` as an int8 ``.tflite`` file at ``path`` (atomically); returns the
    path. See
    :func:`tflite_model` for ``widen_kernels``, ``compact`` and ``memory_plan``."""
    path = check_output_path(path, "export_tflite", folder=False)
    return write_atomic(
        path,
        tflite_model(qmodel, widen_kernels=widen_kernels, compact=compact, memory_plan=memory_plan),
    )
