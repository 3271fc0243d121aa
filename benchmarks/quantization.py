"""Float vs int8 PTQ vs int8 QAT vs QGT 4-bit vs QGT 2-bit, beside onnxruntime's own
``quantize_static`` on the same trained model.

For each task (digits, MNIST-1D), zoo model and seed: train the float model (15 epochs,
Adam 3e-3), then
- ptq8: ``sc.quant.quantize`` (min/max calibration on 8 training batches);
- qat8: ``prepare_qat``, 2 epochs (Adam 5e-4), ``convert``;
- ptq4: PTQ with 4-bit weights, no guidance (the reference QGT improves on);
- qgt4, qgt2: 4 epochs of fine-tuning with the QGT loss at that width (weight 1.0), then
  PTQ with 4- or 2-bit weights;
- qgt4+qat, qgt2+qat: the qgt4 or qgt2 model, then 2 epochs of QAT at that width;
- ort8: the float model exported to ONNX, quantized by ``onnxruntime.quantization.
  quantize_static`` (QDQ, per-channel int8 weights, int8 activations) on the same 8
  calibration batches, run by onnxruntime.
Reported: test accuracy of the integer model and flash bytes of its constants (weights at
their width, biases, requantization constants; for onnxruntime, its initializers).
Integer flash depends on the architecture and the weight width only, so every run counts it
again with the current code for every stored cell.

    python benchmarks/quantization.py [--seeds 3]

Cells are saved one by one to benchmarks/results/quantization.json (atomically); a rerun
resumes.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from _common import check_reproduced, machine, save_json
from onnxruntime import quantization as ortq

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "quantization.json"
MODELS = {
    "digits": [("lenet5", {}), ("resnet8", {}), ("mobilenet_v2", {"width": 0.5})],
    "mnist1d": [("resnet8", {}), ("ds_cnn", {}), ("mobilenet_v2", {"width": 0.5})],
}
METHODS = ("float", "ptq8", "qat8", "ort8", "ptq4", "qgt4", "qgt4+qat", "qgt2", "qgt2+qat")
WIDTHS = {"ptq8": 8, "qat8": 8, "ptq4": 4, "qgt4": 4, "qgt4+qat": 4, "qgt2": 2, "qgt2+qat": 2}


class _Reader(ortq.CalibrationDataReader):
    def __init__(self, batches):
        self.batches = iter([{"input": b.numpy()} for b in batches])

    def get_next(self):
        return next(self.batches, None)


def _ort_static(model, task) -> tuple[float, int]:
    batches = sc.quant.ptq.calibration_batches(task, 8)
    with tempfile.TemporaryDirectory() as tmp:
        fp, q = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        sc.deploy.export_onnx(model, fp, example=task.example_inputs())
        ortq.quantize_static(
            str(fp),
            str(q),
            _Reader(batches),
            quant_format=ortq.QuantFormat.QDQ,
            per_channel=True,
            activation_type=ortq.QuantType.QInt8,
            weight_type=ortq.QuantType.QInt8,
        )
        session = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
        x, y = task.test.tensors
        out = session.run(None, {"input": x.numpy()})[0]
        flash = sum(
            onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(q)).graph.initializer
        )
    return float((out.argmax(1) == y.numpy()).mean()), int(flash)


def _cell(method: str, parent, task, seed: int) -> tuple[float, int]:
    model = copy.deepcopy(parent)
    fit = {"seed": seed, "progress": False}
    if method == "float":
        params = sum(p.numel() for p in model.parameters())
        return sc.evaluate(model, task), 4 * params
    if method == "ort8":
        return _ort_static(model, task)
    if method in ("ptq8", "ptq4"):
        q = sc.quant.quantize(model, task, weight_bits=8 if method == "ptq8" else 4)
    elif method == "qat8":
        qat = sc.quant.prepare_qat(model, task)
        sc.fit(qat, task, epochs=2, lr=5e-4, **fit)
        q = sc.quant.convert(qat)
    else:
        bits = 4 if method.startswith("qgt4") else 2
        term = sc.quant.QuantizationGuided(bits=bits, weight=1.0)
        sc.fit(model, task, epochs=4, lr=1e-3, losses=[term], **fit)
        if method.endswith("+qat"):
            qat = sc.quant.prepare_qat(model, task, weight_bits=bits)
            sc.fit(qat, task, epochs=2, lr=5e-4, **fit)
            q = sc.quant.convert(qat)
        else:
            q = sc.quant.quantize(model, task, weight_bits=bits)
    return sc.evaluate(q, task), q.flash_bytes("dense")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "benchmark": "quantization",
            "machine": machine(),
            "onnxruntime": ort.__version__,
            "command": "python benchmarks/quantization.py " + " ".join(argv or sys.argv[1:]),
        }
    )
    cells = results.setdefault("cells", {})
    for task_name, models in MODELS.items():
        for seed in range(args.seeds):
            task = sc.data.load(task_name, seed=seed)
            for name, kwargs in models:
                parent = None
                for method in METHODS:
                    key = f"{task_name}/{name}/{method}/{seed}"
                    if key in cells:
                        continue
                    if parent is None:
                        parent = sc.models.create(name, task, seed=seed, **kwargs)
                        sc.fit(parent, task, epochs=15, lr=3e-3, seed=seed, progress=False)
                        stored = cells.get(f"{task_name}/{name}/float/{seed}", {})
                        check_reproduced(
                            f"{task_name}/{name} seed {seed}",
                            sc.evaluate(parent, task),
                            stored.get("accuracy"),
                            RESULTS,
                        )
                    start = time.perf_counter()
                    accuracy, flash = _cell(method, parent, task, seed)
                    cells[key] = {
                        "accuracy": accuracy,
                        "flash_bytes": flash,
                        "seconds": time.perf_counter() - start,
                    }
                    save_json(RESULTS, results)
                    print(f"{key:40s} acc {accuracy:.4f} flash {flash}", flush=True)
    _refresh_flash(cells)
    results["summary"] = _summarize(cells, args.seeds)
    save_json(RESULTS, results)
    return 0


def _refresh_flash(cells: dict) -> None:
    """Set every integer cell's flash bytes as the current code counts them. Dense flash
    depends on the layer shapes and the weight width only, not on the trained values, so an
    untrained model of the same architecture gives it; cells stored before a change to the
    encoding (one-byte shifts, say) are brought up to date without retraining."""
    for task_name, models in MODELS.items():
        task = sc.data.load(task_name, seed=0)
        for name, kwargs in models:
            model = sc.models.create(name, task, seed=0, **kwargs)
            flash = {
                bits: sc.quant.quantize(model, task, weight_bits=bits).flash_bytes("dense")
                for bits in sorted(set(WIDTHS.values()))
            }
            for key, cell in cells.items():
                task_, name_, method, _seed = key.split("/")
                if (task_, name_) == (task_name, name) and method in WIDTHS:
                    cell["flash_bytes"] = flash[WIDTHS[method]]


def _summarize(cells: dict, seeds: int) -> dict:
    summary = {}
    for task_name, models in MODELS.items():
        for name, _ in models:
            print(f"\n{task_name} {name}")
            for method in METHODS:
                accs = [cells[f"{task_name}/{name}/{method}/{s}"]["accuracy"] for s in range(seeds)]
                flash = cells[f"{task_name}/{name}/{method}/0"]["flash_bytes"]
                mean, std = statistics.mean(accs), statistics.pstdev(accs)
                summary[f"{task_name}/{name}/{method}"] = {
                    "mean_accuracy": mean,
                    "std_accuracy": std,
                    "flash_bytes": flash,
                }
                print(f"  {method:9s} {100 * mean:5.1f} ± {100 * std:3.1f}  flash {flash:8d}")
    return summary


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
