"""Record what a forward pass really executes: every ATen op, its module, its tensors.

The pass is watched at the ATen level (``secateurs._execution``), below every
Python-level composite (multi-head attention included), so no layer type is missed. A
tensor is an *activation* when it is derived from the inputs; tensors derived only from
parameters, buffers or constants (a transposed or masked weight, say) are weights.
Tensors are identified by their storage, so views and in-place ops share their input's
buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import model_runs_on
from .._execution import Watcher, tensors, watch

aten = torch.ops.aten


@dataclass
class TracedOp:
    """One executed op: where it ran, what it read and wrote, and its weights."""

    index: int
    module: str
    op: str
    inputs: list[int]  # storage keys of the activations read
    outputs: list[int]  # storage keys of the activations written (new or reused)
    new_outputs: list[int]  # the subset first written here
    output_shape: tuple[int, ...]
    macs: int = 0
    nonzero_macs: int = 0
    weight_numel: int = 0


@dataclass
class Trace:
    ops: list[TracedOp] = field(default_factory=list)
    buffer_bytes: dict[int, int] = field(default_factory=dict)  # storage key -> bytes
    input_keys: list[int] = field(default_factory=list)
    output_keys: list[int] = field(default_factory=list)


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _nnz(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t))


def _count(func, args, out, is_weight) -> tuple[int, int]:
    """(MACs, MACs with a nonzero weight) of one op; zero for ops that are not products."""
    if func in (aten.convolution.default, aten._convolution.default):
        x, w = args[0], args[1]
        transposed = bool(args[6])
        if transposed:  # each input element meets Cout/groups * prod(kernel) weights
            positions = x.numel() // x.shape[1]
            macs = x.numel() * w[0].numel()
        else:  # each output element meets Cin/groups * prod(kernel) weights
            positions = out.numel() // out.shape[1]
            macs = out.numel() * w[0].numel()
        return macs, positions * _nnz(w) if is_weight(w) else macs
    if func in (aten.addmm.default, aten.mm.default, aten.bmm.default, aten.baddbmm.default):
        a, b = (
            (args[1], args[2]) if func in (aten.addmm.default, aten.baddbmm.default) else args[:2]
        )
        macs = a.numel() * b.shape[-1]
        if is_weight(b):
            return macs, (a.numel() // a.shape[-1]) * _nnz(b) // max(1, math.prod(b.shape[:-2]))
        if is_weight(a):
            return macs, _nnz(a) * b.shape[-1]
        return macs, macs
    if func is aten.linear.default:
        x, w = args[0], args[1]
        macs = (x.numel() // x.shape[-1]) * w.numel()
        return macs, (x.numel() // x.shape[-1]) * _nnz(w)
    if func is aten._scaled_dot_product_flash_attention_for_cpu.default:
        return (_attention_macs(*args[:3]),) * 2
    if func is aten._native_multi_head_attention.default:
        return _fused_attention_macs(*args[:9])
    if func is aten.mkldnn_rnn_layer.default:  # one LSTM layer and direction, fused
        x, w_ih, w_hh = args[0], args[1], args[2]
        steps = x.numel() // x.shape[-1]
        return steps * (w_ih.numel() + w_hh.numel()), steps * (_nnz(w_ih) + _nnz(w_hh))
    return 0, 0


def _attention_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """softmax(q·kᵀ)·v: every query meets every key, then every value."""
    queries = q.numel() // q.shape[-1]
    return queries * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _fused_attention_macs(q, k, v, embed_dim, heads, w_qkv, b_qkv, w_out, b_out):
    """PyTorch's fused multi-head attention: input projections, attention, output projection."""
    e = embed_dim
    rows = [t.numel() // t.shape[-1] for t in (q, k, v)]
    macs = sum(rows) * e * e + rows[0] * e * e
    nonzero = sum(r * _nnz(w_qkv[i * e : (i + 1) * e]) for i, r in enumerate(rows))
    nonzero += rows[0] * _nnz(w_out)
    batch = q.numel() // (q.shape[-2] * e)
    per_head = lambda t: t.reshape(batch, -1, heads, e // heads).transpose(1, 2)  # noqa: E731
    attention = _attention_macs(per_head(q), per_head(k), per_head(v))
    return macs + attention, nonzero + attention


class _Recorder(Watcher):
    def __init__(self, trace: Trace, act_bits: int):
        super().__init__()
        self.trace = trace
        self.activation_keys: set[int] = set()
        self.keep: list[torch.Tensor] = []  # keeps storages alive, so keys stay unique
        self.act_bits = act_bits

    def mark_activation(self, t: torch.Tensor) -> None:
        if t.untyped_storage().nbytes() == 0:
            return  # empty tensors hold no memory and share the null address
        key = _key(t)
        self.activation_keys.add(key)
        self.keep.append(t)
        if key not in self.trace.buffer_bytes:
            self.trace.buffer_bytes[key] = self._bytes(t)

    def _bytes(self, t: torch.Tensor) -> int:
        numel = t.untyped_storage().nbytes() // t.element_size()
        bits = self.act_bits if t.is_floating_point() else t.element_size() * 8
        return math.ceil(numel * bits / 8)

    def begin(self, inputs: tuple) -> None:
        for t in tensors(inputs):
            self.mark_activation(t)
            self.trace.input_keys.append(_key(t))

    def op(self, func, args: tuple, kwargs: dict):
        out = func(*args, **kwargs)
        ins = [t for t in tensors((args, kwargs)) if _key(t) in self.activation_keys]
        if not ins:
            return out  # weight or constant preprocessing: not part of the activation flow
        in_keys = list(dict.fromkeys(_key(t) for t in ins))
        outs = tensors(out)
        new = []
        for t in outs:
            if _key(t) not in self.activation_keys:
                new.append(_key(t))
            self.mark_activation(t)

        def is_weight(t: torch.Tensor) -> bool:
            return _key(t) not in self.activation_keys

        macs, nonzero = _count(func, args, outs[0] if outs else None, is_weight)
        weights = [t for t in tensors((args, kwargs)) if t.is_floating_point() and is_weight(t)]
        self.trace.ops.append(
            TracedOp(
                index=len(self.trace.ops),
                module=self.path(),
                op=func.__name__.split(".")[0] if hasattr(func, "__name__") else str(func),
                inputs=in_keys,
                outputs=[k for k in dict.fromkeys(map(_key, outs)) if k in self.trace.buffer_bytes],
                new_outputs=[k for k in dict.fromkeys(new) if k in self.trace.buffer_bytes],
                output_shape=tuple(outs[0].shape) if outs else (),
                macs=int(macs),
                nonzero_macs=int(nonzero),
                weight_numel=sum(t.numel() for t in weights if t.dim() > 0),
            )
        )
        return out


def trace(model: nn.Module, example_inputs, *, activation_bits: int = 32) -> Trace:
    """Run ``model`` once on ``example_inputs`` (eval mode, no gradients) and record it;
    activations count ``activation_bits`` bits per value in ``buffer_bytes``."""
    result = Trace()
    with model_runs_on(example_inputs, "profile"):
        _, out = watch(model, example_inputs, _Recorder(result, activation_bits))
    result.output_keys = list(dict.fromkeys(_key(t) for t in tensors(out)))
    return result
