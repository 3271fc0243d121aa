"""Argument checks for public functions: each names the argument, its value, what was expected."""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any


def in_place(fn):
    """Mark ``fn`` as a call that changes its model argument in place.

    The project's one rule for models: a public call either changes the model it is given,
    in place, says so, and returns a report of what it did (or the model itself, where there
    is nothing to report), never a copy; or it leaves that model exactly as it was, building
    anything new (a ``QuantizedModel``, a compressed copy) beside it. ``fn.in_place`` tells
    which; ``tests/test_in_place.py`` holds every public function to it.
    """
    fn.in_place = True
    return fn


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value}")
        if not strict_minimum and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_finite_model(model, what: str) -> None:
    """Fail, naming the tensor, when a parameter or a normalization statistic of ``model``
    holds NaN or infinity: every score, range and accuracy computed from it would be
    meaningless. (Other buffers may hold infinities on purpose, such as attention masks.)"""
    import torch

    stats = [
        (n, b) for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))
    ]
    tensors = list(model.named_parameters()) + stats
    for name, t in tensors:
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(
                f"{what}: {name} holds {bad} NaN or infinite values of {t.numel()}; the model "
                "diverged or was loaded from a damaged file: retrain it or reload good weights"
            )


@contextmanager
def model_runs_on(
    inputs, what: str, passes: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Turn a failure of the model's own forward on ``inputs`` (a shape or dtype mismatch,
    raised by torch as RuntimeError) into an error about the inputs, naming their shape;
    the errors in ``passes`` (the caller's own kinds) go through as they are."""
    try:
        yield
    except passes:
        raise
    except RuntimeError as err:
        items = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        shapes = ", ".join(str(tuple(t.shape[1:])) for t in items if hasattr(t, "shape"))
        raise ValueError(
            f"{what}: the model cannot run on example inputs of shape {shapes} (per sample): "
            f"{str(err)[:300]}; pass inputs shaped like its data (task.example_inputs())"
        ) from err


_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_bytes(value, what: str) -> int | None:
    """``64_000``, ``"64KiB"``, ``"0.5 MiB"`` or ``"64kB"`` as bytes; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        unit = m and m.group(2).lower()
        if not m or unit not in _UNITS:
            raise ValueError(
                f"{what} must be bytes such as 65536, '64KiB' or '0.5MiB'; got {value!r}"
            )
        value = float(m.group(1)) * _UNITS[unit]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number of bytes, got {value!r}")
    return int(value)
