"""Channel gates: multiply a group's channels by a per-channel factor where layers read them.

Every layer that reads a group's channel (a convolution's input channel, a linear
layer's input features) sees it multiplied by the gate. A gate of 0 makes the model
compute exactly what it would with the channel removed, since no layer reads it (a
residual sum may still carry it, but nothing consumes it); and because the channel
itself is still computed, the gradient through a closed gate says how much the loss
would change with it open (gating the writers' outputs instead would let a following
ReLU, at zero, block that signal). AutoPrune trains gates; MetaPruning uses them to run
any width vector on a full-size network.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..graph import DependencyGraph, Group

READERS = (nn.modules.conv._ConvNd, nn.Linear)


def _in_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    assert isinstance(module, nn.modules.conv._ConvNd)
    return module.in_channels


class GroupGates:
    """Forward pre-hooks on the layers that read ``groups``' channels; ``gates()`` returns
    one tensor per group (its channels, in unit order) each time such a layer runs."""

    def __init__(
        self, graph: DependencyGraph, groups: list[Group], gates: Callable[[], list[torch.Tensor]]
    ) -> None:
        self.gates = gates
        self._parts: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        self._modules: dict[str, nn.Module] = {}
        for gi, g in enumerate(groups):
            for mi, member in enumerate(g.members):
                module = graph.module(member.module)
                if member.axis != "in" or not isinstance(module, READERS):
                    continue
                sel = g.member == mi
                idx = torch.as_tensor(np.asarray(g.index[sel]), dtype=torch.long)
                units = torch.as_tensor(np.asarray(g.unit[sel]), dtype=torch.long)
                self._parts.setdefault(member.module, []).append((gi, idx, units))
                self._modules[member.module] = module
        self._handles: list = []

    def __enter__(self) -> GroupGates:
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name, module)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str, module: nn.Module):
        size = _in_channels(module)
        dim = -1 if isinstance(module, nn.Linear) else 1

        def hook(mod, args):
            if mod is not module:  # a deep copy of the model carries the hook along
                return None
            x = args[0]
            gates = self.gates()
            factor = x.new_ones(size)
            for gi, idx, units in self._parts[name]:
                factor = factor.index_put((idx,), gates[gi][units].to(x.dtype))
            shape = [1] * x.dim()
            shape[dim] = size
            return (x * factor.view(shape), *args[1:])

        return hook
