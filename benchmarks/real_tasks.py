"""Float accuracy of the zoo on the real-data tasks, beside a linear baseline.

For each real task (``fashion_mnist``, ``watch_imu``, ``spoken_digits``) and each zoo model
at its microcontroller configuration (``_common.ZOO``): train ``--epochs`` epochs (Adam
3e-3, batch 64, one torch thread, seed 0), keep the epoch with the best validation
accuracy, and report test accuracy, parameters and MACs. The baseline is scikit-learn's
logistic regression on the flattened inputs, fitted on the same training split (a
published-style reference the parents must beat).

    python benchmarks/real_tasks.py [--epochs 8] [--tasks fashion_mnist watch_imu]
    python benchmarks/real_tasks.py --epochs 15 --tasks fashion_mnist --models lenet5

Rows are saved one by one to benchmarks/results/real_tasks.json (atomically); a rerun
resumes. A row is ``task/model``; a model already measured at another number of epochs
gets a second row, ``task/model@<epochs>ep``, with the command that wrote it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from _common import ZOO, machine, save_json

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "real_tasks.json"
TASKS = ("fashion_mnist", "watch_imu", "spoken_digits")


def baseline(task) -> float:
    from sklearn.linear_model import LogisticRegression

    x = task.train.tensors[0].reshape(len(task.train), -1).numpy()
    y = task.train.tensors[1].numpy()
    clf = LogisticRegression(max_iter=300).fit(x, y)
    x_test = task.test.tensors[0].reshape(len(task.test), -1).numpy()
    return float((clf.predict(x_test) == task.test.tensors[1].numpy()).mean())


def train_row(name: str, kwargs: dict, task, epochs: int) -> dict:
    model = sc.models.create(name, task, seed=0, **kwargs)
    start = time.perf_counter()
    best, best_state, curve = -1.0, None, []
    for epoch in range(epochs):
        sc.fit(model, task, epochs=1, lr=3e-3, seed=epoch, progress=False)
        val = sc.evaluate(model, task, split="val")
        curve.append(val)
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    profile = sc.measure.profile(model, task.example_inputs())
    return {
        "test_accuracy": sc.evaluate(model, task),
        "val_accuracy": best,
        "val_curve": curve,
        "params": profile.params,
        "macs": profile.macs,
        "seconds": time.perf_counter() - start,
        "epochs": epochs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--models", nargs="+", default=[n for n, _ in ZOO], choices=[n for n, _ in ZOO]
    )
    args = parser.parse_args()
    command = "python benchmarks/real_tasks.py " + " ".join(sys.argv[1:])
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "benchmark": "real_tasks",
            "machine": machine(),
            "command": "python benchmarks/real_tasks.py",
        }
    )
    rows = results.setdefault("rows", {})
    for task_name in args.tasks:
        task = sc.data.load(task_name, seed=0)
        key = f"{task_name}/logistic_regression"
        if key not in rows:
            rows[key] = {"test_accuracy": baseline(task)}
            save_json(RESULTS, results)
        print(f"{key:34s} test {rows[key]['test_accuracy']:.4f}", flush=True)
        for name, kwargs in ZOO:
            key = f"{task_name}/{name}"
            if name not in args.models:
                continue
            if key in rows and rows[key].get("epochs", args.epochs) != args.epochs:
                key = f"{key}@{args.epochs}ep"  # beside the row at another length
            if key in rows:
                continue
            rows[key] = {**train_row(name, kwargs, task, args.epochs), "command": command}
            save_json(RESULTS, results)
            r = rows[key]
            print(
                f"{key:34s} test {r['test_accuracy']:.4f} val {r['val_accuracy']:.4f} "
                f"params {r['params']} MACs {r['macs']} {r['seconds']:.0f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
