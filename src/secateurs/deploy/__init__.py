"""Deployment: ONNX export (float, or int8 as QDQ)."""

from __future__ import annotations

from .onnx import export_onnx, qdq_model

__all__ = ["export_onnx", "qdq_model"]
