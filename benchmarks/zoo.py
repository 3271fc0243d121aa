"""Every zoo architecture at matched MACs: accuracy, params, flash, peak SRAM and Cortex-M4
instructions, so an architecture can be picked before pruning.

For each task (digits, MNIST-1D) and zoo model: the width multiplier whose MACs come
closest to the target (0.3 M by default) without exceeding it, found by bisection over
the width (each model with a small fixed head and depth, ``FIXED`` below; models whose
smallest width is still above the target are taken at that width, LeNet-300-100 at its
only size); trained ``--epochs`` epochs (Adam 3e-3, seed 0), test accuracy in float and
after int8 post-training quantization; then the int8 C export's flash (constants) and
peak SRAM (arena plus kernel scratch), and the instructions of one inference on the
emulated Cortex-M4 at -O2 (mean over 4 test inputs; QEMU's mps2-an386), where the
toolchain is installed. ``--plot`` draws accuracy against flash and against Cortex-M4
instructions per task, with each task's Pareto front (no other model both smaller or
faster and more accurate).

    python benchmarks/zoo.py [--tasks digits mnist1d] [--macs 3e5] [--epochs 15] [--plot]
    python benchmarks/zoo.py --table   # the stored cells as the docs' tables

Cells are stored one by one in benchmarks/results/zoo.json (a rerun resumes); the plot is
written to docs/results/zoo.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, save_json

import secateurs as sc
from secateurs.deploy import cortex_m

RESULTS = Path(__file__).parent / "results" / "zoo.json"
PLOT = Path(__file__).parents[1] / "docs" / "results" / "zoo.png"
FIXED = {  # what the width does not scale: heads and depth kept small for these budgets
    "mobilenet_v2": {"last_channels": 128},
    "mobilenet_v3": {"last_channels": 128},
    "ghostnet": {"head_channels": 128},
    "efficientnet": {"depth": 0.34, "last_channels": 128},
    "efficientnet_lite": {"lite": True, "depth": 0.34, "last_channels": 128},
    "shufflenet_v2": {"last_channels": 128},
}
NAMES = {"efficientnet_lite": "efficientnet"}  # entries that are another builder's variant


def entries() -> list[str]:
    names = sc.models.list_models()
    return sorted([*names, *(k for k, v in NAMES.items() if v in names)])


def _macs(entry: str, task, width: float) -> int:
    model = sc.models.create(NAMES.get(entry, entry), task, width=width, **FIXED.get(entry, {}))
    return sc.measure.profile(model, task.example_inputs(1), latency=False).macs


MAX_WIDTH = {"elm": 12.0}  # 6144 hidden units: its elastic-net solve grows fast beyond


def matched_width(entry: str, task, target: float) -> float:
    """The largest width (to 2%) whose MACs stay at or under ``target``; the smallest
    width tried (0.05) when even that is over, the largest (16; 12 for the ELM) when even
    that is under, and 1 for a model of one size."""
    lo, hi = 0.05, MAX_WIDTH.get(entry, 16.0)
    if _macs(entry, task, hi) <= target:
        return hi
    if entry == "lenet_300_100" or _macs(entry, task, lo) > target:
        return 1.0 if entry == "lenet_300_100" else lo
    while hi / lo > 1.02:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if _macs(entry, task, mid) <= target else (lo, mid)
    return lo


def cell(entry: str, task, target: float, epochs: int, seed: int) -> dict:
    start = time.perf_counter()
    width = matched_width(entry, task, target)
    name, fixed = NAMES.get(entry, entry), FIXED.get(entry, {})
    model = sc.models.create(name, task, width=width, seed=seed, **fixed)
    prof = sc.measure.profile(model, task.example_inputs(1), latency=False)
    sc.fit(model, task, epochs=epochs, lr=3e-3, seed=seed, progress=False)
    q = sc.quant.quantize(model, task)
    row = {
        "width": width,
        "kwargs": fixed,
        "macs": prof.macs,
        "params": prof.params,
        "accuracy": sc.evaluate(model, task),
        "int8_accuracy": sc.evaluate(q, task),
    }
    with tempfile.TemporaryDirectory() as tmp:
        report = sc.deploy.export_c(q, tmp, target="cortex-m4")
        row["flash_bytes"] = report["flash_bytes"]
        row["sram_bytes"] = sc.measure.check(q, target="cortex-m4").sram_bytes
        if not cortex_m.toolchain_missing():
            x_q = q.quantize_input(task.test.tensors[0][:4])
            size = int(q.run_int8(x_q[:1]).numel())
            m4 = cortex_m.measure(tmp, x_q, size, "cortex-m4", per_op=False)
            expected = q.run_int8(x_q).reshape(len(x_q), -1).numpy()
            assert (m4["_outputs"].reshape(len(x_q), -1) == expected).all(), "not bit-exact"
            row["m4_instructions"] = m4["instructions_mean"]
    row["seconds"] = time.perf_counter() - start
    return row


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: whether no other point is at most as costly and more
    accurate, or cheaper and at least as accurate."""
    return [
        not any((c2 <= c and a2 > a) or (c2 < c and a2 >= a) for c2, a2 in points)
        for c, a in points
    ]


def plot(results: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({k.split("/")[0] for k in results["cells"]})
    costs = [
        ("flash_bytes", "flash (KB)", 1e-3),
        ("m4_instructions", "Cortex-M4 instructions (M)", 1e-6),
    ]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4.2 * len(tasks)), squeeze=False)
    for row, task_name in enumerate(tasks):
        cells = {k.split("/")[1]: v for k, v in results["cells"].items() if k.startswith(task_name)}
        for col, (key, label, scale) in enumerate(costs):
            ax = axes[row][col]
            names = [n for n in cells if key in cells[n]]
            pts = [(cells[n][key] * scale, 100 * cells[n]["int8_accuracy"]) for n in names]
            front = pareto(pts)
            for n, (c, a), on in zip(names, pts, front):
                ax.scatter(c, a, s=40, color="tab:red" if on else "tab:gray", zorder=3)
                ax.annotate(n, (c, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
            line = sorted(p for p, on in zip(pts, front) if on)
            ax.plot(*zip(*line), color="tab:red", lw=1, label="Pareto front")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(label)
            ax.set_ylabel("int8 test accuracy (%)")
            ax.set_title(f"{task_name}, about {results['macs_target'] / 1e6:.1f} M MACs")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: dict, task_name: str) -> str:
    """One task's cells as a markdown table, best int8 accuracy first; the Pareto-front
    models (flash, then Cortex-M4 instructions) in bold."""
    cells = {k.split("/")[1]: v for k, v in results["cells"].items() if k.startswith(task_name)}
    names = sorted(cells, key=lambda n: -cells[n]["int8_accuracy"])
    fronts = [
        dict(zip(names, pareto([(cells[n].get(key, 0), cells[n]["int8_accuracy"]) for n in names])))
        for key in ("flash_bytes", "m4_instructions")
    ]
    lines = [
        "| model | width | MACs | params | float | int8 | flash | peak SRAM | "
        "Cortex-M4 instructions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        c = cells[n]
        bold = [("**", "**") if f[n] else ("", "") for f in fronts]
        m4 = c.get("m4_instructions")
        lines.append(
            f"| {n} | {c['width']:.3g} | {c['macs'] / 1e3:.0f} k | {c['params'] / 1e3:.1f} k | "
            f"{100 * c['accuracy']:.1f} | {100 * c['int8_accuracy']:.1f} | "
            f"{bold[0][0]}{c['flash_bytes'] / 1e3:.1f} KB{bold[0][1]} | "
            f"{c['sram_bytes'] / 1e3:.1f} KB | "
            + ("-" if m4 is None else f"{bold[1][0]}{m4 / 1e6:.2f} M{bold[1][1]}")
            + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--macs", type=float, default=3e5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the stored cells' tables")
    args = parser.parse_args(argv)
    if args.table:
        results = json.loads(RESULTS.read_text())
        for task_name in dict.fromkeys(k.split("/")[0] for k in results["cells"]):
            print(f"\n{task_name}\n\n{table(results, task_name)}")
        return 0
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if results and results.get("macs_target") != args.macs:
        print(f"{RESULTS} holds cells at {results.get('macs_target')} MACs; move it away first")
        return 2
    cells = results.setdefault("cells", {})
    tasks = dict.fromkeys([*(k.split("/")[0] for k in cells), *args.tasks])  # all stored
    results.update(
        {
            "benchmark": "zoo",
            "machine": machine(),
            "macs_target": args.macs,
            "epochs": args.epochs,
            "seed": 0,
            "command": f"python benchmarks/zoo.py --tasks {' '.join(tasks)} "
            f"--macs {args.macs:g} --epochs {args.epochs} --plot",
        }
    )
    for task_name in args.tasks:
        task = sc.data.load(task_name, seed=0)
        for entry in entries():
            key = f"{task_name}/{entry}"
            if key not in cells:
                cells[key] = cell(entry, task, args.macs, args.epochs, seed=0)
                save_json(RESULTS, results)
            print(key, {k: v for k, v in cells[key].items() if k != "kwargs"}, flush=True)
    save_json(RESULTS, results)
    if args.plot:
        plot(results, PLOT)
        print(f"wrote {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
