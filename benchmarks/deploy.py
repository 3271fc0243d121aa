"""Generated C per zoo model: flash, arena against its lower bound, instructions per
inference, and dense against filterlet-sparse kernels.

For each zoo model on digits and MNIST-1D (trained 3 epochs, then 20 more at Adam 3e-3,
then PTQ int8 with activation ranges by min/max or by percentile, whichever scores higher
on the validation split): export C with ``sparse="never"``, compile the host harness (gcc
-O2) and count instructions per inference with ``valgrind --tool=callgrind``
(deterministic; (count for 4 inferences - count for none) / 4). Then, for some
convolutional models, prune the 3-epoch model's filterlets (``sc.prune.sparsify``,
granularity "filterlet", magnitude, the same ratio in every layer; fully connected layers
lose single weights, so the two MLPs measure the bitmask kernel) to 50, 70, 80 and 90%
sparsity, fine-tune the same 20 epochs with the masks held, quantize the same way, export
with ``sparse="auto"`` and compare flash and instructions with the dense export of the
same weights, next to the ideal ratio (executed MACs over dense MACs). Every export is
checked bit for bit against ``run_int8`` on 32 test inputs.

    python benchmarks/deploy.py

Rows are saved one by one to benchmarks/results/deploy.json (atomically); a rerun resumes.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ZOO, machine, save_json

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "deploy.json"
SPARSE_MODELS = ("lenet5", "resnet8", "ds_cnn", "mobilenet_v2", "mlp", "lenet_300_100")
SPARSITIES = (0.5, 0.7, 0.8, 0.9)


def export_and_measure(q, task, sparse: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = sc.deploy.export_c(q, tmp, sparse=sparse)
        check = sc.deploy.verify_c(q, tmp, task.test.tensors[0][:32])
        if not check.bit_exact:
            raise AssertionError(f"C differs from run_int8 in {check.mismatches} values")
        instr = sc.deploy.count_instructions(
            check.binary, q.quantize_input(task.test.tensors[0][:4])
        )
    return {
        "flash_bytes": report["flash_bytes"],
        "arena_bytes": report["arena_bytes"],
        "arena_lower_bound": report["arena_lower_bound"],
        "macs": report["macs"],
        "instructions": instr,
        "bit_exact": True,
        "filterlet_layers": sum(r["encoding"] == "filterlet" for r in report["layers"]),
    }


def main(argv=None) -> int:
    if shutil.which("valgrind") is None:
        print("this benchmark counts instructions with valgrind: apt-get install valgrind")
        return 1
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "benchmark": "deploy",
            "machine": machine(),
            "gcc": subprocess.run(
                ["gcc", "-dumpfullversion"], capture_output=True, text=True
            ).stdout.strip(),
            "command": "python benchmarks/deploy.py",
        }
    )
    rows = results.setdefault("rows", {})
    for task_name in ("digits", "mnist1d"):
        task = sc.data.load(task_name, seed=0)
        for name, kwargs in ZOO:
            keys = [f"{task_name}/{name}/dense"] + (
                [f"{task_name}/{name}/{s}" for s in SPARSITIES] if name in SPARSE_MODELS else []
            )
            if all(k in rows for k in keys):
                continue
            model = sc.models.create(name, task, seed=0, **kwargs)
            sc.fit(model, task, epochs=3, lr=3e-3, seed=0, progress=False)
            for key in keys:
                if key in rows:
                    continue
                start = time.perf_counter()
                m = copy.deepcopy(model)
                if not key.endswith("dense"):
                    sc.prune.sparsify(
                        m,
                        sparsity=float(key.rsplit("/", 1)[1]),
                        scope="local",
                        granularity="filterlet",
                    )
                # the dense row gets the same budget, so the accuracies compare
                sc.fit(m, task, epochs=20, lr=3e-3, seed=0, progress=False)  # masks hold
                sc.prune.strip(m)
                # activation ranges by min/max or by percentile, whichever the validation
                # split prefers: min/max ranges wreck some of the sparse models
                calibrations = {
                    c: sc.quant.quantize(m, task, calibration=c) for c in ("minmax", "percentile")
                }
                score = {c: sc.evaluate(q, task, split="val") for c, q in calibrations.items()}
                calibration = max(score, key=score.get)
                q = calibrations[calibration]
                row = {
                    "accuracy": sc.evaluate(q, task),
                    "calibration": calibration,
                    "dense": export_and_measure(q, task, "never"),
                }
                if not key.endswith("dense"):
                    row["sparse"] = export_and_measure(q, task, "auto")
                    row["ideal_ratio"] = row["sparse"]["macs"] / row["dense"]["macs"]
                    row["instruction_ratio"] = (
                        row["sparse"]["instructions"] / row["dense"]["instructions"]
                    )
                    row["flash_ratio"] = row["sparse"]["flash_bytes"] / row["dense"]["flash_bytes"]
                row["seconds"] = time.perf_counter() - start
                rows[key] = row
                save_json(RESULTS, results)
                d = row["dense"]
                line = (
                    f"{key:32s} acc {row['accuracy']:.3f} flash {d['flash_bytes']:8d} arena "
                    f"{d['arena_bytes']:6d}/{d['arena_lower_bound']:6d} instr "
                    f"{d['instructions']:10d}"
                )
                if "sparse" in row:
                    line += (
                        f"  sparse: instr x{row['instruction_ratio']:.3f} (ideal "
                        f"x{row['ideal_ratio']:.3f}) flash x{row['flash_ratio']:.3f}"
                    )
                print(line, flush=True)
    save_json(RESULTS, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
