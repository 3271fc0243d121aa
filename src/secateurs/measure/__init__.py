"""Measurement: parameters, MACs, flash, peak SRAM and latency, all from real forward passes.

prof = sc.measure.profile(model, task.example_inputs())
"""

from __future__ import annotations

from .encoding import ENCODINGS, encoding_bytes, smallest_encoding
from .latency import compare_latency, measure_latency, time_in_turns
from .memory import Lifetime, lifetimes, live_bytes
from .profile import (
    ExecutedMACs,
    LayerProfile,
    Profile,
    WeightProfile,
    effective_tensors,
    executed_macs,
    profile,
)
from .target import TARGETS, Fit, Target, check, get_target, register_target
from .trace import Trace, TracedOp, trace

__all__ = [
    "profile",
    "executed_macs",
    "ExecutedMACs",
    "Profile",
    "LayerProfile",
    "WeightProfile",
    "encoding_bytes",
    "smallest_encoding",
    "ENCODINGS",
    "effective_tensors",
    "measure_latency",
    "compare_latency",
    "time_in_turns",
    "trace",
    "Trace",
    "TracedOp",
    "Lifetime",
    "lifetimes",
    "live_bytes",
    "Target",
    "TARGETS",
    "Fit",
    "check",
    "get_target",
    "register_target",
]
