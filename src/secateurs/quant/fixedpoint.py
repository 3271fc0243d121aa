"""The fixed-point arithmetic of TensorFlow Lite Micro's int8 kernels, element for element.

A real multiplier ``m`` (say ``s_in * s_w / s_out``) becomes a 32-bit ``multiplier`` and a
power-of-two ``shift`` with ``m ~= multiplier * 2**(shift - 31)`` (``QuantizeMultiplier``).
An int32 accumulator is rescaled by ``SaturatingRoundingDoublingHighMul`` followed by
``RoundingDivideByPOT``: TFLite's default "double rounding" (gemmlowp; Jacob et al. 2018,
arXiv 1712.05877). The tensor functions work on int64 torch tensors holding int32 values,
so a whole layer is requantized in a few vectorized ops; the C kernels compute the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier`` of the scale ``real``: ``real ~= multiplier *
    2**(shift - 31)``.

    ``multiplier`` is in [2**30, 2**31) (or 0 for ``real == 0``). Multipliers too small to
    represent become (0, 0); shifts above 30 saturate to ``(2**31 - 1, 30)``.
    """
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"a requantization multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)  # real = fraction * 2**shift, fraction in [0.5, 1)
    fixed = math.floor(fraction * (1 << 31) + 0.5)  # std::round: ties away from zero (exact)
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return int(fixed), int(shift)


def saturating_rounding_doubling_high_mul(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """High 32 bits of ``2 * a * b``, rounded to nearest (gemmlowp), on int32 values."""
    a = torch.as_tensor(a, dtype=torch.int64)
    b = torch.as_tensor(b, dtype=torch.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = torch.where(ab >= 0, torch.tensor(1 << 30), torch.tensor(1 - (1 << 30)))
    high = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")  # C division truncates
    return torch.where(overflow, torch.tensor(INT32_MAX), high)


def rounding_divide_by_pot(x: torch.Tensor, exponent: torch.Tensor | int) -> torch.Tensor:
    """``x / 2**exponent`` rounded to nearest, ties away from zero (gemmlowp)."""
    x = torch.as_tensor(x, dtype=torch.int64)
    exponent = torch.as_tensor(exponent, dtype=torch.int64)
    mask = (torch.ones_like(exponent) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> exponent) + (remainder > threshold).to(torch.int64)


def multiply_by_quantized_multiplier(
    x: torch.Tensor, multiplier: torch.Tensor | int, shift: torch.Tensor | int
) -> torch.Tensor:
    """TFLite's ``MultiplyByQuantizedMultiplier`` (double rounding) on int32 values.

    ``multiplier`` and ``shift`` broadcast against ``x`` (per-channel requantization passes
    them shaped like the channel axis). ``x`` and ``x * 2**left_shift`` saturate to int32,
    where TFLite's int32 arithmetic would overflow; the C kernels do the same.
    """
    shift = torch.as_tensor(shift, dtype=torch.int64)
    left = torch.clamp(shift, min=0)
    right = torch.clamp(-shift, min=0)
    x = torch.clamp(torch.as_tensor(x, dtype=torch.int64), INT32_MIN, INT32_MAX)
    scaled = torch.clamp(x * (torch.ones_like(left) << left), INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right)


def multiply_by_quantized_multiplier_single(
    x: torch.Tensor, multiplier: torch.Tensor | int, shift: torch.Tensor | int
) -> torch.Tensor:
    """The same rescaling with one rounding, ``(x * multiplier + 2**(30 - shift)) >> (31 -
    shift)``, as the LiteRT runtime's int8 FULLY_CONNECTED requantizes (its convolutions
    keep double rounding). It differs from double rounding by at most one step, in rare
    ties."""
    shift = torch.as_tensor(shift, dtype=torch.int64)
    total = 31 - shift
    x = torch.clamp(torch.as_tensor(x, dtype=torch.int64), INT32_MIN, INT32_MAX)
    m = torch.as_tensor(multiplier, dtype=torch.int64)
    return (x * m + (torch.ones_like(total) << (total - 1))) >> total


# the runtime whose int8 arithmetic run_int8 and the C reproduce: TensorFlow Lite Micro
# (double rounding everywhere, as CMSIS-NN; MEAN folds 1/count into its multiplier), or
# LiteRT (the same MEAN; FULLY_CONNECTED rounds once; the MUL multiplier from float32)
ROUNDINGS = ("tflm", "litert")


# --- int16 fixed point, as TFLite's int8 HARD_SWISH computes ------------------------------
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def _high_mul16(a: torch.Tensor, b: torch.Tensor | int, rounding: bool) -> torch.Tensor:
    """High 16 bits of ``2 * a * b`` on int16 values: rounded to nearest (gemmlowp's
    SaturatingRoundingDoublingHighMul) or truncated towards zero (SQDMULH)."""
    ab = a * b
    if rounding:
        ab = ab + torch.where(ab >= 0, torch.tensor(1 << 14), torch.tensor(1 - (1 << 14)))
    high = torch.div(ab, 1 << 15, rounding_mode="trunc")
    return torch.where((a == INT16_MIN) & (b == INT16_MIN), torch.tensor(INT16_MAX), high)


def _saturating_left_shift16(x: torch.Tensor, amount: int) -> torch.Tensor:
    return torch.clamp(x * (1 << amount), INT16_MIN, INT16_MAX)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier: the top 16 bits, rounded."""
    fixed, shift = quantize_multiplier(real)
    if fixed >= INT32_MAX - (1 << 15):
        return INT16_MAX, shift
    return (fixed + (1 << 15)) >> 16, shift


def hard_swish_int8(
    q: torch.Tensor, in_scale: float, in_zero: int, out_scale: float, out_zero: int
) -> torch.Tensor | None:
    """TFLite's int8 HARD_SWISH (reference_ops::HardSwish with the parameters its Prepare
    derives, in float32 as it does) on int8 values ``q``; None where the kernel refuses the
    scales (an output multiplier of 1 or more)."""
    hires = np.float32(np.float32(1.0 / 128.0) * np.float32(in_scale))
    out_mult, out_exp = _int16_multiplier(float(np.float32(hires / np.float32(out_scale))))
    relu_mult, relu_exp = _int16_multiplier(float(np.float32(hires / np.float32(3.0 / 32768.0))))
    if out_exp > 0:
        return None
    x = (torch.as_tensor(q, dtype=torch.int64) - in_zero) * (1 << 7)  # the hi-res input
    on_output_scale = _high_mul16(x, out_mult, rounding=True)
    reluish = x
    if relu_exp > 0:  # left shifts saturate: all but the last bit before the multiply
        reluish = _saturating_left_shift16(reluish, relu_exp - 1)
    reluish = _high_mul16(reluish, relu_mult, rounding=True)
    if relu_exp > 0:
        reluish = _saturating_left_shift16(reluish, 1)
    elif relu_exp < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_exp)
    reluish = (reluish + (1 << 15)) >> 1  # [-1, 1] on 16 bits to [0, 1]
    y = rounding_divide_by_pot(_high_mul16(reluish, on_output_scale, rounding=False), -out_exp)
    return torch.clamp(y + out_zero, -128, 127)


# --- gemmlowp's fixed-point logistic and tanh, as TFLite's int8 LOGISTIC and TANH compute --
def _wrap32(x: torch.Tensor) -> torch.Tensor:
    """int32 two's-complement wrap-around, as C's int32 addition does."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _srdhm(a: torch.Tensor | int, b) -> torch.Tensor:
    return saturating_rounding_doubling_high_mul(torch.as_tensor(a, dtype=torch.int64), b)


def _saturating_left_shift32(x: torch.Tensor, amount: int) -> torch.Tensor:
    return torch.clamp(x * (1 << amount), INT32_MIN, INT32_MAX)


def _rounding_half_sum(a: torch.Tensor, b: int) -> torch.Tensor:
    total = a + b
    return torch.div(total + torch.where(total >= 0, 1, -1), 2, rounding_mode="trunc")


def _exp_quarter(a: torch.Tensor) -> torch.Tensor:
    """exp(a) for a in [-1/4, 0), all values Q0.31: a Taylor expansion around -1/8."""
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_srdhm(_wrap32(x4_over_4 + x3), 715827883) + x2, 1)
    constant = 1895147668  # exp(-1/8)
    return _wrap32(constant + _srdhm(constant, _wrap32(x + poly)))


def _exp_on_negative(a: torch.Tensor, integer_bits: int) -> torch.Tensor:
    """exp(a) for a <= 0 given with ``integer_bits`` integer bits; Q0.31 out (gemmlowp's
    exp_on_negative_values)."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    shifted = (a & (quarter - 1)) - quarter  # a mod 1/4, less 1/4: in [-1/4, 0)
    result = _exp_quarter(_saturating_left_shift32(shifted, integer_bits))
    remainder = shifted - a
    factors = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
    for k, factor in zip(range(-2, integer_bits), factors):  # exp(-2**k)
        bit = (remainder & (1 << (fractional + k))) != 0
        result = torch.where(bit, _srdhm(result, factor), result)
    return torch.where(a == 0, torch.tensor(INT32_MAX), result)


def _newton_reciprocal(a: torch.Tensor) -> torch.Tensor:
    """2 / (1 + a) for a in (0, 1), Q0.31 in, Q2.29 out: three Newton-Raphson steps
    from 48/17 - 32/17 d, d = (1 + a) / 2."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = _wrap32(1515870810 + _srdhm(half_denominator, -1010580540))
    for _ in range(3):
        error = _wrap32((1 << 29) - _srdhm(half_denominator, x))  # 1 - d x in Q2.29
        x = _wrap32(x + _saturating_left_shift32(_srdhm(x, error), 2))
    return x


def _exp_reciprocal(e: torch.Tensor) -> torch.Tensor:
    """1 / (1 + e) in Q0.31 (gemmlowp's one_over_one_plus_x_for_x_in_0_1)."""
    return _saturating_left_shift32(_newton_reciprocal(e), 1)  # half of Q2.29, as Q0.31


def _input_q4(q: torch.Tensor, in_scale: float, in_zero: int):
    """The int8 input less its zero point, the radius beyond which the kernels saturate,
    and the clipped input rescaled to Q4.27, as TFLite's LOGISTIC and TANH Prepare."""
    fraction, left_shift = math.frexp(float(in_scale) * (1 << 27))
    multiplier = math.floor(fraction * (1 << 31) + 0.5)
    radius = math.floor(15 * (1 << 27) / 2.0**left_shift)
    x = torch.as_tensor(q, dtype=torch.int64) - in_zero
    inner = torch.clamp(x, 1 - radius, radius - 1) if radius > 0 else torch.zeros_like(x)
    return x, radius, multiply_by_quantized_multiplier(inner, multiplier, left_shift)


def _saturate(y: torch.Tensor, x: torch.Tensor, radius: int) -> torch.Tensor:
    y = torch.where(x >= radius, torch.tensor(127), y)
    return torch.where(x <= -radius, torch.tensor(-128), y)  # tested first in the kernels


def logistic_int8(q: torch.Tensor, in_scale: float, in_zero: int) -> torch.Tensor:
    """TFLite Micro's int8 LOGISTIC (reference_integer_ops::Logistic with the parameters
    its Prepare derives) on int8 values ``q``: the input in Q4.27, gemmlowp's fixed-point
    logistic, the output on the fixed scale 1/256 with zero point -128."""
    x, radius, a = _input_q4(q, in_scale, in_zero)
    positive = _exp_reciprocal(_exp_on_negative(-a.abs(), 4))  # logistic(|a|)
    y = torch.where(a > 0, positive, INT32_MAX - positive)
    y = torch.where(a == 0, torch.tensor(1 << 30), y)
    return _saturate(torch.clamp(rounding_divide_by_pot(y, 23) - 128, -128, 127), x, radius)


def tanh_int8(q: torch.Tensor, in_scale: float, in_zero: int) -> torch.Tensor:
    """TFLite Micro's int8 TANH (reference_integer_ops::Tanh): the input in Q4.27,
    gemmlowp's fixed-point tanh, the output on the fixed scale 1/128 with zero point 0."""
    x, radius, a = _input_q4(q, in_scale, in_zero)
    e = _exp_on_negative(-a.abs(), 5)  # exp(-2|a|): the same raw value read as Q5.26
    t = _saturating_left_shift32(_wrap32(_newton_reciprocal(e) - (1 << 29)), 2)
    y = torch.where(a < 0, -t, t)
    y = torch.where(a == 0, torch.tensor(0), y)
    return _saturate(torch.clamp(rounding_divide_by_pot(y, 24), -128, 127), x, radius)


def litert_table(
    name: str, q: torch.Tensor, in_scale: float, in_zero: int, out_scale: float, out_zero: int
) -> torch.Tensor:
    """LiteRT's int8 LOGISTIC or TANH (``name``): a table its Prepare fills in float32
    (LUTPopulate): each input level dequantized, the function applied, divided by the
    output scale, rounded half away from zero. exp and tanh are computed in double and
    rounded to float32, as a correctly rounded libm would."""
    f32 = np.float32
    levels = torch.as_tensor(q, dtype=torch.int64).numpy()
    x = f32(in_scale) * (levels - in_zero).astype(f32)
    if name == "LOGISTIC":
        with np.errstate(over="ignore"):  # exp beyond float32: inf, as expf
            e = np.exp(-x.astype(np.float64)).astype(f32)
        y = f32(1.0) / (f32(1.0) + e)
    else:
        y = np.tanh(x.astype(np.float64)).astype(f32)
    scaled = y * (f32(1.0) / f32(out_scale))
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + f32(0.5))
    return torch.clamp(torch.from_numpy(rounded.astype(np.int64)) + out_zero, -128, 127)
