"""QDQ ONNX export of int8 models, run by onnxruntime against the integer reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import secateurs as sc
from secateurs.deploy import export_onnx
from secateurs.quant import quantize


def _run(path, qmodel, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xq = qmodel.quantize_input(x)
    feed = qmodel.input_qparams.dequantize(xq.long()).numpy().astype(np.float32)
    out = session.run(None, {"input": feed})[0].astype(np.int64)
    return out, qmodel.run_int8(xq).numpy().astype(np.int64)


@pytest.mark.parametrize("name", ["mlp", "lenet_300_100", "lenet5", "elm"])
def test_onnxruntime_matches_run_int8_within_one_step(name, digits, tmp_path):
    model = sc.models.create(name, digits, seed=0)
    sc.fit(model, digits, epochs=1, lr=3e-3, seed=0, progress=False)
    qmodel = quantize(model, digits)
    path = export_onnx(qmodel, tmp_path / f"{name}.onnx")
    proto = onnx.load(str(path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    out, ref = _run(path, qmodel, digits.test.tensors[0])
    assert np.abs(out - ref).max() <= 1


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2", "ghostnet", "ds_cnn"])
def test_deep_int8_models_export_and_agree_on_predictions(name, mnist1d, tmp_path):
    # onnxruntime requantizes with a float multiplier; its one-step differences at rounding
    # ties compound through deep networks, so the bound is on the typical difference
    model = sc.models.create(name, mnist1d, seed=0, width=0.5)
    sc.fit(model, mnist1d, epochs=1, lr=3e-3, seed=0, progress=False)
    qmodel = quantize(model, mnist1d)
    path = export_onnx(qmodel, tmp_path / "model.onnx")
    out, ref = _run(path, qmodel, mnist1d.test.tensors[0][:300])
    diff = np.abs(out - ref)
    assert diff.mean() <= 1.5 and diff.max() <= 10
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.8


def test_float_export_matches_torch(digits, tmp_path):
    model = sc.models.create("resnet8", digits, seed=0).eval()
    path = export_onnx(model, tmp_path / "float.onnx", example=digits.example_inputs())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = digits.test.tensors[0][:32]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)


def test_float_export_needs_example_inputs(digits, tmp_path):
    with pytest.raises(ValueError, match="example"):
        export_onnx(sc.models.create("mlp", digits), tmp_path / "m.onnx")


def test_the_core_install_imports_and_exports_c_without_the_extras(tmp_path):
    """``import secateurs`` and the core verbs need none of the extras' packages (ONNX,
    onnxruntime, TFLite, Ray); export_onnx without onnx names the extra to install."""
    import subprocess
    import sys

    code = f"""
import sys
for name in ("onnx", "onnxruntime", "onnxscript", "tflite_micro", "ai_edge_litert", "ray"):
    sys.modules[name] = None
import torch
import secateurs as sc
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
q = sc.quant.quantize(model, torch.randn(8, 4))
sc.deploy.export_c(q, {str(tmp_path / "c")!r})
try:
    sc.deploy.export_onnx(q, {str(tmp_path / "m.onnx")!r})
except ImportError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'secateurs[onnx]'" in out.stdout
    assert (tmp_path / "c" / "model.c").is_file()


class _Branches(torch.nn.Module):
    """Picks a layer by the sign of its input's mean: torch.export cannot capture that."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.a(x) if x.mean() > -100 else self.b(x)


def test_float_export_takes_torchs_exporter_and_falls_back_with_a_warning(digits, tmp_path):
    """The float model goes through torch.export (dynamo=True) with a dynamic batch; one
    torch.export refuses still exports, through the TorchScript exporter, and says why."""
    import warnings

    model = sc.models.create("mlp", digits, seed=0).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_onnx(model, tmp_path / "m.onnx", example=digits.example_inputs())
    assert not [w for w in caught if "torch.export cannot capture" in str(w.message)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):  # the batch dimension is dynamic
        x = digits.test.tensors[0][:n]
        out = session.run(None, {"input": x.numpy()})[0]
        assert np.allclose(out, model(x).detach().numpy(), atol=1e-5)
    branches = _Branches().eval()
    with pytest.warns(UserWarning, match="torch.export cannot capture this model"):
        path = export_onnx(branches, tmp_path / "b.onnx", example=digits.example_inputs())
    x = digits.test.tensors[0][:5]
    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert np.allclose(out, branches(x).detach().numpy(), atol=1e-5)
