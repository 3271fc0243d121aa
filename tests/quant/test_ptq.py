"""Post-training int8: the capture, the integer arithmetic, accuracy, masks and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.quant import QuantError, quantize
from secateurs.quant.executor import run_float
from secateurs.quant.fixedpoint import multiply_by_quantized_multiplier


@pytest.mark.parametrize("name", sc.models.list_models())
@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
def test_every_zoo_model_captures_and_runs_int8(name, task_name, digits, mnist1d):
    task = digits if task_name == "digits" else mnist1d
    kwargs = {} if name in ("elm", "mlp", "lenet_300_100", "lenet5") else {"width": 0.5}
    model = sc.models.create(name, task, seed=0, **kwargs).eval()
    if name == "elm":
        sc.fit(model, task, progress=False)
    qmodel = quantize(model, task, num_batches=1)
    x = task.test.tensors[0][:16]
    with torch.no_grad():
        assert torch.allclose(run_float(qmodel.graph, model, x), model(x), atol=1e-4)
    out = qmodel.run_int8(qmodel.quantize_input(x))
    assert out.dtype == torch.int8 and out.shape == (16, task.num_classes)


def test_int8_accuracy_is_within_one_point_of_float(trained_resnet8, digits):
    float_acc = sc.evaluate(trained_resnet8, digits)
    assert float_acc >= 0.93
    for calibration in ("minmax", "percentile", "mse"):
        qmodel = quantize(trained_resnet8, digits, calibration=calibration)
        assert abs(sc.evaluate(qmodel, digits) - float_acc) <= 0.01, calibration


class ConvReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _reference_conv(qmodel, xq: np.ndarray) -> np.ndarray:
    """Plain loops over the int8 conv: (x - z_x) * w + b, then TFLite requantization."""
    index, c = next(iter(qmodel.layers.items()))
    node = qmodel.graph.nodes[index]
    zx = qmodel.input_qparams.zero_point
    out_p = qmodel.output_qparams
    w, b = c.weight.numpy(), c.bias.numpy()
    n, cin, h, wd = xq.shape
    padded = np.zeros((n, cin, h + 2, wd + 2), dtype=np.int64)
    padded[:, :, 1:-1, 1:-1] = xq.astype(np.int64) - zx  # padding holds real zero
    oh, ow = (h + 2 - 3) // 2 + 1, (wd + 2 - 3) // 2 + 1
    acc = np.zeros((n, w.shape[0], oh, ow), dtype=np.int64)
    for o in range(w.shape[0]):
        for i in range(oh):
            for j in range(ow):
                patch = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                acc[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + b[o]
    y = multiply_by_quantized_multiplier(
        torch.from_numpy(acc), c.multiplier.reshape(1, -1, 1, 1), c.shift.reshape(1, -1, 1, 1)
    ).numpy()
    assert node.attrs["bn"] == "bn" and node.attrs["act"] == (0.0, None)
    return np.clip(y + out_p.zero_point, max(-128, out_p.zero_point), 127)


def test_integer_conv_matches_a_loop_reference_exactly():
    model = ConvReLU().eval()
    x = torch.randn(64, 2, 7, 7)
    qmodel = quantize(model, x)
    xq = qmodel.quantize_input(x[:8])
    assert np.array_equal(qmodel.run_int8(xq).numpy(), _reference_conv(qmodel, xq.numpy()))


def test_integer_output_is_the_rounded_real_result_but_for_ties():
    model = ConvReLU().eval()
    x = torch.randn(64, 2, 7, 7)
    qmodel = quantize(model, x)
    xq = qmodel.quantize_input(x[:16])
    out = qmodel.run_int8(xq).long()
    # the same layer in float64 on the dequantized int8 input and weights, rounded once
    c = next(iter(qmodel.layers.values()))
    w = c.weight.double() * c.weight_scale.reshape(-1, 1, 1, 1)
    bias = c.bias.double() * qmodel.input_qparams.scale * c.weight_scale
    xd = (xq.double() - qmodel.input_qparams.zero_point) * qmodel.input_qparams.scale
    real = torch.relu(torch.nn.functional.conv2d(xd, w, bias, 2, 1))
    p = qmodel.output_qparams
    expected = torch.clamp(torch.floor(real / p.scale + 0.5) + p.zero_point, -128, 127).long()
    diff = (out - expected).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.99


def test_fused_batchnorm_and_relu_leave_no_separate_nodes():
    qmodel = quantize(ConvReLU().eval(), torch.randn(8, 2, 7, 7))
    assert [n.kind for n in qmodel.graph.nodes] == ["conv"]


def test_pruned_weights_stay_zero_and_shrink_flash(digits):
    model = sc.models.create("lenet_300_100", digits, seed=0)
    sc.prune.sparsify(model, sparsity=0.8, importance="magnitude")
    qmodel = quantize(model, digits, num_batches=1)
    for index, consts in qmodel.layers.items():
        layer = model.get_submodule(qmodel.graph.nodes[index].attrs["layer"])
        assert torch.equal(consts.weight == 0, layer.weight.detach() == 0)
    assert qmodel.flash_bytes() < 0.6 * qmodel.flash_bytes(encoding="dense")


def test_channel_pruned_model_quantizes(trained_resnet8, digits):
    import copy

    model = copy.deepcopy(trained_resnet8)
    sc.prune.channels(model, digits.example_inputs(), ratio=0.3)
    qmodel = quantize(model, digits, num_batches=2)
    with torch.no_grad():
        ref = model(digits.test.tensors[0][:64]).argmax(1)
    agree = (qmodel(digits.test.tensors[0][:64]).argmax(1) == ref).float().mean()
    assert agree >= 0.95


class Doubles(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) * 2.0


class Sorts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sort(self.fc(x), dim=1).values


def test_an_op_without_int8_kernel_fails_naming_op_and_module():
    with pytest.raises(QuantError, match=r"aten\.mul.*'\(model\)'.*constant"):
        quantize(Doubles(), torch.randn(8, 4))
    with pytest.raises(QuantError, match=r"aten\.sort.*no int8 kernel"):
        quantize(Sorts(), torch.randn(8, 4))


def test_calibration_data_of_the_wrong_shape_fails_before_anything_changes(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\)"):
        quantize(model, torch.randn(8, 2, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        quantize(model, [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 7, 8)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_scheme_and_bits_name_the_choices(digits):
    model = sc.models.create("mlp", digits, seed=0)
    with pytest.raises(ValueError, match="int8"):
        quantize(model, digits, scheme="int7")
    with pytest.raises(ValueError, match="weight_bits"):
        quantize(model, digits, weight_bits=3)
    with pytest.raises(KeyError, match="not quantized layers"):
        quantize(model, digits, weight_bits={"nope": 4})


def test_sub_8_bit_weights_use_their_range_and_pack(digits):
    model = sc.models.create("mlp", digits, seed=0)
    q8, q4, q2 = (quantize(model, digits, weight_bits=b, num_batches=1) for b in (8, 4, 2))
    for q, qmax in ((q8, 127), (q4, 7), (q2, 1)):
        assert max(int(c.weight.abs().max()) for c in q.layers.values()) == qmax
    dense = [q.flash_bytes("dense") for q in (q8, q4, q2)]
    weights = sum(c.weight.numel() for c in q8.layers.values())
    assert dense[0] - dense[1] == weights // 2 and dense[1] - dense[2] == weights // 4


def test_inputs_of_the_wrong_shape_dtype_or_values_fail_naming_what_was_expected(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    q = sc.quant.quantize(model, digits)
    x = digits.test.tensors[0][:4]
    with pytest.raises(ValueError, match=r"batch of shape \(N, 1, 8, 8\), got \(4, 1, 10, 10\)"):
        q.run_int8(torch.zeros(4, 1, 10, 10, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"batch of shape \(N, 1, 8, 8\), got \(1, 8, 8\)"):
        q.quantize_input(x[0])
    with pytest.raises(TypeError, match=r"quantize_input takes float inputs, got torch.int8"):
        q.quantize_input(x.to(torch.int8))
    with pytest.raises(TypeError, match="use quantize_input"):
        q.run_int8(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        q.quantize_input(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match=r"int8 values in \[-128, 127\], got \[0, 300\]"):
        bad = torch.full((4, 1, 8, 8), 300, dtype=torch.int32)
        bad[0] = 0
        q.run_int8(bad)
    assert q.run_int8(q.quantize_input(x)).shape == (4, 10)
