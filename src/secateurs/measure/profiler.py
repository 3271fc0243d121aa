"""``profile``: the cost of a model on a device, measured from a trace of its forward pass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .._checks import check_int
from .encoding import smallest_encoding
from .executed import trace
from .latency import measure_latency
from .memory import lifetimes, live_bytes


@dataclass(frozen=True)
class LayerProfile:
    """One executed op: the module that ran it, its product count and the SRAM live there."""

    module: str  # its path ("" for ops in the model's own forward)
    op: str
    output_shape: tuple[int, ...]
    weights: int  # elements of the weight tensors it reads
    macs: int
    nonzero_macs: int
    output_bytes: int  # bytes of the new buffers it writes (0 for views and in-place ops)
    live_bytes: int  # all activation bytes live while it runs


@dataclass(frozen=True)
class WeightProfile:
    """One weight tensor's storage: its elements, nonzeros, and the encoding chosen."""

    name: str
    numel: int
    nonzero: int
    encoding: str  # the smallest of measure.encoding.ENCODINGS that applies
    bytes: int


@dataclass(frozen=True)
class Profile:
    """Costs of one forward pass of the example inputs.

    ``macs`` counts the multiply-accumulates of convolutions, linear layers and matrix
    products; ``nonzero_macs`` those whose weight is nonzero. ``flash_bytes`` stores
    weights of 2 or more dimensions at ``weight_bits`` in the smallest of the dense,
    bitmask, CSR and filterlet-CSR encodings (``weights`` says which), and other parameters
    and float buffers (biases, norms) at 32 bits. ``peak_sram_bytes`` is the largest sum of
    live activation bytes over the executed ops.
    """

    params: int
    nonzero_params: int
    macs: int
    nonzero_macs: int
    flash_bytes: int
    peak_sram_bytes: int
    latency_ms: float | None
    weight_bits: int = 32
    activation_bits: int = 32
    layers: tuple[LayerProfile, ...] = field(default=(), repr=False, compare=False)
    weights: tuple[WeightProfile, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self, layers: bool = False) -> dict:
        d = asdict(self)
        if not layers:
            d.pop("layers")
            d.pop("weights")
        return d


def effective_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter of ``model`` by name, with parametrized weights (masks) as the forward
    pass sees them."""
    out = []
    for mod_name, module in model.named_modules():
        parametrized = getattr(module, "parametrizations", None)
        for p_name, p in module.named_parameters(recurse=False):
            out.append((f"{mod_name}.{p_name}".lstrip("."), p))
        if parametrized is not None:
            for p_name in parametrized:
                with torch.no_grad():
                    out.append((f"{mod_name}.{p_name}".lstrip("."), getattr(module, p_name)))
    return [(n, t) for n, t in out if ".parametrizations." not in f".{n}"]


def _storage(
    model: nn.Module, tensors: list[tuple[str, torch.Tensor]], weight_bits: int
) -> tuple[int, tuple[WeightProfile, ...]]:
    """Flash bytes, and how each weight tensor of 2 or more dimensions is stored."""
    conv_weights = {
        f"{n}.weight".lstrip(".")
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    }
    total_bits, weights = 0, []
    for name, t in tensors:
        if t.dim() >= 2:
            encoding, size = smallest_encoding(t, weight_bits, name in conv_weights)
            nonzero = int(torch.count_nonzero(t))
            weights.append(WeightProfile(name, t.numel(), nonzero, encoding, size))
            total_bits += 8 * size
        else:
            total_bits += t.numel() * 32
    for name, b in model.named_buffers():
        if b.is_floating_point() and ".parametrizations." not in f".{name}":
            total_bits += b.numel() * 32
    return math.ceil(total_bits / 8), tuple(weights)


def profile(
    model: nn.Module,
    example_inputs,
    *,
    weight_bits: int = 32,
    activation_bits: int = 32,
    latency: bool = True,
    repeats: int = 20,
    warmup: int = 3,
    threads: int = 1,
) -> Profile:
    """Params, MACs, flash, peak SRAM and CPU latency of ``model`` on ``example_inputs``.

    All counts are for the whole example batch (use ``task.example_inputs()``, a batch of
    one). Flash and SRAM are counted at ``weight_bits`` and ``activation_bits`` bits per
    value. ``latency=False`` skips timing (``latency_ms`` is then None); otherwise the
    median of ``repeats`` timed passes after ``warmup``, on ``threads`` threads.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TypeError("example_inputs must be a tensor or a tuple of tensors")
    weight_bits = check_int("weight_bits", weight_bits, minimum=1)
    activation_bits = check_int("activation_bits", activation_bits, minimum=1)
    if weight_bits > 32 or activation_bits > 32:
        raise ValueError(f"bit widths must be at most 32, got {weight_bits}, {activation_bits}")
    repeats = check_int("repeats", repeats, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    threads = check_int("threads", threads, minimum=1)

    t = trace(model, inputs, activation_bits=activation_bits)
    lives = lifetimes(
        [(op.inputs, op.new_outputs) for op in t.ops],
        t.buffer_bytes,
        inputs=t.input_keys,
        outputs=t.output_keys,
    )
    live = live_bytes(lives, len(t.ops))
    input_bytes = sum(t.buffer_bytes[k] for k in t.input_keys)
    layers = tuple(
        LayerProfile(
            module=op.module,
            op=op.op,
            output_shape=op.output_shape,
            weights=op.weight_numel,
            macs=op.macs,
            nonzero_macs=op.nonzero_macs,
            output_bytes=sum(t.buffer_bytes[k] for k in op.new_outputs),
            live_bytes=live[op.index],
        )
        for op in t.ops
    )
    tensors = effective_tensors(model)
    with torch.no_grad():
        nonzero = sum(int(torch.count_nonzero(p)) for _, p in tensors)
        flash, weights = _storage(model, tensors, weight_bits)
    return Profile(
        params=sum(p.numel() for _, p in tensors),
        nonzero_params=nonzero,
        macs=sum(op.macs for op in t.ops),
        nonzero_macs=sum(op.nonzero_macs for op in t.ops),
        flash_bytes=flash,
        peak_sram_bytes=max(live, default=input_bytes),
        latency_ms=(
            measure_latency(model, inputs, repeats=repeats, warmup=warmup, threads=threads)
            if latency
            else None
        ),
        weight_bits=weight_bits,
        activation_bits=activation_bits,
        layers=layers,
        weights=weights,
    )


@dataclass(frozen=True)
class ExecutedMACs:
    """MACs per input of a model with dynamic channel gates, averaged over a batch."""

    dense: float  # per input, every channel computed
    executed: float  # per input, gated-off output channels skipped
    active: dict[str, float]  # gated layer -> mean fraction of open channels


@torch.no_grad()
def executed_macs(model: nn.Module, inputs: torch.Tensor) -> ExecutedMACs:
    """What a kernel that skips closed channels would compute in ``model``, per input of
    ``inputs``.

    A gated layer (one with a ``gate`` child holding ``active`` fractions, as
    ``sc.prune.gate_channels`` makes) costs its MACs times its mean open fraction.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        raise TypeError("inputs must be a batch tensor (N, ...)")
    traced = trace(model, (inputs[:1],))
    per_module: dict[str, int] = {}
    for op in traced.ops:
        per_module[op.module] = per_module.get(op.module, 0) + op.macs
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        model.train(was_training)
    active = {
        name: float(m.gate.active.mean())
        for name, m in model.named_modules()
        if getattr(getattr(m, "gate", None), "active", None) is not None
    }
    executed = sum(macs * active.get(name, 1.0) for name, macs in per_module.items())
    return ExecutedMACs(float(sum(per_module.values())), float(executed), active)
