"""The .tflite export, run by the LiteRT interpreter's reference kernels, against
run_int8 and the generated C, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc

litert = pytest.importorskip("ai_edge_litert.interpreter")

EXACT = [
    ("digits", "mlp", {}),
    ("digits", "lenet5", {}),
    ("digits", "resnet8", {}),
    ("digits", "ds_cnn", {}),
    ("digits", "mobilenet_v1", {"width": 0.25}),
    ("digits", "mobilenet_v2", {"width": 0.35, "last_channels": 128}),
    ("mnist1d", "lenet_300_100", {}),
    ("mnist1d", "lenet5", {}),
    ("mnist1d", "resnet8", {}),
    ("mnist1d", "ds_cnn", {}),
]
# data movement, grouped convolution and tables; their C is checked in test_c_export, and
# an untrained model with BatchNorm statistics from data exercises the same arithmetic
MOVES = [
    ("digits", "shufflenet_v1", {"width": 0.5}),  # grouped convolution, channel shuffle
    ("digits", "shufflenet_v2", {"width": 0.5}),  # channel split, shuffle
    ("digits", "ghostnet", {"width": 0.3}),  # hard-sigmoid tables, concatenation
]


def _litert_outputs(path, x_q):
    interp = litert.Interpreter(
        model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF
    )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for sample in x_q.numpy():
        if sample.ndim == 3:  # C, H, W -> H, W, C
            sample = sample.transpose(1, 2, 0)
        elif sample.ndim == 2:  # C, L -> 1, L, C
            sample = sample.T[None]
        interp.set_tensor(inp["index"], sample.reshape(inp["shape"]).astype(np.int8))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(rows)


def _litert_and_reference(q, task, tmp_path):
    """32 quantized test inputs, ``run_int8``'s outputs on them, and LiteRT's outputs for
    the ``.tflite`` exported from ``q``."""
    path = sc.deploy.export_tflite(q, tmp_path / "model.tflite")
    x_q = q.quantize_input(task.test.tensors[0][:32])
    expected = q.run_int8(x_q).reshape(32, -1).numpy()
    return x_q, expected, _litert_outputs(path, x_q)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task_name", "name", "kwargs"), EXACT, ids=[f"{t}-{n}" for t, n, _ in EXACT]
)
def test_litert_runs_the_export_bit_for_bit_like_run_int8_and_the_c(
    task_name, name, kwargs, request, tmp_path
):
    task = request.getfixturevalue(task_name)
    model = sc.models.create(name, task, seed=0, **kwargs)
    sc.fit(model, task, epochs=1, lr=3e-3, seed=0, progress=False)
    q = sc.quant.quantize(model, task, rounding="litert")
    x_q, expected, litert_out = _litert_and_reference(q, task, tmp_path)
    assert (litert_out == expected).all()
    sc.deploy.export_c(q, tmp_path / "c")
    c_out = sc.deploy.run_c(sc.deploy.compile_c(tmp_path / "c"), x_q, expected.shape[1])
    assert (c_out == expected).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task_name", "name", "kwargs"), MOVES, ids=[f"{t}-{n}" for t, n, _ in MOVES]
)
def test_litert_runs_shuffles_splits_groups_and_tables_like_run_int8(
    task_name, name, kwargs, request, tmp_path
):
    task = request.getfixturevalue(task_name)
    model = sc.models.create(name, task, seed=0, **kwargs)
    with torch.no_grad():  # BatchNorm statistics from data, so outputs depend on the input
        model.train()(task.train.tensors[0][:256])
    q = sc.quant.quantize(model.eval(), task, rounding="litert")
    _, expected, litert_out = _litert_and_reference(q, task, tmp_path)
    assert len(np.unique(expected)) > 10  # outputs that vary, not a constant
    assert (litert_out == expected).all()


class Shuffle1d(nn.Module):
    """A 1-D channel shuffle (through a rank-4 view), a grouped convolution, a channel
    split and a concatenation of the halves swapped."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv1d(1, 6, 5, padding=2), nn.Conv1d(6, 6, 3, padding=1, groups=3)
        self.fc = nn.Linear(6 * 40, 10)

    def forward(self, x):
        y = torch.relu(self.a(x))
        n, c, length = y.shape
        y = y.view(n, 3, c // 3, length).transpose(1, 2).reshape(n, c, length)
        first, second = torch.relu(self.b(y)).chunk(2, dim=1)
        return self.fc(torch.cat([second, first], 1).flatten(1))


def test_a_1d_shuffle_split_and_grouped_conv_run_bit_for_bit_in_litert(mnist1d, tmp_path):
    torch.manual_seed(0)
    q = sc.quant.quantize(Shuffle1d(), mnist1d, rounding="litert")
    _, expected, litert_out = _litert_and_reference(q, mnist1d, tmp_path)
    assert len(np.unique(expected)) > 10
    assert (litert_out == expected).all()


class Concatenations(nn.Module):
    """Concatenation along channels, along the width, of a tensor with itself, and of
    flattened features: each becomes one CONCATENATION."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
        self.c = nn.Conv2d(5, 4, 1)
        self.fc = nn.Linear(4 * 8 * 16 + 8, 10)

    def forward(self, x):
        y = torch.relu(self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)))
        y = torch.cat([y, y], 3)
        return self.fc(torch.cat([y.flatten(1), y.mean((2, 3)), y.mean((2, 3))], 1))


def test_concatenations_run_bit_for_bit_in_litert(digits, tmp_path):
    torch.manual_seed(0)
    model = Concatenations()
    sc.fit(model, digits, epochs=3, lr=3e-3, seed=0, progress=False)
    q = sc.quant.quantize(model, digits, rounding="litert")
    _, expected, litert_out = _litert_and_reference(q, digits, tmp_path)
    assert len(set(expected.argmax(1))) > 1  # the model says something
    assert (litert_out == expected).all()


def test_rounding_modes_differ_only_in_rare_ties(digits):
    model = sc.models.create("mlp", digits, seed=0)
    sc.fit(model, digits, epochs=1, lr=3e-3, progress=False)
    double = sc.quant.quantize(model, digits)
    litert_q = sc.quant.quantize(model, digits, rounding="litert")
    x_q = double.quantize_input(digits.test.tensors[0])
    diff = (double.run_int8(x_q).int() - litert_q.run_int8(x_q).int()).abs()
    assert int(diff.max()) <= 1 and 0 < int((diff > 0).sum()) < 0.05 * diff.numel()
    with pytest.raises(ValueError, match="rounding must be one of"):
        sc.quant.quantize(model, digits, rounding="nearest")


class Transposed(nn.Module):
    """Swaps height and width of a square map: the same shape, other bytes."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).transpose(2, 3).flatten(1))


def test_ops_without_a_tflite_counterpart_are_refused_by_name(digits, tmp_path):
    torch.manual_seed(0)
    model = Transposed()
    q = sc.quant.quantize(model, digits)
    with pytest.raises(sc.quant.QuantError, match=r"move in module '\(model\)' moves data from \("):
        sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()
    with pytest.raises(TypeError, match="QuantizedModel"):
        sc.deploy.export_tflite(model, tmp_path / "m.tflite")
