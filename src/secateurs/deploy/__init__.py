"""Deployment: C code for microcontrollers (verified against the integer reference), and
ONNX export (float, or int8 as QDQ)."""

from __future__ import annotations

from .codegen import build_program, export_c
from .onnx import export_onnx, qdq_model
from .tflite import export_tflite, tflite_model
from .verify import Verification, compile_c, count_instructions, estimate_c, run_c, verify_c

__all__ = [
    "Verification",
    "build_program",
    "compile_c",
    "count_instructions",
    "estimate_c",
    "export_c",
    "export_onnx",
    "export_tflite",
    "qdq_model",
    "run_c",
    "tflite_model",
    "verify_c",
]
