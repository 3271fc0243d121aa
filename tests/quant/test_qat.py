"""Quantization-aware training: fake quantizers, what they train, and conversion."""

from __future__ import annotations

import copy

import pytest
import torch

import secateurs as sc
from secateurs.quant import QATModel, convert, prepare_qat, quantize


def test_qat_recovers_two_bit_weights_that_ptq_loses(trained_lenet5, digits):
    float_acc = sc.evaluate(trained_lenet5, digits)
    ptq = sc.evaluate(quantize(trained_lenet5, digits, weight_bits=2), digits)
    model = copy.deepcopy(trained_lenet5)
    qat = prepare_qat(model, digits, weight_bits=2)
    sc.fit(qat, digits, epochs=3, lr=5e-4, seed=0, progress=False)
    converted = sc.evaluate(convert(qat), digits)
    assert converted >= ptq + 0.5 * (float_acc - ptq)  # closes at least half the gap


def test_lsq_learns_step_sizes_and_keeps_int8_accuracy(trained_lenet5, digits):
    model = copy.deepcopy(trained_lenet5)
    qat = prepare_qat(model, digits, lsq=True)
    before = {k: v.detach().clone() for k, v in qat.named_parameters() if k.endswith("scale")}
    sc.fit(qat, digits, epochs=1, lr=1e-4, seed=0, progress=False)
    moved = [k for k, v in qat.named_parameters() if k in before and not torch.equal(v, before[k])]
    assert len(moved) >= len(before) // 2
    assert sc.evaluate(convert(qat), digits) >= sc.evaluate(trained_lenet5, digits) - 0.01


def test_qat_trains_the_model_itself(trained_lenet5, digits):
    model = copy.deepcopy(trained_lenet5)
    qat = prepare_qat(model, digits)
    weight = model[0].weight.detach().clone()
    sc.fit(qat, digits, epochs=1, lr=1e-3, seed=0, progress=False)
    assert qat.model is model and not torch.equal(model[0].weight, weight)


def _fake_and_integer(model, x):
    qat = prepare_qat(model, x).eval()
    qmodel = convert(qat)
    with torch.no_grad():
        fake = qmodel.output_qparams.quantize(qat(x))
    return fake, qmodel.run_int8(qmodel.quantize_input(x)).long()


def test_fake_quant_and_integer_layer_agree_after_requantization_but_for_ties():
    from tests.quant.test_ptq import ConvReLU

    fake, integer = _fake_and_integer(ConvReLU().eval(), torch.randn(256, 2, 7, 7))
    diff = (fake - integer).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.995


def test_fake_quant_and_integer_networks_agree_within_one_step(trained_lenet5, digits):
    # single-step differences at rounding ties propagate through the layers, but stay small
    fake, integer = _fake_and_integer(copy.deepcopy(trained_lenet5), digits.test.tensors[0])
    assert (fake - integer).abs().max() <= 1
    assert (fake.argmax(1) == integer.argmax(1)).float().mean() >= 0.98


def test_masks_survive_qat_and_conversion(digits):
    model = sc.models.create("mlp", digits, seed=0)
    sc.prune.sparsify(model, sparsity=0.7)
    qat = prepare_qat(model, digits)
    sc.fit(qat, digits, epochs=1, lr=1e-3, seed=0, progress=False)
    qmodel = convert(qat)
    for index, consts in qmodel.layers.items():
        layer = model.get_submodule(qmodel.graph.nodes[index].attrs["layer"])
        assert torch.equal(consts.weight == 0, layer.weight.detach() == 0)


def test_convert_rejects_a_float_model(digits):
    with pytest.raises(TypeError, match="QATModel"):
        convert(sc.models.create("mlp", digits))
    assert isinstance(prepare_qat(sc.models.create("mlp", digits), digits), QATModel)
