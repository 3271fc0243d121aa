"""The weights each slot covers, as views: what importance criteria score and what
zeroing (soft pruning, verification) clears."""

from __future__ import annotations

import torch
from torch import nn

from .tracer import BATCHNORM, CONV, CONV_T, Slot

PRODUCER_AXES = ("out", "embed")


def slot_views(module: nn.Module, slot: Slot) -> list[torch.Tensor]:
    """Views into ``module``'s tensors for one slot; writing to them edits the model."""
    i, axis = slot.index, slot.axis
    if axis.startswith("param:"):
        return [getattr(module, axis[len("param:") :])[i : i + 1]]
    views: list[torch.Tensor] = []

    def add(t, index):
        if t is not None:
            views.append(t[index])

    if isinstance(module, CONV):
        w, groups = module.weight, module.groups
        ipg, opg = module.in_channels // groups, module.out_channels // groups
        if axis == "out":
            add(w, slice(i, i + 1))
            add(module.bias, slice(i, i + 1))
        elif groups == 1:
            add(w, (slice(None), slice(i, i + 1)))
        elif ipg == 1:
            add(w, slice(i * opg, (i + 1) * opg))
        else:
            g = i // ipg
            add(w, (slice(g * opg, (g + 1) * opg), slice(i % ipg, i % ipg + 1)))
    elif isinstance(module, CONV_T):
        if axis == "out":
            add(module.weight, (slice(None), slice(i, i + 1)))
            add(module.bias, slice(i, i + 1))
        else:
            add(module.weight, slice(i, i + 1))
    elif isinstance(module, nn.Linear):
        if axis == "out":
            add(module.weight, slice(i, i + 1))
            add(module.bias, slice(i, i + 1))
        else:
            add(module.weight, (slice(None), slice(i, i + 1)))
    elif isinstance(module, (*BATCHNORM, nn.LayerNorm, nn.GroupNorm, nn.PReLU)):
        add(module.weight, slice(i, i + 1))
        add(getattr(module, "bias", None), slice(i, i + 1))
        if isinstance(module, BATCHNORM):
            add(module.running_mean, slice(i, i + 1))
    elif isinstance(module, nn.MultiheadAttention):
        e = module.embed_dim
        for row in (i, e + i, 2 * e + i):
            add(module.in_proj_weight, slice(row, row + 1))
            add(module.in_proj_bias, slice(row, row + 1))
        add(module.in_proj_weight, (slice(None), slice(i, i + 1)))
        add(module.out_proj.weight, slice(i, i + 1))
        add(module.out_proj.weight, (slice(None), slice(i, i + 1)))
        add(module.out_proj.bias, slice(i, i + 1))
    return views
