"""Dependency graph and physical channel removal for any traceable PyTorch model.

g = sc.graph.DependencyGraph(model, x)
for group in g.groups(): ...
g.groups()[0].prune([0, 3])
"""

from __future__ import annotations

from .attention import HeadPrunedAttention
from .graph import DependencyGraph, Group, Member, pruning_history, remove_layer, replay
from .persist import load_pruned, save_pruned
from .surgery import prune_module
from .tracer import Constraint, GraphError, Slot

__all__ = [
    "Constraint",
    "DependencyGraph",
    "GraphError",
    "Group",
    "HeadPrunedAttention",
    "Member",
    "Slot",
    "load_pruned",
    "prune_module",
    "pruning_history",
    "remove_layer",
    "replay",
    "save_pruned",
]
