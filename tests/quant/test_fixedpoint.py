"""TFLite's fixed-point requantization, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.quant import multiply_by_quantized_multiplier, quantize_multiplier
from secateurs.quant.fixedpoint import rounding_divide_by_pot, saturating_rounding_doubling_high_mul

# real multiplier -> (multiplier, shift), from frexp and TFLite's rules: round the 31-bit
# fraction half away from zero, renormalize 2**31, zero below shift -31, saturate above 30.
TABLE = [
    (0.0, (0, 0)),
    (0.5, (1 << 30, 0)),
    (0.25, (1 << 30, -1)),
    (1.0, (1 << 30, 1)),
    (2.0, (1 << 30, 2)),
    (0.75, (1610612736, 0)),
    (3.0, (1610612736, 2)),
    (1.0 - 2.0**-40, (1 << 30, 1)),  # rounds up to 2**31, renormalized
    (2.0**-32, (1 << 30, -31)),  # smallest kept
    (2.0**-40, (0, 0)),  # too small: zero
    (2.0**31, (2**31 - 1, 30)),  # too large: saturated
    (0.1, (1717986918, -3)),  # 0.8 * 2**31 = 1717986918.4
]


@pytest.mark.parametrize(("real", "expected"), TABLE)
def test_quantize_multiplier_matches_tflite_rules(real, expected):
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_rejects_negative():
    with pytest.raises(ValueError, match="multiplier"):
        quantize_multiplier(-0.5)


def test_high_mul_rounds_like_gemmlowp():
    # 3 * 0.5 = 1.5 rounds up; -3 * 0.5 = -1.5 rounds toward zero (gemmlowp's nudge)
    assert saturating_rounding_doubling_high_mul(torch.tensor(3), 1 << 30).item() == 2
    assert saturating_rounding_doubling_high_mul(torch.tensor(-3), 1 << 30).item() == -1
    # the one overflow case saturates
    low = torch.tensor(-(2**31))
    assert saturating_rounding_doubling_high_mul(low, -(2**31)).item() == 2**31 - 1


def test_rounding_divide_by_pot_ties_away_from_zero():
    x = torch.tensor([5, -5, 6, -6, 7, -7])
    assert rounding_divide_by_pot(x, 2).tolist() == [1, -1, 2, -2, 2, -2]


def test_multiply_by_quantized_multiplier_worked_examples():
    x = torch.tensor([100, 3, -3, 1000])
    assert multiply_by_quantized_multiplier(x, 1 << 30, 0).tolist() == [50, 2, -1, 500]
    assert multiply_by_quantized_multiplier(torch.tensor([-3]), 1 << 30, -1).tolist() == [-1]
    assert multiply_by_quantized_multiplier(torch.tensor([7]), 1610612736, 2).tolist() == [21]


@settings(max_examples=200, deadline=None)
@given(
    x=st.integers(-(2**20), 2**20),
    real=st.floats(1e-6, 8.0, allow_nan=False, allow_infinity=False),
)
def test_requantization_is_within_one_of_the_real_product(x, real):
    multiplier, shift = quantize_multiplier(real)
    assert (
        abs(
            multiply_by_quantized_multiplier(torch.tensor([x]), multiplier, shift).item() - x * real
        )
        <= 1.0
    )


def test_per_channel_multipliers_broadcast():
    acc = torch.tensor([[100, 100], [-100, -100]])
    pairs = [quantize_multiplier(r) for r in (0.5, 0.25)]
    m = torch.tensor([p[0] for p in pairs])
    s = torch.tensor([p[1] for p in pairs])
    assert multiply_by_quantized_multiplier(acc, m, s).tolist() == [[50, 25], [-50, -25]]
    assert math.isclose(pairs[1][0] * 2.0 ** (pairs[1][1] - 31), 0.25)


def test_fixed_point_logistic_and_tanh_track_the_functions_and_saturate_as_tflm():
    """gemmlowp's logistic and tanh, as TFLM's int8 kernels run them: within one output
    step of the rounded function at every input level and scale; the saturation tests in
    the kernels' order (at a radius of zero, level 0 meets the lower test first)."""
    from secateurs.quant.fixedpoint import logistic_int8, tanh_int8

    levels = torch.arange(-128, 128)
    rng = np.random.default_rng(0)
    for _ in range(300):
        scale = float(np.float32(10 ** rng.uniform(-3, 0.5)))
        zero = int(rng.integers(-128, 128))
        x = (levels - zero).double() * scale
        sig = torch.clamp(torch.round(torch.sigmoid(x) * 256) - 128, -128, 127)
        tan = torch.clamp(torch.round(torch.tanh(x) * 128), -128, 127)
        assert (logistic_int8(levels, scale, zero) - sig).abs().max() <= 1
        assert (tanh_int8(levels, scale, zero) - tan).abs().max() <= 1
    huge = logistic_int8(levels, 1e3, 0)  # radius floor(15 * 2**27 / 2**37) = 0
    assert torch.equal(huge, torch.where(levels > 0, 127, -128))
    assert logistic_int8(torch.tensor([0]), 0.05, 0).item() == 0  # 0.5 exactly
    assert tanh_int8(torch.tensor([0]), 0.05, 0).item() == 0
