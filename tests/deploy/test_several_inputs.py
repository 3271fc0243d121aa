"""Models with several inputs, from data to int8 C, .tflite and ONNX, bit for bit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs.quant import QuantError, quantize


class ThreeInputs(nn.Module):
    """An image, a 2-channel signal and a feature vector: a branch each, concatenated.
    The signal's branch adds the input itself back (an op reading a graph input and an
    intermediate)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.signal = nn.Conv1d(2, 2, 3, padding=1)
        self.vector = nn.Linear(6, 8)
        self.head = nn.Linear(12 + 24 + 8, 5)

    def forward(self, image, signal, vector):
        a = self.image(image).mean((2, 3))
        s = F.relu(self.signal(signal) + signal).flatten(1)
        v = F.relu(self.vector(vector))
        return self.head(torch.cat([a, s, v], 1))


class TwinInputs(nn.Module):
    """Two inputs of one shape concatenated as they come: one quantization for both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, left, right):
        x = F.relu(self.conv(torch.cat([left, right], 1)))
        return self.head(x.mean((2, 3)))


def _data(model: nn.Module, n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, ThreeInputs):
        xs = (
            torch.rand(n, 1, 8, 8, generator=g),
            torch.randn(n, 2, 12, generator=g),
            torch.randn(n, 6, generator=g) * 2,
        )
        classes = 5
    else:
        xs = (torch.rand(n, 1, 6, 6, generator=g), torch.rand(n, 1, 6, 6, generator=g) * 3)
        classes = 4
    return sc.data.as_task((xs, torch.arange(n) % classes))


@pytest.mark.parametrize("build", [ThreeInputs, TwinInputs])
def test_several_inputs_run_bit_for_bit_in_c_tflm_and_litert(build, tmp_path):
    torch.manual_seed(0)
    model = build()
    task = _data(model)
    assert task.num_inputs == len(task.input_shapes) > 1
    sc.fit(model, task, epochs=1, lr=3e-3, progress=False)
    x = task.inputs("test")
    qmodel = quantize(model, task)
    with torch.no_grad():  # the int8 model tracks the float one: each input reaches its ops
        ref = model.eval()(*x)
    assert (qmodel(*x) - ref).abs().mean() < 0.05 * ref.abs().mean()
    # C: one array holds the inputs one after another, at the offsets model.h names
    report = sc.deploy.export_c(qmodel, tmp_path / "c")
    header = (tmp_path / "c" / "model.h").read_text()
    sizes = [int(np.prod(s)) for s in qmodel.input_shapes()]
    assert f"#define SECATEURS_INPUTS {len(sizes)}" in header
    assert report["input_bytes"] == sum(sizes)
    for k, offset in enumerate(np.cumsum([0, *sizes[:-1]])):
        assert re.search(rf"SECATEURS_INPUT{k}_OFFSET {offset}\b", header)
        assert re.search(rf"SECATEURS_INPUT{k}_SIZE {sizes[k]}\b", header)
    v = sc.deploy.verify_c(qmodel, tmp_path / "c", x, progress=False)
    assert (v.inputs, v.mismatches) == (len(x[0]), 0)
    # TensorFlow Lite Micro and LiteRT, each on its own rounding
    sc.deploy.export_tflite(qmodel, tmp_path / "m.tflite")
    assert sc.deploy.verify_tflite(qmodel, tmp_path / "m.tflite", x).mismatches == 0
    litert = quantize(model, task, rounding="litert")
    sc.deploy.export_tflite(litert, tmp_path / "l.tflite")
    assert (
        sc.deploy.verify_tflite(litert, tmp_path / "l.tflite", x, runtime="litert").mismatches == 0
    )


def test_quantization_aware_training_takes_several_inputs(tmp_path):
    torch.manual_seed(0)
    model = TwinInputs()
    task = _data(model, n=128)
    sc.fit(model, task, epochs=2, lr=3e-3, progress=False)
    qat = sc.quant.prepare_qat(model, task)
    history = sc.fit(qat, task, epochs=1, lr=1e-4, progress=False)
    assert np.isfinite(history.train_loss[-1])
    qmodel = sc.quant.convert(qat)
    x = task.inputs("test")
    with torch.no_grad():  # the fake-quantized model is the int8 one, up to rounding
        assert (qat.eval()(*x) - qmodel(*x)).abs().mean() < 0.05 * qmodel(*x).abs().mean()
    sc.deploy.export_c(qmodel, tmp_path / "c")
    assert sc.deploy.verify_c(qmodel, tmp_path / "c", x, progress=False).mismatches == 0


def test_several_inputs_export_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = ThreeInputs()
    task = _data(model)
    qmodel = quantize(model, task)
    path = sc.deploy.export_onnx(qmodel, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = task.inputs("test")
    xq = qmodel.quantize_input(x)
    feed = {
        f"input{k}": p.dequantize(t.long()).numpy().astype(np.float32)
        for k, (p, t) in enumerate(zip(qmodel.inputs_qparams, xq))
    }
    out = session.run(None, feed)[0].astype(np.int64)
    assert np.abs(out - qmodel.run_int8(xq).numpy()).max() <= 1
    float_path = sc.deploy.export_onnx(model, tmp_path / "f.onnx", example=task.example_inputs())
    names = [i.name for i in ort.InferenceSession(str(float_path)).get_inputs()]
    assert names == ["input0", "input1", "input2"]


def test_several_inputs_are_named_when_given_wrong():
    torch.manual_seed(0)
    model = TwinInputs()
    task = _data(model)
    qmodel = quantize(model, task)
    left, right = task.inputs("test", 4)
    with pytest.raises(TypeError, match="tuple of 2 tensors"):
        qmodel.quantize_input(left)
    with pytest.raises(ValueError, match=r"input 1 of shape \(N, 1, 6, 6\)"):
        qmodel.quantize_input((left, right[:, :, :3]))
    with pytest.raises(ValueError, match="2 inputs"):
        _ = qmodel.input_qparams
    with pytest.raises(ValueError, match="different numbers of samples"):
        qmodel.run_int8((*qmodel.quantize_input((left, right))[:1], right[:2].to(torch.int8)))

    class Ignores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, used, unused):
            return self.fc(used)

    with pytest.raises(QuantError, match="never reads input 1"):
        quantize(Ignores(), [((torch.rand(8, 4), torch.rand(8, 3)), None)])
    with pytest.raises(ValueError, match="2 inputs"):  # a one-input model on two-input data
        sc.fit(nn.Sequential(nn.Flatten(), nn.Linear(36, 4)), task, epochs=1, progress=False)
