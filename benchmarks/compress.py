"""``sc.compress`` against uniform L1 + PTQ at the same budget, per zoo model, task and slot.

For each zoo model (``_common.ZOO`` configurations) and task: train the parent (``--epochs``
epochs, Adam 3e-3, seed 0, best validation epoch kept), then, for each slot below, run

- ``sc.compress`` as a user would (method "auto", distillation from the parent, PTQ or
  QAT where PTQ loses more than 0.5 points), and
- the control: ``sc.compress(method="uniform", distill=False, qat_epochs=0)``: the same
  kept fraction in every group, L1 channel choice, plain fine-tuning, PTQ,

both fine-tuned ``--finetune-epochs`` epochs per candidate, and report test accuracy at
int8 against the parent's float accuracy and its own unpruned int8 model. A slot is a
target and a share of the parent's unpruned int8 flash and SRAM (as the C stores and runs
it): ``cortex-m0plus`` 1/4, ``cortex-m4`` 1/2, ``cortex-m7`` 1/4 of the MACs and full memory.

    python benchmarks/compress.py [--models lenet5 ds_cnn] [--tasks digits mnist1d]
    python benchmarks/compress.py --ablation [--models lenet5 resnet8]

``--ablation`` measures the choices behind the defaults instead, at the ``cortex-m4`` slot:
each search alone (uniform, sensitivity), with and without distillation, PTQ only.

Rows are saved one by one to benchmarks/results/compress.json (atomically); a rerun
resumes.
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

RESULTS = Path(__file__).parent / "results" / "compress.json"
SLOTS = {
    "cortex-m0plus": {"memory": 0.25},
    "cortex-m4": {"memory": 0.5},
    "cortex-m7": {"macs": 0.25},
}
DEFAULT_MODELS = ("lenet5", "resnet8", "ds_cnn", "mobilenet_v2")


def parent(name: str, kwargs: dict, task, epochs: int):
    model = sc.models.create(name, task, seed=0, **kwargs)
    best, state = -1.0, None
    for epoch in range(epochs):
        sc.fit(model, task, epochs=1, lr=3e-3, seed=epoch, progress=False)
        val = sc.evaluate(model, task, split="val")
        if val > best:
            best, state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(state)
    return model.eval()


def parent_and_base(name: str, kwargs: dict, task, epochs: int):
    """The trained parent, and its unpruned int8 costs (as the C) and accuracies."""
    model = parent(name, kwargs, task, epochs)
    qmodel = sc.quant.quantize(model, task)
    fit = sc.measure.check(qmodel, target="generic")
    base = {
        "flash_bytes": fit.flash_bytes,
        "sram_bytes": fit.sram_bytes,
        "macs": sc.measure.profile(model, task.example_inputs()).macs,
    }
    base.update(float=sc.evaluate(model, task), int8=sc.evaluate(qmodel, task))
    return model, base


def ablation(model, task, base: dict, finetune: int) -> dict:
    """Test accuracy at int8 of each search alone, with and without distillation."""
    out = {"parent": base}
    for method in ("uniform", "sensitivity"):
        for distill in (False, True):
            r = run(
                model,
                task,
                "cortex-m4",
                SLOTS["cortex-m4"],
                base,
                finetune,
                method=method,
                distill=distill,
                qat_epochs=0,
            )
            out[f"{method}{'+kd' if distill else ''}"] = r["accuracy_int8"]
    return out


def run(model, task, target: str, slot: dict, base: dict, finetune: int, **kw) -> dict:
    limits = {}
    if "memory" in slot:
        limits = {
            "flash": int(base["flash_bytes"] * slot["memory"]),
            "sram": int(base["sram_bytes"] * slot["memory"]),
        }
    if "macs" in slot:
        limits["macs"] = slot["macs"]
    start = time.perf_counter()
    r = sc.compress(
        model, task, target=target, finetune_epochs=finetune, progress=False, **limits, **kw
    )
    return {
        "accuracy_int8": r.accuracy_int8,
        "accuracy_float": r.accuracy_float,
        "quantization": r.quantization,
        "method": r.method,
        "costs": r.costs,
        "limits": r.limits,
        "fits": r.fits,
        "searches": len(r.tried) - 1,
        "seconds": time.perf_counter() - start,
    }


def table(results: dict) -> str:
    """The rows as the markdown table docs/benchmarks.md quotes."""
    lines = [
        "| task | model | slot | float | int8, unpruned | compress | uniform L1 + PTQ | "
        "compress: search, quantization, MACs kept |",
        "|---" * 8 + "|",
    ]
    for key, row in results["rows"].items():
        task, model, slot = key.split("/")
        p, c, u = row["parent"], row["compress"], row["uniform_ptq"]

        def acc(r):
            return f"{100 * r['accuracy_int8']:.1f}" if "accuracy_int8" in r else "out of reach"

        kept = c["costs"]["macs"] / row_macs(row, task, model) if "costs" in c else None
        how = f"{c['method']}, {c['quantization']}, {kept:.2f}" if kept is not None else ""
        lines.append(
            f"| {task} | {model} | {slot} | {100 * p['float']:.1f} | "
            f"{100 * p['int8']:.1f} | {acc(c)} | {acc(u)} | {how} |"
        )
    return "\n".join(lines)


def row_macs(row: dict, task: str, model: str) -> float:
    """The parent's MACs (stored since the field was added; otherwise counted again)."""
    if "macs" in row["parent"]:
        return row["parent"]["macs"]
    t = sc.data.load(task)
    return sc.measure.profile(
        sc.models.create(model, t, **dict(ZOO)[model]), t.example_inputs()
    ).macs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--tasks", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--ablation", action="store_true", help="the choices behind the defaults")
    ap.add_argument("--table", action="store_true", help="print the stored rows as markdown")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(RESULTS.read_text())))
        return 0
    torch.set_num_threads(1)
    zoo = dict(ZOO)
    unknown = [m for m in args.models if m not in zoo]
    if unknown:
        sys.exit(f"unknown models {unknown}; the zoo configurations: {sorted(zoo)}")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/compress.py " + " ".join(given)
    # each part of the file names the command that wrote it
    results.update(
        {
            "machine": machine(),
            "slots": SLOTS,
            "ablation_command" if args.ablation else "command": command,
        }
    )
    for task_name in args.tasks:
        task = sc.data.load(task_name)
        for name in args.models:
            keys = [f"{task_name}/{name}/{t}" for t in SLOTS]
            if args.ablation:
                key = f"{task_name}/{name}/cortex-m4"
                if key not in results.setdefault("ablation", {}):
                    model, base = parent_and_base(name, zoo[name], task, args.epochs)
                    results["ablation"][key] = ablation(model, task, base, args.finetune_epochs)
                    save_json(RESULTS, results)
                    print(key, json.dumps(results["ablation"][key]), flush=True)
                continue
            if all(k in results["rows"] for k in keys):
                continue
            model, base = parent_and_base(name, zoo[name], task, args.epochs)
            for target, key in zip(SLOTS, keys):
                if key in results["rows"]:
                    continue
                row = {"parent": base, "command": command}  # the rows of one file, several runs
                for label, kw in (
                    ("compress", {}),
                    ("uniform_ptq", {"method": "uniform", "distill": False, "qat_epochs": 0}),
                ):
                    try:
                        row[label] = run(
                            model, task, target, SLOTS[target], base, args.finetune_epochs, **kw
                        )
                    except sc.search.BudgetError as err:
                        row[label] = {"error": str(err)}
                results["rows"][key] = row
                save_json(RESULTS, results)
                c, u = row["compress"], row["uniform_ptq"]
                print(
                    f"{key}: float {base['float']:.4f} int8 {base['int8']:.4f} | compress "
                    f"{c.get('accuracy_int8', float('nan')):.4f} | uniform+PTQ "
                    f"{u.get('accuracy_int8', float('nan')):.4f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
