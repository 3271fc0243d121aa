"""Budgets: what a compressed model may cost on a device, measured with ``sc.measure``.

``Budget(macs=0.3)`` or ``Budget(macs="30%")`` keeps at most 30% of the unpruned model's
MACs; ``Budget(flash_bytes=64_000, sram_bytes="16KiB")`` gives absolute bytes (at
``weight_bits`` and ``activation_bits``, int8 by default); ``Budget.for_target(
"cortex-m0plus")`` takes a device's flash and SRAM. A float is a share of the unpruned
model and must be at most 1; an absolute amount is an int (or, for bytes, a string with
a unit); anything else is refused, naming both forms. ``latency_ms`` is always absolute
(host CPU milliseconds, noisy).
``measure="c"`` counts flash and SRAM as ``export_c`` stores and runs the model (its
constants; its arena plus the kernels' scratch) instead of ``sc.measure.profile``'s
estimate of the weights and the peak of live activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from torch import nn

from .._checks import check_choice, check_int, parse_bytes
from ..data.task import map_inputs
from ..measure import profile
from ..measure.target import get_target

METRICS = ("macs", "params", "flash_bytes", "sram_bytes", "latency_ms")
# What unstructured sparsity moves: the nonzero counts and the sparse storage, never the
# activations a layer writes (peak SRAM) nor the dense kernels' time.
SPARSE_MOVES = ("macs", "params", "flash_bytes")
MEASURES = ("profile", "c")


class BudgetError(ValueError):
    """A budget that no candidate of the search space can meet."""


@dataclass(frozen=True)
class Costs:
    """One model's costs, in the Budget's units (MACs, params, bytes, milliseconds)."""

    macs: float
    params: float
    flash_bytes: float
    sram_bytes: float
    latency_ms: float | None = None

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)


def measure_costs(model: nn.Module, x, budget: Budget, *, sparse: bool = False) -> Costs:
    """The costs ``budget`` constrains, measured on ``model`` with ``sc.measure.profile``
    on the inputs ``x``.
    ``sparse=True`` counts nonzero MACs and params (unstructured sparsity)."""
    prof = profile(
        model,
        x,
        weight_bits=budget.weight_bits,
        activation_bits=budget.activation_bits,
        latency=budget.latency_ms is not None,
    )
    flash, sram = prof.flash_bytes, prof.peak_sram_bytes
    if budget.measure == "c":
        flash, sram = c_costs(model, x, budget.weight_bits)
    return Costs(
        macs=prof.nonzero_macs if sparse else prof.macs,
        params=prof.nonzero_params if sparse else prof.params,
        flash_bytes=flash,
        sram_bytes=sram,
        latency_ms=prof.latency_ms,
    )


def c_costs(model: nn.Module, x, weight_bits: int = 8) -> tuple[int, int]:
    """Flash and SRAM bytes of ``model``'s C export (``sc.measure.check``), quantized on the
    inputs ``x``: the sizes depend on the structure, not on the calibrated ranges."""
    from ..measure.target import check
    from ..quant import quantize

    two = map_inputs(lambda t: t[:2], x)
    data = [(two, None)] if isinstance(two, tuple) else two  # one batch of several inputs
    fit = check(quantize(model, data, weight_bits=weight_bits), target="generic")
    return fit.flash_bytes, fit.sram_bytes


@dataclass(frozen=True)
class Budget:
    """Upper limits on a model's costs; leave out what does not matter."""

    macs: float | int | None = None
    params: float | int | None = None
    flash_bytes: float | int | None = None
    sram_bytes: float | int | None = None
    latency_ms: float | None = None
    weight_bits: int = 8
    activation_bits: int = 8
    measure: str = "profile"

    def __post_init__(self) -> None:
        check_choice("Budget.measure", self.measure, MEASURES)
        if self.measure == "c" and self.activation_bits != 8:
            raise ValueError(
                "Budget(measure='c') counts the int8 C export; activation_bits "
                f"must be 8, got {self.activation_bits}"
            )
        check_int("weight_bits", self.weight_bits, minimum=1)
        check_int("activation_bits", self.activation_bits, minimum=1)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in METRICS and v is not None:
                object.__setattr__(self, f.name, amount(f.name, v))
        if not self.metrics:
            raise ValueError("a Budget needs at least one of " + ", ".join(METRICS))

    @classmethod
    def for_target(cls, target, weight_bits: int = 8, activation_bits: int = 8, **extra) -> Budget:
        """The flash and SRAM of a device (a ``sc.measure.TARGETS`` name or a Target)."""
        t = get_target(target)
        return cls(
            flash_bytes=int(t.flash_bytes),
            sram_bytes=int(t.sram_bytes),
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            **extra,
        )

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m for m in METRICS if getattr(self, m) is not None)

    def limits(self, reference: Costs) -> dict[str, float]:
        """Absolute limits, fractions resolved against the unpruned model's ``reference``."""
        out = {}
        for m in self.metrics:
            v = getattr(self, m)
            relative = isinstance(v, float) and v <= 1 and m != "latency_ms"
            out[m] = v * reference.get(m) if relative else float(v)
        return out

    def excess(self, costs: Costs, limits: dict[str, float]) -> float:
        """The largest cost over its limit, as a ratio (at most 1 when the budget is met)."""
        return max(costs.get(m) / limits[m] for m in limits)

    def fits(self, costs: Costs, limits: dict[str, float]) -> bool:
        return self.excess(costs, limits) <= 1.0

    def check_reachable(self, smallest: Costs, limits: dict[str, float], how: str) -> None:
        """Fail at once, naming the smallest reachable value, when even the smallest
        candidate ``smallest`` (reached by ``how``) is over a limit."""
        over = [m for m in limits if smallest.get(m) > limits[m]]
        if over:
            parts = [
                f"{m} <= {_fmt(limits[m])} (the smallest reachable is {_fmt(smallest.get(m))})"
                for m in over
            ]
            raise BudgetError(
                f"the budget cannot be met by {how}: "
                + "; ".join(parts)
                + ". Loosen the budget, or pick a smaller model or lower bit widths"
            )

    def check_sparse(self, dense: Costs, limits: dict[str, float]) -> None:
        """Unstructured sparsity cannot lower peak SRAM or latency: fail at once when the
        dense model is over those limits."""
        for m in ("sram_bytes", "latency_ms"):
            if m in limits and dense.get(m) > limits[m]:
                raise BudgetError(
                    f"unstructured sparsity does not lower {m} ({_fmt(dense.get(m))} > "
                    f"{_fmt(limits[m])}); prune channels (structured) to meet it"
                )


def amount(metric: str, v) -> float | int:
    """A limit as the Budget stores it: a share of the unpruned model (a float in (0, 1])
    or an absolute amount (an int; milliseconds, a float, for ``latency_ms``). A string
    says which: ``"50%"`` is a share, ``"64KiB"`` or ``"65536"`` an amount."""
    forms = (
        "a share of the unpruned model as a float up to 1 (0.5) or a percentage ('50%'), "
        "or an absolute amount as an int"
        + (" or bytes ('64KiB')" if metric.endswith("_bytes") else "")
    )
    if metric == "latency_ms":  # always absolute
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"Budget.latency_ms must be positive milliseconds, got {v!r}")
        return v
    if isinstance(v, str):
        text = v.strip()
        if text.endswith("%"):
            try:
                share = float(text[:-1]) / 100
            except ValueError:
                share = math.nan
            if not 0 < share <= 1:
                raise ValueError(f"Budget.{metric}={v!r}: a percentage must be in (0, 100]")
            return share
        if metric.endswith("_bytes"):
            return parse_bytes(text, f"Budget.{metric}")
        if not text.replace("_", "").isdigit():
            raise ValueError(f"Budget.{metric}={v!r}: give {forms}")
        v = int(text.replace("_", ""))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"Budget.{metric} must be positive: {forms}; got {v!r}")
    if isinstance(v, float) and v > 1:
        raise ValueError(
            f"Budget.{metric}={v!r}: a float is a share of the unpruned model and must be at "
            f"most 1; give an int ({int(v)}) for an absolute amount"
        )
    return v


def _fmt(v: float) -> str:
    return f"{v:,.3f}" if v < 100 and not float(v).is_integer() else f"{math.ceil(v):,}"
