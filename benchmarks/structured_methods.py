"""Structured pruning criteria compared on one budget, beside Torch-Pruning's magnitude
pruner, and what the removed MACs buy in CPU time.

For each task (digits with a small MobileNet V2, MNIST-1D with DS-CNN), each seed, and each
MAC keep-ratio: train the parent once; prune a copy with every method to the ratio; fine-tune
every pruned model with the same budget; report test accuracy (mean ± std over seeds), and
per ratio the criterion with the best validation accuracy, "the best criterion" picked
without looking at the test split, beside Torch-Pruning, with the validation accuracy of
both and of the parent (a second reading of the goals on the other small split). Then,
at 0.5 MACs, time every pruned model against its parent (torch eager and onnxruntime, batch
1 and 32, one thread, in turns), count the instructions of its int8 C export against the
parent's (callgrind, as in benchmarks/deploy.py), and report speedup / MAC reduction.

    pip install torch-pruning   # for the Torch-Pruning column only
    python benchmarks/structured_methods.py [--seeds 5] [--quick] [--recount-c] [--held-out]
                                            [--every] [--retime] [--latency-bound]

``--held-out`` then prunes with the criterion chosen on validation at each task and ratio,
and with Torch-Pruning, on seeds 5-9, which the choice never saw (the JSON's
``held_out``); with ``--every``, every method runs on those seeds as well, and each is
compared with Torch-Pruning seed by seed over all ten (``all_seeds``).

``--recalibration`` (alone) prunes the first seed's parents with every criterion to each
ratio and does not fine-tune: test accuracy with the batch-norm statistics as they were
and re-estimated (EagleEye, Li et al. 2020, arXiv 2007.02491; the JSON's
``recalibration``). The fine-tuned cells above keep the statistics, as when they were run.

``--retime`` times the first seed's 0.5-MAC models again, all of them and the parent in
turns, for speedups less exposed to the machine's drift than one timing each.

``--latency-bound`` then asks how much any channel pruning can buy in each runtime: the
first seed's parent, its ``l1`` prune to 0.5 MACs and two "floors", whose every channel
group keeps 8 or 16 channels (a few percent of the MACs, on the kernels' vector paths), are
timed in turns. If a runtime's time is F + C * MACs kept (F paid per layer, which pruning
channels cannot remove), pruning to keep-ratio k buys at most 1 / (f + (1 - f) k), with
the fixed share f = F / T(parent) fitted from the parent and the floor that leaves the
most room, and the 0.8 goal at 0.5 MACs needs f <= 0.25; the 0.5 prune checks the fit
(the JSON's ``latency_bound``). Where kernels favour some channel counts (onnxruntime's
blocked layouts) the fit is rough.

Layer pruning, which removes whole blocks instead of channels, is compared with these
criteria on the same setup by benchmarks/layer_pruning.py.

Results are kept cell by cell in benchmarks/results/structured_methods.json (rewritten
atomically after each cell), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import accuracies, check_reproduced, has_torch_pruning, machine, save_json

import secateurs as sc
from deploy import export_and_measure

RESULTS = Path(__file__).parent / "results" / "structured_methods.json"
RATIOS = (0.7, 0.5, 0.3)
CRITERIA = (
    "l1",
    "l2",
    "group_l1",
    "group_l2",
    "bn_scale",
    "fpgm",
    "taylor",
    "grad_magnitude",
    "hsic",
    "linear_redundancy",
    "random",
)
METHODS = (*CRITERIA, "group_lasso+l2", "torch_pruning")
# latency only (0.5 MACs, first seed): kept channel counts rounded to SIMD-friendly multiples
ROUNDED = ("l1@round_to=8", "l1@round_to=16")
SMALL_MOBILENET_V2 = {
    "width": 0.5,
    "cfg": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1)),
    "last_channels": 256,
}
SETUPS = {
    "digits": ("mobilenet_v2", SMALL_MOBILENET_V2, 15),
    "mnist1d": ("ds_cnn", {}, 15),
}
FINETUNE = {"epochs": 8, "lr": 3e-3}
ENGINES = ("eager", "onnx")  # torch eager and onnxruntime, one thread each
CALLS = 200  # latency: calls timed per model, one at a time in turns with the others
FLOOR_CHANNELS = (8, 16)  # --latency-bound: each floor model keeps this many per group
HELD_OUT_SEEDS = range(5, 10)  # --held-out: new seeds for the choice made on validation
ALL_SEEDS = range(HELD_OUT_SEEDS.stop)  # the first seeds and the held-out ones


def _save(results: dict) -> None:
    save_json(RESULTS, results)


def _parent(task, seed):
    name, kwargs, epochs = SETUPS[task.name]
    model = sc.models.create(name, task, seed=seed, **kwargs)
    sc.fit(model, task, epochs=epochs, lr=3e-3, seed=seed, progress=False)
    return model.eval()


def _new_parent(results, task, seed):
    """The seed's parent, trained and stored, if the seed has none stored; else None."""
    cells, key = results["cells"], f"{task.name}/parent/{seed}"
    if key in cells:
        return None
    parent = _parent(task, seed)
    cells[key] = accuracies(parent, task)
    _save(results)
    return parent


def _checked_parent(task, seed, cells):
    """The parent trained again for new or recounted cells: it must score as stored."""
    parent = _parent(task, seed)
    check_reproduced(
        f"{task.name} parent, seed {seed}",
        sc.evaluate(parent, task),
        cells[f"{task.name}/parent/{seed}"]["accuracy"],
        RESULTS,
    )
    return parent


def _tp_prune(model, x, keep: float):
    """Torch-Pruning's MagnitudePruner (L1, global ranking), its ratio searched until the
    model keeps ``keep`` of its MACs, as secateurs' target_macs does."""
    import torch_pruning as tp

    base = sc.measure.profile(model, x, latency=False).macs
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]

    def pruned(ratio):
        trial = copy.deepcopy(model)
        tp.pruner.MagnitudePruner(
            trial,
            x,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            global_pruning=True,
            ignored_layers=[
                dict(trial.named_modules())[n] for n, m in model.named_modules() if m in classifier
            ],
        ).step()
        return trial, sc.measure.profile(trial, x, latency=False).macs / base

    lo, hi, best = 0.0, 0.95, (copy.deepcopy(model), 1.0)
    for _ in range(14):
        mid = (lo + hi) / 2
        trial, kept = pruned(mid)
        if abs(kept - keep) < abs(best[1] - keep):
            best = (trial, kept)
        if abs(kept - keep) <= 0.01:
            break
        lo, hi = (mid, hi) if kept > keep else (lo, mid)
    return best[0]


def _prune(method, parent, task, keep, seed):
    model = copy.deepcopy(parent)
    x = task.example_inputs()
    if method == "torch_pruning":
        return _tp_prune(model, x, keep)
    if "@round_to=" in method:
        name, round_to = method.split("@round_to=")
        sc.prune.channels(
            model, x, target_macs=keep, importance=name, scope="global", round_to=int(round_to)
        )
        return model
    if method == "group_lasso+l2":  # regularize, then remove the channels it shrank most
        sc.fit(
            model,
            task,
            epochs=3,
            lr=1e-3,
            seed=seed,
            progress=False,
            losses=[sc.prune.GroupLasso(x, weight=1e-3)],
        )
        sc.prune.channels(model, x, target_macs=keep, importance="l2", scope="global")
        return model
    # the stored cells were fine-tuned from the statistics as they were (the old default)
    sc.prune.channels(
        model,
        x,
        target_macs=keep,
        importance=method,
        scope="global",
        data=task,
        seed=seed,
        recalibrate=False,
    )
    return model


def _timers(model, x) -> dict:
    """Per engine, a function of the inputs that returns a call running ``model`` once on
    them (torch eager without gradients, or an onnxruntime session built once for any
    batch size; one thread each)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(
            model.eval(),
            (x,),
            path,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
            dynamo=False,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def onnx(x):
        feed = {"x": x.numpy()}
        return lambda: session.run(None, feed)

    def eager(x):
        def run():
            with torch.no_grad():
                model(x)

        return run

    return {"eager": eager, "onnx": onnx}


def _in_turns(timers: dict, x, engine: str) -> dict[str, float]:
    """Each model's median latency in ms on ``engine`` (``timers``: name -> :func:`_timers`),
    one call of each in turn, ``CALLS`` turns: this machine's speed drifts by tens of
    percent within seconds, and calls taken in turns share the drift."""
    return sc.measure.time_in_turns({n: t[engine](x) for n, t in timers.items()}, repeats=CALLS)


def _add_speedups(cell: dict, ms: dict, name: str, engine: str, batch: int) -> None:
    ratio = ms["parent"] / ms[name]
    cell[f"speedup_{engine}_b{batch}"] = ratio
    cell[f"efficiency_{engine}_b{batch}"] = ratio * cell["macs_kept"]


def _c_instructions(model, task) -> int:
    """Instructions per inference of the model's int8 C export (dense kernels, checked bit
    for bit against run_int8). Dense kernels do the same work whatever the weights, so the
    count depends on the channel counts only."""
    return export_and_measure(sc.quant.quantize(model, task), task, "never")["instructions"]


def _add_c_speedup(cell: dict, parent, model, task, base: dict) -> None:
    if task.name not in base:
        base[task.name] = _c_instructions(parent, task)
    ratio = base[task.name] / _c_instructions(model, task)
    cell["speedup_c_int8"] = ratio
    cell["efficiency_c_int8"] = ratio * cell["macs_kept"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one seed, ratio 0.5, digits only")
    parser.add_argument(
        "--held-out", action="store_true", help="then check the choices on validation on seeds 5-9"
    )
    parser.add_argument(
        "--every", action="store_true", help="with --held-out: run every method on seeds 5-9 too"
    )
    parser.add_argument(
        "--retime", action="store_true", help="time the first seed's 0.5-MAC models again, in turns"
    )
    parser.add_argument(
        "--latency-bound",
        action="store_true",
        help="then time floor models to bound what pruning can buy",
    )
    parser.add_argument(
        "--recount-c",
        action="store_true",
        help="count the C instructions again (after a kernel change)",
    )
    parser.add_argument(
        "--recalibration",
        action="store_true",
        help="only: accuracy pruned, not fine-tuned, with and without "
        "re-estimated batch-norm statistics",
    )
    args = parser.parse_args(argv)
    if args.recalibration:
        torch.set_num_threads(1)
        results = json.loads(RESULTS.read_text())
        _recalibration(results, tuple(SETUPS), RATIOS)
        _save(results)
        return 0
    if not has_torch_pruning():
        return 2
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "benchmark": "structured_methods",
            "command": "python benchmarks/structured_methods.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "finetune": FINETUNE,
        }
    )
    cells = results.setdefault("cells", {})
    seeds = range(1 if args.quick else args.seeds)
    ratios = (0.5,) if args.quick else RATIOS
    tasks = ("digits",) if args.quick else tuple(SETUPS)
    c_base: dict[str, int] = {}  # the parent's C instructions per task
    for task_name in tasks:
        for seed in seeds:
            task = sc.data.load(task_name, seed=seed)
            parent = _new_parent(results, task, seed)
            key = f"{task_name}/parent/{seed}"
            if "val_accuracy" not in cells[key]:  # stored before validation was kept
                parent = _checked_parent(task, seed, cells)
                cells[key]["val_accuracy"] = sc.evaluate(parent, task, split="val")
                _save(results)
            for keep in ratios:
                extra = ROUNDED if keep == 0.5 and seed == 0 else ()
                for method in (*METHODS, *extra):
                    key = f"{task_name}/{method}/{keep}/{seed}"
                    if (
                        key in cells
                        and ("efficiency_c_int8" not in cells[key] or args.recount_c)
                        and "speedup_eager_b1" in cells[key]
                    ):
                        # a cell without a current C count: the pruned structure is rebuilt
                        # (pruning is deterministic; fine-tuning changes no channel count)
                        parent = parent or _checked_parent(task, seed, cells)
                        model = _prune(method, parent, task, keep, seed)
                        _add_c_speedup(cells[key], parent, model, task, c_base)
                        _save(results)
                        print(f"{key:40s} C int8 speedup {cells[key]['speedup_c_int8']:.2f}")
                    if key in cells and "val_accuracy" not in cells[key] and method in METHODS:
                        # a cell from before validation accuracy was kept: trained again,
                        # it must score as stored on test
                        parent = parent or _checked_parent(task, seed, cells)
                        model = _prune(method, parent, task, keep, seed)
                        sc.fit(model, task, seed=seed, progress=False, **FINETUNE)
                        check_reproduced(
                            key, sc.evaluate(model, task), cells[key]["accuracy"], RESULTS
                        )
                        cells[key]["val_accuracy"] = sc.evaluate(model, task, split="val")
                        _save(results)
                        print(f"{key:40s} val {cells[key]['val_accuracy']:.4f}")
                    if key in cells:
                        continue
                    parent = parent or _checked_parent(task, seed, cells)
                    model, cell = _new_cell(method, parent, task, keep, seed)
                    if keep == 0.5 and seed == 0:
                        x = task.example_inputs()
                        timers = {"parent": _timers(parent, x), method: _timers(model, x)}
                        for batch in (1, 32):
                            for engine in ENGINES:
                                ms = _in_turns(timers, task.example_inputs(batch), engine)
                                _add_speedups(cell, ms, method, engine, batch)
                        _add_c_speedup(cell, parent, model, task, c_base)
                    cells[key] = cell
                    _save(results)
                    print(f"{key:40s} acc {cell['accuracy']:.4f}  MACs {cell['macs_kept']:.3f}")
    _summarize(results, tasks, ratios, seeds)
    _save(results)
    if args.held_out:
        _held_out(results, tasks, ratios, every=args.every)
        _save(results)
    if args.retime:
        _retime(results, tasks)
        _save(results)
    if args.latency_bound:
        _latency_bound(results, tasks)
        _save(results)
    print(f"wrote {RESULTS}")
    return 0


def _recalibration(results, tasks, ratios) -> None:
    """Seed 0's parent pruned by every criterion to each ratio and not fine-tuned: test
    accuracy with the batch-norm statistics as they were (``stale``) and re-estimated on 8
    training batches (``recalibrated``, the default of ``channels`` given data), in the
    JSON's ``recalibration``."""
    out = results.setdefault("recalibration", {})
    for task_name in tasks:
        task, parent = sc.data.load(task_name, seed=0), None
        for keep in ratios:
            for method in CRITERIA:
                key = f"{task_name}/{method}/{keep}"
                if key in out:
                    continue
                parent = parent or _checked_parent(task, 0, results["cells"])
                row = {}
                for name, flag in (("stale", False), ("recalibrated", True)):
                    model = copy.deepcopy(parent)
                    sc.prune.channels(
                        model,
                        task.example_inputs(),
                        target_macs=keep,
                        importance=method,
                        scope="global",
                        data=task,
                        seed=0,
                        recalibrate=flag,
                    )
                    row[name] = sc.evaluate(model, task)
                out[key] = row
                _save(results)
                print(
                    f"{key:32s} stale {row['stale']:.4f} recalibrated {row['recalibrated']:.4f}",
                    flush=True,
                )


def _new_cell(method, parent, task, keep, seed):
    """``parent`` pruned by ``method`` to ``keep`` of its MACs and fine-tuned, and its cell."""
    start = time.perf_counter()
    model = _prune(method, parent, task, keep, seed)
    sc.fit(model, task, seed=seed, progress=False, **FINETUNE)
    prof = sc.measure.profile(model, task.example_inputs(), latency=False)
    base = sc.measure.profile(parent, task.example_inputs(), latency=False)
    cell = {
        **accuracies(model, task),
        "macs_kept": prof.macs / base.macs,
        "params": prof.params,
        "seconds": time.perf_counter() - start,
    }
    return model, cell


def _held_out(results, tasks, ratios, every: bool = False) -> None:
    """The criterion chosen on validation per task and ratio (``chosen_on_val``) against
    Torch-Pruning on ``HELD_OUT_SEEDS``, which no choice saw: mean test accuracy of both
    and of the parents (``held_out``). With ``every``, every method runs on those seeds
    too, and each is compared with Torch-Pruning seed by seed over all the seeds
    (``all_seeds``)."""
    cells, held_out = results["cells"], results.setdefault("held_out", {})
    for task_name in tasks:
        for seed in HELD_OUT_SEEDS:
            task = sc.data.load(task_name, seed=seed)
            parent = _new_parent(results, task, seed)
            for keep in ratios:
                chosen = results["chosen_on_val"][f"{task_name}/{keep}"]["method"]
                for method in METHODS if every else (chosen, "torch_pruning"):
                    key = f"{task_name}/{method}/{keep}/{seed}"
                    if key not in cells:
                        parent = parent or _checked_parent(task, seed, cells)
                        cells[key] = _new_cell(method, parent, task, keep, seed)[1]
                        _save(results)
                        print(f"{key:40s} acc {cells[key]['accuracy']:.4f}  held out")
        for keep in ratios:
            chosen = results["chosen_on_val"][f"{task_name}/{keep}"]["method"]
            means = {
                name: _mean_accuracy(cells, f"{task_name}/{m}", HELD_OUT_SEEDS)
                for name, m in (
                    ("chosen", f"{chosen}/{keep}"),
                    ("torch_pruning", f"torch_pruning/{keep}"),
                    ("parent", "parent"),
                )
            }
            held_out[f"{task_name}/{keep}"] = {
                "method": chosen,
                "seeds": list(HELD_OUT_SEEDS),
                **means,
                **_paired(cells, task_name, chosen, keep),
            }
            row = held_out[f"{task_name}/{keep}"]
            print(
                f"held out, {task_name} {keep}: {chosen} {means['chosen']:.4f}, "
                f"Torch-Pruning {means['torch_pruning']:.4f}, unpruned {means['parent']:.4f}; "
                f"all seeds: {row['difference']:+.4f} ± {row['standard_error']:.4f}, "
                f"{row['wins']} wins, {row['losses']} losses"
            )
    if every:
        table = results.setdefault("all_seeds", {})
        for task_name in tasks:
            for keep in ratios:
                for method in (m for m in METHODS if m != "torch_pruning"):
                    row = _paired(cells, task_name, method, keep)
                    prefix = f"{task_name}/{method}/{keep}"
                    row["mean"] = _mean_accuracy(cells, prefix, row["paired_seeds"])
                    table[prefix] = row
                    print(
                        f"all seeds, {task_name} {keep} {method:18s} {row['mean']:.4f}, "
                        f"{row['difference']:+.4f} ± {row['standard_error']:.4f} "
                        f"against Torch-Pruning"
                    )
                tp = f"{task_name}/torch_pruning/{keep}"
                table[tp] = {"mean": _mean_accuracy(cells, tp, ALL_SEEDS)}
            table[f"{task_name}/parent"] = {
                "mean": _mean_accuracy(cells, f"{task_name}/parent", ALL_SEEDS)
            }


def _mean_accuracy(cells, prefix: str, seeds) -> float:
    return statistics.mean(cells[f"{prefix}/{s}"]["accuracy"] for s in seeds)


def _paired(cells, task_name, method, keep) -> dict:
    """``method`` against Torch-Pruning at ``keep``, seed by seed over every seed both have:
    the mean test-accuracy difference, its standard error, and the wins and losses."""
    ours, theirs = f"{task_name}/{method}/{keep}", f"{task_name}/torch_pruning/{keep}"
    seeds = [s for s in ALL_SEEDS if f"{ours}/{s}" in cells and f"{theirs}/{s}" in cells]
    diff = [cells[f"{ours}/{s}"]["accuracy"] - cells[f"{theirs}/{s}"]["accuracy"] for s in seeds]
    return {
        "paired_seeds": seeds,
        "difference": statistics.mean(diff),
        "standard_error": statistics.stdev(diff) / len(diff) ** 0.5,
        "wins": sum(d > 0 for d in diff),
        "losses": sum(d < 0 for d in diff),
    }


def _retime(results, tasks) -> None:
    """The speedups of every 0.5-MAC cell of the first seed measured again: each pruned
    structure rebuilt from the parent (pruning is deterministic, and fine-tuning changes
    no channel count), then all of them and the parent timed in turns (:func:`_in_turns`),
    so that every ratio shares one measurement of the parent."""
    cells = results["cells"]
    for task_name in tasks:
        task = sc.data.load(task_name, seed=0)
        parent = _checked_parent(task, 0, cells)
        x = task.example_inputs()
        base = sc.measure.profile(parent, x, latency=False).macs
        timers = {"parent": _timers(parent, x)}
        for method in (*METHODS, *ROUNDED):
            model = _prune(method, parent, task, 0.5, 0)
            cell = cells[f"{task_name}/{method}/0.5/0"]
            kept = sc.measure.profile(model, x, latency=False).macs / base
            if abs(kept - cell["macs_kept"]) > 1e-9:
                raise RuntimeError(
                    f"{task_name}/{method}: rebuilt, it keeps {kept} of the "
                    f"MACs, the stored cell {cell['macs_kept']}"
                )
            timers[method] = _timers(model, x)
        for batch in (1, 32):
            for engine in ENGINES:
                ms = _in_turns(timers, task.example_inputs(batch), engine)
                for method in timers.keys() - {"parent"}:
                    cell = cells[f"{task_name}/{method}/0.5/0"]
                    _add_speedups(cell, ms, method, engine, batch)
                    cell["timed_calls_in_turns"] = CALLS
                print(f"{task_name} {engine} batch {batch}: parent {ms['parent']:.3f} ms")


def _latency_bound(results, tasks) -> None:
    """Per task, runtime and batch: the first seed's parent, its ``l1`` prune to 0.5 MACs
    and the floors (:func:`_floor`), timed in turns (:func:`_in_turns`), and what they
    imply (:func:`_bound_row`; ``latency_bound``)."""
    bound = results.setdefault("latency_bound", {})
    for task_name in tasks:
        task = sc.data.load(task_name, seed=0)
        parent = _checked_parent(task, 0, results["cells"])
        x = task.example_inputs()
        models = {
            "parent": parent,
            "l1_0.5": _prune("l1", parent, task, 0.5, 0),
            **{f"floor_{n}": _floor(parent, x, n) for n in FLOOR_CHANNELS},
        }
        base = sc.measure.profile(parent, x, latency=False).macs
        kept = {
            name: sc.measure.profile(m, x, latency=False).macs / base for name, m in models.items()
        }
        row = bound[task_name] = {"macs_kept": kept, "calls": CALLS}
        timers = {name: _timers(model, x) for name, model in models.items()}
        for batch in (1, 32):
            for engine in ENGINES:
                ms = _in_turns(timers, task.example_inputs(batch), engine)
                row[f"{engine}_b{batch}"] = _bound_row(ms, kept)
                print(
                    f"{task_name} {engine} batch {batch}: "
                    + ", ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row[f"{engine}_b{batch}"].items()
                    )
                )


def _floor(parent, x, channels: int):
    """``parent`` with every prunable channel group cut to ``channels`` channels: a model
    of a few percent of the MACs with the parent's layers, on the kernels' vector paths
    (runtimes with 16-wide blocked layouts fall off them at 8, hence two floors)."""
    model = copy.deepcopy(parent)
    keep = {
        sc.prune.group_name(g): min(channels, g.channels)
        for g in sc.graph.DependencyGraph(model, x).groups()
    }
    sc.prune.channels(model, x, keep=keep)
    return model


def _bound_row(ms: dict, kept: dict) -> dict:
    """Latencies ``ms`` of the parent, the 0.5 prune and the floors, and what they imply.
    If a runtime's time is T(k) = F + C k at MAC keep-ratio k (F paid per layer), a floor
    and the parent fix the fixed share f = F / T(1), and pruning to 0.5 MACs can reach
    at most the efficiency (speedup times MACs kept) 0.5 / (f + 0.5 (1 - f)). The floor
    giving the smallest f (the most room for pruning) is used; the 0.5 prune's measured
    efficiency checks the fit."""
    parent, half = ms["parent"], ms["l1_0.5"]

    def fixed_share(floor):
        per_mac = (parent - ms[floor]) / (1 - kept[floor])
        return (parent - per_mac) / parent

    floor = min((name for name in ms if name.startswith("floor_")), key=fixed_share)
    f = fixed_share(floor)
    return {
        "parent_ms": parent,
        "l1_0.5_ms": half,
        "floor": floor,
        "floor_ms": ms[floor],
        "floor_speedup": parent / ms[floor],
        "fixed_share": f,
        "affine_efficiency_0.5": 0.5 / (f + (1 - f) * 0.5),
        "l1_0.5_efficiency": parent / half * kept["l1_0.5"],
    }


def _summarize(results, tasks, ratios, seeds) -> None:
    cells, table, chosen = results["cells"], {}, {}
    for task_name in tasks:
        parent = [cells[f"{task_name}/parent/{s}"]["accuracy"] for s in seeds]
        table[f"{task_name}/parent"] = (statistics.mean(parent), statistics.pstdev(parent))
        mean, std = table[f"{task_name}/parent"]
        print(f"\n{task_name}: unpruned {mean:.4f} ± {std:.4f}")
        for method in METHODS:
            row = []
            for keep in ratios:
                accs = [cells[f"{task_name}/{method}/{keep}/{s}"]["accuracy"] for s in seeds]
                mean, std = statistics.mean(accs), statistics.pstdev(accs)
                table[f"{task_name}/{method}/{keep}"] = (mean, std)
                row.append(f"{keep}: {mean:.4f} ± {std:.4f}")
            print(f"  {method:18s} " + "   ".join(row))
        print("  chosen on validation, per ratio (test accuracy; Torch-Pruning's beside it):")
        parent_val = _val_mean(cells, f"{task_name}/parent", seeds)
        for keep in ratios:
            method, val = _chosen_on_val(cells, task_name, keep, seeds)
            mean, std = table[f"{task_name}/{method}/{keep}"]
            table[f"{task_name}/chosen_on_val/{keep}"] = (mean, std)
            tp = table[f"{task_name}/torch_pruning/{keep}"][0]
            tp_val = _val_mean(cells, f"{task_name}/torch_pruning/{keep}", seeds)
            chosen[f"{task_name}/{keep}"] = {
                "method": method,
                "val_mean": val,
                "torch_pruning_val_mean": tp_val,
                "parent_val_mean": parent_val,
            }
            print(
                f"    {keep}: {method} (val {val:.4f}) test {mean:.4f} ± {std:.4f}, "
                f"Torch-Pruning {tp:.4f} (val {tp_val:.4f}); unpruned val "
                f"{parent_val:.4f}"
            )
    summary = results.setdefault("summary", {})  # a --quick run updates only its own rows
    summary.update({k: {"mean": m, "std": s} for k, (m, s) in table.items()})
    results.setdefault("chosen_on_val", {}).update(chosen)
    if tasks == tuple(SETUPS) and ratios == RATIOS:
        # one criterion for every task and ratio: the best mean validation accuracy over all
        val = {
            m: statistics.mean(
                _val_mean(cells, f"{t}/{m}/{k}", seeds) for t in tasks for k in ratios
            )
            for m in METHODS
            if m != "torch_pruning"
        }
        best = max(val, key=val.get)
        results["one_criterion_on_val"] = {"method": best, "val_mean": val[best]}
        print(f"  one criterion for every task and ratio, chosen on validation: {best}")


def _val_mean(cells, prefix: str, seeds) -> float:
    return statistics.mean(cells[f"{prefix}/{s}"]["val_accuracy"] for s in seeds)


def _chosen_on_val(cells, task_name, keep, seeds) -> tuple[str, float]:
    """The secateurs method with the best mean validation accuracy at ``keep``: "the best
    criterion" picked without looking at the test split."""
    val = {
        m: _val_mean(cells, f"{task_name}/{m}/{keep}", seeds)
        for m in METHODS
        if m != "torch_pruning"
    }
    best = max(val, key=val.get)
    return best, val[best]


if __name__ == "__main__":
    sys.exit(main())
