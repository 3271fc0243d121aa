"""Plain fine-tuning vs KD vs RKD vs feature KD vs layer-wise feature KD vs KD from a
coordinate-attention teacher, for a pruned student and a tiny one.

For each task (digits, MNIST-1D) and seed: train the teacher, a MobileNetV2 at width 0.5
(15 epochs, Adam 3e-3), then train two students with every method:
- pruned: the teacher pruned by ``sc.prune.channels`` (L2 norms, global) to 0.3 of its
  MACs, fine-tuned 10 epochs (Adam 3e-3);
- tiny: a MobileNetV2 at width 0.1 with 128 last channels (about 64 KB of int8 flash),
  trained from scratch 20 epochs (Adam 3e-3).
Methods (``sc.distill`` defaults but for layerwise's weight): finetune (cross-entropy
only), kd (alpha 0.5, T 4), rkd (CE + distance 25, angle 50 on the classifier input),
feature (CE + FeatureKD on the last stage output with a 1x1 adapter), layerwise (CE +
FeatureKD on every block output, ``sc.distill.block_outputs``, weight ``HINT_WEIGHT``),
ca_kd (KD + FeatureKD from the teacher with coordinate attention on its last stage,
trained 3 epochs with it), kd_strong (KD with
alpha 0.1, T 4 from a stronger teacher of another architecture: a ResNet-8 trained like
the MobileNetV2 teacher, 15 epochs, Adam 3e-3).
Reported: test accuracy (mean ± std over seeds); the gain over plain fine-tuning; for the
pruned student, the share of the fine-tuned student's gap to the teacher that a method
closes, ``(method - finetune) / (teacher - finetune)``, and the share of the accuracy lost
at pruning (before any training) that it wins back, ``(method - pruned) / (teacher -
pruned)``, both from the means, and the first per seed as well; params, MACs and int8 flash
of each student.

    python benchmarks/distillation.py [--seeds 5] [--tasks digits mnist1d] [--rerun METHOD]
                                      [--held-out]

``--held-out`` then trains the pruned student, fine-tuned and with layer-wise hints, on
seeds 5-9, which the choice of ``HINT_WEIGHT`` never saw (the JSON's ``held_out``).

Cells are merged one by one into benchmarks/results/distillation.json under a file lock
(atomically), so one process per task can run at once; a rerun resumes.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import check_reproduced, locked_update, machine, task_parser, without_methods

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "distillation.json"
TASKS = ("digits", "mnist1d")
METHODS = ("finetune", "kd", "rkd", "feature", "layerwise", "ca_kd", "kd_strong")
STUDENTS = {"pruned": 10, "tiny": 20}  # training epochs
TEACHER = {"width": 0.5}
TINY = {"width": 0.1, "last_channels": 128}
TARGET_MACS = 0.3
STRONG = "resnet8"  # the kd_strong teacher
STRONG_ALPHA = 0.1  # chosen between 0.5 and 0.1 on digits, seed 0
# layerwise's hint weight: the best mean validation accuracy of the pruned student over
# both tasks and 5 seeds among 1, 3, 10 and 30 (a probe by hand; docs/benchmarks.md)
HINT_WEIGHT = 10.0
# --held-out: the pruned student, fine-tuned and with hints, on seeds no choice saw
HELD_OUT_SEEDS, HELD_OUT_METHODS = range(5, 10), ("finetune", "layerwise")


def _update(fn) -> dict:
    return locked_update(RESULTS, fn)


def _student(kind: str, teacher, task, seed: int):
    if kind == "pruned":
        student = copy.deepcopy(teacher)
        sc.prune.channels(student, task.example_inputs(), target_macs=TARGET_MACS, importance="l2")
        return student
    return sc.models.create("mobilenet_v2", task, seed=seed, **TINY)


def _train(method: str, student, teachers: dict, task, epochs: int, seed: int) -> None:
    fit = {"epochs": epochs, "lr": 3e-3, "seed": seed, "progress": False}
    teacher = teachers["teacher"]
    if method == "kd_strong":
        kd = sc.distill.KD(alpha=STRONG_ALPHA)
        sc.fit(student, task, teacher=teachers["strong"], losses=[kd], **fit)
    elif method == "layerwise":
        sc.distill.distill(student, teacher, task, method=method, feature_weight=HINT_WEIGHT, **fit)
    elif method == "ca_kd":  # the registered method, with the enhanced teacher built once
        terms = [sc.distill.KD(), sc.distill.FeatureKD()]
        sc.fit(student, task, teacher=teachers["enhanced"], losses=terms, **fit)
    else:
        sc.distill.distill(student, teacher, task, method=method, **fit)


def _teacher(task, seed: int) -> tuple:
    """The seed's teacher, trained, and its test accuracy, which must equal the stored
    teacher's (if any): the stored cells of that seed belong to it."""
    teacher = sc.models.create("mobilenet_v2", task, seed=seed, **TEACHER)
    sc.fit(teacher, task, epochs=15, lr=3e-3, seed=seed, progress=False)
    key, accuracy = f"{task.name}/{seed}", sc.evaluate(teacher, task)
    stored = _update(lambda r: None).get("teachers", {}).get(key, {})
    check_reproduced(f"the teacher of {key}", accuracy, stored.get("teacher"), RESULTS)
    return teacher, accuracy


def _run_cell(key: str, method: str, kind: str, teachers: dict, task, seed: int) -> dict:
    """Train the ``kind`` student of ``teachers["teacher"]`` with ``method``, store its cell
    under ``key`` and return it."""
    student = _student(kind, teachers["teacher"], task, seed)
    start = time.perf_counter()
    _train(method, student, teachers, task, STUDENTS[kind], seed)
    cell = {"accuracy": sc.evaluate(student, task), "seconds": time.perf_counter() - start}
    _update(lambda r: r.setdefault("cells", {}).__setitem__(key, cell))
    return cell


def _size(model, task) -> dict:
    profile = sc.measure.profile(model, task.example_inputs())
    flash = sc.quant.quantize(model, task).flash_bytes("dense")
    return {"params": profile.params, "macs": profile.macs, "int8_flash_bytes": flash}


def run_task(task_name: str, seeds: int) -> None:
    done = set(_update(lambda r: None).get("cells", {}))
    for seed in range(seeds):
        keys = [f"{task_name}/{k}/{m}/{seed}" for k in STUDENTS for m in METHODS]
        if all(k in done for k in keys):
            continue
        task = sc.data.load(task_name, seed=seed)
        teacher, accuracy = _teacher(task, seed)
        enhanced = sc.distill.enhance_teacher(teacher, task, epochs=3, seed=seed)
        strong = sc.models.create(STRONG, task, seed=seed)
        sc.fit(strong, task, epochs=15, lr=3e-3, seed=seed, progress=False)
        teachers = {"teacher": teacher, "enhanced": enhanced, "strong": strong}
        info = {
            "teacher": accuracy,
            "enhanced_teacher": sc.evaluate(enhanced, task),
            "strong_teacher": sc.evaluate(strong, task),
            "pruned_before_training": sc.evaluate(_student("pruned", teacher, task, seed), task),
            "sizes": {
                "teacher": _size(teacher, task),
                **{k: _size(_student(k, teacher, task, seed), task) for k in STUDENTS},
            },
        }
        key = f"{task_name}/{seed}"
        _update(lambda r, key=key, info=info: r.setdefault("teachers", {}).__setitem__(key, info))
        print(
            f"{task_name} seed {seed}: teacher {info['teacher']:.4f}, with coordinate "
            f"attention {info['enhanced_teacher']:.4f}, {STRONG} {info['strong_teacher']:.4f}",
            flush=True,
        )
        for kind in STUDENTS:
            for method in METHODS:
                key = f"{task_name}/{kind}/{method}/{seed}"
                if key in done:
                    continue
                cell = _run_cell(key, method, kind, teachers, task, seed)
                print(f"{key:32s} acc {cell['accuracy']:.4f}  {cell['seconds']:.0f}s", flush=True)


def run_held_out(task_name: str) -> None:
    """The pruned student, fine-tuned and with layer-wise hints, on ``HELD_OUT_SEEDS``
    (the teacher alone is trained: these methods need no other)."""
    for seed in HELD_OUT_SEEDS:
        keys = [f"{task_name}/pruned/{m}/{seed}" for m in HELD_OUT_METHODS]
        done = _update(lambda r: None).get("cells", {})
        if all(k in done for k in keys):
            continue
        task = sc.data.load(task_name, seed=seed)
        teacher, accuracy = _teacher(task, seed)
        key = f"{task_name}/{seed}"
        _update(
            lambda r, key=key, a=accuracy: (
                r.setdefault("teachers", {}).setdefault(key, {}).__setitem__("teacher", a)
            )
        )
        for method, key in zip(HELD_OUT_METHODS, keys):
            if key in done:
                continue
            cell = _run_cell(key, method, "pruned", {"teacher": teacher}, task, seed)
            print(f"{key:32s} acc {cell['accuracy']:.4f}  held out", flush=True)


def held_out(results: dict) -> dict:
    """Per task with every held-out cell: mean accuracy of the teachers, the fine-tuned and
    the hinted pruned students, and the share of the gap the hints close (pooled and per
    seed), on ``HELD_OUT_SEEDS``."""
    cells, teachers, out = results.get("cells", {}), results.get("teachers", {}), {}
    for task_name in TASKS:
        keys = {
            m: [f"{task_name}/pruned/{m}/{s}" for s in HELD_OUT_SEEDS] for m in HELD_OUT_METHODS
        }
        if not all(k in cells for ks in keys.values() for k in ks):
            continue
        teacher = [teachers[f"{task_name}/{s}"]["teacher"] for s in HELD_OUT_SEEDS]
        base, hints = ([cells[k]["accuracy"] for k in keys[m]] for m in HELD_OUT_METHODS)
        mean = statistics.mean
        out[task_name] = {
            "seeds": list(HELD_OUT_SEEDS),
            "teacher": mean(teacher),
            "finetune": mean(base),
            "layerwise": mean(hints),
            "share_of_gap_to_teacher": (mean(hints) - mean(base)) / (mean(teacher) - mean(base)),
            "share_of_gap_per_seed": [(h - b) / (t - b) for t, b, h in zip(teacher, base, hints)],
        }
    return out


def summarize(results: dict, seeds: int) -> dict:
    cells, teachers = results["cells"], results["teachers"]
    summary = {}
    for task_name in TASKS:
        if not all(f"{task_name}/{s}" in teachers for s in range(seeds)):
            continue
        t_acc = [teachers[f"{task_name}/{s}"]["teacher"] for s in range(seeds)]
        sizes = teachers[f"{task_name}/0"]["sizes"]
        strong = [teachers[f"{task_name}/{s}"].get("strong_teacher") for s in range(seeds)]
        print(
            f"\n{task_name}: teacher {100 * statistics.mean(t_acc):.1f}, "
            f"{sizes['teacher']['int8_flash_bytes']} B int8"
        )
        if None not in strong:
            summary[f"{task_name}/strong_teacher"] = {
                "mean_accuracy": statistics.mean(strong),
                "std_accuracy": statistics.pstdev(strong),
            }
            print(f"{STRONG} teacher {100 * statistics.mean(strong):.1f}")
        for kind in STUDENTS:
            keys = {m: [f"{task_name}/{kind}/{m}/{s}" for s in range(seeds)] for m in METHODS}
            if not all(k in cells for ks in keys.values() for k in ks):
                continue
            print(
                f"  {kind}: {sizes[kind]['params']} params, {sizes[kind]['macs']} MACs, "
                f"{sizes[kind]['int8_flash_bytes']} B int8"
            )
            base = statistics.mean(cells[k]["accuracy"] for k in keys["finetune"])
            teacher = statistics.mean(t_acc)
            pruned = statistics.mean(
                teachers[f"{task_name}/{s}"]["pruned_before_training"] for s in range(seeds)
            )
            for method in METHODS:
                accs = [cells[k]["accuracy"] for k in keys[method]]
                mean = statistics.mean(accs)
                row = {
                    "mean_accuracy": mean,
                    "std_accuracy": statistics.pstdev(accs),
                    "gain_over_finetune": mean - base,
                }
                line = (
                    f"    {method:9s} {100 * mean:5.1f} ± {100 * row['std_accuracy']:3.1f}"
                    f"   {100 * (mean - base):+5.1f} vs finetune"
                )
                if kind == "pruned":  # shares of the accuracy pruning took
                    row["share_of_gap_to_teacher"] = (mean - base) / (teacher - base)
                    row["share_of_gap_per_seed"] = [  # each seed against its own teacher
                        (cells[k]["accuracy"] - cells[f]["accuracy"])
                        / (teachers[f"{task_name}/{s}"]["teacher"] - cells[f]["accuracy"])
                        for s, (k, f) in enumerate(zip(keys[method], keys["finetune"]))
                    ]
                    row["share_of_pruning_loss"] = (mean - pruned) / (teacher - pruned)
                    line += (
                        f", {100 * row['share_of_gap_to_teacher']:5.1f}% of the finetuned "
                        f"student's gap to the teacher, "
                        f"{100 * row['share_of_pruning_loss']:5.1f}% of the loss at pruning"
                    )
                summary[f"{task_name}/{kind}/{method}"] = row
                print(line)
    return summary


def main(argv=None) -> int:
    parser = task_parser(__doc__, TASKS, METHODS, "then the pruned student's check on seeds 5-9")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def start(results: dict) -> None:
        if args.rerun:
            results["cells"] = without_methods(results.get("cells", {}), args.rerun, args.tasks)
        results.update(
            {
                "benchmark": "distillation",
                "machine": machine(),
                "command": "python benchmarks/distillation.py [--tasks digits | mnist1d] --seeds "
                f"{args.seeds} --held-out",
            }
        )

    _update(start)
    for task_name in args.tasks:
        run_task(task_name, args.seeds)
        if args.held_out:
            run_held_out(task_name)

    def summaries(results: dict) -> None:
        results["summary"] = summarize(results, args.seeds)
        results["held_out"] = held_out(results)

    results = _update(summaries)
    for task_name, row in results["held_out"].items():
        print(
            f"held out, {task_name}: hints close {100 * row['share_of_gap_to_teacher']:.1f}% "
            "of the fine-tuned pruned student's gap to the teacher"
        )
    return 0 if results["summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
