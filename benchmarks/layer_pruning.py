"""Layer pruning against filter pruning on one budget: accuracy, and what the removed MACs
buy in CPU time ("To filter prune, or to layer prune", Elkerdawy et al. 2020, arXiv
2007.05667).

The tasks, models, parents and fine-tuning budget of benchmarks/structured_methods.py. Per
task, seed and MAC keep-ratio, three methods prune a copy of the parent and fine-tune it:
``layers`` removes whole blocks (``sc.prune.layers``, the least loss per MAC first) and,
where whole blocks stop short of the target, takes the rest with ``taylor`` channel
pruning; ``taylor`` prunes channels only (the one criterion that structured_methods chose
on validation for every task and ratio); ``torch_pruning`` is Torch-Pruning's magnitude
pruner. Reported: test accuracy (mean ± std), each method against Torch-Pruning seed by
seed, and at 0.5 MACs on the first seed, the speedup over the parent (torch eager and
onnxruntime, batch 1 and 32, one thread, all models timed in turns; int8 C instructions
counted by callgrind) divided by the ideal.

    pip install torch-pruning
    python benchmarks/layer_pruning.py [--seeds 10]

Results are kept cell by cell in benchmarks/results/layer_pruning.json (rewritten atomically
after each cell), so an interrupted run resumes where it stopped; a resumed run trains each
parent again and stops unless it scores as stored (training differs between CPU models).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import accuracies, check_reproduced, has_torch_pruning, machine, save_json
from structured_methods import (
    CALLS,
    ENGINES,
    FINETUNE,
    RATIOS,
    _add_c_speedup,
    _add_speedups,
    _in_turns,
    _parent,
    _prune,
    _timers,
)

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "layer_pruning.json"
METHODS = ("layers", "taylor", "torch_pruning")
REST = "taylor"  # the channel criterion that takes what whole layers leave of the target
TASKS = ("digits", "mnist1d")


def _pruned(method: str, parent, task, keep: float, seed: int):
    if method != "layers":
        return _prune(method, parent, task, keep, seed)
    model, x = copy.deepcopy(parent), task.example_inputs()
    report = sc.prune.layers(model, x, target_macs=keep, data=task)
    if report.macs_kept > keep + 0.02:
        sc.prune.channels(
            model,
            x,
            target_macs=keep / report.macs_kept,
            importance=REST,
            scope="global",
            data=task,
            seed=seed,
            recalibrate=False,
        )  # as the stored cells were run
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    if not has_torch_pruning():
        return 2
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "benchmark": "layer_pruning",
            "machine": machine(),
            "finetune": FINETUNE,
            "command": "python benchmarks/layer_pruning.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        }
    )
    cells = results.setdefault("cells", {})
    for task_name in TASKS:
        for seed in range(args.seeds):
            todo = [f"{task_name}/{m}/{k}/{seed}" for k in RATIOS for m in METHODS]
            if all(key in cells for key in todo) and not (seed == 0 and _untimed(cells, task_name)):
                continue
            task = sc.data.load(task_name, seed=seed)
            parent = _parent(task, seed)
            key = f"{task_name}/parent/{seed}"
            if key in cells:
                check_reproduced(key, sc.evaluate(parent, task), cells[key]["accuracy"], RESULTS)
            else:
                cells[key] = {**accuracies(parent, task), "layers": _layer_count(parent)}
            for keep in RATIOS:
                for method in METHODS:
                    key = f"{task_name}/{method}/{keep}/{seed}"
                    if key in cells:
                        continue
                    start = time.perf_counter()
                    model = _pruned(method, parent, task, keep, seed)
                    sc.fit(model, task, seed=seed, progress=False, **FINETUNE)
                    x = task.example_inputs()
                    prof, base = (sc.measure.profile(m, x, latency=False) for m in (model, parent))
                    cells[key] = {
                        **accuracies(model, task),
                        "macs_kept": prof.macs / base.macs,
                        "params": prof.params,
                        "layers": _layer_count(model),
                        "seconds": time.perf_counter() - start,
                    }
                    save_json(RESULTS, results)
                    print(
                        f"{key:32s} acc {cells[key]['accuracy']:.4f}  "
                        f"MACs {cells[key]['macs_kept']:.3f}"
                    )
            if seed == 0 and _untimed(cells, task_name):
                # latency depends on the structure only, which pruning rebuilds exactly
                # (fine-tuning changes no shape), so every 0.5-MAC model is timed at once
                _time(cells, task, parent, {m: _pruned(m, parent, task, 0.5, 0) for m in METHODS})
                save_json(RESULTS, results)
    _summarize(results, args.seeds)
    save_json(RESULTS, results)
    print(f"wrote {RESULTS}")
    return 0


def _untimed(cells, task_name) -> bool:
    return any("speedup_c_int8" not in cells[f"{task_name}/{m}/0.5/0"] for m in METHODS)


def _layer_count(model) -> int:
    """Convolutions and linear layers: what each costs a runtime a fixed time per call."""
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)
    return sum(isinstance(m, kinds) for m in model.modules())


def _time(cells, task, parent, models: dict) -> None:
    """The 0.5-MAC models of the first seed and their parent, timed in turns on each engine
    and batch size, and their int8 C exports' instructions counted."""
    x = task.example_inputs()
    timers = {"parent": _timers(parent, x), **{m: _timers(model, x) for m, model in models.items()}}
    for batch in (1, 32):
        for engine in ENGINES:
            ms = _in_turns(timers, task.example_inputs(batch), engine)
            for method in models:
                cell = cells[f"{task.name}/{method}/0.5/0"]
                _add_speedups(cell, ms, method, engine, batch)
                cell[f"ms_{engine}_b{batch}"] = ms[method]
                cell["timed_calls_in_turns"] = CALLS
            cells[f"{task.name}/parent/0"][f"ms_{engine}_b{batch}"] = ms["parent"]
    base: dict = {}
    for method, model in models.items():
        _add_c_speedup(cells[f"{task.name}/{method}/0.5/0"], parent, model, task, base)


def _summarize(results, num_seeds: int) -> None:
    cells, summary = results["cells"], results.setdefault("summary", {})
    seeds = range(num_seeds)
    for task_name in TASKS:
        parent = [cells[f"{task_name}/parent/{s}"]["accuracy"] for s in seeds]
        summary[f"{task_name}/parent"] = {"mean": statistics.mean(parent)}
        print(f"\n{task_name}: unpruned {statistics.mean(parent):.4f}")
        for method in METHODS:
            for keep in RATIOS:
                prefix = f"{task_name}/{method}/{keep}"
                accs = [cells[f"{prefix}/{s}"]["accuracy"] for s in seeds]
                row = {"mean": statistics.mean(accs), "std": statistics.pstdev(accs)}
                if method != "torch_pruning":
                    diff = [
                        a - cells[f"{task_name}/torch_pruning/{keep}/{s}"]["accuracy"]
                        for s, a in zip(seeds, accs)
                    ]
                    row.update(
                        difference=statistics.mean(diff),
                        standard_error=statistics.stdev(diff) / len(diff) ** 0.5,
                        wins=sum(d > 0 for d in diff),
                        losses=sum(d < 0 for d in diff),
                    )
                summary[prefix] = row
                against = (
                    f", {row['difference']:+.4f} ± {row['standard_error']:.4f} against "
                    f"Torch-Pruning"
                    if "difference" in row
                    else ""
                )
                print(f"  {method:14s} {keep}: {row['mean']:.4f} ± {row['std']:.4f}{against}")
            cell = cells[f"{task_name}/{method}/0.5/0"]
            print(
                f"  {method:14s} at 0.5, seed 0: "
                + ", ".join(
                    f"{k[len('efficiency_') :]} {v:.2f}"
                    for k, v in cell.items()
                    if k.startswith("efficiency_")
                )
            )


if __name__ == "__main__":
    sys.exit(main())
