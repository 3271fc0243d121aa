"""Run an exported ``.tflite`` in the real runtimes and compare with the integer reference.

Two runtimes, each optional: TensorFlow Lite Micro's Python interpreter (PyPI
``tflite-micro``, the same C++ kernels a microcontroller runs) and the LiteRT interpreter
(PyPI ``ai-edge-litert``) with its reference kernels. ``run_int8`` reproduces the one its
model was quantized for: ``quantize(..., rounding="tflm")`` (the default) or
``rounding="litert"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..quant.ptq import QuantizedModel
from .verify import Verification, check_inputs

RUNTIMES = ("tflm", "litert")
PACKAGES = {"tflm": "tflite-micro", "litert": "ai-edge-litert"}
DEFAULT_ARENA = 8 << 20  # bytes: ample for the models a microcontroller holds
MAX_ARENA = 1 << 30  # where the default does not do, it is doubled up to this


def _to_tflite(sample: np.ndarray) -> np.ndarray:
    """One PyTorch-layout sample to the exporter's TFLite layout (batch of one)."""
    if sample.ndim == 3:  # C, H, W -> H, W, C
        sample = sample.transpose(1, 2, 0)
    elif sample.ndim == 2:  # C, L -> 1, L, C
        sample = sample.T[None]
    return sample[None]


def _from_tflite(out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A TFLite output back to the PyTorch-layout sample ``shape``, flattened."""
    if len(shape) == 3:
        return out.reshape(shape[1], shape[2], shape[0]).transpose(2, 0, 1).reshape(-1)
    if len(shape) == 2:
        return out.reshape(shape[1], shape[0]).T.reshape(-1)
    return out.reshape(-1)


def _import(runtime: str):
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    try:
        if runtime == "tflm":
            from tflite_micro.python.tflite_micro import runtime as module
        else:
            from ai_edge_litert import interpreter as module
    except ImportError as e:
        raise RuntimeError(
            f"running a .tflite in {runtime} needs the {PACKAGES[runtime]} package: "
            f"pip install {PACKAGES[runtime]} (or secateurs[tflite])"
        ) from e
    return module


def run_tflite(
    path: str | os.PathLike,
    x_q,
    output_shape: tuple[int, ...],
    *,
    runtime: str = "tflm",
    arena_size: int | None = None,
) -> np.ndarray:
    """int8 outputs (N, prod(``output_shape``)) of the ``.tflite`` at ``path`` for int8 inputs
    ``x_q`` (N, ...) in PyTorch layout (a tuple, one tensor per input, for a model with
    several), one inference per sample, in ``runtime``: "tflm" (TensorFlow Lite Micro,
    with an arena of ``arena_size`` bytes; by default 8 MiB, doubled while the model does
    not fit) or "litert" (LiteRT's reference kernels). Outputs come back in PyTorch
    layout, as ``run_int8`` gives them."""
    module = _import(runtime)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no .tflite at {path}; write one with sc.deploy.export_tflite")
    inputs = [t.to(torch.int8).numpy() for t in (x_q if isinstance(x_q, (tuple, list)) else (x_q,))]
    samples = list(zip(*inputs))
    rows = []
    if runtime == "tflm":
        interp = _tflm_interpreter(module, path, arena_size)
        for sample in samples:
            for k, part in enumerate(sample):
                interp.set_input(_to_tflite(part), k)
            interp.invoke()
            rows.append(_from_tflite(interp.get_output(0), output_shape))
    else:
        ref = module.OpResolverType.BUILTIN_REF
        try:
            interp = module.Interpreter(model_path=str(path), experimental_op_resolver_type=ref)
        except ValueError as e:
            if "zero_point values" not in str(e):
                raise
            raise ValueError(
                f"{path} is written for TensorFlow Lite Micro (one zero point per weight "
                "tensor), which LiteRT refuses: export it with export_tflite(..., "
                "compact=False), or quantize with rounding='litert' for LiteRT"
            ) from e
        interp.allocate_tensors()
        ins, out = interp.get_input_details(), interp.get_output_details()[0]
        for sample in samples:
            for detail, part in zip(ins, sample):
                interp.set_tensor(detail["index"], _to_tflite(part).reshape(detail["shape"]))
            interp.invoke()
            rows.append(_from_tflite(interp.get_tensor(out["index"]), output_shape))
    return np.stack(rows) if rows else np.zeros((0, int(np.prod(output_shape))), np.int8)


def _tflm_interpreter(module, path: Path, arena_size: int | None):
    size = DEFAULT_ARENA if arena_size is None else int(arena_size)
    while True:
        try:
            return module.Interpreter.from_file(str(path), arena_size=size)
        except RuntimeError as e:
            if arena_size is not None or size >= MAX_ARENA:
                raise RuntimeError(
                    f"TensorFlow Lite Micro could not run {path} in an arena of {size} bytes: {e}"
                ) from e
            size *= 2


def verify_tflite(
    qmodel: QuantizedModel, path: str | os.PathLike, x, *, runtime: str | None = None
) -> Verification:
    """Run the ``.tflite`` at ``path`` (from ``export_tflite(qmodel, path)``) on float inputs
    ``x`` (a tuple of batches, one per input, for several) in ``runtime`` and count the
    int8 outputs that differ from ``qmodel.run_int8``.
    ``runtime`` defaults to the one ``qmodel`` was quantized for (its ``rounding``)."""
    check_inputs(qmodel, x, "verify_tflite")
    runtime = runtime or qmodel.rounding
    x_q = qmodel.quantize_input(x)
    n = len(x_q[0] if isinstance(x_q, tuple) else x_q)
    expected = qmodel.run_int8(x_q).reshape(n, -1).numpy()
    shape = tuple(qmodel.graph.shapes[qmodel.graph.output][1:])
    got = run_tflite(path, x_q, shape, runtime=runtime)
    diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
    return Verification(n, int((diff != 0).sum()), int(diff.max(initial=0)), Path(path), runtime)
