"""Quantization-guided training, per-layer sensitivity and mixed precision."""

from __future__ import annotations

import copy
import math

import pytest

import secateurs as sc
from secateurs.quant import QuantizationGuided, mixed_precision, quantize, sensitivity


def test_qgt_pulls_weights_onto_the_grid_and_keeps_4_bit_accuracy(trained_lenet5, digits):
    term = QuantizationGuided(bits=4, weight=1.0)
    before = term.distances(trained_lenet5)
    model = copy.deepcopy(trained_lenet5)
    sc.fit(model, digits, epochs=4, lr=1e-3, losses=[term], seed=0, progress=False)
    after = term.distances(model)
    assert sum(after.values()) < 0.3 * sum(before.values())
    float_acc = sc.evaluate(trained_lenet5, digits)
    assert sc.evaluate(quantize(model, digits, weight_bits=4), digits) >= float_acc - 0.02


def test_without_the_term_the_weights_stay_off_grid(trained_lenet5, digits):
    term = QuantizationGuided(bits=4)
    model = copy.deepcopy(trained_lenet5)
    sc.fit(model, digits, epochs=4, lr=1e-3, seed=0, progress=False)
    # rounding error of weights spread over a step is about 1/12 of a step squared
    assert sum(term.distances(model).values()) / len(term.distances(model)) > 0.05


def test_sensitivity_finds_the_layers_that_cannot_take_two_bits(trained_lenet5, digits):
    at8 = sensitivity(trained_lenet5, digits, bits=8)
    at2 = sensitivity(trained_lenet5, digits, bits=2)
    layers = [n for n, m in trained_lenet5.named_modules() if hasattr(m, "weight")]
    assert [r.layer for r in at2.rows] == layers
    assert max(abs(r.drop) for r in at8.rows) <= 0.01
    assert at2.bottlenecks(1)[0].drop == max(r.drop for r in at2.rows) >= 0.02
    assert "baseline accuracy" in str(at2)


def test_mixed_precision_meets_the_budget_where_it_costs_least(trained_lenet5, digits):
    sizes = {n: m.weight.numel() for n, m in trained_lenet5.named_modules() if hasattr(m, "weight")}
    at8 = sum(sizes.values())
    budget = at8 // 2
    plan = mixed_precision(trained_lenet5, digits, budget)
    assert sum(math.ceil(sizes[n] * b / 8) for n, b in plan.items()) <= budget
    assert set(plan.values()) - {8} and set(plan) == set(sizes)
    qmodel = quantize(trained_lenet5, digits, weight_bits=plan)
    assert qmodel.weight_bits() == plan
    assert sc.evaluate(qmodel, digits) >= sc.evaluate(trained_lenet5, digits) - 0.05


def test_mixed_precision_names_an_impossible_budget(trained_lenet5, digits):
    with pytest.raises(ValueError, match="budget_bytes=10 cannot be met"):
        mixed_precision(trained_lenet5, digits, 10)
