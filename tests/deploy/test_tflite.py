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
    path = sc.deploy.export_tflite(q, tmp_path / "model.tflite")
    x_q = q.quantize_input(task.test.tensors[0][:32])
    expected = q.run_int8(x_q).reshape(32, -1).numpy()
    assert (_litert_outputs(path, x_q) == expected).all()
    sc.deploy.export_c(q, tmp_path / "c")
    c_out = sc.deploy.run_c(sc.deploy.compile_c(tmp_path / "c"), x_q, expected.shape[1])
    assert (c_out == expected).all()


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
    path = sc.deploy.export_tflite(q, tmp_path / "model.tflite")
    x_q = q.quantize_input(digits.test.tensors[0][:32])
    expected = q.run_int8(x_q).reshape(32, -1).numpy()
    assert len(set(expected.argmax(1))) > 1  # the model says something
    assert (_litert_outputs(path, x_q) == expected).all()


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


def test_ops_without_a_tflite_counterpart_are_refused_by_name(digits, tmp_path):
    model = sc.models.create("shufflenet_v2", digits, seed=0, width=0.5)
    q = sc.quant.quantize(model, digits)
    with pytest.raises(
        sc.quant.QuantError, match="export_tflite: move in module '.*shuffle' moves data"
    ):
        sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()
    with pytest.raises(TypeError, match="QuantizedModel"):
        sc.deploy.export_tflite(model, tmp_path / "m.tflite")
