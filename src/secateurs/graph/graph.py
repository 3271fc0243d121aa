"""DependencyGraph: groups of coupled channels, pruned together (after Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning", arXiv 2301.12900)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .shadow import BLOCKED
from .slices import slot_views
from .surgery import prune_module
from .tracer import Constraint, GraphError, Slot, trace_channels

HISTORY_ATTR = "_secateurs_pruning_history"


@dataclass(frozen=True)
class Member:
    """One axis of one module that a group's channels run through."""

    module: str
    axis: str


class Group:
    """Channels coupled across layers: channel ``i`` of the group is a set of slots (an output
    channel of one layer, the matching input channel of the next, its BatchNorm entries...)
    that can only be removed together."""

    def __init__(self, graph: DependencyGraph, units: list[tuple[Slot, ...]]) -> None:
        self.graph = graph
        self.units = units
        seen = dict.fromkeys(Member(s.module, s.axis) for u in units for s in u)
        order = graph._order
        self.members = sorted(seen, key=lambda m: (order.get(m.module, -1), m.axis))
        self.constraints: list[Constraint] = []
        self._counts: list[np.ndarray] = []

    @property
    def channels(self) -> int:
        return len(self.units)

    def __len__(self) -> int:
        return len(self.units)

    def __repr__(self) -> str:
        names = ", ".join(f"{m.module}:{m.axis}" for m in self.members[:4])
        more = f", +{len(self.members) - 4}" if len(self.members) > 4 else ""
        return f"Group(channels={self.channels}, members=[{names}{more}])"

    def axis_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(channels x member axes) slot counts and each axis's size: no choice may remove a
        whole axis."""
        counts = np.zeros((len(self.units), len(self.members)), dtype=np.int64)
        column = {m: j for j, m in enumerate(self.members)}
        for u, slots in enumerate(self.units):
            for s in slots:
                counts[u, column[Member(s.module, s.axis)]] += 1
        sizes = np.array([self.graph._axis_size[(m.module, m.axis)] for m in self.members])
        return counts, sizes

    def block_counts(self) -> list[np.ndarray]:
        """For each constraint, a (channels x blocks) matrix: slots of each channel per block."""
        return list(self._counts)

    def check(self, idxs: Sequence[int]) -> None:
        """Fail unless removing ``idxs`` leaves every layer valid."""
        idxs = sorted(set(int(i) for i in idxs))
        if idxs and (idxs[0] < 0 or idxs[-1] >= len(self.units)):
            raise ValueError(f"channel indices must be in [0, {len(self.units)}), got {idxs}")
        removed = defaultdict(int)
        for i in idxs:
            for s in self.units[i]:
                removed[(s.module, s.axis)] += 1
        for (module, axis), n in removed.items():
            if n >= self.graph._axis_size[(module, axis)]:
                raise ValueError(f"removing {n} channels would leave '{module}' ({axis}) empty")
        for c, counts in zip(self.constraints, self.block_counts()):
            per_block = counts[idxs].sum(0)
            if len(set(per_block.tolist())) > 1:
                raise ValueError(
                    f"{c.reason}: remove equally many channels from each of its "
                    f"{len(per_block)} parts (this choice removes {per_block.tolist()})"
                )

    def prune(self, idxs: Sequence[int]) -> None:
        """Remove the channels ``idxs`` of this group from every member layer, in place."""
        self.graph.prune({self: idxs})


class DependencyGraph:
    """The coupled channels of ``model``, found by running it once on ``example_inputs``.

    ``ignored`` lists module paths (or modules) left as they are: their channels, and every
    channel coupled to them, are never pruned. So are the model's inputs and outputs.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs,
        ignored: Iterable[str | nn.Module] = (),
        round_to: int = 1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(round_to, int) or round_to < 1:
            raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
        self.model = model
        self.round_to = round_to
        self.ignored = self._ignored_names(model, ignored)
        result = trace_channels(model, example_inputs, self.ignored)
        self._order = result.module_order
        self._constraints: list[Constraint] = result.constraints
        self._axis_size: dict[tuple[str, str], int] = defaultdict(int)
        for slot in result.slots.values():
            self._axis_size[(slot.module, slot.axis)] += 1
        self._modules = result.modules
        self._groups = self._build_groups(result)
        self._stale = False

    @staticmethod
    def _ignored_names(model: nn.Module, ignored) -> set[str]:
        names = {id(m): n for n, m in model.named_modules()}
        out = set()
        for item in ignored:
            if isinstance(item, nn.Module):
                if id(item) not in names:
                    raise ValueError(f"ignored module {type(item).__name__} is not in the model")
                out.add(names[id(item)])
            elif isinstance(item, str):
                if item not in dict(model.named_modules()):
                    raise ValueError(f"ignored module path {item!r} is not in the model")
                out.add(item)
            else:
                raise TypeError(f"ignored entries must be module paths or modules, got {item!r}")
        return out

    def _build_groups(self, result) -> list[Group]:
        uf = result.uf
        blocked = uf.find(BLOCKED)
        units: dict[int, list[Slot]] = defaultdict(list)
        for sid, slot in result.slots.items():
            root = uf.find(sid)
            if root != blocked:
                units[root].append(slot)
        structural = {"in", "out", "chan", "embed"}
        key = lambda s: (self._order.get(s.module, -1), s.axis, s.index)  # noqa: E731
        unit_list = [
            tuple(sorted(slots, key=key))
            for slots in units.values()
            if any(s.axis in structural for s in slots)
        ]
        # channels that share a layer axis belong to one group
        parent = list(range(len(unit_list)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        first: dict[tuple[str, str], int] = {}
        for u, slots in enumerate(unit_list):
            for s in slots:
                k = (s.module, s.axis)
                if k in first:
                    a, b = find(first[k]), find(u)
                    parent[max(a, b)] = min(a, b)
                else:
                    first[k] = u
        grouped: dict[int, list[tuple[Slot, ...]]] = defaultdict(list)
        for u, slots in enumerate(unit_list):
            grouped[find(u)].append(slots)
        groups = [Group(self, sorted(us, key=lambda u: key(u[0]))) for us in grouped.values()]
        groups.sort(key=lambda g: key(g.units[0][0]))
        # each balance constraint, as counts per channel and block, on the group it touches
        where = {}
        for g in groups:
            for u, slots in enumerate(g.units):
                where[uf.find(result.slot_ids[slots[0]])] = (g, u)
        for c in result.constraints:
            touched: dict[Group, np.ndarray] = {}
            for b, ids in enumerate(c.blocks):
                for i in ids:
                    hit = where.get(uf.find(i))
                    if hit is None:
                        continue
                    g, u = hit
                    if g not in touched:
                        touched[g] = np.zeros((g.channels, len(c.blocks)), dtype=np.int64)
                    touched[g][u, b] += 1
            for g, counts in touched.items():
                g.constraints.append(c)
                g._counts.append(counts)
        return groups

    def groups(self) -> list[Group]:
        """The prunable groups, in the order of their first layer."""
        return list(self._groups)

    def _removed_slots(self, plan: dict[Group, Sequence[int]]) -> list[Slot]:
        slots = []
        for group, idxs in plan.items():
            if group.graph is not self:
                raise ValueError("a group from another DependencyGraph was passed")
            group.check(idxs)
            for i in sorted(set(int(i) for i in idxs)):
                slots.extend(group.units[i])
        return slots

    def keep_indices(self, plan: dict[Group, Sequence[int]]) -> list[dict]:
        """The surgery a plan amounts to: ``[{"module": path, "keep": {axis: indices}}]``."""
        keep_sets: dict[str, dict[str, set[int]]] = defaultdict(dict)
        for s in self._removed_slots(plan):
            axis = keep_sets[s.module].setdefault(
                s.axis, set(range(self._axis_size[(s.module, s.axis)]))
            )
            axis.discard(s.index)
        return [
            {"module": name, "keep": {axis: sorted(k) for axis, k in keep_sets[name].items()}}
            for name in sorted(keep_sets, key=lambda n: self._order.get(n, -1))
        ]

    def prune(self, plan: dict[Group, Sequence[int]]) -> None:
        """Remove channels from several groups at once: ``{group: channel indices}``."""
        if self._stale:
            raise GraphError("this graph's model was pruned already; build a new DependencyGraph")
        replay(self.model, self.keep_indices(plan))
        self._stale = True

    @torch.no_grad()
    def zero(self, plan: dict[Group, Sequence[int]]) -> None:
        """Set every weight of the planned channels to zero, keeping all shapes (soft pruning):
        the model then computes what the pruned model will."""
        for s in self._removed_slots(plan):
            for view in slot_views(self._modules[s.module], s):
                view.zero_()

    def slot_views(self, slot: Slot) -> list[torch.Tensor]:
        """Views into the weights of one slot."""
        return slot_views(self._modules[slot.module], slot)


def pruning_history(model: nn.Module) -> list[dict]:
    """The surgery applied to ``model`` so far, replayable on a fresh copy."""
    return list(model.__dict__.get(HISTORY_ATTR, []))


def replay(model: nn.Module, history: list[dict]) -> nn.Module:
    """Apply a pruning history to a freshly built model, in place."""
    modules = dict(model.named_modules())
    for step in history:
        name = step["module"]
        if name not in modules:
            raise ValueError(f"the pruning history names module '{name}', which this model lacks")
        prune_module(modules[name], step["keep"])
    model.__dict__.setdefault(HISTORY_ATTR, []).extend(history)
    return model


__all__ = ["DependencyGraph", "Group", "Member", "pruning_history", "replay"]
