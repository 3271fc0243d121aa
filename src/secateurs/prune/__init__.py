"""Pruning: structured channel removal and the importance criteria behind it.

report = sc.prune.channels(model, x, ratio=0.5, importance="l1", scope="global")
"""

from __future__ import annotations

from .channels import GroupReport, PruneReport, channels, plan
from .importance import IMPORTANCE, list_importance, register_importance

__all__ = [
    "channels",
    "plan",
    "PruneReport",
    "GroupReport",
    "register_importance",
    "list_importance",
    "IMPORTANCE",
]
