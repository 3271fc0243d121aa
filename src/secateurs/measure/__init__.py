"""Measurement: parameters, MACs, flash, peak SRAM and latency, all from real forward passes.

prof = sc.measure.profile(model, task.example_inputs())
"""

from __future__ import annotations

from .encoding import ENCODINGS, encoding_bytes, smallest_encoding
from .executed import Trace, TracedOp, trace
from .latency import compare_latency, measure_latency, time_in_turns
from .memory import Lifetime, lifetimes, live_bytes
from .profiler import (
    ExecutedMACs,
    LayerProfile,
    Profile,
    WeightProfile,
    effective_tensors,
    executed_macs,
    profile,
)
from .target import TARGETS, Fit, Target, check, get_target, register_target

__all__ = [
    "ENCODINGS",
    "TARGETS",
    "ExecutedMACs",
    "Fit",
    "LayerProfile",
    "Lifetime",
    "Profile",
    "Target",
    "Trace",
    "TracedOp",
    "WeightProfile",
    "check",
    "compare_latency",
    "effective_tensors",
    "encoding_bytes",
    "executed_macs",
    "get_target",
    "lifetimes",
    "live_bytes",
    "measure_latency",
    "profile",
    "register_target",
    "smallest_encoding",
    "time_in_turns",
    "trace",
]
