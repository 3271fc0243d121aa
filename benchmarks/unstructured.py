"""Unstructured pruning in the shape of Han et al. 2015, Table 1: how sparse can LeNets get
without losing accuracy, by magnitude (global, and with LAMP's layer-adaptive scores, Lee
et al. 2021, arXiv 2010.07611), LRP and learned masks, beside PyTorch's own
``torch.nn.utils.prune.global_unstructured`` (L1) on the same sparsity and budget.

For each task (digits, MNIST-1D), model (LeNet-300-100, LeNet-5) and seed: train the dense
parent (15 epochs); then for each target sparsity, prune a copy in 8 steps that follow
Zhu & Gupta's cubic ramp (arXiv 1710.01878), each followed by 3 epochs of retraining
(learned masks: 24 epochs of mask learning at the target, with each layer's share of the
zeros set by LAMP, ``learn_masks``'s default); report test accuracy. The
figure of merit is the highest sparsity whose mean accuracy over seeds stays within 0.1
point of the dense model's.

    python benchmarks/unstructured.py [--seeds 3] [--rerun METHOD]

Results are kept cell by cell in benchmarks/results/unstructured.json (written atomically),
so an interrupted run resumes; ``--rerun`` drops one method's cells first, to measure it
again after a change.
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
from _common import machine, save_json, without_methods
from torch import nn
from torch.nn.utils import prune as torch_prune

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "unstructured.json"
SPARSITIES = (0.5, 0.75, 0.875, 0.92, 0.95, 0.97, 0.98)
METHODS = ("magnitude", "lamp", "lrp", "lrp_magnitude", "lrp_magnitude_lamp", "learned",
           "learned_lrp", "torch_l1")  # fmt: skip
MODELS = ("lenet_300_100", "lenet5")
STEPS, RETRAIN, LR = 8, 3, 1e-3


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
            sc.prune.sparsify(model, target, importance="magnitude", scope="lamp")
        elif method == "lrp_magnitude_lamp":  # the same, ranking sqrt(relevance * |w|)
            sc.prune.sparsify(model, target, importance="lrp_magnitude", scope="lamp",
                              data=task, seed=seed)  # fmt: skip
        else:
            sc.prune.sparsify(model, target, importance=method, data=task, seed=seed)
        done = target
        sc.fit(model, task, epochs=RETRAIN, lr=LR, seed=seed, progress=False)
    return model


def _sparsity(model: nn.Module) -> float:
    weights = [
        m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))
    ]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rerun", action="append", default=[], choices=METHODS,
                        help="measure this method's cells again (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.rerun:
        results["cells"] = without_methods(results.get("cells", {}), args.rerun)
    results.update(
        {
            "benchmark": "unstructured",
            "machine": machine(),
            "command": "python benchmarks/unstructured.py " + " ".join(argv or sys.argv[1:]),
            "budget": {
                "parent_epochs": 15,
                "steps": STEPS,
                "ramp": "cubic",
                "retrain_epochs": RETRAIN,
                "lr": LR,
            },
        }
    )
    cells = results.setdefault("cells", {})
    for task_name in ("digits", "mnist1d"):
        for seed in range(args.seeds):
            task = sc.data.load(task_name, seed=seed)
            for model_name in MODELS:
                parent = sc.models.create(model_name, task, seed=seed)
                sc.fit(parent, task, epochs=15, lr=3e-3, seed=seed, progress=False)
                cells[f"{task_name}/{model_name}/dense/{seed}"] = {
                    "accuracy": sc.evaluate(parent, task)
                }
                for sparsity in SPARSITIES:
                    for method in METHODS:
                        key = f"{task_name}/{model_name}/{method}/{sparsity}/{seed}"
                        if key in cells:
                            continue
                        start = time.perf_counter()
                        model = _prune(method, parent, task, sparsity, seed)
                        cells[key] = {"accuracy": sc.evaluate(model, task),
                                      "sparsity": _sparsity(model),
                                      "seconds": time.perf_counter() - start}  # fmt: skip
                        save_json(RESULTS, results)
                        print(f"{key:45s} acc {cells[key]['accuracy']:.4f}")
    _summarize(results, args.seeds)
    save_json(RESULTS, results)
    return 0


def _summarize(results: dict, seeds: int) -> None:
    cells, summary = results["cells"], {}
    for task_name in ("digits", "mnist1d"):
        for model_name in MODELS:
            dense = statistics.mean(
                cells[f"{task_name}/{model_name}/dense/{s}"]["accuracy"] for s in range(seeds)
            )
            print(f"\n{task_name} {model_name}: dense {dense:.4f}")
            for method in METHODS:
                means = {
                    s: statistics.mean(
                        cells[f"{task_name}/{model_name}/{method}/{s}/{seed}"]["accuracy"]
                        for seed in range(seeds)
                    )
                    for s in SPARSITIES
                }
                lossless = [s for s in SPARSITIES if means[s] >= dense - 0.001]
                best = max(lossless, default=0.0)
                summary[f"{task_name}/{model_name}/{method}"] = {
                    "dense": dense, "mean_accuracy": means, "max_lossless_sparsity": best,
                    "compression": 1 / (1 - best),
                }  # fmt: skip
                row = "  ".join(f"{s}:{a:.3f}" for s, a in means.items())
                print(f"  {method:10s} lossless up to {best} ({1 / (1 - best):.1f}x)  {row}")
    results["summary"] = summary


if __name__ == "__main__":
    sys.exit(main())
