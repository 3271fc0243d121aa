"""``channels``: structured pruning that physically removes channels, by ratio or MAC target."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_finite_model, check_float, check_int, in_place
from ..graph import DependencyGraph, Group, replay
from ..measure import profile
from .importance import IMPORTANCE
from .recalibrate import recalibrate_bn
from .select import lowest

SCOPES = ("local", "global")
MAC_TOLERANCE = 0.02  # relative: a target of 0.1 of the MACs is met within 0.098-0.102


@dataclass(frozen=True)
class GroupReport:
    """What happened to one group: its layers, and the channels removed and kept."""

    members: tuple[str, ...]
    channels: int
    removed: tuple[int, ...]

    @property
    def kept(self) -> int:
        return self.channels - len(self.removed)


class SizeChange:
    """What a structural pruning report shares: the params and MACs kept, and a summary of
    both (the class sets ``params_before`` ... ``macs_after``)."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def macs_kept(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def params_kept(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def _sizes(self) -> str:
        return (
            f"params {self.params_before:,} -> {self.params_after:,} ({self.params_kept:.1%}), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.macs_kept:.1%})"
        )


@dataclass(frozen=True)
class PruneReport(SizeChange):
    """Per-group removals and the model's params and MACs before and after, measured."""

    groups: tuple[GroupReport, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    ratio: float  # the removal ratio finally applied (searched when target_macs was given)
    history: list = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        removed = sum(len(g.removed) for g in self.groups)
        total = sum(g.channels for g in self.groups)
        return f"removed {removed}/{total} channels in {len(self.groups)} groups: " + self._sizes()


def _cap(channels: int, count: int, max_layer_ratio: float, round_to: int) -> int:
    """Removal count after the per-layer cap and rounding the kept channels up to round_to."""
    count = min(count, math.floor(max_layer_ratio * channels), channels - 1)
    kept = channels - max(count, 0)
    kept = min(channels, math.ceil(kept / round_to) * round_to)
    return channels - kept


def group_name(group: Group) -> str:
    """The name of ``group``: the first layer whose output channels (filters) it is."""
    return next((m.module for m in group.members if m.axis != "in"), group.members[0].module)


def _group_ratio(group: Group, ratios: dict[str, float]) -> float:
    """A per-layer ratio names the layer whose output channels (filters) it removes: the
    group whose channels a listed layer produces takes its ratio (else 0)."""
    for m in group.members:
        if m.module in ratios and m.axis != "in":
            return ratios[m.module]
    return 0.0


def _plan(
    groups: list[Group],
    scores: list[np.ndarray],
    ratio: float | dict[str, float] | None,
    scope: str,
    max_layer_ratio: float,
    round_to: int,
    threshold: float | None = None,
    keep: dict[str, int] | None = None,
) -> dict[Group, list[int]]:
    if keep is not None:
        counts = [g.channels - keep.get(group_name(g), g.channels) for g in groups]
        max_layer_ratio = 1.0  # explicit counts are not capped, only kept above zero
    elif threshold is not None:
        counts = [int((s < threshold).sum()) for s in scores]
    elif isinstance(ratio, dict):
        counts = [math.floor(_group_ratio(g, ratio) * g.channels) for g in groups]
    elif ratio is None:
        raise ValueError("give one of ratio, threshold or keep")
    elif scope == "local":
        counts = [math.floor(ratio * g.channels) for g in groups]
    else:  # global: rank channels of all groups together, each group's scores over its mean
        pool = []
        for gi, s in enumerate(scores):
            norm = s / (s.mean() + 1e-12)
            pool += [(float(v), gi) for v in norm]
        pool.sort()
        budget = math.floor(ratio * len(pool))
        counts = [0] * len(groups)
        caps = [_cap(g.channels, g.channels, max_layer_ratio, 1) for g in groups]
        for _, gi in pool:
            if budget == 0:
                break
            if counts[gi] < caps[gi]:
                counts[gi] += 1
                budget -= 1
    plan = {}
    for g, s, n in zip(groups, scores, counts):
        n = _cap(g.channels, n, max_layer_ratio, round_to)
        idxs = lowest(s, n, g.block_counts(), *g.axis_counts())
        if idxs:
            plan[g] = idxs
    return plan


def plan(
    graph: DependencyGraph,
    ratio: float,
    *,
    importance: str = "l1",
    scope: str = "local",
    max_layer_ratio: float = 0.9,
    round_to: int | None = None,
    data=None,
    seed: int = 0,
) -> dict[Group, list[int]]:
    """Which channels of each group ``channels`` would remove at ``ratio``, without removing
    them: ``{group: channel indices}`` of ``graph``, ready for ``graph.zero`` or
    ``graph.prune``. ``importance``, ``scope``, ``max_layer_ratio``, ``data`` and ``seed``
    as in ``channels``; ``round_to`` defaults to the graph's."""
    criterion = IMPORTANCE.get(importance)
    check_choice("scope", scope, SCOPES)
    round_to = graph.round_to if round_to is None else check_int("round_to", round_to, minimum=1)
    scores = _scores(graph, criterion, data, seed)
    return _plan(graph.groups(), scores, ratio, scope, max_layer_ratio, round_to)


def _scores(graph: DependencyGraph, criterion, data, seed: int) -> list[np.ndarray]:
    """One score per channel of every group (criteria that need gradients enable them)."""
    with torch.no_grad():
        return [
            np.asarray(criterion(graph, g, data=data, seed=seed), float) for g in graph.groups()
        ]


@in_place
def channels(
    model: nn.Module,
    example_inputs,
    *,
    ratio: float | dict[str, float] | None = None,
    target_macs: float | None = None,
    importance: str = "l1",
    scope: str = "local",
    ignored: Iterable[str | nn.Module] = (),
    round_to: int = 1,
    max_layer_ratio: float = 0.9,
    data=None,
    seed: int = 0,
    threshold: float | None = None,
    keep: dict[str, int] | None = None,
    recalibrate: bool | None = None,
) -> PruneReport:
    """Remove channels from ``model`` in place, making its tensors physically smaller.

    Say how much with exactly one of:
    ``ratio``: the fraction of channels removed from each group (``scope`` "local"), from all
    groups together ranked by importance normalized per group (``"global"``), or per layer
    as ``{module path: ratio}`` (the fraction of that layer's filters);
    ``target_macs``: the fraction of MACs to keep, reached within 2% of itself by searching
    the ratio;
    ``threshold``: remove every channel whose importance is below it (after regularized
    training, say); ``keep``: how many channels each group keeps, ``{group name: count}``
    (a group is named by its first layer, :func:`group_name`; unnamed groups keep all),
    as the automatic searches of ``sc.search`` choose them.
    ``data`` (a Task or (inputs, labels) batches) feeds data-driven criteria. ``max_layer_ratio``
    caps what any group loses; ``round_to`` rounds kept channel counts up to a multiple. The
    model's inputs, outputs and ``ignored`` modules keep their channels. ``recalibrate``:
    re-estimate the batch-norm statistics on ``data`` after the surgery
    (:func:`~secateurs.prune.recalibrate_bn`), so the pruned model scores before
    fine-tuning what its weights allow, not near chance; by default (None) whenever
    ``data`` is given, ``False`` keeps the statistics as they were (every kept channel
    then computes exactly what it did). ``example_inputs`` trace the model (a batch of
    its inputs); ``importance`` names the criterion that ranks channels
    (``list_importance()``); ``seed`` fixes the random criterion and calibration order.
    """
    check_finite_model(model, "channels")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if sum(v is not None for v in (ratio, target_macs, threshold, keep)) != 1:
        raise ValueError("give exactly one of ratio=, target_macs=, threshold= or keep=")
    if isinstance(ratio, dict):
        for path, r in ratio.items():
            r = check_float(f"ratio[{path!r}]", r, minimum=0.0)
            if r >= 1:
                raise ValueError(f"ratio[{path!r}] must be in [0, 1); got {r}")
        known = dict(model.named_modules())
        unknown = [p for p in ratio if p not in known]
        if unknown:
            raise ValueError(f"ratio names modules {unknown} that the model does not have")
    elif ratio is not None:
        ratio = check_float("ratio", ratio, minimum=0.0)
        if ratio >= 1:
            raise ValueError(f"ratio is the fraction of channels removed, in [0, 1); got {ratio}")
    if threshold is not None:
        threshold = check_float("threshold", threshold)
    if recalibrate and data is None:
        raise ValueError(
            "recalibrate=True re-estimates batch-norm statistics on data: pass "
            "data=task or (inputs, labels) batches"
        )
    if target_macs is not None:
        target_macs = check_float("target_macs", target_macs, minimum=0.0, strict_minimum=True)
        if target_macs > 1:
            raise ValueError(
                f"target_macs is the fraction of MACs kept, in (0, 1]; got {target_macs}"
            )
    criterion = IMPORTANCE.get(importance)
    check_choice("scope", scope, SCOPES)
    round_to = check_int("round_to", round_to, minimum=1)
    max_layer_ratio = check_float("max_layer_ratio", max_layer_ratio, minimum=0.0, maximum=1.0)
    if max_layer_ratio >= 1:
        raise ValueError(f"max_layer_ratio must be below 1, got {max_layer_ratio}")

    x = example_inputs
    before = profile(model, x, latency=False)
    graph = DependencyGraph(model, x, ignored=ignored, round_to=round_to)
    groups = graph.groups()
    scores = _scores(graph, criterion, data, seed)

    if keep is not None:
        _check_keep(keep, groups)

    def plan_for(r):
        return _plan(groups, scores, r, scope, max_layer_ratio, round_to, threshold, keep)

    if target_macs is not None:
        ratio = _search_ratio(model, x, graph, plan_for, target_macs, before.macs, max_layer_ratio)
    plan = plan_for(ratio)
    history = graph.keep_indices(plan)
    compensate = getattr(criterion, "compensate", None)
    if compensate is not None:
        compensate(graph, plan, data)
    graph.prune(plan)
    if recalibrate or (recalibrate is None and data is not None):
        recalibrate_bn(model, data)
    after = profile(model, x, latency=False)
    reports = tuple(
        GroupReport(
            members=tuple(f"{m.module}:{m.axis}" for m in g.members),
            channels=g.channels,
            removed=tuple(plan.get(g, ())),
        )
        for g in groups
    )
    applied = ratio if isinstance(ratio, float) else float("nan")
    return PruneReport(
        reports, before.params, after.params, before.macs, after.macs, applied, history
    )


def _check_keep(keep: dict[str, int], groups: list[Group]) -> None:
    sizes = {group_name(g): g.channels for g in groups}
    unknown = sorted(set(keep) - set(sizes))
    if unknown:
        raise ValueError(
            f"keep names {unknown}, which are not prunable groups; the groups are named by "
            f"their first layer: {sorted(sizes)}"
        )
    for name, k in keep.items():
        check_int(f"keep[{name!r}]", k, minimum=1)
        if k > sizes[name]:
            raise ValueError(f"keep[{name!r}] is {k}, but that group has {sizes[name]} channels")


def _search_ratio(model, x, graph, plan_for, target: float, macs_before: int, upper: float):
    """Bisection on the removal ratio until the kept MACs are within 2% of ``target`` (of
    the target itself, so that low targets are met as closely as high ones)."""

    def kept(r: float) -> float:
        trial = copy.deepcopy(model)
        replay(trial, graph.keep_indices(plan_for(r)))
        return profile(trial, x, latency=False).macs / macs_before

    lo, hi = 0.0, upper
    best_r, best_gap = 0.0, abs(1.0 - target)
    tolerance = MAC_TOLERANCE * target
    most = kept(hi)
    if most > target + tolerance:
        raise ValueError(
            f"target_macs={target} cannot be met: removing up to max_layer_ratio={upper} of "
            f"every group keeps {most:.3f} of the MACs; raise max_layer_ratio or the target"
        )
    for _ in range(30):
        mid = (lo + hi) / 2
        k = kept(mid)
        if abs(k - target) < best_gap:
            best_r, best_gap = mid, abs(k - target)
        if best_gap <= tolerance / 4:
            break
        if k > target:
            lo = mid
        else:
            hi = mid
    return best_r
