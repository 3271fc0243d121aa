"""ONNX export: float models through torch, int8 models as QDQ graphs.

A QuantizedModel becomes the "QDQ" form onnxruntime and other int8 back ends read
(QuantizeLinear / DequantizeLinear around float ops): int8 weights with per-channel scales,
int32 biases at scale s_x * s_w, and a QuantizeLinear / DequantizeLinear pair at every
point where the integer model requantizes. The graph returns the int8 output tensor, so
its result compares directly with ``QuantizedModel.run_int8``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .._checks import model_runs_on
from .._io import check_output_path, write_atomic
from ..data.task import as_args, call
from ..quant.ptq import QuantizedModel
from ..quant.qgraph import Node, QuantError

if TYPE_CHECKING:
    import onnx

OPSET = 17
TYING = ("move", "max_pool", "clamp")


def _onnx():
    """The onnx package (the ``onnx`` extra), imported where an export needs it."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(
            "export_onnx needs the onnx package: pip install 'secateurs[onnx]' (or pip "
            "install onnx; add onnxruntime to run the file)"
        ) from err
    return onnx


def export_onnx(model: nn.Module, path: str | os.PathLike, *, example=None):
    """Write ``model`` to ``path`` (atomically): QDQ int8 for a QuantizedModel, float
    otherwise (then ``example`` inputs are required: a tensor, or a tuple of tensors for a
    model with several inputs). The graph's inputs are named "input" (or "input0",
    "input1", ... for several), its output "output". Returns the path."""
    path = check_output_path(path, "export_onnx", folder=False)
    _onnx()  # torch's exporter needs it too: say which extra, before any work
    if isinstance(model, QuantizedModel):
        proto = qdq_model(model)
        _onnx().checker.check_model(proto)
        data = proto.SerializeToString()
    elif isinstance(model, nn.Module):
        if example is None:
            raise ValueError(
                "export_onnx needs example inputs for a float model: "
                "export_onnx(model, path, example=task.example_inputs())"
            )
        data = _torch_export(model, example)
    else:
        raise TypeError(f"model must be an nn.Module or QuantizedModel, got {type(model).__name__}")
    return write_atomic(path, data)


def _torch_export(model: nn.Module, example) -> bytes:
    """The float model through torch's own exporter (``torch.export`` then ONNX, the
    ``dynamo=True`` path torch maintains), with a dynamic batch dimension. A model
    ``torch.export`` cannot capture (one that branches on its data, or reads a number out
    of a tensor) goes through the TorchScript exporter instead, with a warning that says
    why: that exporter follows the one path the example takes, and torch deprecates it."""
    was_training = model.training
    model.eval()
    args = as_args(example)
    names = ["input"] if len(args) == 1 else [f"input{k}" for k in range(len(args))]
    named = {"input_names": names, "output_names": ["output"]}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            with model_runs_on(example, "export_onnx"), torch.no_grad():
                call(model, example)  # a clear error for inputs the model cannot take
            batch = torch.export.Dim("N", min=1, max=1 << 16)
            try:
                with warnings.catch_warnings(), _quiet_exporter():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        model,
                        args,
                        str(out),
                        **named,
                        dynamo=True,
                        external_data=False,  # one file: the weights inside it
                        dynamic_shapes=tuple({0: batch} for _ in args),
                        verbose=False,
                    )
            except Exception as err:  # torch.export's refusals have no common type
                why = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                warnings.warn(
                    f"export_onnx: torch.export cannot capture this model "
                    f"({type(err).__name__}: {why}); exported with the TorchScript exporter, "
                    "which records the path the example inputs take",
                    stacklevel=3,
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    torch.onnx.export(
                        model,
                        args,
                        str(out),
                        **named,
                        dynamo=False,
                        dynamic_axes={**{n: {0: "N"} for n in names}, "output": {0: "N"}},
                    )
        finally:
            model.train(was_training)
        return out.read_bytes()


@contextlib.contextmanager
def _quiet_exporter():
    """torch.export and the ONNX exporter report each step at INFO and WARNING on their
    loggers; an export that succeeds says nothing."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch.onnx", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _Builder:
    def __init__(self, qmodel: QuantizedModel) -> None:
        self.onnx = _onnx()
        self.q = qmodel
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, array: np.ndarray, stem: str) -> str:
        name = self.name(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind: str, inputs: list[str], stem: str, **attrs) -> str:
        out = self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(kind, inputs, [out], **attrs))
        return out

    def qdq(self, tensor: str, value: int, stem: str) -> tuple[str, str]:
        """QuantizeLinear then DequantizeLinear with the value's parameters: (int8, float)."""
        p = self.q.qparams[value]
        scale = self.const(np.float32(p.scale), "scale")
        zero = self.const(np.int8(p.zero_point), "zero_point")
        q = self.op("QuantizeLinear", [tensor, scale, zero], f"{stem}_q")
        return q, self.op("DequantizeLinear", [q, scale, zero], f"{stem}_dq")


def qdq_model(qmodel: QuantizedModel) -> onnx.ModelProto:
    """The QDQ ONNX graph of ``qmodel``."""
    b = _Builder(qmodel)
    helper, tensor_proto = b.onnx.helper, b.onnx.TensorProto
    graph = qmodel.graph
    names: dict[int, str] = {}
    inputs = (
        ["input"] if len(graph.inputs) == 1 else [f"input{k}" for k in range(len(graph.inputs))]
    )
    for name, v in zip(inputs, graph.inputs):
        _, names[v] = b.qdq(name, v, name)
    for index, node in enumerate(graph.nodes):
        ins = [names[v] for v in node.inputs]
        outs = _emit(b, index, node, ins)
        for v, t in zip(node.outputs, outs):
            if node.kind in TYING:
                names[v] = t
            else:
                names[v] = b.qdq(t, v, f"v{v}")[1]
    out_q = b.qdq(names[graph.output], graph.output, "output")[0]
    b.nodes.append(helper.make_node("Identity", [out_q], ["output"]))
    out_shape = ["N", *graph.shapes[graph.output][1:]]
    onnx_graph = helper.make_graph(
        b.nodes,
        "secateurs_int8",
        [
            helper.make_tensor_value_info(name, tensor_proto.FLOAT, ["N", *graph.shapes[v][1:]])
            for name, v in zip(inputs, graph.inputs)
        ],
        [helper.make_tensor_value_info("output", tensor_proto.INT8, out_shape)],
        b.inits,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def _act(b: _Builder, tensor: str, act) -> str:
    if act is None:
        return tensor
    lo, hi = act
    if lo == 0.0 and hi is None:
        return b.op("Relu", [tensor], "relu")
    inputs = [
        tensor,
        b.const(np.float32(-np.inf if lo is None else lo), "min"),
        b.const(np.float32(np.inf if hi is None else hi), "max"),
    ]
    return b.op("Clip", inputs, "clip")


def _emit(b: _Builder, index: int, node: Node, ins: list[str]) -> list[str]:
    a = node.attrs
    if node.kind in ("conv", "linear"):
        c = b.q.layers[index]
        x_scale = b.q.qparams[node.inputs[0]].scale
        channels = c.weight.shape[0]
        w = b.op(
            "DequantizeLinear",
            [
                b.const(c.weight.numpy().astype(np.int8), "w"),
                b.const(c.weight_scale.numpy().astype(np.float32), "w_scale"),
                b.const(np.zeros(channels, np.int8), "w_zero"),
            ],
            "weight",
            axis=0,
        )
        bias = b.op(
            "DequantizeLinear",
            [
                b.const(c.bias.numpy().astype(np.int32), "b"),
                b.const((x_scale * c.weight_scale.numpy()).astype(np.float32), "b_scale"),
                b.const(np.zeros(channels, np.int32), "b_zero"),
            ],
            "bias",
            axis=0,
        )
        if node.kind == "linear":
            y = b.op("Gemm", [ins[0], w, bias], "gemm", transB=1)
        else:
            pads = [p for p, _ in a["padding"]] + [p for _, p in a["padding"]]
            y = b.op(
                "Conv",
                [ins[0], w, bias],
                "conv",
                strides=a["stride"],
                pads=pads,
                dilations=a["dilation"],
                group=a["groups"],
            )
        return [_act(b, y, a["act"])]
    if node.kind in ("add", "mul"):
        return [_act(b, b.op("Add" if node.kind == "add" else "Mul", ins, node.kind), a["act"])]
    if node.kind == "mean":
        return [b.op("ReduceMean", ins, "mean", axes=a["dims"], keepdims=int(a["keepdim"]))]
    if node.kind in ("avg_pool", "max_pool"):
        pads = list(a["padding"]) * 2
        if node.kind == "avg_pool":
            return [
                b.op(
                    "AveragePool",
                    ins,
                    "avg_pool",
                    kernel_shape=a["kernel"],
                    strides=a["stride"],
                    pads=pads,
                    count_include_pad=int(a["count_include_pad"]),
                )
            ]
        return [
            b.op(
                "MaxPool",
                ins,
                "max_pool",
                kernel_shape=a["kernel"],
                strides=a["stride"],
                pads=pads,
                dilations=a["dilation"],
                ceil_mode=int(a["ceil_mode"]),
            )
        ]
    if node.kind == "clamp":
        return [_act(b, ins[0], a["act"])]
    if node.kind == "lut":
        return [_lut(b, node, ins[0])]
    return _move(b, node, ins)


def _lut(b: _Builder, node: Node, x: str) -> str:
    name = node.attrs["func"].overloadpacket.__name__.rstrip("_")
    args = node.attrs["args"]
    if name == "sigmoid":
        return b.op("Sigmoid", [x], name)
    if name == "tanh":
        return b.op("Tanh", [x], name)
    if name == "hardsigmoid":
        return b.op("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)
    if name == "hardswish":
        return b.op("HardSwish", [x], name)
    if name == "silu":
        return b.op("Mul", [x, b.op("Sigmoid", [x], "sigmoid")], name)
    if name == "elu":
        return b.op("Elu", [x], name, alpha=float(args[0]) if args else 1.0)
    if name == "leaky_relu":
        return b.op("LeakyRelu", [x], name, alpha=float(args[0]) if args else 0.01)
    raise QuantError(
        f"{name} in module '{node.module}' has no ONNX export; export models without it"
    )


def _move(b: _Builder, node: Node, ins: list[str]) -> list[str]:
    func = node.attrs["func"]
    name = func.overloadpacket.__name__
    args = node.attrs["args"]
    rank = len(node_shape := b.q.graph.shapes[node.inputs[0]])
    if name in ("view", "_unsafe_view", "reshape"):
        shape = np.array(list(args[1]), dtype=np.int64)
        return [b.op("Reshape", [ins[0], b.const(shape, "shape")], "reshape")]
    if name in ("clone", "alias", "detach", "contiguous"):
        return [b.op("Identity", [ins[0]], "identity")]
    if name in ("transpose", "t"):
        d0, d1 = (args[1] % rank, args[2] % rank) if name == "transpose" else (0, 1)
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return [b.op("Transpose", [ins[0]], "transpose", perm=perm)]
    if name == "permute":
        return [b.op("Transpose", [ins[0]], "transpose", perm=[d % rank for d in args[1]])]
    if name in ("squeeze", "unsqueeze"):
        dims = args[1] if len(args) > 1 else [i for i, s in enumerate(node_shape) if s == 1]
        dims = [dims] if isinstance(dims, int) else list(dims)
        out_rank = rank + (1 if name == "unsqueeze" else 0)
        axes = b.const(np.array([d % out_rank for d in dims], np.int64), "axes")
        return [b.op(name.capitalize(), [ins[0], axes], name)]
    if name in ("split", "split_with_sizes"):
        dim = (args[2] if len(args) > 2 else 0) % rank
        if name == "split":
            size, total = int(args[1]), node_shape[dim]
            sizes = [size] * (total // size) + ([total % size] if total % size else [])
        else:
            sizes = list(args[1])
        outs = [b.name("split") for _ in sizes]
        b.nodes.append(
            b.onnx.helper.make_node(
                "Split", [ins[0], b.const(np.array(sizes, np.int64), "sizes")], outs, axis=dim
            )
        )
        return outs
    if name == "select":
        index = b.const(np.array(int(args[2]), np.int64), "index")
        return [b.op("Gather", [ins[0], index], "select", axis=int(args[1]) % rank)]
    if name == "slice":
        dim = (args[1] if len(args) > 1 else 0) % rank
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        end = args[3] if len(args) > 3 and args[3] is not None else node_shape[dim]
        step = args[4] if len(args) > 4 else 1
        consts = [
            b.const(np.array([v], np.int64), s)
            for v, s in (
                (start, "starts"),
                (min(end, 2**62), "ends"),
                (dim, "axes"),
                (step, "steps"),
            )
        ]
        return [b.op("Slice", [ins[0], *consts], "slice")]
    if name == "cat":
        dim = (args[1] if len(args) > 1 else 0) % rank
        return [b.op("Concat", ins, "concat", axis=dim)]
    if name == "constant_pad_nd":
        pad = list(args[1])
        begin, end = [0] * rank, [0] * rank
        for k in range(len(pad) // 2):
            begin[rank - 1 - k], end[rank - 1 - k] = pad[2 * k], pad[2 * k + 1]
        pads = b.const(np.array(begin + end, np.int64), "pads")
        return [b.op("Pad", [ins[0], pads], "pad")]
    raise QuantError(f"{func} in module '{node.module}' has no ONNX export")
