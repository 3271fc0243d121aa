"""Unstructured pruning in the shape of Han et al. 2015, Table 1: how sparse can LeNets get
without losing accuracy, by magnitude (global, and with LAMP's layer-adaptive scores, Lee
et al. 2021, arXiv 2010.07611), LRP and learned masks, beside PyTorch's own
``torch.nn.utils.prune.global_unstructured`` (L1) on the same sparsity and budget.

For each task (digits, MNIST-1D), model (LeNet-300-100, LeNet-5) and seed: train the dense
parent (15 epochs); then for each target sparsity, prune a copy in 8 steps that follow
Zhu & Gupta's cubic ramp (arXiv 1710.01878), each followed by 3 epochs of retraining
(learned masks: 24 epochs of mask learning at the target, with each layer's share of the
zeros set by LAMP, ``learn_masks``'s default); report test and validation accuracy. The
figure of merit is the highest sparsity whose mean test accuracy over seeds stays within
0.1 point of the dense model's; the same on the validation split is a second reading.
LRP-driven pruning ranks relevance^p·|w|^(1-p) at p = 1 (``lrp``), 1/2 and 1/4; the
summary chooses p on validation, per task and model (``lrp_chosen_on_val``) and once for
all of them (``lrp_one_exponent_chosen_on_val``: the highest mean compression).
Five seeds by default: digits' test split is 270 images, so in a mean over three seeds the
0.1-point tolerance is less than one image.

    python benchmarks/unstructured.py [--seeds 5] [--tasks digits mnist1d] [--rerun METHOD]
                                      [--held-out]

``--held-out`` then runs the exponent chosen once on validation and torch's L1 pruning on
seeds 5-9, which no choice saw, as a check of that choice (the JSON's ``held_out``).

Results are merged cell by cell into benchmarks/results/unstructured.json under a file
lock (atomically), so one process per task can run at once and an interrupted run
resumes. A cell stored without validation accuracy is trained again and must score as
stored on test. ``--rerun`` drops one method's cells first, to measure it again after a
change.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import (
    accuracies,
    check_reproduced,
    locked_update,
    machine,
    task_parser,
    without_methods,
)
from torch import nn
from torch.nn.utils import prune as torch_prune

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "unstructured.json"
SPARSITIES = (0.5, 0.75, 0.875, 0.92, 0.95, 0.97, 0.98)
METHODS = (
    "magnitude",
    "lamp",
    "lrp",
    "lrp_magnitude",
    "lrp_magnitude_p0.25",
    "lrp_magnitude_lamp",
    "learned",
    "learned_lrp",
    "torch_l1",
)
# LRP-driven rankings relevance^p * |w|^(1-p), p = 1, 1/2, 1/4: the summary chooses p per
# task and model on the validation split
LRP_EXPONENTS = {"lrp": 1.0, "lrp_magnitude": 0.5, "lrp_magnitude_p0.25": 0.25}
HELD_OUT_SEEDS = range(5, 10)  # --held-out: the exponent chosen once, against torch
MODELS = ("lenet_300_100", "lenet5")
TASKS = ("digits", "mnist1d")
STEPS, RETRAIN, LR = 8, 3, 1e-3


def _update(fn) -> dict:
    return locked_update(RESULTS, fn)


def _targets(final: float) -> list[float]:
    return [final * (1 - (1 - (k + 1) / STEPS) ** 3) for k in range(STEPS)]


def _prune(method: str, parent: nn.Module, task, sparsity: float, seed: int) -> nn.Module:
    model = copy.deepcopy(parent)
    if method in ("learned", "learned_lrp"):  # learned_lrp: starting from LRP x magnitude
        importance = "lrp_magnitude" if method == "learned_lrp" else "magnitude"
        sc.prune.learn_masks(model, sparsity, importance=importance, data=task, seed=seed)
        sc.fit(model, task, epochs=STEPS * RETRAIN, lr=LR, seed=seed, progress=False)
        return sc.prune.fix_masks(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))]
    done = 0.0
    for target in _targets(sparsity):
        if method == "torch_l1":  # amount is a fraction of the weights still unpruned
            amount = 1 - (1 - target) / (1 - done)
            torch_prune.global_unstructured(
                [(m, "weight") for m in layers], torch_prune.L1Unstructured, amount=amount
            )
        elif method == "lamp":  # magnitude, layers' shares set by LAMP scores
            sc.prune.sparsify(model, sparsity=target, importance="magnitude", scope="lamp")
        elif method == "lrp_magnitude_lamp":  # the same, ranking sqrt(relevance * |w|)
            sc.prune.sparsify(
                model,
                sparsity=target,
                importance="lrp_magnitude",
                scope="lamp",
                data=task,
                seed=seed,
            )
        elif method.startswith("lrp_magnitude_p"):
            sc.prune.sparsify(
                model,
                sparsity=target,
                importance="lrp_magnitude",
                data=task,
                seed=seed,
                relevance_exponent=LRP_EXPONENTS[method],
            )
        else:
            sc.prune.sparsify(model, sparsity=target, importance=method, data=task, seed=seed)
        done = target
        sc.fit(model, task, epochs=RETRAIN, lr=LR, seed=seed, progress=False)
    return model


def _sparsity(model: nn.Module) -> float:
    weights = [
        m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))
    ]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _cells() -> dict:
    return _update(lambda r: None).get("cells", {})


def _store(key: str, cell: dict) -> None:
    _update(lambda r: r.setdefault("cells", {}).__setitem__(key, cell))


def run_task(task_name: str, seeds, methods=METHODS) -> None:
    for seed in seeds:
        task = sc.data.load(task_name, seed=seed)
        for model_name in MODELS:
            cells = _cells()
            keys = [f"{task_name}/{model_name}/dense/{seed}"] + [
                f"{task_name}/{model_name}/{m}/{s}/{seed}" for s in SPARSITIES for m in methods
            ]
            if all("val_accuracy" in cells.get(k, {}) for k in keys):
                continue
            parent = sc.models.create(model_name, task, seed=seed)
            sc.fit(parent, task, epochs=15, lr=3e-3, seed=seed, progress=False)
            dense = accuracies(parent, task)
            stored = cells.get(keys[0], {}).get("accuracy")
            check_reproduced(f"the parent of {keys[0]}", dense["accuracy"], stored, RESULTS)
            _store(keys[0], dense)
            for sparsity in SPARSITIES:
                for method in methods:
                    key = f"{task_name}/{model_name}/{method}/{sparsity}/{seed}"
                    old = cells.get(key)
                    if old is not None and "val_accuracy" in old:
                        continue
                    start = time.perf_counter()
                    model = _prune(method, parent, task, sparsity, seed)
                    cell = {
                        **accuracies(model, task),
                        "sparsity": _sparsity(model),
                        "seconds": time.perf_counter() - start,
                    }
                    if old is not None:  # stored before validation accuracy was kept
                        check_reproduced(key, cell["accuracy"], old["accuracy"], RESULTS)
                    _store(key, cell)
                    print(
                        f"{key:45s} acc {cell['accuracy']:.4f}  val {cell['val_accuracy']:.4f}",
                        flush=True,
                    )


def main(argv=None) -> int:
    parser = task_parser(__doc__, TASKS, METHODS, "also run the held-out check on seeds 5-9")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def start(results: dict) -> None:
        if args.rerun:
            results["cells"] = without_methods(results.get("cells", {}), args.rerun, args.tasks)
        results.update(
            {
                "benchmark": "unstructured",
                "machine": machine(),
                "command": f"python benchmarks/unstructured.py --seeds {args.seeds} --held-out "
                "[--tasks digits | mnist1d]",
                "budget": {
                    "parent_epochs": 15,
                    "steps": STEPS,
                    "ramp": "cubic",
                    "retrain_epochs": RETRAIN,
                    "lr": LR,
                },
            }
        )

    _update(start)
    for task_name in args.tasks:
        run_task(task_name, range(args.seeds))
    results = _update(lambda r: r.__setitem__("summary", summarize(r["cells"], args.seeds)))
    if args.held_out:
        chosen = results["summary"].get("lrp_one_exponent_chosen_on_val", {}).get("method")
        if chosen is None:
            raise SystemExit(
                "--held-out checks the LRP exponent chosen on every task's "
                "first seeds; run both tasks without it first"
            )
        for task_name in args.tasks:
            run_task(task_name, HELD_OUT_SEEDS, (chosen, "torch_l1"))
        results = _update(lambda r: r.__setitem__("held_out", held_out(r["cells"], chosen)))
    for key, row in results["summary"].items():
        if "mean_accuracy" not in row:
            print(f"{key}: {row['method']}, compression on test {row['compression']}")
            continue
        means = "  ".join(f"{s}:{a:.3f}" for s, a in row["mean_accuracy"].items())
        print(
            f"{key:40s} lossless to {row['max_lossless_sparsity']} on test, "
            f"{row['max_lossless_sparsity_val']} on val  {means}"
        )
    for pair, row in results.get("held_out", {}).get("pairs", {}).items():
        print(
            f"held out, {pair}: "
            + ", ".join(f"{m} {row[m]['compression']:.1f}x" for m in row if m != "dense")
        )
    return 0


def _lossless(means: dict, dense: float) -> float:
    """The highest sparsity whose mean accuracy is within 0.1 point of the dense model's."""
    return max((s for s, a in means.items() if a >= dense - 0.001), default=0.0)


def _mean(cells: dict, prefix: str, metric: str, seeds) -> float:
    return statistics.mean(cells[f"{prefix}/{seed}"][metric] for seed in seeds)


def summarize(cells: dict, seeds: int) -> dict:
    """Per task, model and method with every cell present: mean accuracy per sparsity on
    test and on validation, and the highest lossless sparsity on each."""
    summary, seeds = {}, range(seeds)
    for task_name in TASKS:
        for model_name in MODELS:
            prefix = f"{task_name}/{model_name}"
            keys = [f"{prefix}/dense/{s}" for s in seeds] + [
                f"{prefix}/{m}/{sp}/{s}" for m in METHODS for sp in SPARSITIES for s in seeds
            ]
            if not all("val_accuracy" in cells.get(k, {}) for k in keys):
                continue
            dense = _mean(cells, f"{prefix}/dense", "accuracy", seeds)
            dense_val = _mean(cells, f"{prefix}/dense", "val_accuracy", seeds)
            for method in METHODS:
                test, val = (
                    {
                        sp: _mean(cells, f"{prefix}/{method}/{sp}", metric, seeds)
                        for sp in SPARSITIES
                    }
                    for metric in ("accuracy", "val_accuracy")
                )
                best, best_val = _lossless(test, dense), _lossless(val, dense_val)
                summary[f"{prefix}/{method}"] = {
                    "dense": dense,
                    "mean_accuracy": test,
                    "max_lossless_sparsity": best,
                    "compression": 1 / (1 - best),
                    "dense_val": dense_val,
                    "mean_val_accuracy": val,
                    "max_lossless_sparsity_val": best_val,
                    "compression_val": 1 / (1 - best_val),
                }
            summary[f"{prefix}/lrp_chosen_on_val"] = _chosen_on_val(summary, prefix)
    pairs = [f"{t}/{m}" for t in TASKS for m in MODELS]
    if all(f"{pair}/lrp" in summary for pair in pairs):
        summary["lrp_one_exponent_chosen_on_val"] = _one_exponent(summary, pairs)
    return summary


def held_out(cells: dict, chosen: str) -> dict:
    """The exponent chosen once on validation (method ``chosen``) against torch's L1
    pruning on seeds the choice never saw: per task and model, each one's mean test
    accuracy per sparsity and lossless compression over ``HELD_OUT_SEEDS``."""
    out, methods = {}, (chosen, "torch_l1")
    for task_name in TASKS:
        for model_name in MODELS:
            prefix = f"{task_name}/{model_name}"
            keys = [f"{prefix}/dense/{s}" for s in HELD_OUT_SEEDS] + [
                f"{prefix}/{m}/{sp}/{s}"
                for m in methods
                for sp in SPARSITIES
                for s in HELD_OUT_SEEDS
            ]
            if not all(k in cells for k in keys):
                continue
            dense = _mean(cells, f"{prefix}/dense", "accuracy", HELD_OUT_SEEDS)
            out[prefix] = {"dense": dense}
            for method in methods:
                means = {
                    sp: _mean(cells, f"{prefix}/{method}/{sp}", "accuracy", HELD_OUT_SEEDS)
                    for sp in SPARSITIES
                }
                best = _lossless(means, dense)
                out[prefix][method] = {"mean_accuracy": means, "compression": 1 / (1 - best)}
    return {"seeds": list(HELD_OUT_SEEDS), "method": chosen, "pairs": out}


def _one_exponent(summary: dict, pairs: list[str]) -> dict:
    """One LRP exponent for every task and model: the one with the highest mean lossless
    compression on validation over them; its test and validation compression per pair."""

    def mean_val(m: str) -> float:
        return statistics.mean(summary[f"{pair}/{m}"]["compression_val"] for pair in pairs)

    method = max(LRP_EXPONENTS, key=mean_val)
    return {
        "method": method,
        "relevance_exponent": LRP_EXPONENTS[method],
        "mean_compression_val": {m: mean_val(m) for m in LRP_EXPONENTS},
        "compression": {p: summary[f"{p}/{method}"]["compression"] for p in pairs},
        "compression_val": {p: summary[f"{p}/{method}"]["compression_val"] for p in pairs},
    }


def _chosen_on_val(summary: dict, prefix: str) -> dict:
    """The LRP-driven ranking (exponent p) with the highest lossless sparsity on validation,
    ties going to the higher mean validation accuracy over the sparsities; its row."""
    rows = {m: summary[f"{prefix}/{m}"] for m in LRP_EXPONENTS}

    def rank(m: str) -> tuple:
        row = rows[m]
        return row["max_lossless_sparsity_val"], statistics.mean(row["mean_val_accuracy"].values())

    method = max(rows, key=rank)
    return {**rows[method], "method": method, "relevance_exponent": LRP_EXPONENTS[method]}


if __name__ == "__main__":
    sys.exit(main())
