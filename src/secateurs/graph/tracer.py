"""Trace a forward pass into coupled channel slots.

Known layers (convolutions, linear, norms, PReLU, multi-head attention) are recorded as
whole modules; everything between them is recorded op by op at the ATen level, where each
op's effect on channels is derived by running the same op on the shadows of its inputs
(so reshapes, transposes, pixel shuffle, split and cat are exact, not guessed). A slot is
one removable index of one module axis, such as output channel 5 of ``stage2.0.conv``;
slots that must be removed together end up in one union-find class.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .._checks import model_runs_on
from .._execution import ROOT, Watcher, label, map_tensors, overloads, tensors, watch
from . import attention
from .shadow import BLOCKED, NONE, Shadow, compress
from .unionfind import Couplings

aten = torch.ops.aten

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
RNN = (nn.RNN, nn.GRU, nn.LSTM)
KNOWN = (
    *CONV,
    *CONV_T,
    nn.Linear,
    *BATCHNORM,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.PReLU,
    nn.MultiheadAttention,
    *RNN,
)


class GraphError(RuntimeError):
    """An op or layer the dependency graph cannot prune safely."""


@dataclass(frozen=True)
class Slot:
    """One removable index of one module axis ("out", "in", "chan", "embed", "param:NAME")."""

    module: str
    axis: str
    index: int


@dataclass
class Constraint:
    """Removal must take equally many ids from each block (the groups of a grouped
    convolution, the cells of a recurrent layer, the pieces of an even split)."""

    blocks: list[list[int]]
    reason: str


IDENTITY = overloads(
    aten.detach, aten.alias, aten.clone, aten._to_copy, aten.contiguous, aten.lift_fresh
)
MOVEMENT = overloads(
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.transpose,
    aten.permute,
    aten.t,
    aten.expand,
    aten.squeeze,
    aten.unsqueeze,
    aten.slice,
    aten.select,
    aten.narrow,
    aten.split,
    aten.split_with_sizes,
    aten.unbind,
    aten.cat,
    aten.stack,
    aten.flatten,
    aten.pixel_shuffle,
    aten.pixel_unshuffle,
    aten.constant_pad_nd,
    aten.index_select,
    aten.flip,
    aten.roll,
    aten.repeat,
    aten.unfold,
    aten.movedim,
    aten.chunk,
    aten.unsafe_split,
    aten.index,
)
VIEWS = overloads(aten.view, aten._unsafe_view, aten.reshape)
SHUFFLE = overloads(aten.channel_shuffle, aten.native_channel_shuffle)
SPATIAL = overloads(
    aten.avg_pool1d,
    aten.avg_pool2d,
    aten.avg_pool3d,
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
    aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices,
    aten.adaptive_avg_pool1d,
    aten.adaptive_avg_pool2d,
    aten.adaptive_avg_pool3d,
    aten._adaptive_avg_pool2d,
    aten._adaptive_avg_pool3d,
    aten.adaptive_max_pool1d,
    aten.adaptive_max_pool2d,
    aten.adaptive_max_pool3d,
    aten.upsample_nearest1d,
    aten.upsample_nearest2d,
    aten.upsample_nearest3d,
    aten.upsample_linear1d,
    aten.upsample_bilinear2d,
    aten.upsample_bicubic2d,
    aten._upsample_nearest_exact2d,
    aten.reflection_pad1d,
    aten.reflection_pad2d,
    aten.replication_pad1d,
    aten.replication_pad2d,
)
SOFTMAX = overloads(aten._softmax, aten.softmax, aten._log_softmax, aten.log_softmax, aten.cumsum)
REDUCE = overloads(
    aten.mean,
    aten.sum,
    aten.amax,
    aten.amin,
    aten.max,
    aten.min,
    aten.var,
    aten.std,
    aten.prod,
    aten.logsumexp,
)
VECTOR_NORM = overloads(aten.linalg_vector_norm)
# elementwise, though ATen does not tag them pointwise
ELEMENTWISE = overloads(aten.hardswish, aten.log_sigmoid_forward, aten.rrelu_with_noise)
PRODUCT = overloads(
    aten.mm,
    aten.bmm,
    aten.matmul,
    aten.addmm,
    aten.baddbmm,
    aten.einsum,
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten.scaled_dot_product_attention,
)


def param_axis(module: nn.Module, axis: str) -> tuple[torch.Tensor, int]:
    """The tensor a "param:NAME" axis slices, and along which dimension ("param:NAME@D"
    for a tensor of several dimensions)."""
    name, _, dim = axis[len("param:") :].partition("@")
    t = getattr(module, name)
    return t, int(dim) if dim else param_dim(t)


def param_dim(p: torch.Tensor) -> int | None:
    """The channel dimension of a per-channel parameter or buffer: a float tensor whose
    dimensions are all 1 but one (the first, when all are 1); None for any other."""
    if not p.is_floating_point() or p.dim() == 0:
        return None
    long = [d for d, n in enumerate(p.shape) if n != 1]
    if len(long) > 1:
        return None
    return long[0] if long else 0


def _kept(shadow: Shadow) -> bool:
    """Whether every element of a tensor is known to hold kept channels (or constants)."""
    return shadow.blocked or bool((shadow.all_ids() <= BLOCKED).all())


def _restride_only(func, args) -> bool:
    """``as_strided`` that keeps the shape and every element where it was (strides change
    only along dimensions of size 1: a pooled (N, C, 1, 1) map made channels-last)."""
    if func.overloadpacket is not aten.as_strided or len(args) < 3:
        return False
    x, size, stride = args[0], tuple(args[1]), tuple(args[2])
    offset = args[3] if len(args) > 3 and args[3] is not None else x.storage_offset()
    return (
        size == tuple(x.shape)
        and offset == x.storage_offset()
        and all(n == 1 or a == b for n, a, b in zip(size, stride, x.stride()))
    )


def _out_of_place(func):
    """The out-of-place form of an in-place op (``hardswish_`` -> ``hardswish``): the same
    values, written over the input, whose shadow the output then replaces."""
    name = func._schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_"):
        return func
    packet = getattr(aten, name[:-1], None)
    return getattr(packet, func._overloadname, func) if packet is not None else func


@dataclass
class TraceResult:
    uf: Couplings
    ranges: list[tuple[str, str, int, int]]  # (module, axis, first slot id, count)
    constraints: list[Constraint]
    module_order: dict[str, int]
    modules: dict[str, nn.Module]


class _Builder(Watcher):
    def __init__(self, model: nn.Module, ignored: set[str]) -> None:
        super().__init__()
        self.uf = Couplings()
        self.uf.new(1)  # id 0: BLOCKED
        self.ranges: list[tuple[str, str, int, int]] = []
        self.constraints: list[Constraint] = []
        self.shadows: dict[int, Shadow] = {}
        self.keep: list[torch.Tensor] = []
        self.forbidden: dict[int, str] = {}  # tensor id -> module path of a weight it came from
        # custom layers' tensors of several dimensions (a position embedding (1, L, C)):
        # tensor id -> (module, name), given slots along the dimension where an element-wise
        # op meets them with an activation's channels
        self.positional: dict[int, tuple[str, str]] = {}
        self.chunking = 0  # inside torch.chunk, whose pieces follow the tensor's width
        self.opaque_flags: list[bool] = []
        self.opaque = 0
        self.ignored = ignored
        self.ignored_outputs: dict[int, str] = {}  # tensor id -> the ignored module that made it
        self.modules = dict(model.named_modules())
        self._slot_cache: dict[tuple[str, str], range] = {}

    # --- bookkeeping -------------------------------------------------------------------
    def set_shadow(self, t: torch.Tensor, shadow: Shadow | None) -> None:
        if shadow is None:
            self.shadows.pop(id(t), None)
            return
        self.shadows[id(t)] = shadow
        self.keep.append(t)

    def shadow(self, t: torch.Tensor) -> Shadow | None:
        return self.shadows.get(id(t))

    def new_slots(self, module: str, axis: str, count: int) -> range:
        """Slot ids for ``count`` indices of one module axis; the same ids on every call."""
        key = (module, axis)
        if key not in self._slot_cache:
            ids = self.uf.new(count)
            self.ranges.append((module, axis, ids.start, count))
            self._slot_cache[key] = ids
        return self._slot_cache[key]

    def block(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.uf.union_many(np.full(len(ids), BLOCKED), ids)

    def link(self, slot_ids: list[int], tensor: torch.Tensor, dim: int) -> None:
        """Couple slot i with whatever channel units fill index i of ``tensor``'s ``dim``."""
        shadow = self.shadow(tensor)
        if shadow is None:
            self.block(slot_ids)  # a constant feeds these indices: they cannot be removed
            return
        slot_ids = np.asarray(slot_ids, dtype=np.int64)
        if shadow.full is None and not shadow.blocked and shadow.dim == dim % tensor.dim():
            ids = shadow.ids  # one id per index: couple them all at once
            self.uf.union_many(slot_ids, np.where(ids >= 0, ids, BLOCKED))
            return
        for sid, ids in zip(slot_ids.tolist(), shadow.along(dim, tuple(tensor.shape))):
            if len(ids) == 0:
                self.uf.union(BLOCKED, sid)
            self.uf.union_many(np.full(len(ids), sid), ids)

    def balance(self, ids, block: int, reason: str) -> None:
        ids = [int(i) for i in ids]
        blocks = [ids[i : i + block] for i in range(0, len(ids), block)]
        if len(blocks) > 1:
            self.constraints.append(Constraint(blocks, f"{reason} in '{self.where()}'"))

    def advice(self) -> str:
        """How to get past an op the graph refuses, in the module running it."""
        if self.where() == ROOT:
            return (
                "it runs in the model's own forward: wrap it in a submodule and pass that "
                "module's name in ignored=[...] to leave it as it is"
            )
        return f"pass ignored=['{self.where()}'] to leave it as it is"

    # --- module hooks ------------------------------------------------------------------
    def enter(self, name: str, module: nn.Module, args, kwargs) -> None:
        opaque = bool(self.opaque) or isinstance(module, KNOWN) or name in self.ignored
        super().enter(name, module, args, kwargs)
        self.opaque_flags.append(opaque)
        self.opaque += opaque

    def leave(self, name: str, module: nn.Module, args, kwargs, output) -> None:
        super().leave(name, module, args, kwargs, output)
        opaque = self.opaque_flags.pop()
        self.opaque -= opaque
        if not opaque or self.opaque:
            return  # a transparent module, or one nested inside an opaque one
        if name in self.ignored:
            self.record_ignored(args, kwargs, output)
            for t in tensors(output):
                self.ignored_outputs[id(t)] = name
                self.keep.append(t)
        else:
            self.record_module(name, module, args, kwargs, output)

    def begin(self, inputs: tuple) -> None:
        for t in tensors(inputs):
            self.set_shadow(t, Shadow(blocked=True))

    def record_ignored(self, args, kwargs, output) -> None:
        for t in tensors((args, kwargs)):
            s = self.shadow(t)
            if s is not None:
                self.block(s.all_ids())
        for t in tensors(output):
            self.set_shadow(t, Shadow(blocked=True))

    def record_module(self, name: str, m: nn.Module, args, kwargs, output) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        if isinstance(m, CONV):
            self._conv(name, m, x, output)
        elif isinstance(m, CONV_T):
            self._conv_transpose(name, m, x, output)
        elif isinstance(m, nn.Linear):
            self.link(self.new_slots(name, "in", m.in_features), x, x.dim() - 1)
            out = self.new_slots(name, "out", m.out_features)
            self.set_shadow(output, Shadow.vector(output.dim() - 1, out))
        elif isinstance(m, BATCHNORM):
            self._per_channel(name, m.num_features, x, output, 1)
        elif isinstance(m, nn.GroupNorm):
            self._per_channel(name, m.num_channels, x, output, 1)
            if m.num_groups != m.num_channels:  # statistics over several channels per group
                self.block(self.new_slots(name, "chan", m.num_channels))
        elif isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1:
                self.record_ignored(args, kwargs, output)
                return
            # its mean and variance run over the features: removing one changes the others
            self._per_channel(name, m.normalized_shape[0], x, output, x.dim() - 1)
            self.block(self.new_slots(name, "chan", m.normalized_shape[0]))
        elif isinstance(m, nn.PReLU):
            if m.num_parameters == 1:
                self.set_shadow(output, self.shadow(x))
            else:
                self._per_channel(name, m.num_parameters, x, output, 1)
        elif isinstance(m, nn.MultiheadAttention):
            self._attention(name, m, args, kwargs, output)
        elif isinstance(m, RNN):
            self._rnn(name, m, args, kwargs, output)

    def _per_channel(self, name, count, x, output, dim) -> None:
        self.link(self.new_slots(name, "chan", count), x, dim)
        self.set_shadow(output, self.shadow(x))

    def _conv(self, name: str, m: nn.Module, x, output) -> None:
        groups = m.groups
        ipg, opg = m.in_channels // groups, m.out_channels // groups
        ins = self.new_slots(name, "in", m.in_channels)
        outs = self.new_slots(name, "out", m.out_channels)
        self.link(ins, x, 1)
        if ipg == 1 and groups > 1:  # depthwise: an input channel and its outputs go together
            self.uf.union_many(np.repeat(np.asarray(ins), opg), np.asarray(outs))
        elif groups > 1:
            self.balance(ins, ipg, f"a convolution with {groups} groups")
            self.balance(outs, opg, f"a convolution with {groups} groups")
        self.set_shadow(output, Shadow.vector(1, outs))

    def _conv_transpose(self, name: str, m: nn.Module, x, output) -> None:
        ins = self.new_slots(name, "in", m.in_channels)
        outs = self.new_slots(name, "out", m.out_channels)
        self.link(ins, x, 1)
        if m.groups != 1:
            self.block([*ins, *outs])  # grouped transposed convolutions stay as they are
        self.set_shadow(output, Shadow.vector(1, outs))

    def _attention(self, name, m, args, kwargs, output) -> None:
        """Multi-head attention: its embedding features ("embed", the stream its inputs and
        output run in: projection columns, output rows) and its inner width ("heads", head
        by head: projection rows, output columns), whose slots are tied head by head, so a
        head goes whole."""
        names = ("query", "key", "value")
        qkv = [args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names)]
        embed = self.new_slots(name, "embed", m.embed_dim)
        heads = np.asarray(self.new_slots(name, "heads", m.num_heads * m.head_dim))
        if not attention.prunable(m):
            self.block([*embed, *heads])  # other widths for keys and values, bias_kv, zero_attn
        for t in qkv:
            if t.shape[-1] == m.embed_dim:
                self.link(embed, t, t.dim() - 1)
            elif self.shadow(t) is not None:  # keys or values of another width: kept
                self.block(self.shadow(t).all_ids())
        first = heads.reshape(m.num_heads, m.head_dim)[:, :1]
        self.uf.union_many(np.repeat(first, m.head_dim, axis=1).reshape(-1), heads)
        attn = output[0] if isinstance(output, tuple) else output
        self.set_shadow(attn, Shadow.vector(attn.dim() - 1, embed))

    def _rnn(self, name: str, m: nn.Module, args, kwargs, output) -> None:
        """A recurrent layer: its input features ("in") and its hidden units ("hidden",
        every layer and direction in turn: index (layer * directions + direction) * H +
        unit). A unit is removed with its gate rows, its recurrent column and the next
        layer's input column; one hidden size serves every layer and direction, so each
        loses equally many."""
        x = args[0] if args else kwargs["input"]
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        dirs, h, layers = 2 if m.bidirectional else 1, m.hidden_size, m.num_layers
        ins = self.new_slots(name, "in", m.input_size)
        hidden = np.asarray(self.new_slots(name, "hidden", layers * dirs * h))
        if not isinstance(x, torch.Tensor) or getattr(m, "proj_size", 0):
            self.block([*ins, *hidden])  # packed sequences and projections stay as they are
            self.record_ignored((x,), {}, output)
            return
        self.link(ins, x, x.dim() - 1)
        for t in tensors(hx):
            s = self.shadow(t)
            if s is not None:  # a state carried in from elsewhere: keep it as it is
                self.block([*s.all_ids(), *hidden])
        self.balance(hidden, h, f"{type(m).__name__} with {layers} layers x {dirs} directions")
        out, states = output
        last = hidden[(layers - 1) * dirs * h :]
        self.set_shadow(out, Shadow.vector(out.dim() - 1, last))
        per_state = torch.as_tensor(hidden.reshape(layers * dirs, 1, h))
        for t in tensors(states):  # (layers * directions, [batch,] H)
            ids = per_state if t.dim() == 3 else per_state[:, 0]
            self.set_shadow(t, compress(ids.expand(t.shape).clone()))

    # --- ATen ops ------------------------------------------------------------------------
    def op(self, func, args: tuple, kwargs: dict):
        out = func(*args, **kwargs)
        if not self.opaque:
            self.record_op(func, args, kwargs, out)
        return out

    def record_op(self, func, args, kwargs, out) -> None:
        func = _out_of_place(func)
        inputs = tensors((args, kwargs))
        shadowed = [t for t in inputs if id(t) in self.shadows]
        weights = [t for t in inputs if id(t) in self.forbidden]
        if not shadowed:
            if weights:  # an op on a weight alone (a transpose, a mask): its result is a weight
                for t in tensors(out):
                    self.forbidden[id(t)] = self.forbidden[id(weights[0])]
                    self.keep.append(t)
            return
        if weights and torch.Tag.pointwise in func.tags:
            weights = [t for t in weights if not self._place_positional(t, shadowed, out)]
        if weights and self._functional_linear(func, args, weights, out):
            return
        if weights and self._fixed_beside_blocked(weights, shadowed, out):
            return
        if weights:
            raise GraphError(
                f"op {func} in module '{self.where()}' computes with the weight of "
                f"'{self.forbidden[id(weights[0])]}' outside that layer, which the graph cannot "
                f"prune safely; {self.advice()}"
            )
        outs = tensors(out)
        if func in IDENTITY or _restride_only(func, args):
            for t in outs:
                self.set_shadow(t, self.shadow(shadowed[0]))
        elif func in MOVEMENT:
            self._movement(func, args, kwargs, out)
        elif func in SHUFFLE:
            self._shuffle(func, args, kwargs, out)
        elif torch.Tag.pointwise in func.tags or func in ELEMENTWISE:
            self._pointwise(inputs, outs)
        elif func in SPATIAL:
            self._spatial(self.shadow(shadowed[0]), args[0], outs)
        elif func in SOFTMAX:
            self._along(self.shadow(shadowed[0]), args[0], outs, [args[1]], keepdim=True)
        elif func in REDUCE:
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keepdim = bool(args[2]) if len(args) > 2 else bool(kwargs.get("keepdim", False))
            self._along(self.shadow(shadowed[0]), args[0], outs, dims, keepdim)
        elif func in VECTOR_NORM:  # (x, ord, dim, keepdim): F.normalize, cosine attention
            dims = args[2] if len(args) > 2 else kwargs.get("dim")
            keepdim = bool(args[3]) if len(args) > 3 else bool(kwargs.get("keepdim", False))
            self._along(self.shadow(shadowed[0]), args[0], outs, dims, keepdim)
        elif func in PRODUCT:
            for t in shadowed:  # a product of activations mixes their channels
                self.block(self.shadow(t).all_ids())
            for t in outs:  # and what it computes depends on all of them
                self.set_shadow(t, Shadow(blocked=True))
        elif func.__name__.split(".")[0].endswith("_like") or func.__name__.startswith("new_"):
            return  # a constant shaped like the input
        else:
            raise GraphError(
                f"op {func} in module '{self.where()}' is not understood by the dependency "
                f"graph; {self.advice()}"
            )

    def _functional_linear(self, func, args, weights, out) -> bool:
        """``F.linear(x, layer.weight, layer.bias)`` outside the layer (Swin's attention
        calls its qkv and projection layers so): recorded as a call of that nn.Linear."""
        if func is not aten.addmm.default or len(weights) > 2:
            return False
        bias, x, wt = args[0], args[1], args[2]
        name = self.forbidden.get(id(wt))
        layer = self.modules.get(name)
        if (
            not isinstance(layer, nn.Linear)
            or name in self.ignored
            or tuple(wt.shape) != (layer.in_features, layer.out_features)
            or any(self.forbidden[id(t)] != name for t in weights)
            or id(x) not in self.shadows
            or (id(bias) in self.shadows and bias is not x)
        ):
            return False
        self.link(self.new_slots(name, "in", layer.in_features), x, 1)
        self.set_shadow(out, Shadow.vector(1, self.new_slots(name, "out", layer.out_features)))
        return True

    def _fixed_beside_blocked(self, weights, shadowed, out) -> bool:
        """A custom layer's tensor that is never pruned (a relative position bias table)
        meeting only activations whose channels are kept already (attention scores): the
        result keeps its channels too. Tensors of known layers, which pruning reshapes,
        stay refused."""
        if any(
            isinstance(self.modules.get(self.forbidden[id(w)]), KNOWN)
            or self.forbidden[id(w)] in self.ignored
            for w in weights
        ):
            return False
        if not all(_kept(self.shadow(t)) for t in shadowed):
            return False
        for w in weights:
            self.positional.pop(id(w), None)  # used as it is: never sliced later
        for t in tensors(out):
            self.set_shadow(t, Shadow(blocked=True))
        return True

    def _place_positional(self, w: torch.Tensor, shadowed, out) -> bool:
        """Give a custom layer's multi-dimensional tensor ``w`` slots along the dimension
        that meets an activation's channels in this element-wise op (a position embedding
        added to tokens); False when there is none."""
        if id(w) not in self.positional:
            return False
        outs = tensors(out)
        if not outs:
            return False
        nd = outs[0].dim()
        for t in shadowed:
            s = self.shadow(t)
            if s is None or s.blocked or s.full is not None:
                continue
            dim = s.dim + nd - t.dim() - (nd - w.dim())  # aligned from the right
            if 0 <= dim < w.dim() and w.shape[dim] == len(s.ids):
                name, pname = self.positional.pop(id(w))
                del self.forbidden[id(w)]
                slots = self.new_slots(name, f"param:{pname}@{dim}", w.shape[dim])
                self.set_shadow(w, Shadow.vector(dim, slots))
                return True
        return False

    def _as_ids(self, obj):
        """Replace each tensor in an op's arguments with its shadow (or -1 where none)."""

        def swap(t):
            if not isinstance(t, torch.Tensor):
                return t
            shadow = self.shadow(t)
            if shadow is None and not t.is_floating_point():
                return t  # indices and masks stay as they are
            if shadow is None:
                return torch.full((), NONE, dtype=torch.int64).expand(t.shape)
            return shadow.materialize(tuple(t.shape))

        return map_tensors(swap, obj)

    def _movement(self, func, args, kwargs, out) -> None:
        if func.overloadpacket is aten.cat and self._cat_across(args, kwargs, out):
            return
        x = args[0]
        shadow = self.shadow(x) if isinstance(x, torch.Tensor) else None
        if shadow is not None and shadow.full is None and not shadow.blocked:
            if func in VIEWS:
                self._couple_split(shadow, tuple(x.shape), tuple(tensors(out)[0].shape))
            else:
                self._fixed_positions(func, args, shadow, out)
        id_args, id_kwargs = self._as_ids(args), self._as_ids(kwargs)
        if func in VIEWS:
            id_args = (id_args[0].contiguous(), *id_args[1:])
        if func is aten.constant_pad_nd.default:
            id_args = (id_args[0], id_args[1], NONE)
        result = func(*id_args, **id_kwargs)
        for t, ids in zip(tensors(out), tensors(result)):
            self.set_shadow(t, compress(ids, prefer=(1, -1)))

    def _cat_across(self, args, kwargs, out) -> bool:
        """A concatenation along another dimension than the channels (a class token before
        the patches) puts channel i of every input in one column: those channels are one.
        False where the inputs do not all carry channels along the same dimension."""
        tensors = list(args[0])
        dim = int(args[1] if len(args) > 1 else kwargs.get("dim", 0)) % tensors[0].dim()
        shadows = [self.shadow(t) for t in tensors]
        if any(s is None or s.blocked or s.full is not None or (s.ids < 0).any() for s in shadows):
            return False
        channel = {s.dim for s in shadows}
        if len(channel) != 1 or dim in channel or len({len(s.ids) for s in shadows}) != 1:
            return False
        for s in shadows[1:]:
            self.uf.union_many(shadows[0].ids, s.ids)
        self.set_shadow(out, Shadow.vector(channel.pop(), shadows[0].ids))
        return True

    def _fixed_positions(self, func, args, shadow: Shadow, out) -> None:
        """Slices, selections and splits along the channel dimension have sizes fixed in the
        model's code: an even split stays even (equal removal per piece); the channels at or
        before the end of a slice or a selected index keep their positions (never removed)."""
        name = func.__name__.split(".")[0]
        x = args[0]
        if name in ("split", "split_with_sizes", "unsafe_split", "chunk"):
            dim = (int(args[2]) if len(args) > 2 else 0) % x.dim()
            if dim != shadow.dim:
                return
            sizes = [t.shape[dim] for t in tensors(out)]
            if self.chunking and len(set(sizes)) == 1:  # chunk(n) splits whatever is left evenly
                self.balance(shadow.ids, sizes[0], "chunk")
            else:  # split sizes written in the model's code cannot follow a pruned width
                self.block(shadow.ids)
        elif name == "slice":
            dim = (int(args[1]) if len(args) > 1 else 0) % x.dim()
            start = args[2] if len(args) > 2 and args[2] is not None else 0
            end = args[3] if len(args) > 3 and args[3] is not None else x.shape[dim]
            step = args[4] if len(args) > 4 else 1
            size = x.shape[dim]
            start, end = max(0, min(start, size)), max(0, min(end, size))
            if dim == shadow.dim and (start > 0 or end < size or step != 1):
                self.block(shadow.ids[: max(end, start + 1)])
        elif name == "index_select" and int(args[1]) % x.dim() == shadow.dim:
            self.block(shadow.ids)  # indices written in the code cannot follow a pruned width
        elif name == "index":
            indices = list(args[1])
            if shadow.dim < len(indices) and indices[shadow.dim] is not None:
                self.block(shadow.ids)
        elif name in ("select", "narrow") and int(args[1]) % x.dim() == shadow.dim:
            dim = shadow.dim
            index = int(args[2]) % x.shape[dim]
            last = index + (int(args[3]) if name == "narrow" else 1)
            self.block(shadow.ids[:last])

    def _couple_split(self, shadow: Shadow, before, after) -> None:
        """A view that splits the channel dimension into (groups, per-group) keeps the group
        count fixed when pruned (as channel shuffle does): so the channels at one position
        of every group must be removed together."""
        d = shadow.dim
        if len(after) <= d + 1 or tuple(after[:d]) != tuple(before[:d]):
            return
        a, b = after[d], after[d + 1]
        if a > 1 and b > 1 and a * b == before[d]:
            ids = shadow.ids.reshape(a, b)
            if (ids == ids[:, :1]).all():
                return  # unflattening (channel, position): nothing to couple
            self.uf.union_many(np.broadcast_to(ids[:1], ids.shape).ravel(), ids.ravel())

    def _shuffle(self, func, args, kwargs, out) -> None:
        x, groups = args[0], int(args[1])
        shadow = self.shadow(x)
        if shadow.full is None and shadow.dim == 1 and not shadow.blocked:
            c = x.shape[1]
            shape = (x.shape[0], groups, c // groups, *x.shape[2:])
            self._couple_split(shadow, tuple(x.shape), shape)
        result = func(self._as_ids(x).contiguous(), groups)
        self.set_shadow(out, compress(result))

    def _pointwise(self, inputs: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
        if not outs:
            return
        shape = tuple(outs[0].shape)
        shadows = [(t, self.shadow(t)) for t in inputs if self.shadow(t) is not None]
        # a single broadcast value (a scalar parameter, a one-channel map) couples nothing
        shadows = [
            (t, s) for t, s in shadows if s.blocked or s.full is not None or len(s.ids) > 1
        ] or shadows[:1]
        aligned = [
            (len(shape) - t.dim() + s.dim, s.ids)
            for t, s in shadows
            if s.full is None and not s.blocked
        ]
        if len(aligned) == len(shadows) and len({d for d, _ in aligned}) == 1:
            dim, first = aligned[0]
            for _, ids in aligned[1:]:
                self.uf.union_many(first, ids)
            result = Shadow.vector(dim, first)
        else:
            stacked = torch.stack(
                [s.materialize(tuple(t.shape)).expand(shape) for t, s in shadows]
            ).reshape(len(shadows), -1)
            for row in stacked[1:]:
                pairs = torch.stack([stacked[0], row], 1)
                pairs = torch.unique(pairs[(pairs >= 0).all(1)], dim=0).numpy()
                self.uf.union_many(pairs[:, 0], pairs[:, 1])
            merged = stacked.max(0).values.reshape(shape)
            result = compress(merged)
        for t in outs:
            if tuple(t.shape) == shape:
                self.set_shadow(t, result)

    def _spatial(self, shadow: Shadow, x: torch.Tensor, outs) -> None:
        """Pooling, resampling and padding act on dimensions 2 and up, channel by channel."""
        if shadow.blocked or (shadow.full is None and shadow.dim < 2):
            for t in outs:
                if t.dim() == x.dim():
                    self.set_shadow(t, shadow)
            return
        self.block(shadow.all_ids())

    def _along(self, shadow: Shadow, x: torch.Tensor, outs, dims, keepdim: bool) -> None:
        """Softmax and reductions: channel by channel unless they run across channels."""
        nd = x.dim()
        dims = list(range(nd)) if dims is None or dims == [] else dims
        dims = [int(d) % nd for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if shadow.blocked:
            for t in outs:
                self.set_shadow(t, shadow)
            return
        if shadow.full is not None or shadow.dim in dims:
            self.block(shadow.all_ids())
            return
        new_dim = shadow.dim if keepdim else shadow.dim - sum(d < shadow.dim for d in dims)
        for t in outs:
            if t.dim() > new_dim and t.shape[new_dim] == len(shadow.ids):
                self.set_shadow(t, Shadow.vector(new_dim, shadow.ids))


class _ChunkWatch(TorchFunctionMode):
    """Tells the builder when a split comes from ``chunk`` (relative) rather than ``split``
    (sizes fixed in the code): both reach ATen as the same op."""

    def __init__(self, builder: _Builder) -> None:
        super().__init__()
        self.builder = builder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.chunk, torch.Tensor.chunk):
            self.builder.chunking += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.builder.chunking -= 1
        return func(*args, **kwargs)


def trace_channels(model: nn.Module, example_inputs, ignored=()) -> TraceResult:
    """Run ``model`` once and return its channel slots, their couplings and constraints."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    ignored = set(ignored)
    builder = _Builder(model, ignored)
    for name, module in builder.modules.items():
        extra = [
            child
            for child, _ in module.named_children()
            if child != "parametrizations" and not isinstance(module, nn.MultiheadAttention)
        ]
        foreign = [
            type(f).__name__
            for fs in getattr(module, "parametrizations", {}).values()
            for f in fs
            if not type(f).__module__.startswith("secateurs.")  # our masks: strip() bakes them
        ]
        if foreign and name not in ignored:
            raise GraphError(
                f"layer '{label(name)}' has parametrized tensors ({', '.join(foreign)}, "
                "as weight_norm makes), which channel surgery cannot resize; bake them in "
                "first (torch.nn.utils.parametrize.remove_parametrizations(module, 'weight')) "
                f"or pass ignored=['{name}']"
            )
        if isinstance(module, KNOWN) and extra and name not in ignored:
            raise GraphError(
                f"layer '{name}' carries submodules {extra} (a dynamic gate, say) that channel "
                f"pruning cannot resize; prune before adding them, or pass ignored=['{name}']"
            )
        for pname, p in [
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        ]:
            if not p.is_floating_point():
                continue  # indices and counters: constants, never sliced (uses along the
                # channels keep those channels: see _fixed_positions)
            dim = param_dim(p)
            if isinstance(module, KNOWN) or name in ignored or dim is None:
                builder.forbidden[id(p)] = label(name)
                if not isinstance(module, KNOWN) and name not in ignored:
                    builder.positional[id(p)] = (name, pname)  # its channel dim: where it is added
            else:  # a per-channel tensor of a custom layer (a layer scale of shape (C, 1, 1),
                # a class token (1, 1, C)): its entries are slots of their own
                slots = builder.new_slots(name, f"param:{pname}", p.shape[dim])
                builder.set_shadow(p, Shadow.vector(dim, slots))
    with model_runs_on(inputs, "dependency graph", (GraphError,)):
        _, out = watch(model, inputs, builder, modes=(_ChunkWatch(builder),))
    for t in tensors(out):
        s = builder.shadow(t)
        if s is not None:
            builder.block(s.all_ids())
        name = builder.ignored_outputs.get(id(t))
        if name is not None and isinstance(builder.modules[name], KNOWN):
            warnings.warn(
                f"ignored=['{name}'] lists a layer that computes the model's output; "
                "outputs are kept without it, and ignoring the layer also freezes the "
                "channels it reads (the whole group before it): leave it out of "
                "ignored= to prune them",
                stacklevel=3,
            )
    order = {name: i for i, name in enumerate(builder.modules)}
    return TraceResult(builder.uf, builder.ranges, builder.constraints, order, builder.modules)


__all__ = ["Constraint", "GraphError", "Slot", "TraceResult", "trace_channels"]
