"""Structured pruning criteria compared on one budget, beside Torch-Pruning's magnitude
pruner, and what the removed MACs buy in CPU time.

For each task (digits with a small MobileNet V2, MNIST-1D with DS-CNN), each seed, and each
MAC keep-ratio: train the parent once; prune a copy with every method to the ratio; fine-tune
every pruned model with the same budget; report test accuracy (mean ± std over seeds), and
per ratio the criterion with the best validation accuracy, "the best criterion" picked
without looking at the test split, beside Torch-Pruning, with the validation accuracy of
both and of the parent (a second reading of the goals on the other small split). Then,
at 0.5 MACs, time every pruned model against its parent (torch eager and onnxruntime, batch
1 and 32, one thread), count the instructions of its int8 C export against the parent's
(callgrind, as in benchmarks/deploy.py), and report speedup / MAC reduction.

    pip install torch-pruning   # for the Torch-Pruning column only
    python benchmarks/structured_methods.py [--seeds 5] [--quick] [--recount-c] [--held-out]

``--held-out`` then prunes with the criterion chosen on validation at each task and ratio,
and with Torch-Pruning, on seeds 5-9, which the choice never saw (the JSON's
``held_out``).

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
CRITERIA = ("l1", "l2", "group_l1", "group_l2", "bn_scale", "fpgm", "taylor",
            "grad_magnitude", "hsic", "linear_redundancy", "random")  # fmt: skip
METHODS = (*CRITERIA, "group_lasso+l2", "torch_pruning")
# latency only (0.5 MACs, first seed): kept channel counts rounded to SIMD-friendly multiples
ROUNDED = ("l1@round_to=8", "l1@round_to=16")
SMALL_MOBILENET_V2 = dict(
    width=0.5, cfg=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1)), last_channels=256
)
SETUPS = {
    "digits": ("mobilenet_v2", SMALL_MOBILENET_V2, 15),
    "mnist1d": ("ds_cnn", {}, 15),
}
FINETUNE = dict(epochs=8, lr=3e-3)
HELD_OUT_SEEDS = range(5, 10)  # --held-out: new seeds for the choice made on validation


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
    check_reproduced(f"{task.name} parent, seed {seed}", sc.evaluate(parent, task),
                     cells[f"{task.name}/parent/{seed}"]["accuracy"], RESULTS)  # fmt: skip
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
            trial, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
            global_pruning=True, ignored_layers=[dict(trial.named_modules())[n] for n, m in
                                                 model.named_modules() if m in classifier],
        ).step()  # fmt: skip
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
        sc.prune.channels(model, x, target_macs=keep, importance=name, scope="global",
                          round_to=int(round_to))  # fmt: skip
        return model
    if method == "group_lasso+l2":  # regularize, then remove the channels it shrank most
        sc.fit(model, task, epochs=3, lr=1e-3, seed=seed, progress=False,
               losses=[sc.prune.GroupLasso(x, weight=1e-3)])  # fmt: skip
        sc.prune.channels(model, x, target_macs=keep, importance="l2", scope="global")
        return model
    sc.prune.channels(model, x, target_macs=keep, importance=method, scope="global",
                      data=task, seed=seed)  # fmt: skip
    return model


def _latency_eager(model, x, repeats=30):
    return sc.measure.measure_latency(model, x, repeats=repeats, warmup=5, threads=1)


def _latency_onnx(model, x, repeats=30):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(model.eval(), (x,), path, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False)  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    for _ in range(5):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


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
    parser.add_argument("--held-out", action="store_true",
                        help="then check the choices on validation on seeds 5-9")  # fmt: skip
    parser.add_argument("--recount-c", action="store_true",
                        help="count the C instructions again (after a kernel change)")  # fmt: skip
    args = parser.parse_args(argv)
    if not has_torch_pruning():
        return 2
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update({
        "benchmark": "structured_methods",
        "command": "python benchmarks/structured_methods.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "finetune": FINETUNE,
    })  # fmt: skip
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
                cells[key]["val_accuracy"] = sc.evaluate(parent, task, "val")
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
                        check_reproduced(key, sc.evaluate(model, task), cells[key]["accuracy"],
                                         RESULTS)  # fmt: skip
                        cells[key]["val_accuracy"] = sc.evaluate(model, task, "val")
                        _save(results)
                        print(f"{key:40s} val {cells[key]['val_accuracy']:.4f}")
                    if key in cells:
                        continue
                    parent = parent or _checked_parent(task, seed, cells)
                    model, cell = _new_cell(method, parent, task, keep, seed)
                    if keep == 0.5 and seed == 0:
                        for batch in (1, 32):
                            x = task.example_inputs(batch)
                            for engine, timer in (
                                ("eager", _latency_eager),
                                ("onnx", _latency_onnx),
                            ):
                                ratio = timer(parent, x) / timer(model, x)
                                cell[f"speedup_{engine}_b{batch}"] = ratio
                                cell[f"efficiency_{engine}_b{batch}"] = ratio * cell["macs_kept"]
                        _add_c_speedup(cell, parent, model, task, c_base)
                    cells[key] = cell
                    _save(results)
                    print(f"{key:40s} acc {cell['accuracy']:.4f}  MACs {cell['macs_kept']:.3f}")
    _summarize(results, tasks, ratios, seeds)
    _save(results)
    if args.held_out:
        _held_out(results, tasks, ratios)
        _save(results)
    print(f"wrote {RESULTS}")
    return 0


def _new_cell(method, parent, task, keep, seed):
    """``parent`` pruned by ``method`` to ``keep`` of its MACs and fine-tuned, and its cell."""
    start = time.perf_counter()
    model = _prune(method, parent, task, keep, seed)
    sc.fit(model, task, seed=seed, progress=False, **FINETUNE)
    prof = sc.measure.profile(model, task.example_inputs(), latency=False)
    base = sc.measure.profile(parent, task.example_inputs(), latency=False)
    cell = {**accuracies(model, task), "macs_kept": prof.macs / base.macs,
            "params": prof.params, "seconds": time.perf_counter() - start}  # fmt: skip
    return model, cell


def _held_out(results, tasks, ratios) -> None:
    """The criterion chosen on validation per task and ratio (``chosen_on_val``) against
    Torch-Pruning on ``HELD_OUT_SEEDS``, which no choice saw: mean test accuracy of both
    and of the parents (``held_out``)."""
    cells, held_out = results["cells"], results.setdefault("held_out", {})
    for task_name in tasks:
        for seed in HELD_OUT_SEEDS:
            task = sc.data.load(task_name, seed=seed)
            parent = _new_parent(results, task, seed)
            for keep in ratios:
                chosen = results["chosen_on_val"][f"{task_name}/{keep}"]["method"]
                for method in (chosen, "torch_pruning"):
                    key = f"{task_name}/{method}/{keep}/{seed}"
                    if key not in cells:
                        parent = parent or _checked_parent(task, seed, cells)
                        cells[key] = _new_cell(method, parent, task, keep, seed)[1]
                        _save(results)
                        print(f"{key:40s} acc {cells[key]['accuracy']:.4f}  held out")
        for keep in ratios:
            chosen = results["chosen_on_val"][f"{task_name}/{keep}"]["method"]
            means = {name: statistics.mean(cells[f"{task_name}/{m}/{s}"]["accuracy"]
                                           for s in HELD_OUT_SEEDS)
                     for name, m in (("chosen", f"{chosen}/{keep}"),
                                     ("torch_pruning", f"torch_pruning/{keep}"),
                                     ("parent", "parent"))}  # fmt: skip
            held_out[f"{task_name}/{keep}"] = {"method": chosen, "seeds": list(HELD_OUT_SEEDS),
                                               **means}  # fmt: skip
            print(
                f"held out, {task_name} {keep}: {chosen} {means['chosen']:.4f}, "
                f"Torch-Pruning {means['torch_pruning']:.4f}, unpruned {means['parent']:.4f}"
            )


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
            chosen[f"{task_name}/{keep}"] = {"method": method, "val_mean": val,
                                             "torch_pruning_val_mean": tp_val,
                                             "parent_val_mean": parent_val}  # fmt: skip
            print(f"    {keep}: {method} (val {val:.4f}) test {mean:.4f} ± {std:.4f}, "
                  f"Torch-Pruning {tp:.4f} (val {tp_val:.4f}); unpruned val "
                  f"{parent_val:.4f}")  # fmt: skip
    summary = results.setdefault("summary", {})  # a --quick run updates only its own rows
    summary.update({k: {"mean": m, "std": s} for k, (m, s) in table.items()})
    results.setdefault("chosen_on_val", {}).update(chosen)


def _val_mean(cells, prefix: str, seeds) -> float:
    return statistics.mean(cells[f"{prefix}/{s}"]["val_accuracy"] for s in seeds)


def _chosen_on_val(cells, task_name, keep, seeds) -> tuple[str, float]:
    """The secateurs method with the best mean validation accuracy at ``keep``: "the best
    criterion" picked without looking at the test split."""
    val = {m: _val_mean(cells, f"{task_name}/{m}/{keep}", seeds)
           for m in METHODS if m != "torch_pruning"}  # fmt: skip
    best = max(val, key=val.get)
    return best, val[best]


if __name__ == "__main__":
    sys.exit(main())
