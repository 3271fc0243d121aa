"""Peak SRAM from liveness: a buffer lives from the step that writes it to its last reader."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Lifetime:
    """A buffer of ``size`` bytes live during steps ``first`` to ``last`` inclusive."""

    key: int
    size: int
    first: int
    last: int


def lifetimes(
    steps: list[tuple[list[int], list[int]]],
    sizes: dict[int, int],
    *,
    inputs: Iterable[int] = (),
    outputs: Iterable[int] = (),
) -> list[Lifetime]:
    """Lifetimes over a schedule of ``steps``, ``(read keys, written keys)`` each, the buffer
    of each key ``sizes[key]`` bytes.

    Model ``inputs`` are live from step 0; model ``outputs`` stay live to the last step.
    """
    first: dict[int, int] = dict.fromkeys(inputs, 0)
    last: dict[int, int] = dict.fromkeys(inputs, 0)
    for i, (reads, writes) in enumerate(steps):
        for k in writes:
            first.setdefault(k, i)
            last[k] = max(last.get(k, i), i)
        for k in reads:
            last[k] = i
    end = max(len(steps) - 1, 0)
    for k in outputs:
        last[k] = end
    return [Lifetime(k, sizes[k], first[k], last[k]) for k in first]


def live_bytes(lives: list[Lifetime], num_steps: int) -> list[int]:
    """Bytes live at each of ``num_steps`` steps: the sum of the sizes of the buffers whose
    lifetime (of ``lives``) covers it."""
    delta = [0] * (num_steps + 1)
    for life in lives:
        delta[life.first] += life.size
        delta[life.last + 1] -= life.size
    live, total = [], 0
    for d in delta[:num_steps]:
        total += d
        live.append(total)
    return live
