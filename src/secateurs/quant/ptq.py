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
from ..data.task import Inputs, as_args, map_inputs, split_batch
from ..measure.encoding import smallest_encoding
from .executor import folded_weights, run_float
from .fixedpoint import ROUNDINGS
from .fold import fold_constant_channels
from .integer import LayerConsts, OpConsts, fixed_output, layer_consts, op_consts, run_integer
from .observers import CALIBRATIONS, QParams, RangeObserver, affine_qparams
from .qgraph import QGraph, QuantError, capture


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
    def num_inputs(self) -> int:
        return len(self.graph.inputs)

    @property
    def input_qparams(self) -> QParams:
        """The input's scale and zero point (``inputs_qparams`` for several inputs)."""
        if self.num_inputs > 1:
            raise ValueError(
                f"this model has {self.num_inputs} inputs; read "
                "qmodel.inputs_qparams, one per input"
            )
        return self.qparams[self.graph.inputs[0]]

    @property
    def inputs_qparams(self) -> list[QParams]:
        """Each input's scale and zero point, in the order the model takes them."""
        return [self.qparams[v] for v in self.graph.inputs]

    @property
    def output_qparams(self) -> QParams:
        return self.qparams[self.graph.output]

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample, without the batch dimension (``input_shapes``
        for several inputs)."""
        if self.num_inputs > 1:
            raise ValueError(
                f"this model has {self.num_inputs} inputs; call "
                "qmodel.input_shapes(), one shape per input"
            )
        return self.input_shapes()[0]

    def input_shapes(self) -> list[tuple[int, ...]]:
        """One sample's shape per input, without the batch dimension."""
        return [tuple(self.graph.shapes[v][1:]) for v in self.graph.inputs]

    def _check_batch(self, x, what: str) -> tuple[torch.Tensor, ...]:
        """``x`` as a tuple of one batch per input, each of its input's shape."""
        expected = self.input_shapes()
        several = len(expected) > 1
        if several and not (isinstance(x, (tuple, list)) and len(x) == len(expected)):
            raise TypeError(
                f"{what} takes a tuple of {len(expected)} tensors, one per input of "
                f"the model, got {type(x).__name__}"
            )
        xs = tuple(x) if several else (x,)
        for k, (t, shape) in enumerate(zip(xs, expected)):
            name = f"input {k}" if several else "a batch"
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{what} takes a torch.Tensor as {name}, got {type(t).__name__}")
            if tuple(t.shape[1:]) != shape:
                dims = ", ".join(map(str, shape))
                raise ValueError(f"{what} takes {name} of shape (N, {dims}), got {tuple(t.shape)}")
        if len({len(t) for t in xs}) != 1:
            raise ValueError(
                f"{what}: the inputs hold different numbers of samples: {[len(t) for t in xs]}"
            )
        return xs

    def quantize_input(self, x: Inputs) -> Inputs:
        """Float inputs (N, ...) as the model's int8 input values (a tuple of tensors, one
        per input, for a model with several inputs)."""
        xs = self._check_batch(x, "quantize_input")
        out = []
        for t, qp in zip(xs, self.inputs_qparams):
            if not t.is_floating_point():
                raise TypeError(f"quantize_input takes float inputs, got {t.dtype}")
            if not torch.isfinite(t).all():
                raise ValueError("quantize_input: the inputs hold NaN or infinite values")
            out.append(qp.quantize(t).to(torch.int8))
        return out[0] if len(out) == 1 else tuple(out)

    def run_int8(self, x_q: Inputs) -> torch.Tensor:
        """The integer reference on int8 inputs (N, ...); bit-exact with the generated C.
        A model with several inputs takes a tuple of tensors, one per input."""
        xs = self._check_batch(x_q, "run_int8")
        for t, qp in zip(xs, self.inputs_qparams):
            if t.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64):
                raise TypeError(
                    f"run_int8 takes an integer tensor, got {t.dtype}; "
                    "use quantize_input(x) to quantize floats"
                )
            if len(t) and (int(t.min()) < qp.qmin or int(t.max()) > qp.qmax):
                raise ValueError(
                    f"run_int8 takes int8 values in [{qp.qmin}, {qp.qmax}], got "
                    f"[{int(t.min())}, {int(t.max())}]"
                )
        out = run_integer(self.graph, self.qparams, self.layers, self.ops, xs, self.rounding)
        return out.to(torch.int8)

    def packed_input(self, x_q: Inputs) -> torch.Tensor:
        """int8 inputs as the C entry point reads them: (N, SECATEURS_INPUT_SIZE), each
        sample's inputs one after another in the model's order, each in CHW order."""
        xs = self._check_batch(x_q, "packed_input")
        return torch.cat([t.reshape(len(t), -1) for t in xs], 1)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        inputs = x[0] if len(x) == 1 else x
        return self.output_qparams.dequantize(self.run_int8(self.quantize_input(inputs)))

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
            program, _ = build_program(self, sparse="auto" if encoding == "best" else "never")
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


def calibration_batches(data, num_batches: int, batch_size: int = 64) -> list[Inputs]:
    """Calibration inputs: a Task's training set (in order), a tensor, or an iterable of
    tensors or (inputs, labels) batches. For a model with several inputs, each batch's
    inputs are a tuple of tensors (a Task of several inputs, or (inputs, labels) batches
    whose inputs are tuples)."""
    if isinstance(data, Task):
        x = data.inputs("train")
        n = len(as_args(x)[0])
        return [
            map_inputs(lambda t, i=i: t[i : i + batch_size], x) for i in range(0, n, batch_size)
        ][:num_batches]
    if isinstance(data, torch.Tensor):
        return [data[i : i + batch_size] for i in range(0, len(data), batch_size)][:num_batches]
    if isinstance(data, Iterable):
        out = []
        for batch in data:
            out.append(split_batch(batch)[0] if isinstance(batch, (list, tuple)) else batch)
            if len(out) == num_batches:
                break
        if out and all(isinstance(t, torch.Tensor) for b in out for t in as_args(b)):
            return out
    raise TypeError(
        "data must be a Task, a tensor of inputs, or an iterable of input batches; "
        f"got {type(data).__name__}"
    )


def check_batches(batches: list[Inputs], data) -> tuple[tuple[int, ...], ...]:
    """Every batch must have one shape per input (the Task's input shapes for a Task);
    returns them."""
    if not batches:
        raise ValueError("calibration data is empty; pass a Task or a non-empty input tensor")
    first = tuple(tuple(t.shape[1:]) for t in as_args(batches[0]))
    expected = tuple(data.input_shapes) if isinstance(data, Task) else first
    for b in batches:
        got = tuple(tuple(t.shape[1:]) for t in as_args(b))
        if got != expected:
            shapes = " and ".join(f"(N, {', '.join(map(str, e))})" for e in expected)
            raise ValueError(
                f"calibration batch has shape {_shapes(b)} but the others are {shapes}; pass "
                "inputs of one shape"
            )
    return expected


def _shapes(x: Inputs) -> str:
    return " and ".join(str(tuple(t.shape)) for t in as_args(x))


def capture_checked(model: nn.Module, example: Inputs) -> QGraph:
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
            run_float(graph, model, map_inputs(lambda t: t.float(), batch), observe=see)
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
    *,
    scheme: str = "int8",
    calibration: str = "minmax",
    num_batches: int = 8,
    weight_bits: int | dict[str, int] | None = None,
    rounding: str = "tflm",
) -> QuantizedModel:
    """Post-training quantization of ``model``: calibrate activation ranges on ``data``
    (``num_batches`` batches, observed by ``calibration``: minmax or a percentile rule),
    quantize weights, as ``scheme`` says (``SCHEMES``: int8, and sub-8-bit weights).

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
    graph = capture_checked(model, map_inputs(lambda t: t[:2].float(), batches[0]))
    bits = layer_bits(graph, scheme_obj, weight_bits)
    was_training = model.training
    model.eval()
    try:
        qparams = observe_ranges(graph, model, batches, calibration)
    finally:
        model.train(was_training)
    return graph, scheme_obj, bits, qparams


__all__ = ["SCHEMES", "QuantError", "QuantizedModel", "Scheme", "quantize"]
