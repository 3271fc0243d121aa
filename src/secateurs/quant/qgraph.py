"""Capture a float model as a graph of the integer ops a microcontroller runs.

One forward pass, watched op by op (``secateurs._execution``), records every ATen op that touches an
activation, with the module it ran in; a second pass fuses BatchNorm and clamping
activations into the convolution, linear layer or addition before them, as TFLite does.
The result, a :class:`QGraph`, is what the float, fake-quant and integer executors walk,
and what the C generator and the ONNX exporter translate. Weights are referenced by module
path, never copied, so quantization-aware training updates the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .._execution import Watcher, overloads, tensors, watch

aten = torch.ops.aten

CONV = overloads(aten.convolution, aten._convolution)
LINEAR = overloads(aten.addmm, aten.mm)
BATCH_NORM = overloads(aten.native_batch_norm, aten._native_batch_norm_legit_no_training)
ADD = overloads(aten.add, aten.add_)
MUL = overloads(aten.mul, aten.mul_)
MEAN = overloads(aten.mean)
ADAPTIVE_AVG = overloads(aten._adaptive_avg_pool2d, aten.adaptive_avg_pool1d)
AVG_POOL = overloads(aten.avg_pool2d)
MAX_POOL = overloads(aten.max_pool2d_with_indices)
CLAMP = overloads(
    aten.relu,
    aten.relu_,
    aten.hardtanh,
    aten.hardtanh_,
    aten.clamp,
    aten.clamp_,
    aten.clamp_min,
    aten.clamp_min_,
)
LUT = overloads(
    aten.sigmoid,
    aten.sigmoid_,
    aten.hardsigmoid,
    aten.hardsigmoid_,
    aten.tanh,
    aten.tanh_,
    aten.hardswish,
    aten.hardswish_,
    aten.silu,
    aten.silu_,
    aten.gelu,
    aten.elu,
    aten.elu_,
    aten.leaky_relu,
    aten.leaky_relu_,
)
MOVE = overloads(
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.transpose,
    aten.permute,
    aten.t,
    aten.clone,
    aten.alias,
    aten.detach,
    aten.contiguous,
    aten.squeeze,
    aten.unsqueeze,
    aten.split,
    aten.split_with_sizes,
    aten.select,
    aten.slice,
    aten.cat,
    aten.constant_pad_nd,
    aten.flatten,
)
INPLACE = overloads(
    aten.add_,
    aten.mul_,
    aten.relu_,
    aten.hardtanh_,
    aten.clamp_,
    aten.clamp_min_,
    aten.sigmoid_,
    aten.hardsigmoid_,
    aten.tanh_,
    aten.hardswish_,
    aten.silu_,
    aten.elu_,
    aten.leaky_relu_,
)
RESTRIDE = overloads(aten.as_strided_)  # restores a memory format; a no-op at equal size
IGNORED = overloads(aten.empty, aten.zeros, aten.ones, aten.full, aten.lift_fresh)

KINDS = ("conv", "linear", "add", "mul", "mean", "avg_pool", "max_pool", "clamp", "lut", "move")
FUSIBLE = ("conv", "linear", "add")  # ops whose output clamp TFLite folds into the kernel
TYING = ("move", "max_pool", "avg_pool", "clamp")  # ops whose output keeps its input's scale


class QuantError(RuntimeError):
    """A model, or data for it, that the quantization scheme cannot handle."""


@dataclass
class Node:
    """One integer op: ``kind`` with its value ids in and out and its constant attributes.

    conv/linear: ``layer`` (module path of the nn.Conv/nn.Linear), ``bn`` (path of a folded
    BatchNorm or None), conv geometry; conv/linear/add: ``act`` (real-valued clamp bounds,
    None for none); move: ``func`` and ``args`` with ``("value", k)`` placeholders.
    """

    kind: str
    inputs: list[int]
    outputs: list[int]
    module: str
    attrs: dict = field(default_factory=dict)


@dataclass
class QGraph:
    nodes: list[Node]
    shapes: dict[int, tuple[int, ...]]  # value id -> shape at the traced batch size
    inputs: list[int]  # the model's inputs, in the order it takes them
    output: int

    def layers(self) -> list[Node]:
        return [n for n in self.nodes if n.kind in ("conv", "linear")]

    def consumers(self) -> dict[int, list[Node]]:
        out: dict[int, list[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                out.setdefault(v, []).append(node)
        return out

    def ties(self) -> dict[int, int]:
        """Value id -> the value whose quantization parameters it shares.

        Data movement, pooling and standalone clamps keep their input's scale and zero point
        (TFLite requires it of pooling); every input of a concatenation shares one.
        """
        parent = {v: v for v in self.shapes}

        def find(v: int) -> int:
            while parent[v] != v:
                parent[v] = parent[parent[v]]
                v = parent[v]
            return v

        for node in self.nodes:
            if node.kind in TYING:
                for v in node.inputs[1:] + node.outputs:
                    a, b = find(node.inputs[0]), find(v)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        return {v: find(v) for v in self.shapes}

    def sources(self) -> set[int]:
        """The values whose range is observed: the inputs and every output of an op that
        requantizes (the others take their input's parameters, ``ties``)."""
        outputs = {v for n in self.nodes if n.kind not in TYING for v in n.outputs}
        return set(self.inputs) | outputs


def _batch_free(args, batch: int):
    """A view's size with the traced batch dimension replaced by -1, so any batch runs."""
    size = list(args[1])
    if size and size[0] == batch and args[0].shape[0] == batch:
        size[0] = -1
    return [args[0], size, *args[2:]]


def _real_clamp(func, args) -> tuple[float | None, float | None]:
    name = func.overloadpacket.__name__.rstrip("_")
    if name == "relu":
        return 0.0, None
    if name == "hardtanh":
        return float(args[1] if len(args) > 1 else -1.0), float(args[2] if len(args) > 2 else 1.0)
    if name == "clamp_min":
        return float(args[1]), None
    lo = args[1] if len(args) > 1 else None
    hi = args[2] if len(args) > 2 else None
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        raise QuantError("clamp with tensor bounds has no int8 kernel; use number bounds")
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


class _Recorder(Watcher):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.modules = dict(model.named_modules())
        self.values: dict[int, int] = {}  # id(tensor) -> value id
        self.keep: list[torch.Tensor] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.nodes: list[Node] = []
        self.batch = 0

    def new_value(self, t: torch.Tensor) -> int:
        v = len(self.shapes)
        self.shapes[v] = tuple(t.shape)
        self.values[id(t)] = v
        self.keep.append(t)
        return v

    def value(self, t) -> int | None:
        return self.values.get(id(t)) if isinstance(t, torch.Tensor) else None

    def fail(self, func, why: str) -> None:
        raise QuantError(f"{func} in module '{self.where()}' {why}")

    def begin(self, inputs: tuple) -> None:
        self.firsts = [self.new_value(t) for t in inputs]

    def op(self, func, args: tuple, kwargs: dict):
        out = func(*args, **kwargs)
        inputs = [v for v in map(self.value, tensors((args, kwargs))) if v is not None]
        if not inputs or func in IGNORED:
            return out  # weight transforms and constants: not part of the integer graph
        outs = tensors(out)
        if func in MAX_POOL:
            outs = outs[:1]  # the indices output is not data
        if func in INPLACE:
            self.keep.append(out)
        record = self.record(func, args, kwargs, inputs)
        record.outputs = [self.new_value(t) for t in outs]
        self.nodes.append(record)
        return out

    def record(self, func, args, kwargs, inputs) -> Node:
        where, module = self.where(), self.modules.get(self.path())
        if func in CONV:
            x, w, _b, stride, padding, dilation, transposed, _, groups = args[:9]
            if transposed:
                self.fail(func, "is a transposed convolution, which int8 does not support")
            if not isinstance(module, (nn.Conv1d, nn.Conv2d)) or self.value(w) is not None:
                self.fail(func, "is not the forward of an nn.Conv1d/nn.Conv2d; use those layers")
            pads = [(int(p), int(p)) for p in padding]
            attrs = {
                "layer": where,
                "bn": None,
                "act": None,
                "stride": list(map(int, stride)),
                "padding": pads,
                "dilation": list(map(int, dilation)),
                "groups": int(groups),
            }
            return Node("conv", [self.value(x)], [], where, attrs)
        if func in LINEAR:
            x = args[1] if func.overloadpacket is aten.addmm else args[0]
            if not isinstance(module, nn.Linear) or self.value(x) is None or len(inputs) != 1:
                self.fail(func, "is a matrix product outside an nn.Linear; use nn.Linear")
            return Node(
                "linear", [self.value(x)], [], where, {"layer": where, "bn": None, "act": None}
            )
        if func in BATCH_NORM:
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                self.fail(func, "is not the forward of an nn.BatchNorm layer")
            return Node("bn", [self.value(args[0])], [], where, {"bn": where})
        if func in CLAMP:
            return Node("clamp", inputs[:1], [], where, {"act": _real_clamp(func, args)})
        if func in ADD or func in MUL:
            alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
            if len(inputs) != 2 or alpha != 1:
                self.fail(
                    func,
                    "combines an activation with a constant; int8 has no kernel "
                    "for that (fold the constant into a layer)",
                )
            kind = "add" if func in ADD else "mul"
            return Node(kind, inputs, [], where, {"act": None})
        if func in MEAN or func in ADAPTIVE_AVG:
            x = args[0]
            if func in ADAPTIVE_AVG:
                if any(int(s) != 1 for s in args[1]):
                    self.fail(func, "pools to a size other than 1; only global pooling is int8")
                dims, keep = list(range(2, x.dim())), True
            else:
                dims = [d % x.dim() for d in (args[1] if len(args) > 1 else range(x.dim()))]
                keep = bool(args[2]) if len(args) > 2 else bool(kwargs.get("keepdim", False))
            return Node("mean", inputs, [], where, {"dims": dims, "keepdim": keep})
        if func in AVG_POOL or func in MAX_POOL:
            kind = "avg_pool" if func in AVG_POOL else "max_pool"
            kernel = list(map(int, args[1]))
            stride = list(map(int, args[2])) if len(args) > 2 and args[2] else kernel
            padding = list(map(int, args[3])) if len(args) > 3 else [0, 0]
            attrs = {"kernel": kernel, "stride": stride, "padding": padding}
            if kind == "max_pool":
                attrs["dilation"] = list(map(int, args[4])) if len(args) > 4 else [1, 1]
                attrs["ceil_mode"] = bool(args[5]) if len(args) > 5 else False
                return Node(kind, inputs, [], where, attrs)
            attrs["count_include_pad"] = bool(args[5]) if len(args) > 5 else True
            if len(args) > 4 and args[4]:
                self.fail(func, "uses ceil_mode=True; int8 average pooling needs floor mode")
            if len(args) > 6 and args[6] is not None:
                self.fail(func, "uses divisor_override, which int8 pooling does not support")
            return Node(kind, inputs, [], where, attrs)
        if func in LUT:
            consts = [a for a in args[1:] if not isinstance(a, torch.Tensor)]
            return Node("lut", inputs, [], where, {"func": func, "args": consts, "kwargs": kwargs})
        if func in RESTRIDE and list(args[1]) == list(args[0].shape):
            return Node(
                "move",
                inputs,
                [],
                where,
                {"func": aten.alias.default, "args": [("value", inputs[0])], "kwargs": {}},
            )
        if func in MOVE:
            if func.overloadpacket in (aten.view, aten._unsafe_view, aten.reshape):
                args = _batch_free(args, self.batch)
            if func.overloadpacket is aten.constant_pad_nd and len(args) > 2 and args[2] != 0:
                self.fail(func, "pads with a nonzero value; int8 padding writes real zeros")
            spec = [("value", self.value(a)) if self.value(a) is not None else a for a in args]
            spec = [
                [("value", self.value(t)) for t in a]
                if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)
                else a
                for a in spec
            ]
            return Node("move", inputs, [], where, {"func": func, "args": spec, "kwargs": kwargs})
        self.fail(func, f"has no int8 kernel; supported op kinds: {', '.join(KINDS)}")
        raise AssertionError  # unreachable


def capture(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> QGraph:
    """Trace ``model`` (in eval mode, without gradients) on ``example`` (a tuple of tensors
    for a model with several inputs) into a fused QGraph."""
    examples = example if isinstance(example, (tuple, list)) else (example,)
    if len({t.shape[0] for t in examples}) != 1:
        raise QuantError("the example inputs hold different numbers of samples")
    recorder = _Recorder(model)
    recorder.batch = examples[0].shape[0]
    _, out = watch(model, examples, recorder)
    firsts = recorder.firsts
    if not isinstance(out, torch.Tensor) or recorder.value(out) is None:
        raise QuantError("the model must return one tensor computed from its input")
    read = {v for node in recorder.nodes for v in node.inputs}
    unused = [k for k, v in enumerate(firsts) if v not in read]
    if unused:
        raise QuantError(
            f"the model never reads input {unused[0]}; an int8 build takes only "
            "inputs it uses: drop it from forward"
        )
    graph = QGraph(recorder.nodes, recorder.shapes, firsts, recorder.value(out))
    return _fuse(graph)


def _remap(args: list, alias: dict[int, int]) -> list:
    def one(a):
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "value":
            return ("value", alias.get(a[1], a[1]))
        if isinstance(a, list):
            return [one(b) for b in a]
        return a

    return [one(a) for a in args]


def _fuse(graph: QGraph) -> QGraph:
    """Fold BatchNorm into the conv/linear before it and clamps into conv/linear/add."""
    consumers = graph.consumers()
    producer = {v: n for n in graph.nodes for v in n.outputs}
    kept: list[Node] = []
    alias: dict[int, int] = {}
    for node in graph.nodes:
        node.inputs = [alias.get(v, v) for v in node.inputs]
        if node.kind == "move":
            node.attrs["args"] = _remap(node.attrs["args"], alias)
        src = producer.get(node.inputs[0]) if node.inputs else None
        single = src is not None and len(consumers.get(node.inputs[0], [])) == 1
        single = single and node.inputs[0] != graph.output
        if node.kind == "bn":
            ok = single and src.kind in ("conv", "linear") and src.attrs["bn"] is None
            if not ok or src.attrs["act"] is not None:
                raise QuantError(
                    f"BatchNorm '{node.module}' does not directly follow a convolution or "
                    "linear layer, so it cannot be folded; place it right after one"
                )
            src.attrs["bn"] = node.attrs["bn"]
        elif node.kind == "clamp" and single and src.kind in FUSIBLE and src.attrs["act"] is None:
            src.attrs["act"] = node.attrs["act"]
        else:
            kept.append(node)
            continue
        alias[node.outputs[0]] = src.outputs[0]
        producer[src.outputs[0]] = src
        consumers[src.outputs[0]] = consumers.get(node.outputs[0], [])
    output = alias.get(graph.output, graph.output)
    shapes = {v: s for v, s in graph.shapes.items() if v not in alias}
    return QGraph(kept, shapes, graph.inputs, output)
