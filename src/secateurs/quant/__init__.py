"""Quantization: the TFLite Micro int8 scheme, PTQ, QAT, QGT and sub-8-bit weights."""

from __future__ import annotations

from .capture import QGraph, QuantError, capture
from .fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from .observers import QParams
from .ptq import SCHEMES, QuantizedModel, Scheme, quantize

__all__ = [
    "QGraph",
    "QParams",
    "QuantError",
    "QuantizedModel",
    "SCHEMES",
    "Scheme",
    "capture",
    "multiply_by_quantized_multiplier",
    "quantize",
    "quantize_multiplier",
]
