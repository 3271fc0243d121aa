"""Run a QGraph in floating point, with the model's live weights.

Used three ways: to calibrate (``observe`` sees every value), for quantization-aware
training (``observe`` fake-quantizes activations, ``weight`` fake-quantizes weights, and
gradients reach the model's parameters), and to check the capture against the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._execution import ROOT
from .qgraph import Node, QGraph

Observe = Callable[[int, torch.Tensor], torch.Tensor]
WeightHook = Callable[[Node, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def folded_weights(model: nn.Module, node: Node) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a conv/linear node with its BatchNorm folded in (eval statistics)."""
    modules = model.get_submodule
    layer = modules("" if node.attrs["layer"] == ROOT else node.attrs["layer"])
    w = layer.weight
    b = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    if node.attrs["bn"] is not None:
        bn = modules(node.attrs["bn"])
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_var)
        factor = gamma / torch.sqrt(bn.running_var + bn.eps)
        w = w * factor.reshape(-1, *([1] * (w.dim() - 1)))
        b = (b - bn.running_mean) * factor + beta
    return w, b


def clamp_act(y: torch.Tensor, act) -> torch.Tensor:
    if act is None:
        return y
    lo, hi = act
    return torch.clamp(y, min=lo, max=hi)


def conv_nd(x: torch.Tensor, w: torch.Tensor, b, attrs: dict) -> torch.Tensor:
    pads = attrs["padding"]
    if any(a != z for a, z in pads):
        x = F.pad(x, [p for pair in reversed(pads) for p in pair])
        padding = 0
    else:
        padding = [a for a, _ in pads]
    conv = F.conv1d if w.dim() == 3 else F.conv2d
    return conv(x, w, b, attrs["stride"], padding, attrs["dilation"], attrs["groups"])


def resolve(args, env: dict[int, torch.Tensor]):
    """Replace ``("value", k)`` placeholders of a move node by tensors of ``env``."""
    out = []
    for a in args:
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "value":
            out.append(env[a[1]])
        elif isinstance(a, list) and a and isinstance(a[0], tuple) and a[0][0] == "value":
            out.append([env[k] for _, k in a])
        else:
            out.append(a)
    return out


def out_of_place(func):
    name = func.overloadpacket.__name__
    if name.endswith("_"):
        packet = getattr(torch.ops.aten, name[:-1])
        return getattr(packet, func._overloadname)
    return func


def run_move(node: Node, env: dict[int, torch.Tensor], pad_value: float = 0.0) -> list:
    func = node.attrs["func"]
    args = resolve(node.attrs["args"], env)
    if func.overloadpacket is torch.ops.aten.constant_pad_nd:
        args = [args[0], args[1], pad_value]
    out = func(*args, **node.attrs["kwargs"])
    return list(out) if isinstance(out, (list, tuple)) else [out]


def run_float(
    graph: QGraph,
    model: nn.Module,
    x: torch.Tensor | tuple[torch.Tensor, ...],
    observe: Observe | None = None,
    weight: WeightHook | None = None,
) -> torch.Tensor:
    """The graph on float inputs ``x`` (a tuple, one tensor per input, for several)."""
    see = observe or (lambda v, t: t)
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if len(xs) != len(graph.inputs):
        raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(xs)}")
    env = {v: see(v, t) for v, t in zip(graph.inputs, xs)}
    for node in graph.nodes:
        ins = [env[v] for v in node.inputs]
        a = node.attrs
        if node.kind in ("conv", "linear"):
            w, b = folded_weights(model, node)
            if weight is not None:
                w, b = weight(node, w, b)
            y = conv_nd(ins[0], w, b, a) if node.kind == "conv" else F.linear(ins[0], w, b)
            outs = [clamp_act(y, a["act"])]
        elif node.kind == "add":
            outs = [clamp_act(ins[0] + ins[1], a["act"])]
        elif node.kind == "mul":
            outs = [clamp_act(ins[0] * ins[1], a["act"])]
        elif node.kind == "mean":
            outs = [ins[0].mean(dim=a["dims"], keepdim=a["keepdim"])]
        elif node.kind == "avg_pool":
            outs = [
                F.avg_pool2d(
                    ins[0],
                    a["kernel"],
                    a["stride"],
                    a["padding"],
                    count_include_pad=a["count_include_pad"],
                )
            ]
        elif node.kind == "max_pool":
            outs = [
                F.max_pool2d(
                    ins[0],
                    a["kernel"],
                    a["stride"],
                    a["padding"],
                    a["dilation"],
                    ceil_mode=a["ceil_mode"],
                )
            ]
        elif node.kind == "clamp":
            outs = [clamp_act(ins[0], a["act"])]
        elif node.kind == "lut":
            outs = [out_of_place(a["func"])(ins[0], *a["args"], **a["kwargs"])]
        else:
            outs = run_move(node, env)
        for v, t in zip(node.outputs, outs):
            env[v] = see(v, t)
    return env[graph.output]
