"""Static memory plan: every activation gets an offset in one arena.

Liveness runs over the kernel order: a buffer lives from the op that writes it to the last
op that reads it (views share their input's buffer). A concatenation of whole tensors
costs no copy and no second buffer: its inputs' producers write straight into their
slices of the output (as in TinyEngine's in-place memory scheduling, Lin et al. 2020,
arXiv 2007.10319). An elementwise op whose input dies there writes over it (in place).
Buffers are then placed greedily, largest first, at the lowest offset free during their
whole lifetime (first fit); a few other orders are tried when that misses the lower bound
(the largest sum of bytes live at one op): other sort keys, then size orders with seeded
random jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .lower import Program

ALIGN = 4
RANDOM_ORDERS = 300


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Plan:
    offsets: dict[int, int]  # buffer (value id) -> arena offset; the input is not in it
    arena_bytes: int
    lower_bound: int
    lifetimes: dict[int, tuple[int, int]]  # buffer -> (first op, last op)
    inplace: list[int]  # indices of ops that write over their input
    concats: list[int]  # graph nodes of the concatenations done without a copy


def _apply_concat_slices(program: Program) -> list[int]:
    """Drop every copy that only concatenates whole tensors, each written by an earlier
    op and stored nowhere else, and place those tensors in their slices of its output."""
    producer = {op.output: i for i, op in enumerate(program.ops)}
    done, keep = [], []
    for i, op in enumerate(program.ops):
        runs = op.consts["runs"].values if op.kind == "move" else None
        if runs is not None and _whole_concat(program, op, runs, producer, i):
            for dst, k, _off, _n in runs:
                program.slices[op.inputs[k]] = (op.output, int(dst))
            done.append(op.index)
        else:
            keep.append(op)
    program.ops[:] = keep
    return done


def _whole_concat(program: Program, op, runs, producer: dict[int, int], i: int) -> bool:
    srcs = [int(r[1]) for r in runs]
    if len(set(srcs)) != len(srcs) or len(srcs) != len(op.inputs) or min(srcs) < 0:
        return False  # padding, or an input split or repeated
    for _dst, k, off, n in runs:
        v = op.inputs[k]
        if off != 0 or n != program.sizes[v] or v in (program.input, program.output):
            return False
        if v in program.alias or v in program.slices or producer.get(v, i) >= i:
            return False  # a view, already placed, or not written by an earlier op
    return True


def _apply_inplace(program: Program) -> list[int]:
    last_use: dict[int, int] = {}
    for i, op in enumerate(program.ops):
        for v in op.inputs:
            last_use[program.buffer(v)] = i
    protected = {program.buffer(program.input), program.buffer(program.output)}
    done = []
    for i, op in enumerate(program.ops):
        if not op.elementwise or op.output in program.slices:
            continue
        count = program.sizes[op.output]
        for k, v in enumerate(op.inputs):
            b = program.buffer(v)
            whole = op.kind in ("clamp", "lut") or (
                op.params[("a_div", "b_div")[k]] == 1 and op.params[("a_mod", "b_mod")[k]] == count
            )
            if whole and last_use.get(b) == i and b not in protected and program.sizes[b] == count:
                program.alias[op.output] = b  # reads element i before writing it
                last_use[b] = last_use.get(op.output, i)
                done.append(i)
                break
    return done


def _lifetimes(program: Program) -> dict[int, tuple[int, int]]:
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, op in enumerate(program.ops):
        for v in op.inputs:
            last[program.buffer(v)] = i
        b = program.buffer(op.output)
        first.setdefault(b, i)
        last[b] = max(last.get(b, i), i)
    end = len(program.ops) - 1
    out = program.buffer(program.output)
    if out in first:
        last[out] = end
    first.pop(program.buffer(program.input), None)  # the caller's input array
    return {b: (first[b], last[b]) for b in first}


def _place(order, lives, sizes) -> tuple[dict[int, int], int]:
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    offsets = {}
    for b in order:
        f, la = lives[b]
        size = sizes[b]
        busy = sorted((o, o + s) for o, s, pf, pl in placed if pf <= la and f <= pl)
        offset = 0
        for start, stop in busy:
            if offset + size <= start:
                break
            offset = max(offset, stop)
        placed.append((offset, size, f, la))
        offsets[b] = offset
    return offsets, max((o + s for o, s, _, _ in placed), default=0)


def place(lives: dict, sizes: dict) -> tuple[dict, int, int]:
    """Offsets for buffers with ``lives`` (buffer -> (first op, last op)) and ``sizes``
    (bytes, already aligned): the offsets, the arena size and its lower bound (the largest
    sum of bytes live at one op). Greedy first fit in several orders; the first that
    reaches the bound wins, else the smallest."""
    live = [0] * (max((la for _, la in lives.values()), default=0) + 1)
    for b, (f, la) in lives.items():
        for i in range(f, la + 1):
            live[i] += sizes[b]
    bound = max(live, default=0)
    orders = [
        sorted(lives, key=lambda b: (-sizes[b], lives[b][0])),
        sorted(lives, key=lambda b: (-(lives[b][1] - lives[b][0]), -sizes[b])),
        sorted(lives, key=lambda b: (lives[b][0], -sizes[b])),
        sorted(lives, key=lambda b: (-sizes[b] * (lives[b][1] - lives[b][0] + 1), lives[b][0])),
    ]
    rng = random.Random(0)
    keys = list(lives)
    for _ in range(RANDOM_ORDERS):  # tried only while the bound is not reached
        rng.shuffle(keys)
        orders.append(sorted(keys, key=lambda b: -sizes[b] * rng.uniform(0.5, 1.0)))
    best = None
    for order in orders:
        offsets, arena = _place(order, lives, sizes)
        if best is None or arena < best[1]:
            best = (offsets, arena)
        if arena == bound:
            break
    assert best is not None  # orders is never empty
    return best[0], best[1], bound


def plan(program: Program) -> Plan:
    """Offsets of every buffer of ``program`` (in-place decisions are written into its
    aliases), the arena size and its lower bound."""
    concats = _apply_concat_slices(program)
    inplace = _apply_inplace(program)
    lives = _lifetimes(program)
    sizes = {b: _aligned(program.sizes[b]) for b in lives}
    offsets, arena, bound = place(lives, sizes)
    return Plan(offsets, arena, bound, lives, inplace, concats)
