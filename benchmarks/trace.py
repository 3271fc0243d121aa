"""Can ``torch.export`` be the project's trace? Measured on the zoo and on foreign models.

The dependency graph, the profiler and int8 capture all read one forward pass op by op
(``secateurs._execution.watch``). ``torch.export`` is the trace PyTorch maintains: this
script asks, for every model, (1) does ``torch.export.export`` succeed on it, (2) does
every op of its graph carry the module path that ran it (``nn_module_stack``, which
channel pruning and capture need), and (3) how long it takes beside ``watch`` (median of
``--repeats``, both in this process). The models: the 17 zoo configurations the deployment
benchmarks use, 10 random conv nets (``sc.models.random_net``), and four written the way
users write them: a transformer block (LayerNorm, multi-head attention), a net that picks a
branch from its data (``if x.mean() > 0``), one that slices by a number read from a tensor,
and one that reads a Python list kept as an attribute.

    python benchmarks/trace.py [--repeats 5]

Writes benchmarks/results/trace.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import LIGHTWEIGHT, ZOO, machine, save_json
from torch import nn

import secateurs as sc
from secateurs._execution import Watcher, watch

RESULTS = Path(__file__).parent / "results" / "trace.json"


class TransformerBlock(nn.Module):
    """A pre-norm encoder block over 8 tokens (LayerNorm, attention, MLP)."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x.flatten(1, 2).reshape(x.shape[0], 8, 8))
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


class DataBranch(nn.Module):
    """Picks one of two convolutions by the sign of the input's mean."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = self.a(x) if x.mean() > 0 else self.b(x)
        return self.head(y.mean((2, 3)))


class ReadsANumber(nn.Module):
    """Keeps as many channels as a tensor buffer says (a number read with ``.item()``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.register_buffer("keep", torch.tensor(12))
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        y = self.conv(x)[:, : int(self.keep.item())]
        return self.head(y.mean((2, 3)))


class ListOfScales(nn.Module):
    """Scales each stage by a float from a Python list (a plain attribute)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, 8, 3, padding=1) for c in (1, 8, 8))
        self.scales = [1.0, 0.5, 0.25]
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        for conv, s in zip(self.convs, self.scales):
            x = torch.relu(conv(x)) * s
        return self.head(x.mean((2, 3)))


def models() -> list[tuple[str, nn.Module, torch.Tensor]]:
    task = sc.data.load("digits", seed=0)
    x = task.example_inputs(2)
    out = []
    for name, kwargs in ZOO + LIGHTWEIGHT:
        label = name + ("_lite" if kwargs.get("lite") else "")
        out.append((label, sc.models.create(name, task, seed=0, **kwargs), x))
    for seed in range(10):
        shape = sc.models.random_input_shape(seed)
        net = sc.models.random_net(seed, input_shape=shape)
        out.append((f"random_net_{seed}", net, torch.randn(2, *shape)))
    for cls in (TransformerBlock, DataBranch, ReadsANumber, ListOfScales):
        out.append((cls.__name__, cls(), x))
    return out


def _seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(model: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    model.eval()
    result = {"watch_s": _seconds(lambda: watch(model, x, Watcher()), repeats)}
    try:
        start = time.perf_counter()
        program = torch.export.export(model, (x,))
        result["export_s"] = time.perf_counter() - start
    except Exception as err:  # every refusal is a finding here, whatever its type
        result["export_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        return result
    calls = [n for n in program.graph.nodes if n.op == "call_function"]
    located = [n for n in calls if n.meta.get("nn_module_stack")]
    result["ops"] = len(calls)
    result["ops_with_module"] = len(located)
    if repeats > 1:
        result["export_s"] = _seconds(lambda: torch.export.export(model, (x,)), repeats)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = {}
    for name, model, x in models():
        rows[name] = row(model, x, args.repeats)
        r = rows[name]
        done = (
            f"export {r['export_s']:.3f} s, {r['ops_with_module']}/{r['ops']} ops with a module"
            if "export_s" in r
            else f"export fails: {r['export_error']}"
        )
        print(f"{name:22s} watch {r['watch_s']:.4f} s; {done}", flush=True)
    exported = [r for r in rows.values() if "export_s" in r]
    summary = {
        "models": len(rows),
        "export_fails": len(rows) - len(exported),
        "every_op_has_its_module": sum(r["ops_with_module"] == r["ops"] for r in exported),
        "median_export_over_watch": statistics.median(
            r["export_s"] / r["watch_s"] for r in exported
        ),
    }
    print(summary)
    save_json(
        RESULTS,
        {
            "machine": machine(),
            "command": "python benchmarks/trace.py " + " ".join(argv or sys.argv[1:]),
            "summary": summary,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
