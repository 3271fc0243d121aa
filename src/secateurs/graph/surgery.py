"""Physical removal: edit a module's tensors and attributes in place to keep given indices.

``prune_module(module, {axis: kept indices})`` is the only place that changes shapes; the
pruning history records its calls, so replaying them rebuilds a pruned model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import in_place
from .attention import HeadPrunedAttention, projection_biases, projections, prunable
from .slices import rnn_cells, rnn_gates
from .tracer import BATCHNORM, CONV, CONV_T, RNN, GraphError, param_axis


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        module.register_buffer(
            name, value.contiguous(), persistent=name not in module._non_persistent_buffers_set
        )


def _take(module: nn.Module, name: str, keep: torch.Tensor, dim: int = 0) -> None:
    t = getattr(module, name, None)
    if t is not None:
        _set(module, name, t.detach().index_select(dim, keep))


def _prune_conv(m: nn.Module, keep_in, keep_out) -> None:
    groups = m.groups
    ipg, opg = m.in_channels // groups, m.out_channels // groups
    w = m.weight.detach()
    if groups == 1:
        w = w.index_select(0, keep_out).index_select(1, keep_in)
    elif ipg == 1:  # depthwise: each kept input channel is one kept group
        w = w.index_select(0, keep_out)
        groups = len(keep_in)
    else:
        local = [[c % ipg for c in keep_in.tolist() if c // ipg == g] for g in range(groups)]
        outs = [[o for o in keep_out.tolist() if o // opg == g] for g in range(groups)]
        if len({len(x) for x in local}) != 1 or len({len(x) for x in outs}) != 1:
            raise GraphError(
                f"grouped convolution with {groups} groups needs equal channel counts per group; "
                f"got inputs {[len(x) for x in local]} and outputs {[len(x) for x in outs]}"
            )
        w = torch.stack([w[o, local[o // opg]] for o in keep_out.tolist()])
    _set(m, "weight", w)
    _take(m, "bias", keep_out)
    m.in_channels, m.out_channels, m.groups = len(keep_in), len(keep_out), groups


def _prune_conv_transpose(m: nn.Module, keep_in, keep_out) -> None:
    _set(m, "weight", m.weight.detach().index_select(0, keep_in).index_select(1, keep_out))
    _take(m, "bias", keep_out)
    m.in_channels, m.out_channels = len(keep_in), len(keep_out)


def _prune_attention(m: nn.MultiheadAttention, keep_embed, keep_inner) -> None:
    """Keep embedding features (projection columns, output rows) and whole heads
    (projection rows, output columns); the layer becomes a HeadPrunedAttention, whose inner
    width may differ from its embedding width."""
    d = m.head_dim
    heads = torch.unique(keep_inner // d)
    whole = (heads[:, None] * d + torch.arange(d)).ravel()
    if not prunable(m) or not torch.equal(keep_inner, whole):
        raise GraphError(
            f"multi-head attention keeps whole heads of {d} features with one width for "
            f"queries, keys and values; got inner indices {keep_inner.tolist()}"
        )
    grad = projections(m)[0].requires_grad
    weights = [w.detach()[keep_inner][:, keep_embed] for w in projections(m)]
    biases = [b.detach()[keep_inner] for b in projection_biases(m) if b is not None]
    m.__class__ = HeadPrunedAttention
    m.register_parameter("in_proj_weight", None)
    for name, w in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), weights):
        setattr(m, name, nn.Parameter(w.contiguous(), requires_grad=grad))
    if biases:
        _set(m, "in_proj_bias", torch.cat(biases))
    out = m.out_proj
    _set(out, "weight", out.weight.detach().index_select(0, keep_embed)[:, keep_inner])
    _take(out, "bias", keep_embed)
    out.in_features, out.out_features = len(keep_inner), len(keep_embed)
    m.embed_dim = m.kdim = m.vdim = len(keep_embed)
    m.num_heads = len(heads)
    m._qkv_same_embed_dim = False


def _prune_rnn(m: nn.Module, keep_in: torch.Tensor, keep_hidden: torch.Tensor) -> None:
    """Keep input features and hidden units (see the tracer's "hidden" axis): every cell
    keeps equally many units, the new hidden size."""
    gates, h = rnn_gates(m), m.hidden_size
    dirs = 2 if m.bidirectional else 1
    per_cell = [
        keep_hidden[(keep_hidden >= c * h) & (keep_hidden < (c + 1) * h)] - c * h
        for c in range(m.num_layers * dirs)
    ]
    if len({len(u) for u in per_cell}) != 1:
        raise GraphError(
            f"{type(m).__name__} has one hidden size for every layer and direction; got "
            f"{[len(u) for u in per_cell]} units kept per cell"
        )
    k = len(per_cell[0])
    for layer, d, sfx in rnn_cells(m):
        units = per_cell[layer * dirs + d]
        rows = (units[None] + h * torch.arange(gates)[:, None]).reshape(-1)
        if layer == 0:
            cols = keep_in
        else:  # the previous layer's units, both directions, in its output order
            cols = torch.cat([per_cell[(layer - 1) * dirs + e] + e * h for e in range(dirs)])
        w_ih = getattr(m, f"weight_ih_{sfx}").detach()
        _set(m, f"weight_ih_{sfx}", w_ih.index_select(0, rows).index_select(1, cols))
        w_hh = getattr(m, f"weight_hh_{sfx}").detach()
        _set(m, f"weight_hh_{sfx}", w_hh.index_select(0, rows).index_select(1, units))
        for name in ("bias_ih", "bias_hh"):
            _take(m, f"{name}_{sfx}", rows)
    m.input_size, m.hidden_size = len(keep_in), k
    m.flatten_parameters()


@in_place
def prune_module(module: nn.Module, keep: dict[str, Sequence[int]]) -> None:
    """Keep only the given indices of each axis of ``module`` (axes missing from ``keep``
    keep everything), in place."""
    idx = {a: torch.as_tensor(sorted(k), dtype=torch.long) for a, k in keep.items()}

    def get(axis: str, size: int) -> torch.Tensor:
        return idx.get(axis, torch.arange(size))

    if isinstance(module, CONV):
        _prune_conv(module, get("in", module.in_channels), get("out", module.out_channels))
    elif isinstance(module, CONV_T):
        _prune_conv_transpose(
            module, get("in", module.in_channels), get("out", module.out_channels)
        )
    elif isinstance(module, nn.Linear):
        k_in, k_out = get("in", module.in_features), get("out", module.out_features)
        _set(module, "weight", module.weight.detach().index_select(0, k_out).index_select(1, k_in))
        _take(module, "bias", k_out)
        module.in_features, module.out_features = len(k_in), len(k_out)
    elif isinstance(module, BATCHNORM):
        k = get("chan", module.num_features)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _take(module, name, k)
        module.num_features = len(k)
    elif isinstance(module, nn.LayerNorm):
        k = get("chan", module.normalized_shape[0])
        _take(module, "weight", k)
        _take(module, "bias", k)
        module.normalized_shape = (len(k),)
    elif isinstance(module, nn.GroupNorm):
        k = get("chan", module.num_channels)
        _take(module, "weight", k)
        _take(module, "bias", k)
        if module.num_groups == module.num_channels:  # one channel per group (the graph
            module.num_groups = len(k)  # keeps the channels of larger groups)
        module.num_channels = len(k)
    elif isinstance(module, nn.PReLU) and "chan" in idx:
        _take(module, "weight", idx["chan"])
        module.num_parameters = len(idx["chan"])
    elif isinstance(module, nn.MultiheadAttention):
        inner = module.num_heads * module.head_dim
        _prune_attention(module, get("embed", module.embed_dim), get("heads", inner))
    elif isinstance(module, RNN):
        dirs = 2 if module.bidirectional else 1
        _prune_rnn(
            module,
            get("in", module.input_size),
            get("hidden", module.num_layers * dirs * module.hidden_size),
        )
    for axis, k in idx.items():
        if axis.startswith("param:"):
            _, dim = param_axis(module, axis)
            _take(module, axis[len("param:") :].partition("@")[0], k, dim=dim)
