"""Pruning: structured channel removal and the importance criteria behind it.

report = sc.prune.channels(model, x, ratio=0.5, importance="l1", scope="global")
report = sc.prune.layers(model, x, target_macs=0.5, data=task)   # whole blocks
sc.prune.recalibrate_bn(model, task)   # batch-norm statistics of the pruned model
"""

from __future__ import annotations

from . import criteria  # noqa: F401  (registers the data-driven criteria)
from .criteria import GradientTracking, SoftFilterPruning, compensate
from .depth import LayerReport, layers, removable
from .dynamic import ChannelGate, GateBudget, gate_channels
from .importance import IMPORTANCE, list_importance, register_importance
from .loop import LoopReport, LoopStep, iterative
from .recalibrate import recalibrate_bn
from .regularizers import (
    L1,
    L2,
    ElasticNet,
    GroupLasso,
    LinearRepresentability,
    SmoothL12,
)
from .structured import GroupReport, PruneReport, channels, group_name, plan
from .unstructured import (
    LayerSparsity,
    LearnedMask,
    SparsityReport,
    SparsitySchedule,
    WeightMask,
    fix_masks,
    lamp_scores,
    learn_masks,
    sparsify,
    sparsity_report,
    strip,
)

__all__ = [
    "IMPORTANCE",
    "L1",
    "L2",
    "ChannelGate",
    "ElasticNet",
    "GateBudget",
    "GradientTracking",
    "GroupLasso",
    "GroupReport",
    "LayerReport",
    "LayerSparsity",
    "LearnedMask",
    "LinearRepresentability",
    "LoopReport",
    "LoopStep",
    "PruneReport",
    "SmoothL12",
    "SoftFilterPruning",
    "SparsityReport",
    "SparsitySchedule",
    "WeightMask",
    "channels",
    "compensate",
    "fix_masks",
    "gate_channels",
    "group_name",
    "iterative",
    "lamp_scores",
    "layers",
    "learn_masks",
    "list_importance",
    "plan",
    "recalibrate_bn",
    "register_importance",
    "removable",
    "sparsify",
    "sparsity_report",
    "strip",
]
