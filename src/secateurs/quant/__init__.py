"""Quantization: the TFLite Micro int8 scheme, PTQ, QAT, QGT and sub-8-bit weights."""

from __future__ import annotations

from .fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from .observers import QParams
from .ptq import SCHEMES, QuantizedModel, Scheme, quantize
from .qat import QATModel, convert, prepare_qat
from .qgraph import QGraph, QuantError, capture
from .qgt import QuantizationGuided, SensitivityReport, mixed_precision, sensitivity

__all__ = [
    "SCHEMES",
    "QATModel",
    "QGraph",
    "QParams",
    "QuantError",
    "QuantizationGuided",
    "QuantizedModel",
    "Scheme",
    "SensitivityReport",
    "capture",
    "convert",
    "mixed_precision",
    "multiply_by_quantized_multiplier",
    "prepare_qat",
    "quantize",
    "quantize_multiplier",
    "sensitivity",
]
