"""Deployment: C code for microcontrollers (verified against the integer reference, on the
host or an emulated Cortex-M), .tflite for TensorFlow Lite Micro (verified in the real
runtime), and ONNX export (float, or int8 as QDQ)."""

from __future__ import annotations

from .codegen import build_program, export_c
from .onnx import export_onnx, qdq_model
from .runtimes import run_tflite, verify_tflite
from .tflite import export_tflite, tflite_model, tflite_operators
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
    "run_tflite",
    "tflite_model",
    "tflite_operators",
    "verify_c",
    "verify_tflite",
]
