"""Post-training quantization to the TFLite Micro int8 scheme: ``sc.quant.quantize``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_finite_model, check_int, model_runs_on
from .._registry import Registry
from ..data import Task
from ..measure.encoding import smallest_encoding
from .capture import QGraph, QuantError, capture
from .executor import folded_weights, run_float
from .fixedpoint import ROUNDINGS
from .fold import fold_constant_channels
from .integer import LayerConsts, OpConsts, fixed_output, layer_consts, op_consts, run_integer
from .observers import CALIBRATIONS, QParams, RangeObserver, affine_qparams


@dataclass(frozen=True)
class Scheme:
    """How a model is quantized: activation bits (asymmetric per tensor), weight bits
    (symmetric per output channel, zero point 0, narrow range)."""

    name: str
    weight_bits: int = 8
    activation_bits: int = 8


SCHEMES = Registry("quantization scheme")
SCHEMES.register("int8")(Scheme("int8", 8, 8))
SCHEMES.register("w4a8")(Scheme("w4a8", 4, 8))
SCHEMES.register("w2a8")(Scheme("w2a8", 2, 8))
WEIGHT_BITS = (2, 4, 8)


class QuantizedModel(nn.Module):
    """An int8 model: its graph, the integer constants and each tensor's scale and zero point.

    ``forward`` takes float inputs, quantizes them, runs the integer reference and
    dequantizes the result, so ``sc.evaluate(qmodel, task)`` measures the int8 model
    itself. ``run_int8`` is the integer reference alone, int8 in and int8 out.
    """

    def __init__(self, graph, qparams, layers, ops, scheme, names, rounding="tflm") -> None:
        super().__init__()
        check_choice("rounding", rounding, ROUNDINGS)
        self.rounding = rounding  # the runtime reproduced: "tflm" or "litert" (ROUNDINGS)
        self.graph: QGraph = graph
        self.qparams: dict[int, QParams] = qparams
        self.layers: dict[int, LayerConsts] = layers
        self.ops: dict[int, OpConsts] = ops
        self.scheme: Scheme = scheme
        self.layer_names: dict[int, str] = names  # node index -> module path

    @property
    def input_qparams(self) -> QParams:
        return self.qparams[self.graph.input]

    @property
    def output_qparams(self) -> QParams:
        return self.qparams[self.graph.output]

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample, without the batch dimension."""
        return tuple(self.graph.shapes[self.graph.input][1:])

    def _check_batch(self, x, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} takes a torch.Tensor, got {type(x).__name__}")
        expected = self.input_shape()
        if tuple(x.shape[1:]) != expected:
            dims = ", ".join(map(str, expected))
            raise ValueError(f"{what} takes a batch of shape (N, {dims}), got {tuple(x.shape)}")

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float inputs (N, ...) as the model's int8 input values."""
        self._check_batch(x, "quantize_input")
        if not x.is_floating_point():
            raise TypeError(f"quantize_input takes float inputs, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError("quantize_input: the inputs hold NaN or infinite values")
        return self.input_qparams.quantize(x).to(torch.int8)

    def run_int8(self, x_q: torch.Tensor) -> torch.Tensor:
        """The integer reference on int8 inputs (N, ...); bit-exact with the generated C."""
        self._check_batch(x_q, "run_int8")
        if x_q.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64):
            raise TypeError(
                f"run_int8 takes an integer tensor, got {x_q.dtype}; "
                "use quantize_input(x) to quantize floats"
            )
        qp = self.input_qparams
        if len(x_q) and (int(x_q.min()) < qp.qmin or int(x_q.max()) > qp.qmax):
            raise ValueError(f"run_int8 takes int8 values in [{qp.qmin}, {qp.qmax}], got "
                             f"[{int(x_q.min())}, {int(x_q.max())}]")  # fmt: skip
        out = run_integer(self.graph, self.qparams, self.layers, self.ops, x_q, self.rounding)
        return out.to(torch.int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_qparams.dequantize(self.run_int8(self.quantize_input(x)))

    def weight_bits(self) -> dict[str, int]:
        return {self.layer_names[i]: c.bits for i, c in self.layers.items()}

    def flash_bytes(self, encoding: str = "best") -> int:
        """Bytes of every constant ``export_c`` stores for this model: weights at their bit
        width (packed), int32 biases, int32 multipliers and int8 shifts per output
        channel, lookup tables and the tables of data movement, after the exact folding of
        constant channels (``quant/fold.py``). ``encoding="best"``: sparse weights as
        ``export_c(..., sparse="auto")`` stores them (filterlet CSR, bitmasks); ``"dense"``:
        as ``sparse="never"``. A model ``export_c`` refuses is counted from its layers and
        tables alone."""
        check_choice("encoding", encoding, ("best", "dense"))
        from ..deploy.codegen import build_program  # deploy builds on quant

        try:
            program, _ = build_program(self, "auto" if encoding == "best" else "never")
        except QuantError:
            return self._constant_bytes(encoding)
        return sum(c.nbytes for op in program.ops for c in op.consts.values())

    def _constant_bytes(self, encoding: str) -> int:
        total = 0
        for index, c in fold_constant_channels(self).items():
            is_conv = self.graph.nodes[index].kind == "conv"
            constant = 0
            if encoding == "dense":
                total += math.ceil(c.weight.numel() * c.bits / 8)
            else:
                name, size = smallest_encoding(c.weight, c.bits, is_conv)
                total += size
                if name == "filterlet_csr":
                    constant = int((c.weight.flatten(1) == 0).all(1).sum())
            total += 4 * (c.bias.numel() - constant) + 5 * (c.multiplier.numel() - constant)
            total += constant
        for c in self.ops.values():
            total += 0 if c.table is None else c.table.numel()
        return total


def calibration_batches(data, num_batches: int, batch_size: int = 64) -> list[torch.Tensor]:
    """Calibration inputs: a Task's training set (in order), a tensor, or an iterable of
    tensors or (inputs, labels) batches."""
    if isinstance(data, Task):
        x = data.train.tensors[0]
        return [x[i : i + batch_size] for i in range(0, len(x), batch_size)][:num_batches]
    if isinstance(data, torch.Tensor):
        return [data[i : i + batch_size] for i in range(0, len(data), batch_size)][:num_batches]
    if isinstance(data, Iterable):
        out = []
        for batch in data:
            out.append(batch[0] if isinstance(batch, (list, tuple)) else batch)
            if len(out) == num_batches:
                break
        if out and all(isinstance(b, torch.Tensor) for b in out):
            return out
    raise TypeError(
        "data must be a Task, a tensor of inputs, or an iterable of input batches; "
        f"got {type(data).__name__}"
    )


def check_batches(batches: list[torch.Tensor], data) -> tuple[int, ...]:
    """Every batch must have one shape (the Task's input shape for a Task); returns it."""
    if not batches:
        raise ValueError("calibration data is empty; pass a Task or a non-empty input tensor")
    expected = tuple(data.input_shape) if isinstance(data, Task) else tuple(batches[0].shape[1:])
    for b in batches:
        if tuple(b.shape[1:]) != expected:
            raise ValueError(
                f"calibration batch has shape {tuple(b.shape)} but the others are "
                f"(N, {', '.join(map(str, expected))}); pass inputs of one shape"
            )
    return expected


def capture_checked(model: nn.Module, example: torch.Tensor) -> QGraph:
    """Capture, turning a shape mismatch inside the model into an error about the data."""
    with model_runs_on(example, "quantize", (QuantError,)):
        return capture(model, example)


def layer_bits(graph: QGraph, scheme: Scheme, weight_bits) -> dict[int, int]:
    names = {i: n.attrs["layer"] for i, n in enumerate(graph.nodes) if n.kind in ("conv", "linear")}
    if weight_bits is None:
        return dict.fromkeys(names, scheme.weight_bits)
    if not isinstance(weight_bits, dict):
        check_choice("weight_bits", weight_bits, WEIGHT_BITS)
        return dict.fromkeys(names, weight_bits)
    unknown = set(weight_bits) - set(names.values())
    if unknown:
        raise KeyError(
            f"weight_bits names {sorted(unknown)}, which are not quantized layers; "
            f"layers: {', '.join(names.values())}"
        )
    for bits in weight_bits.values():
        check_choice("weight_bits value", bits, WEIGHT_BITS)
    return {i: weight_bits.get(name, scheme.weight_bits) for i, name in names.items()}


def observe_ranges(
    graph: QGraph, model: nn.Module, batches, calibration: str
) -> dict[int, QParams]:
    """Run the float graph over the batches; each tie group gets one range."""
    ties = graph.ties()
    observers = {root: RangeObserver(calibration) for root in set(ties.values())}

    def see(v, t):
        observers[ties[v]].update(t)
        return t

    with torch.no_grad():
        for batch in batches:
            run_float(graph, model, batch.float(), observe=see)
    roots = {root: affine_qparams(*obs.range()) for root, obs in observers.items()}
    roots.update(fixed_ranges(graph))
    return {v: roots[root] for v, root in ties.items()}


def fixed_ranges(graph: QGraph) -> dict[int, QParams]:
    """Tie-group root -> the parameters a runtime kernel fixes for it: the output of a
    sigmoid or tanh takes TFLite's fixed int8 quantization (``FIXED_OUTPUT``), so it runs
    as LOGISTIC or TANH. Only where nothing else writes into that group (a concatenation
    with another tensor keeps its observed range, and the table)."""
    ties, sources = graph.ties(), graph.sources()
    writers: dict[int, set[int]] = {}
    for v in sources:
        writers.setdefault(ties[v], set()).add(v)
    out = {}
    for node in graph.nodes:
        params = fixed_output(node)
        root = ties[node.outputs[0]]
        if params is not None and writers[root] == {node.outputs[0]}:
            out[root] = params
    return out


def build(graph: QGraph, model: nn.Module, qparams, scheme: Scheme, bits, scales=None):
    """The QuantizedModel of ``graph`` with ``model``'s current weights; ``scales`` (node
    index -> per-channel weight scale) replaces the max-magnitude choice, as QAT's LSQ does."""
    scales = scales or {}
    layers, ops, names = {}, {}, {}
    for index, node in enumerate(graph.nodes):
        if node.kind in ("conv", "linear"):
            w, b = folded_weights(model, node)
            x, y = qparams[node.inputs[0]], qparams[node.outputs[0]]
            layers[index] = layer_consts(w, b, x, y, bits[index], scales.get(index))
            names[index] = node.attrs["layer"]
        elif node.kind in ("add", "mul", "mean", "lut", "clamp"):
            ops[index] = op_consts(node, qparams)
    return QuantizedModel(graph, qparams, layers, ops, scheme, names)


def quantize(
    model: nn.Module,
    data,
    scheme: str = "int8",
    calibration: str = "minmax",
    num_batches: int = 8,
    weight_bits: int | dict[str, int] | None = None,
    rounding: str = "tflm",
) -> QuantizedModel:
    """Post-training quantization: calibrate activation ranges on ``data``, quantize weights.

    ``data`` is a Task (its training inputs), a tensor of inputs, or an iterable of batches.
    ``weight_bits`` overrides the scheme's weight width, for all layers or per module path
    (mixed precision). ``rounding`` names the runtime whose integer arithmetic ``run_int8``
    and the exported C reproduce bit for bit: "tflm", TensorFlow Lite Micro's reference
    kernels (and CMSIS-NN's), or "litert", the LiteRT interpreter's reference kernels. The
    model itself is not changed. Jacob et al. 2018 (arXiv 1712.05877); the TFLite int8
    specification.
    """
    check_choice("rounding", rounding, ROUNDINGS)
    graph, scheme_obj, bits, qparams = calibrate(
        model, data, scheme, calibration, num_batches, weight_bits
    )
    qmodel = build(graph, model, qparams, scheme_obj, bits)
    qmodel.rounding = rounding
    return qmodel


def calibrate(
    model: nn.Module, data, scheme: str, calibration: str, num_batches: int, weight_bits
) -> tuple[QGraph, Scheme, dict[int, int], dict[int, QParams]]:
    """What quantization and quantization-aware training start from: ``model``'s graph
    captured on ``data``, the scheme, each layer's weight width, and the activation ranges
    observed on ``num_batches`` batches of ``data`` (the model in eval mode meanwhile)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_finite_model(model, "quantize")
    scheme_obj = SCHEMES.get(scheme)
    check_choice("calibration", calibration, CALIBRATIONS)
    num_batches = check_int("num_batches", num_batches, minimum=1)
    batches = calibration_batches(data, num_batches)
    check_batches(batches, data)
    graph = capture_checked(model, batches[0][:2].float())
    bits = layer_bits(graph, scheme_obj, weight_bits)
    was_training = model.training
    model.eval()
    try:
        qparams = observe_ranges(graph, model, batches, calibration)
    finally:
        model.train(was_training)
    return graph, scheme_obj, bits, qparams


__all__ = ["QuantizedModel", "QuantError", "Scheme", "SCHEMES", "quantize"]
