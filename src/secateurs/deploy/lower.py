"""Lower a QuantizedModel's integer graph to the kernel calls of the generated C.

Tensors are channel-first (CHW) int8 at batch 1, PyTorch's own layout, so reshapes and
flattening move no data. Every op of the graph becomes one call of a kernel in
``c/sc_kernels.c`` with a constant parameter struct and constant arrays; data movement
(transpose, channel shuffle, concatenation, slicing, padding) becomes a list of copy runs
found by running the op on element indices, and a pure view becomes an alias of its input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..measure.encoding import encoding_bytes, kept_filterlets, live_channels
from ..quant.executor import run_move
from ..quant.fold import constant_outputs, fold_constant_channels
from ..quant.integer import LayerConsts, activation_range, mean_multiplier, mul_multiplier
from ..quant.ptq import QuantizedModel
from ..quant.qgraph import Node, QuantError

SPARSE = ("auto", "never", "always")
PACKED = -1  # the value id of the array holding a model's several inputs, in order
ELEMENTWISE = ("clamp", "lut", "add", "mul")  # may write over an input that dies here


@dataclass
class Const:
    """A constant array in flash: C element type and values."""

    ctype: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        width = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2}.get(self.ctype, 4)
        return int(self.values.size) * width


@dataclass
class Op:
    """One kernel call: ``kernel`` reads ``inputs`` and writes ``output`` (value ids)."""

    index: int  # node index in the graph
    kind: str  # the graph node's kind
    kernel: str  # the C function
    inputs: list[int]
    output: int
    module: str
    params: dict[str, int] = field(default_factory=dict)
    consts: dict[str, Const] = field(default_factory=dict)
    macs: int = 0
    encoding: str = ""  # conv/linear weights: dense or filterlet
    dense_weight_bytes: int = 0

    @property
    def elementwise(self) -> bool:
        return self.kind in ELEMENTWISE


@dataclass
class Program:
    ops: list[Op]
    sizes: dict[int, int]  # value id -> bytes at batch 1
    input: int  # the caller's input array: the model's input, or PACKED for several
    output: int
    alias: dict[int, int]  # value id -> the value whose buffer it is (views)
    # value id -> (value, byte offset): stored inside that value's bytes, such as an input
    # of a concatenation written straight into its slice of the output
    slices: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def short_runs(self) -> bool:
        """Copy runs are stored as int16 (every one of the model fits)."""
        copies = [op for op in self.ops if op.kernel == "sc_copy"]
        return any(op.consts["runs"].ctype == "int16_t" for op in copies)

    def _parent(self, v: int) -> tuple[int, int] | None:
        if v in self.alias:
            return self.alias[v], 0
        return self.slices.get(v)

    def buffer(self, v: int) -> int:
        """The value that owns ``v``'s bytes."""
        while (parent := self._parent(v)) is not None:
            v = parent[0]
        return v

    def offset(self, v: int) -> int:
        """Where ``v`` starts in its buffer's bytes."""
        total = 0
        while (parent := self._parent(v)) is not None:
            v, total = parent[0], total + parent[1]
        return total


def _per_sample(shape) -> tuple[int, ...]:
    return tuple(int(s) for s in shape[1:])


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _as_hw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of a 1-D (C, L) or 2-D (C, H, W) feature map."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else (shape[0], shape[1], shape[2])


def _pair(values, one_d: bool, fill: int) -> tuple[int, int]:
    return (fill, values[0]) if one_d else (values[0], values[1])


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Integers of ``bits`` (4 or 2) bits, two's complement, packed low bits first: what
    ``sc_unpack`` in the C kernels reads back."""
    per = 8 // bits
    flat = values.reshape(-1).astype(np.int64) & ((1 << bits) - 1)
    flat = np.concatenate([flat, np.zeros(-len(flat) % per, dtype=np.int64)])
    shifts = np.arange(per, dtype=np.int64) * bits
    return (flat.reshape(-1, per) << shifts).sum(1).astype(np.uint8)


def _dense_weights(op: Op, values: np.ndarray, bits: int, kernel: str, per_output: int) -> None:
    """Dense int8 weights, or below 8 bits packed, with a scratch row to unpack into."""
    if bits == 8:
        op.kernel = kernel
        op.consts["w"] = Const("int8_t", values.astype(np.int8))
    else:
        op.kernel = f"{kernel}_packed"
        op.consts["w"] = Const("uint8_t", pack(values, bits))
        op.params.update(bits=bits, scratch=per_output)
    op.encoding = "dense" if bits == 8 else f"packed{bits}"


def _use_filterlets(weight: torch.Tensor, sparse: str) -> bool:
    cout = weight.shape[0]
    positions = math.prod(weight.shape[2:])
    if positions > 255 or sparse == "never":  # one-byte column indices and row counts
        return False
    if sparse == "always":
        return True
    kept = kept_filterlets(weight)
    dense = weight.numel()
    smaller = encoding_bytes(weight, 8, True)["filterlet_csr"] < dense
    # both portable kernels pay per output row and kernel position; a kept filterlet also
    # decodes its position, about an eighth of that: skipping 1 in 8 pays. (On the DSP
    # paths, whose dense kernels are faster, sparse pays from about half: docs/deploy.md.)
    cheaper = kept * 8 < cout * positions * 7
    return smaller and cheaper


def _conv(op: Op, node: Node, q: QuantizedModel, c: LayerConsts, shapes, sparse: str) -> None:
    x_shape, y_shape = shapes[node.inputs[0]], shapes[node.outputs[0]]
    one_d = len(x_shape) == 2
    cin, h, w = _as_hw(x_shape)
    cout, oh, ow = _as_hw(y_shape)
    weight = c.weight
    kh, kw = (1, weight.shape[2]) if one_d else tuple(weight.shape[2:])
    a = node.attrs
    stride, dil = _pair(a["stride"], one_d, 1), _pair(a["dilation"], one_d, 1)
    pads = [(0, 0), *list(a["padding"])] if one_d else list(a["padding"])
    xq, yq = q.qparams[node.inputs[0]], q.qparams[node.outputs[0]]
    lo, hi = activation_range(a["act"], yq)
    cin_g = cin // a["groups"]
    op.params = {
        "cin": cin,
        "h": h,
        "w": w,
        "cout": cout,
        "kh": kh,
        "kw": kw,
        "oh": oh,
        "ow": ow,
        "stride_h": stride[0],
        "stride_w": stride[1],
        "dil_h": dil[0],
        "dil_w": dil[1],
        "pad_top": pads[0][0],
        "pad_left": pads[1][0],
        "groups": a["groups"],
        "in_zp": xq.zero_point,
        "out_zp": yq.zero_point,
        "act_min": lo,
        "act_max": hi,
        "live": cin_g,
    }
    op.dense_weight_bytes = weight.numel()
    flat = weight.reshape(cout, cin_g, kh * kw)
    if c.bits == 8 and _use_filterlets(weight, sparse):  # sub-8-bit weights stay packed
        keep = (flat != 0).any(1)  # cout x positions
        rows, cols = keep.nonzero(as_tuple=True)
        vals = flat.permute(0, 2, 1)[rows, cols]  # kept filterlets x cin_g
        op.kernel, op.encoding = "sc_conv_filterlet", "filterlet"
        live = live_channels(weight)
        if live is not None:  # store only the input channels some filter reads
            vals = vals[:, live]
            op.params["live"] = len(live)
        op.consts["chan"] = Const("uint8_t", np.zeros(0) if live is None else live.numpy())
        # padded to a whole word: the DSP kernel reads a filterlet's weights in words
        flat_vals = vals.numpy().astype(np.int8).reshape(-1)
        pad = (-op.params["live"]) % 4 if len(flat_vals) else 0
        op.consts["vals"] = Const("int8_t", np.concatenate([flat_vals, np.zeros(pad, np.int8)]))
        positions = kh * kw
        index = cols.numpy().astype(np.uint8) if positions > 1 else np.zeros(0)  # 1x1: none
        op.consts["col"] = Const("uint8_t", index)
        op.consts["count"] = Const("uint8_t", pack_counts(keep.sum(1).numpy(), positions))
        op.macs = int(keep.sum()) * op.params["live"] * oh * ow
        # a filter with no filterlet left outputs one constant: a byte instead of its bias,
        # multiplier and shift
        fill = list(constant_outputs(c, node, q.qparams).values())  # in channel order
        op.consts["fill"] = Const("int8_t", np.array(fill, dtype=np.int64))
        _requant_consts(op, c, keep.any(1))
    else:
        # [cout][kh·kw][cin/groups], as filterlets are stored: a kernel position's weights
        # are contiguous, so dense and sparse read them alike
        by_position = flat.permute(0, 2, 1).contiguous().numpy()
        _dense_weights(op, by_position, c.bits, "sc_conv", cin_g * kh * kw)
        op.macs = cout * cin_g * kh * kw * oh * ow
        _requant_consts(op, c)


def pack_counts(counts: np.ndarray, positions: int) -> np.ndarray:
    """Kept filterlets per filter, where row pointers would take two or four bytes: two
    counts to a byte (low nibble first) when a kernel has at most 15 positions (3x3 and
    1x1 do), else a byte each (kh·kw ≤ 255)."""
    counts = counts.astype(np.uint8)
    if positions > 15:
        return counts
    padded = np.append(counts, np.zeros(len(counts) % 2, np.uint8))
    return padded[0::2] | (padded[1::2] << 4)


def _requant_consts(op: Op, c, channels: torch.Tensor | None = None) -> None:
    """Per output channel (of ``channels`` only, where given): int32 bias and multiplier,
    int8 shift."""
    pick = slice(None) if channels is None else channels
    op.consts["bias"] = Const("int32_t", c.bias[pick].numpy().astype(np.int64))
    op.consts["mult"] = Const("int32_t", c.multiplier[pick].numpy().astype(np.int64))
    # TFLite shifts lie in [-31, 30]: one byte each, not the int32 TFLite Micro spends
    op.consts["shift"] = Const("int8_t", c.shift[pick].numpy().astype(np.int64))


def _use_bitmask(weight: torch.Tensor, bits: int, sparse: str) -> bool:
    if bits != 8 or sparse == "never":
        return False
    if sparse == "always":
        return True
    rows, cols = weight.shape
    kept = int(torch.count_nonzero(weight))
    smaller = encoding_bytes(weight, 8, False)["bitmask"] < weight.numel()
    # instructions, roughly: a MAC per weight, against a test per mask byte and a MAC plus
    # about 2 to find the bit per kept weight (on the host: dense wins at 50% sparsity,
    # the bitmask from about 70%; see docs/benchmarks.md)
    cheaper = 3 * kept + rows * ((cols + 7) // 8) < rows * cols
    return smaller and cheaper


def _linear(op: Op, node: Node, q: QuantizedModel, shapes, sparse: str) -> None:
    c = q.layers[op.index]
    x_shape = shapes[node.inputs[0]]
    if len(x_shape) != 1:
        raise QuantError(
            f"linear layer '{node.module}' reads a {len(x_shape) + 1}-D input; the C kernel "
            "takes (N, features): flatten before it"
        )
    xq, yq = q.qparams[node.inputs[0]], q.qparams[node.outputs[0]]
    lo, hi = activation_range(node.attrs["act"], yq)
    out_features, in_features = c.weight.shape
    op.params = {
        "in_features": in_features,
        "out_features": out_features,
        "in_zp": xq.zero_point,
        "out_zp": yq.zero_point,
        "act_min": lo,
        "act_max": hi,
    }
    op.dense_weight_bytes = c.weight.numel()
    op.macs = in_features * out_features
    if _use_bitmask(c.weight, c.bits, sparse):
        flat = c.weight.reshape(-1)
        bits = np.packbits((c.weight != 0).numpy().astype(np.uint8), axis=1, bitorder="little")
        op.kernel, op.encoding = "sc_linear_bitmask", "bitmask"
        op.consts["mask"] = Const("uint8_t", bits)
        op.consts["vals"] = Const("int8_t", flat[flat != 0].numpy().astype(np.int8))
        op.macs = int(torch.count_nonzero(flat))
    else:
        _dense_weights(op, c.weight.numpy(), c.bits, "sc_linear", in_features)
    _requant_consts(op, c)
    if op.kernel == "sc_linear" and xq.zero_point != 0:
        # the input zero point's share, -zp * sum(w), folded into the bias once, here (as
        # TFLite Micro precomputes it for CMSIS-NN): the kernel then sums x * w alone
        folded = c.bias.to(torch.int64) - xq.zero_point * c.weight.to(torch.int64).sum(1)
        if bool(((folded >= -(2**31)) & (folded < 2**31)).all()):
            op.consts["bias"] = Const("int32_t", folded.numpy())
            op.params["in_zp"] = 0


def _broadcast(node: Node, shape, out_shape) -> tuple[int, int]:
    """(div, mod) that index an operand of ``shape`` from a flat output index."""
    n = _numel(out_shape)
    if tuple(shape) == tuple(out_shape):
        return 1, n
    if _numel(shape) == 1:
        return 1, 1
    if len(shape) == len(out_shape) and shape[0] == out_shape[0] and _numel(shape[1:]) == 1:
        return _numel(out_shape[1:]), shape[0]  # per channel, broadcast over space
    raise QuantError(
        f"{node.kind} in module '{node.module}' broadcasts {tuple(shape)} to "
        f"{tuple(out_shape)}; the C kernels broadcast only scalars and per-channel operands"
    )


def _binary(op: Op, node: Node, q: QuantizedModel, shapes) -> None:
    out = shapes[node.outputs[0]]
    (a_div, a_mod), (b_div, b_mod) = (_broadcast(node, shapes[v], out) for v in node.inputs)
    qa, qb = (q.qparams[v] for v in node.inputs)
    c = q.ops[op.index]
    if node.kind == "add":
        mults = c.multipliers
    else:
        mults = [(0, 0), (0, 0), mul_multiplier(qa, qb, q.qparams[node.outputs[0]], q.rounding)]
    op.params = {
        "count": _numel(out),
        "a_div": a_div,
        "a_mod": a_mod,
        "b_div": b_div,
        "b_mod": b_mod,
        "a_zp": qa.zero_point,
        "b_zp": qb.zero_point,
        "out_zp": q.qparams[node.outputs[0]].zero_point,
        "act_min": c.lo,
        "act_max": c.hi,
        "a_mult": mults[0][0],
        "a_shift": mults[0][1],
        "b_mult": mults[1][0],
        "b_shift": mults[1][1],
        "out_mult": mults[2][0],
        "out_shift": mults[2][1],
    }
    op.kernel = "sc_add" if node.kind == "add" else "sc_mul"
    op.macs = _numel(out)


def _mean(op: Op, node: Node, q: QuantizedModel, shapes) -> None:
    shape = shapes[node.inputs[0]]
    dims = sorted(d - 1 for d in node.attrs["dims"])
    if not dims or dims[0] < 0 or dims != list(range(dims[0], dims[-1] + 1)):
        raise QuantError(
            f"mean in module '{node.module}' reduces dims {node.attrs['dims']}; the C kernel "
            "reduces one contiguous range of non-batch dims (global pooling)"
        )
    reduce = _numel(shape[dims[0] : dims[-1] + 1])
    xq, yq = q.qparams[node.inputs[0]], q.qparams[node.outputs[0]]
    m, s = mean_multiplier(xq, yq, reduce)
    op.params = {
        "outer": _numel(shape[: dims[0]]),
        "reduce": reduce,
        "inner": _numel(shape[dims[-1] + 1 :]),
        "in_zp": xq.zero_point,
        "out_zp": yq.zero_point,
        "mult": m,
        "shift": s,
    }
    op.kernel = "sc_mean"
    op.macs = _numel(shape)


def _pool(op: Op, node: Node, q: QuantizedModel, shapes) -> None:
    x_shape, y_shape = shapes[node.inputs[0]], shapes[node.outputs[0]]
    if len(x_shape) != 3:
        raise QuantError(f"{node.kind} in module '{node.module}' needs a (N, C, H, W) input")
    a = node.attrs
    dil = a.get("dilation", [1, 1])
    op.params = {
        "c": x_shape[0],
        "h": x_shape[1],
        "w": x_shape[2],
        "oh": y_shape[1],
        "ow": y_shape[2],
        "kh": a["kernel"][0],
        "kw": a["kernel"][1],
        "stride_h": a["stride"][0],
        "stride_w": a["stride"][1],
        "dil_h": dil[0],
        "dil_w": dil[1],
        "pad_top": a["padding"][0],
        "pad_left": a["padding"][1],
        "count_include_pad": int(a.get("count_include_pad", False)),
        "zp": q.qparams[node.inputs[0]].zero_point,
    }
    op.kernel = "sc_avg_pool" if node.kind == "avg_pool" else "sc_max_pool"
    op.macs = _numel(y_shape) * a["kernel"][0] * a["kernel"][1]


def _sources(node: Node, graph_shapes) -> list[torch.Tensor]:
    """For each output of a move node, the flat source of each element: input k and offset
    encoded as ``k * 2**32 + offset``, or -1 for padding."""
    env = {}
    for k, v in enumerate(dict.fromkeys(node.inputs)):
        shape = (1, *graph_shapes[v][1:])
        env[v] = (torch.arange(_numel(shape[1:]), dtype=torch.int64) + (k << 32)).reshape(shape)
    return [t.reshape(-1) for t in run_move(node, env, pad_value=-1)]


def _runs(source: torch.Tensor) -> np.ndarray:
    """Maximal runs (dst_off, src, src_off, len) of consecutive sources."""
    s = source.numpy()
    src = np.where(s < 0, -1, s >> 32)
    off = np.where(s < 0, 0, s & 0xFFFFFFFF)
    breaks = np.ones(len(s), dtype=bool)
    breaks[1:] = (src[1:] != src[:-1]) | ((off[1:] != off[:-1] + 1) & (src[1:] >= 0))
    starts = np.flatnonzero(breaks)
    lengths = np.diff(np.append(starts, len(s)))
    return np.stack([starts, src[starts], off[starts], lengths], axis=1).astype(np.int64)


def lower(qmodel: QuantizedModel, sparse: str = "auto") -> Program:
    """The kernel calls, tensor sizes and aliases of ``qmodel`` at batch 1."""
    graph = qmodel.graph
    layers = fold_constant_channels(qmodel)  # exact: pruned filters' outputs folded away
    shapes = {v: _per_sample(s) for v, s in graph.shapes.items()}
    sizes = {v: _numel(s) for v, s in shapes.items()}
    ops: list[Op] = []
    alias: dict[int, int] = {}
    for index, node in enumerate(graph.nodes):
        if node.kind == "move":
            uniq = list(dict.fromkeys(node.inputs))
            for v, source in zip(node.outputs, _sources(node, graph.shapes)):
                runs = _runs(source)
                whole = len(runs) == 1 and runs[0, 2] == 0 and runs[0, 3] == sizes[uniq[runs[0, 1]]]
                if whole and runs[0, 1] >= 0:
                    alias[v] = uniq[runs[0, 1]]  # a view: same bytes, same buffer
                    continue
                op = Op(index, "move", "sc_copy", uniq, v, node.module)
                op.consts["runs"] = Const("int32_t", runs)
                op.params = {"fill": qmodel.qparams[v].zero_point}
                ops.append(op)
            continue
        op = Op(index, node.kind, "", list(node.inputs), node.outputs[0], node.module)
        if node.kind == "conv":
            _conv(op, node, qmodel, layers[index], shapes, sparse)
        elif node.kind == "linear":
            _linear(op, node, qmodel, shapes, sparse)
        elif node.kind in ("add", "mul"):
            _binary(op, node, qmodel, shapes)
        elif node.kind == "mean":
            _mean(op, node, qmodel, shapes)
        elif node.kind in ("avg_pool", "max_pool"):
            _pool(op, node, qmodel, shapes)
        elif node.kind == "clamp":
            c = qmodel.ops[index]
            op.kernel, op.params = "sc_clamp", {"count": sizes[op.output], "lo": c.lo, "hi": c.hi}
        elif node.kind == "lut":
            op.kernel, op.params = "sc_lut", {"count": sizes[op.output]}
            op.consts["table"] = Const(
                "int8_t", qmodel.ops[index].table_for(qmodel.rounding).numpy().astype(np.int8)
            )
        else:
            raise QuantError(f"no C kernel for op kind {node.kind!r} in '{node.module}'")
        ops.append(op)
    runs = [op.consts["runs"] for op in ops if op.kernel == "sc_copy"]
    if all(int(np.abs(r.values).max()) < 2**15 for r in runs):  # two bytes a field will do
        for r in runs:
            r.ctype = "int16_t"
    program = Program(ops, sizes, graph.inputs[0], graph.output, alias)
    if len(graph.inputs) > 1:  # one caller's array holding every input, one after another
        program.input, offset = PACKED, 0
        for v in graph.inputs:
            program.slices[v] = (PACKED, offset)
            offset += sizes[v]
        sizes[PACKED] = offset
    return program
