"""Automatic pruning under device budgets: every search against uniform L1 pruning.

For each task (digits, MNIST-1D) and seed: train a small MobileNet V2 (width 0.5, four
stages, a 256-channel head; 10 epochs on digits, 15 on MNIST-1D, lr 3e-3); then, for two
budgets (30% of the MACs; and a device slot of 24 KiB flash and 3 KiB SRAM at int8),
prune a copy with each method of ``sc.search.METHODS`` (uniform L1, greedy sensitivity,
structured ADMM with purification, ABC, AutoPrune, MetaPruning), fine-tune it 5 epochs at
lr 3e-3 (the same for all), and record test accuracy, the measured costs, whether the
budget is met, and the wall time of the whole method (search plus fine-tuning).

    python benchmarks/auto_pruning.py [--seeds 3] [--tasks digits mnist1d] [--rerun METHOD]

Cells are merged one by one into benchmarks/results/auto_pruning.json under a file lock
(atomically), so one process per task can run at once; a rerun resumes. ``--rerun``
drops a method's cells of the given tasks first, to measure it again after a change.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

import secateurs as sc
from secateurs.measure.target import Target

sys.path.insert(0, str(Path(__file__).parent))
from _common import locked_update, machine, without_methods

RESULTS = Path(__file__).parent / "results" / "auto_pruning.json"
TASKS = {"digits": 10, "mnist1d": 15}  # training epochs
MODEL = {
    "width": 0.5,
    "cfg": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1)),
    "last_channels": 256,
}
SLOT = Target(
    "slot-24k-3k",
    sram_bytes=3 * 1024,
    flash_bytes=24 * 1024,
    clock_hz=48_000_000,
    active_power_mw=5.0,
)
BUDGETS = {"macs0.3": sc.search.Budget(macs=0.3), "slot": sc.search.Budget.for_target(SLOT)}
METHODS = ("uniform", "sensitivity", "admm", "abc", "autoprune", "metapruning")
FINETUNE = {"finetune_epochs": 5, "lr": 3e-3}


def _update(fn) -> dict:
    return locked_update(RESULTS, fn)


def run_task(task_name: str, seeds: int) -> None:
    done = set(_update(lambda r: None).get("cells", {}))
    for seed in range(seeds):
        keys = [f"{task_name}/{b}/{m}/{seed}" for b in BUDGETS for m in METHODS]
        if all(k in done for k in keys):
            continue
        task = sc.data.load(task_name, seed=seed)
        parent = sc.models.create("mobilenet_v2", task, seed=seed, **MODEL)
        sc.fit(parent, task, epochs=TASKS[task_name], lr=3e-3, seed=seed, progress=False)
        key = f"{task_name}/{seed}"
        info = {"accuracy": sc.evaluate(parent, task)}
        _update(lambda r, key=key, info=info: r.setdefault("parents", {}).__setitem__(key, info))
        for budget_name, budget in BUDGETS.items():
            for method in METHODS:
                key = f"{task_name}/{budget_name}/{method}/{seed}"
                if key in done:
                    continue
                model = copy.deepcopy(parent)
                start = time.perf_counter()
                result = sc.search.METHODS[method](model, task, budget, seed=seed, **FINETUNE)
                cell = {
                    "accuracy": result.accuracy,
                    "fits": result.fits,
                    "costs": vars(result.costs),
                    "limits": result.limits,
                    "evaluations": result.evaluations,
                    "seconds": time.perf_counter() - start,
                }
                _update(
                    lambda r, key=key, cell=cell: r.setdefault("cells", {}).__setitem__(key, cell)
                )
                print(
                    f"{key:36s} acc {cell['accuracy']:.4f} fits {cell['fits']} "
                    f"{cell['seconds']:.0f}s",
                    flush=True,
                )


def summarize(results: dict, seeds: int) -> dict:
    cells = results.get("cells", {})
    summary = {}
    for task_name in TASKS:
        for budget_name in BUDGETS:
            keys = {
                m: [f"{task_name}/{budget_name}/{m}/{s}" for s in range(seeds)] for m in METHODS
            }
            if not all(k in cells for ks in keys.values() for k in ks):
                continue
            base = statistics.mean(cells[k]["accuracy"] for k in keys["uniform"])
            print(f"\n{task_name}, budget {budget_name}: uniform L1 {100 * base:.1f}")
            for method in METHODS:
                accs = [cells[k]["accuracy"] for k in keys[method]]
                row = {
                    "mean_accuracy": statistics.mean(accs),
                    "std_accuracy": statistics.pstdev(accs),
                    "gain_over_uniform": statistics.mean(accs) - base,
                    "all_fit": all(cells[k]["fits"] for k in keys[method]),
                    "mean_seconds": statistics.mean(cells[k]["seconds"] for k in keys[method]),
                }
                summary[f"{task_name}/{budget_name}/{method}"] = row
                print(
                    f"  {method:12s} {100 * row['mean_accuracy']:5.1f} ± "
                    f"{100 * row['std_accuracy']:3.1f}  "
                    f"{100 * row['gain_over_uniform']:+5.1f} vs uniform  "
                    f"fits {row['all_fit']}  {row['mean_seconds']:.0f} s"
                )
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--rerun",
        action="append",
        default=[],
        choices=METHODS,
        help="measure this method's cells again (repeatable)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.rerun:
        _update(
            lambda r: r.__setitem__(
                "cells", without_methods(r.get("cells", {}), args.rerun, args.tasks)
            )
        )
    _update(
        lambda r: r.update(
            {
                "benchmark": "auto_pruning",
                "machine": machine(),
                "command": f"python benchmarks/auto_pruning.py --seeds {args.seeds} "
                "[--tasks digits | mnist1d]",
                "budgets": {
                    "macs0.3": "30% of the unpruned MACs",
                    "slot": f"{SLOT.flash_bytes} B flash, {SLOT.sram_bytes} B SRAM at int8",
                },
            }
        )
    )
    for task_name in args.tasks:
        run_task(task_name, args.seeds)
    results = _update(lambda r: r.__setitem__("summary", summarize(r, args.seeds)))
    return 0 if results["summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
