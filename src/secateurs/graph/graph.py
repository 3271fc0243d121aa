"""DependencyGraph: groups of coupled channels, pruned together (after Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning", arXiv 2301.12900)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn
from torch.nn.utils import parametrize

from .._checks import in_place
from .shadow import BLOCKED
from .slices import zero_axis
from .surgery import prune_module
from .tracer import Constraint, GraphError, Slot, TraceResult, trace_channels

HISTORY_ATTR = "_secateurs_pruning_history"
STRUCTURAL_AXES = ("in", "out", "chan", "embed", "heads", "hidden")


@dataclass(frozen=True)
class Member:
    """One axis of one module that a group's channels run through."""

    module: str
    axis: str


class Group:
    """Channels coupled across layers: channel ``i`` of the group is a set of slots (an output
    channel of one layer, the matching input channel of the next, its BatchNorm entries...)
    that can only be removed together.

    Slot data are arrays, one entry per slot: ``unit`` (the channel within the group),
    ``member`` (index into ``members``) and ``index`` (position along that member's axis).
    """

    def __init__(self, graph, channels: int, unit, member_range, index) -> None:
        self.graph = graph
        self._channels = channels
        order = np.unique(member_range)
        self._ranges = order  # global range ids of this group's members
        self.members = [
            Member(graph._range_info[r][0], graph._range_info[r][1]) for r in self._ranges
        ]
        self.unit = unit
        self.member = np.searchsorted(order, member_range)
        self.index = index
        self.constraints: list[Constraint] = []
        self._counts: list[np.ndarray] = []

    @property
    def channels(self) -> int:
        return self._channels

    def __len__(self) -> int:
        return self._channels

    def __repr__(self) -> str:
        names = ", ".join(f"{m.module}:{m.axis}" for m in self.members[:4])
        more = f", +{len(self.members) - 4}" if len(self.members) > 4 else ""
        return f"Group(channels={self.channels}, members=[{names}{more}])"

    @cached_property
    def units(self) -> list[tuple[Slot, ...]]:
        """Each channel's slots, as (module, axis, index) records."""
        out: list[list[Slot]] = [[] for _ in range(self._channels)]
        for u, m, i in zip(self.unit.tolist(), self.member.tolist(), self.index.tolist()):
            member = self.members[m]
            out[u].append(Slot(member.module, member.axis, i))
        return [tuple(slots) for slots in out]

    def per_channel(self, values: list[np.ndarray], members: np.ndarray | None = None):
        """Sum per channel of ``values[member][index]`` over the slots (of ``members`` only,
        when given as a boolean mask over this group's members)."""
        slot_values = np.zeros(len(self.unit))
        for m, vals in enumerate(values):
            if members is not None and not members[m]:
                continue
            sel = self.member == m
            slot_values[sel] = vals[self.index[sel]]
        return np.bincount(self.unit, weights=slot_values, minlength=self._channels)

    def axis_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(channels x members) slot counts and each member axis's size: no choice may
        remove a whole axis."""
        counts = np.zeros((self._channels, len(self.members)), dtype=np.int64)
        np.add.at(counts, (self.unit, self.member), 1)
        return counts, self.graph._range_size[self._ranges]

    def block_counts(self) -> list[np.ndarray]:
        """For each constraint, a (channels x blocks) matrix: slots of each channel per block."""
        return list(self._counts)

    def check(self, idxs: Sequence[int]) -> np.ndarray:
        """Fail unless removing ``idxs`` leaves every layer valid; returns them as an array."""
        idxs = np.unique(np.asarray(list(idxs), dtype=np.int64))
        if idxs.size and (idxs[0] < 0 or idxs[-1] >= self._channels):
            raise ValueError(f"channel indices must be in [0, {self._channels}), got {idxs}")
        counts, sizes = self.axis_counts()
        removed = counts[idxs].sum(0)
        full = np.flatnonzero(removed >= sizes)
        if full.size:
            m = self.members[full[0]]
            raise ValueError(
                f"removing {removed[full[0]]} channels would leave '{m.module}' ({m.axis}) empty"
            )
        for c, block in zip(self.constraints, self._counts):
            per_block = block[idxs].sum(0)
            if len(set(per_block.tolist())) > 1:
                raise ValueError(
                    f"{c.reason}: remove equally many channels from each of its "
                    f"{len(per_block)} parts (this choice removes {per_block.tolist()})"
                )
        return idxs

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
        self._modules = result.modules
        self._range_info = [(m, a) for m, a, _, _ in result.ranges]
        self._range_size = np.array([c for *_, c in result.ranges], dtype=np.int64)
        self._groups = self._build_groups(result)
        self._stale = False

    @staticmethod
    def _ignored_names(model: nn.Module, ignored) -> set[str]:
        modules = dict(model.named_modules())
        names = {id(m): n for n, m in modules.items()}
        out = set()
        for item in ignored:
            if isinstance(item, nn.Module):
                if id(item) not in names:
                    raise ValueError(f"ignored module {type(item).__name__} is not in the model")
                out.add(names[id(item)])
            elif isinstance(item, str):
                if item not in modules:
                    raise ValueError(f"ignored module path {item!r} is not in the model")
                out.add(item)
            else:
                raise TypeError(f"ignored entries must be module paths or modules, got {item!r}")
        return out

    def _build_groups(self, result: TraceResult) -> list[Group]:
        roots = result.uf.labels()  # the coupling class of every id
        n, ranges = len(roots), result.ranges
        slot_range = np.full(n, -1, dtype=np.int64)
        slot_index = np.zeros(n, dtype=np.int64)
        for r, (_, _, start, count) in enumerate(ranges):
            slot_range[start : start + count] = r
            slot_index[start : start + count] = np.arange(count)
        # rank ranges by (module order, axis): slots sort by rank, then index
        rank = np.empty(len(ranges), dtype=np.int64)
        order = sorted(
            range(len(ranges)),
            key=lambda r: (result.module_order.get(ranges[r][0], -1), ranges[r][1]),
        )
        rank[order] = np.arange(len(ranges))
        structural = np.array([a in STRUCTURAL_AXES for _, a, _, _ in ranges] + [False])
        slots = np.flatnonzero(slot_range >= 0)
        slots = slots[roots[slots] != roots[BLOCKED]]
        has_structural = np.zeros(n, dtype=bool)
        has_structural[roots[slots[structural[slot_range[slots]]]]] = True
        slots = slots[has_structural[roots[slots]]]
        if not slots.size:
            return []
        unit_roots, unit = np.unique(roots[slots], return_inverse=True)
        n_units, n_ranges = len(unit_roots), len(ranges)
        edges = coo_matrix(
            (np.ones(len(slots)), (unit, n_units + slot_range[slots])),
            shape=(n_units + n_ranges, n_units + n_ranges),
        )
        _, label = connected_components(edges, directed=False)
        key = rank[slot_range[slots]] * (1 << 32) + slot_index[slots]
        unit_key = np.full(n_units, np.iinfo(np.int64).max)
        np.minimum.at(unit_key, unit, key)
        unit_group = label[:n_units]
        # units ordered by (group, first slot); slots by (group, unit, layer, index)
        unit_order = np.lexsort((unit_key, unit_group))
        local = np.empty(n_units, dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, np.diff(unit_group[unit_order]) != 0])
        sizes = np.diff(np.r_[starts, n_units])
        local[unit_order] = np.arange(n_units) - np.repeat(starts, sizes)
        slot_order = np.lexsort(
            (slot_index[slots], rank[slot_range[slots]], local[unit], unit_group[unit])
        )
        s, u = slots[slot_order], unit[slot_order]
        bounds = np.flatnonzero(np.r_[True, np.diff(unit_group[u]) != 0, True])
        groups: list[Group] = []
        members_of: dict[int, Group] = {}
        for lo, hi in itertools.pairwise(bounds):
            g = int(unit_group[u[lo]])
            channels = int(local[u[lo:hi]].max()) + 1
            group = Group(
                self, channels, local[u[lo:hi]], slot_range[s[lo:hi]], slot_index[s[lo:hi]]
            )
            group._first_key = int(unit_key[u[lo]])
            groups.append(group)
            members_of[g] = group
        groups.sort(key=lambda grp: grp._first_key)
        # each balance constraint becomes a (channels x blocks) count matrix on its group
        unit_of_root = dict(zip(unit_roots.tolist(), range(n_units)))
        for c in result.constraints:
            touched: dict[int, np.ndarray] = {}
            for b, ids in enumerate(c.blocks):
                for i in ids:
                    u = unit_of_root.get(int(roots[i]))
                    if u is None:
                        continue
                    g = int(unit_group[u])
                    if g not in touched:
                        touched[g] = np.zeros((members_of[g].channels, len(c.blocks)), np.int64)
                    touched[g][local[u], b] += 1
            for g, counts in touched.items():
                members_of[g].constraints.append(c)
                members_of[g]._counts.append(counts)
        return groups

    def groups(self) -> list[Group]:
        """The prunable groups, in the order of their first layer."""
        return list(self._groups)

    def module(self, path: str) -> nn.Module:
        return self._modules[path]

    def _removed(self, plan: dict[Group, Sequence[int]]) -> dict[int, np.ndarray]:
        """Global range id -> removed indices along it."""
        removed: dict[int, list[np.ndarray]] = {}
        for group, idxs in plan.items():
            if group.graph is not self:
                raise ValueError("a group from another DependencyGraph was passed")
            idxs = group.check(idxs)
            sel = np.isin(group.unit, idxs)
            for m in np.unique(group.member[sel]):
                r = int(group._ranges[m])
                removed.setdefault(r, []).append(group.index[sel & (group.member == m)])
        return {r: np.unique(np.concatenate(v)) for r, v in removed.items()}

    def keep_indices(self, plan: dict[Group, Sequence[int]]) -> list[dict]:
        """The surgery a plan amounts to: ``[{"module": path, "keep": {axis: indices}}]``."""
        per_module: dict[str, dict[str, list[int]]] = {}
        for r, gone in self._removed(plan).items():
            module, axis = self._range_info[r]
            keep = np.setdiff1d(np.arange(self._range_size[r]), gone)
            per_module.setdefault(module, {})[axis] = keep.tolist()
        order = {name: i for i, name in enumerate(self._modules)}
        return [
            {"module": name, "keep": per_module[name]}
            for name in sorted(per_module, key=lambda n: order.get(n, -1))
        ]

    def prune(self, plan: dict[Group, Sequence[int]]) -> None:
        """Remove channels from several groups at once: ``{group: channel indices}``."""
        if self._stale:
            raise GraphError("this graph's model was pruned already; build a new DependencyGraph")
        replay(self.model, self.keep_indices(plan))
        self._stale = True

    def zero(self, plan: dict[Group, Sequence[int]], axes: Sequence[str] | None = None) -> None:
        """Set every weight of the planned channels to zero, keeping all shapes (soft pruning):
        the model then computes what the pruned model will. ``axes`` limits it to some
        member axes (``("out",)``: only the filters, so gradients still reach them)."""
        for r, gone in self._removed(plan).items():
            module, axis = self._range_info[r]
            if axes is None or axis in axes:
                zero_axis(self._modules[module], axis, torch.as_tensor(gone, dtype=torch.long))


def pruning_history(model: nn.Module) -> list[dict]:
    """The surgery applied to ``model`` so far, replayable on a fresh copy."""
    return list(model.__dict__.get(HISTORY_ATTR, []))


def set_module(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path`` in ``model``; returns the module that was there."""
    parent, _, name = path.rpartition(".")
    container = model.get_submodule(parent)
    old = getattr(container, name)
    setattr(container, name, module)
    return old


@in_place
def remove_layer(model: nn.Module, path: str) -> nn.Module:
    """Replace the module at ``path`` of ``model`` by the identity (an empty
    ``nn.Sequential``) in place, recorded in the pruning history as ``{"module": path,
    "remove": True}``; returns the removed module."""
    old = set_module(model, path, nn.Sequential())
    model.__dict__.setdefault(HISTORY_ATTR, []).append({"module": path, "remove": True})
    return old


@in_place
def replay(model: nn.Module, history: list[dict]) -> nn.Module:
    """Apply a pruning ``history`` (channel removals, and layers removed by
    :func:`remove_layer`) to ``model``, freshly built, in place; returns it."""
    modules = dict(model.named_modules())
    for step in history:
        name = step["module"]
        if name not in modules:
            raise ValueError(f"the pruning history names module '{name}', which this model lacks")
        if parametrize.is_parametrized(modules[name]):
            raise GraphError(
                f"'{name}' has parametrized weights (sparsity masks, say); bake them in with "
                "sc.prune.strip(model) before removing channels"
            )
    for step in history:
        if step.get("remove"):
            set_module(model, step["module"], nn.Sequential())
        else:
            prune_module(modules[step["module"]], step["keep"])
    model.__dict__.setdefault(HISTORY_ATTR, []).extend(history)
    return model
