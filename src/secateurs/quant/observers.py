"""Calibration: the real range each activation is quantized over.

- "minmax": the extremes seen (TFLite's converter default);
- "percentile": the 0.01 and 99.99 percentiles, ignoring rare outliers (McKinstry et al.
  2018, arXiv 1809.04191);
- "mse": the clipping range, shrunk from the extremes, that minimizes the mean squared
  quantization error on the data seen (Banner et al. 2019, arXiv 1810.05723; Nagel et al.
  2021, arXiv 2106.08295, sec. 3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CALIBRATIONS = ("minmax", "percentile", "mse")
SAMPLE = 1 << 16  # values kept per tensor for the percentile and MSE searches


@dataclass(frozen=True)
class QParams:
    """Affine int8 parameters: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int
    qmin: int = -128
    qmax: int = 127

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Round half away from zero (TFLite's std::round) and saturate; int64 out."""
        q = x.double() / self.scale
        q = torch.sign(q) * torch.floor(q.abs() + 0.5)
        return torch.clamp(q + self.zero_point, self.qmin, self.qmax).to(torch.int64)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        return (q.double() - self.zero_point).float() * self.scale


def affine_qparams(lo: float, hi: float, bits: int = 8) -> QParams:
    """Asymmetric parameters covering [lo, hi], which always include 0 (exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if hi - lo <= 0.0:
        return QParams(1.0, 0, qmin, qmax)
    scale = float32_exact((hi - lo) / (qmax - qmin))
    zero_point = int(min(qmax, max(qmin, round(qmin - lo / scale))))
    return QParams(scale, zero_point, qmin, qmax)


def float32_exact(scale: float) -> float:
    """``scale`` rounded to the nearest float32: flatbuffers store scales as float32, and a
    TFLite runtime derives its multipliers from those, so ours must start from the same."""
    return float(np.float32(scale))


class RangeObserver:
    """Accumulates what one activation takes over calibration batches."""

    def __init__(self, method: str = "minmax") -> None:
        self.method = method
        self.lo, self.hi = float("inf"), float("-inf")
        self.samples: list[torch.Tensor] = []
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1)
        if x.numel() == 0:
            return
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        if self.method != "minmax":
            step = max(1, x.numel() // SAMPLE)
            self.samples.append(x[::step].clone())
            self.count += 1

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            return 0.0, 0.0
        if self.method == "minmax":
            return self.lo, self.hi
        sample = torch.cat(self.samples)
        if sample.numel() > 4 * SAMPLE:
            sample = sample[:: sample.numel() // (4 * SAMPLE)]
        if self.method == "percentile":
            lo, hi = torch.quantile(
                sample.double(), torch.tensor([1e-4, 1 - 1e-4], dtype=torch.float64)
            )
            return float(lo), float(hi)
        return _mse_range(sample, self.lo, self.hi)


def _mse_range(sample: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
    best, best_err = (lo, hi), float("inf")
    for shrink in torch.linspace(1.0, 0.3, 36).tolist():
        params = affine_qparams(lo * shrink, hi * shrink)
        err = float(((params.dequantize(params.quantize(sample)) - sample) ** 2).mean())
        if err < best_err:
            best, best_err = (lo * shrink, hi * shrink), err
    return best
