"""The exported .tflite in the real TensorFlow Lite Micro runtime: bit-exactness, memory and
flash against the generated C.

For each zoo model on digits, MNIST-1D and KWS (trained 1 epoch at Adam 3e-3, then PTQ
int8): export ``.tflite`` and C, and run 128 test inputs in

- TensorFlow Lite Micro (PyPI ``tflite-micro``), model quantized with ``rounding="tflm"``;
- LiteRT's reference kernels, model quantized with ``rounding="litert"``;
- the generated C (gcc, host);
- onnxruntime on the QDQ ONNX export (largest difference, in steps);

counting output values that differ from ``run_int8``. Memory: TFLM's planned tensor memory
(the arena head: activations, laid out by the offline memory plan the file carries, and
the kernels' scratch) and its smallest working
arena (persistent op data included; found by bisection, each try in its own process, as
TFLM allocates once per interpreter), against the C's arena and its scratch. Flash: the
``.tflite`` bytes against ``export_c``'s constants.

Then 200 random networks (``sc.models.random_net``, seeds 0-199, inputs drawn at random)
in TFLM, LiteRT and the C.

    python benchmarks/tflm.py
    python benchmarks/tflm.py --table   # the stored rows as docs/results/tflm.md's table

Rows are saved one by one to benchmarks/results/tflm.json (atomically); a rerun resumes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import LIGHTWEIGHT, ZOO, machine, save_json

import secateurs as sc

RESULTS = Path(__file__).parent / "results" / "tflm.json"
TASKS = ("digits", "mnist1d", "kws")
RANDOM_NETS = 200

PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
try:
    interp = runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))
    d = interp.get_input_details(0)
    interp.set_input(np.zeros(d["shape"], dtype=np.int8), 0)
    interp.invoke()
except Exception:
    sys.exit(3)
interp.print_allocations()
"""


def tflm_probe(path: Path, arena: int) -> dict | None:
    """TFLM's allocation record for ``path`` with an arena of ``arena`` bytes, in a fresh
    process; None when the model does not run in that arena."""
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(arena)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        return None
    text = r.stdout + r.stderr
    fields = dict(re.findall(r"Arena allocation (\w+) (\d+) bytes", text))
    return {k: int(v) for k, v in fields.items()}


def tflm_memory(path: Path) -> dict:
    """Planned tensor memory (arena head) and the smallest working arena, to 16 bytes."""
    record = tflm_probe(path, 8 << 20)
    if record is None:
        raise RuntimeError(f"{path} does not run in TFLM with an 8 MiB arena")
    lo, hi = record["head"], record["total"]  # it cannot run below the head
    while tflm_probe(path, hi) is None:
        lo, hi = hi, 2 * hi
    while hi - lo > 16:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if tflm_probe(path, mid) is not None else (mid, hi)
    return {
        "planned_tensor_bytes": record["head"],
        "smallest_arena_bytes": hi,
        "recorded_total_bytes": record["total"],
    }


def onnx_max_diff(q, x_q, tmp: Path) -> int:
    path = sc.deploy.export_onnx(q, tmp / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = q.input_qparams.dequantize(x_q.long()).numpy().astype(np.float32)
    got = session.run(None, {"input": feed})[0].astype(np.int64).reshape(len(x_q), -1)
    expected = q.run_int8(x_q).numpy().astype(np.int64).reshape(len(x_q), -1)
    return int(np.abs(got - expected).max())


def zoo_row(model, task, tmp: Path) -> dict:
    x = task.test.tensors[0][:128]
    q = sc.quant.quantize(model, task)
    path = sc.deploy.export_tflite(q, tmp / "model.tflite")
    tflm = sc.deploy.verify_tflite(q, path, x, runtime="tflm")
    ql = sc.quant.quantize(model, task, rounding="litert")
    litert = sc.deploy.verify_tflite(ql, sc.deploy.export_tflite(ql, tmp / "l.tflite"), x)
    report = sc.deploy.export_c(q, tmp / "c")
    c = sc.deploy.verify_c(q, tmp / "c", x)
    memory = tflm_memory(path)
    ours = report["arena_bytes"] + report["scratch_bytes"]
    return {
        "accuracy": sc.evaluate(q, task),
        "tflm_mismatches": tflm.mismatches,
        "litert_mismatches": litert.mismatches,
        "c_mismatches": c.mismatches,
        "outputs_compared": tflm.inputs * (q.run_int8(q.quantize_input(x[:1])).numel()),
        "onnxruntime_max_steps": onnx_max_diff(q, q.quantize_input(x), tmp),
        "c_arena_bytes": report["arena_bytes"],
        "c_scratch_bytes": report["scratch_bytes"],
        **memory,
        "c_input_bytes": report["input_bytes"],
        "planned_over_c_arena": memory["planned_tensor_bytes"] / report["arena_bytes"],
        # TFLM plans the input tensor in its arena; the C reads it from the caller's buffer
        "planned_over_c_arena_and_input": memory["planned_tensor_bytes"]
        / (report["arena_bytes"] + report["input_bytes"]),
        # TFLM's head holds its kernels' scratch too; the C keeps scratch in its own buffer
        "planned_over_c_arena_scratch_and_input": memory["planned_tensor_bytes"]
        / (ours + report["input_bytes"]),
        "smallest_arena_over_c": memory["smallest_arena_bytes"] / ours,
        "tflite_bytes": path.stat().st_size,
        "c_flash_bytes": report["flash_bytes"],
        "tflite_over_c_flash": path.stat().st_size / report["flash_bytes"],
        "pad_ops": sum(op in ("PAD", "PADV2") for op in sc.deploy.tflite_operators(path)),
    }


def random_row(seed: int, tmp: Path) -> dict:
    net = sc.models.random_net(seed)
    shape = net.input_shape
    x = torch.randn(256, *shape, generator=torch.Generator().manual_seed(seed))
    row = {"input_shape": list(shape)}
    for rounding in ("tflm", "litert"):
        q = sc.quant.quantize(net, x, rounding=rounding)
        path = sc.deploy.export_tflite(q, tmp / f"{rounding}.tflite")
        row[f"{rounding}_mismatches"] = sc.deploy.verify_tflite(q, path, x[:64]).mismatches
    sc.deploy.export_c(q, tmp / "c")
    row["c_mismatches"] = sc.deploy.verify_c(q, tmp / "c", x[:64]).mismatches
    row["kinds"] = sorted({n.kind for n in q.graph.nodes})
    return row


def summary(rows: dict, nets: dict) -> dict:
    zoo = list(rows.values())
    return {
        "zoo_models": len(zoo),
        "zoo_tflm_exact": sum(r["tflm_mismatches"] == 0 for r in zoo),
        "zoo_litert_exact": sum(r["litert_mismatches"] == 0 for r in zoo),
        "zoo_c_exact": sum(r["c_mismatches"] == 0 for r in zoo),
        "onnxruntime_max_steps": max((r["onnxruntime_max_steps"] for r in zoo), default=None),
        "max_planned_over_c_arena": max((r["planned_over_c_arena"] for r in zoo), default=None),
        "max_planned_over_c_arena_and_input": max(
            (r["planned_over_c_arena_and_input"] for r in zoo), default=None
        ),
        "zoo_planned_within_1_1x_arena": sum(r["planned_over_c_arena"] <= 1.1 for r in zoo),
        "zoo_planned_within_1_1x_arena_and_input": sum(
            r["planned_over_c_arena_and_input"] <= 1.1 for r in zoo
        ),
        "zoo_planned_within_1_1x_arena_scratch_and_input": sum(
            r["planned_over_c_arena_scratch_and_input"] <= 1.1 for r in zoo
        ),
        "zoo_tflite_within_1_15x_flash": sum(r["tflite_over_c_flash"] <= 1.15 for r in zoo),
        "max_tflite_over_c_flash": max((r["tflite_over_c_flash"] for r in zoo), default=None),
        "random_nets": len(nets),
        "random_tflm_exact": sum(r["tflm_mismatches"] == 0 for r in nets.values()),
        "random_litert_exact": sum(r["litert_mismatches"] == 0 for r in nets.values()),
        "random_c_exact": sum(r["c_mismatches"] == 0 for r in nets.values()),
    }


def table(rows: dict) -> str:
    """The stored zoo rows as the table of docs/results/tflm.md."""
    lines = [
        "| task / model | onnxruntime, max steps | TFLM planned / C arena (+ input) | TFLM "
        "planned / C arena + scratch + input | TFLM smallest arena | `.tflite` / C flash | "
        "PAD ops left |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in sorted(rows.items(), key=lambda kv: TASKS.index(kv[0].split("/")[0])):
        lines.append(
            f"| {key.replace('/', ' / ')} | {r['onnxruntime_max_steps']} | "
            f"{r['planned_tensor_bytes']:,} / {r['c_arena_bytes']:,} (+{r['c_input_bytes']:,}): "
            f"{r['planned_over_c_arena']:.2f}x ({r['planned_over_c_arena_and_input']:.2f}x) | "
            f"{r['planned_over_c_arena_scratch_and_input']:.2f}x | "
            f"{r['smallest_arena_bytes']:,} | {r['tflite_over_c_flash']:.2f}x | {r['pad_ops']} |"
        )
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:] == ["--table"]:
        print(table(json.loads(RESULTS.read_text())["rows"]))
        return 0
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {"benchmark": "tflm", "machine": machine(), "command": "python benchmarks/tflm.py"}
    )
    rows = results.setdefault("rows", {})
    nets = results.setdefault("random_nets", {})
    for task_name in TASKS:
        task = sc.data.load(task_name, seed=0)
        for name, kwargs in ZOO + LIGHTWEIGHT:
            key = f"{task_name}/{name}" + ("_lite" if kwargs.get("lite") else "")
            if key in rows:
                continue
            start = time.perf_counter()
            model = sc.models.create(name, task, seed=0, **kwargs)
            sc.fit(model, task, epochs=1, lr=3e-3, seed=0, progress=False)
            with tempfile.TemporaryDirectory() as tmp:
                row = zoo_row(model.eval(), task, Path(tmp))
            row["seconds"] = time.perf_counter() - start
            rows[key] = row
            results["summary"] = summary(rows, nets)
            save_json(RESULTS, results)
            print(
                f"{key:24s} mismatches tflm {row['tflm_mismatches']} litert "
                f"{row['litert_mismatches']} c {row['c_mismatches']} ort "
                f"{row['onnxruntime_max_steps']} | planned {row['planned_tensor_bytes']} vs "
                f"arena {row['c_arena_bytes']} (x{row['planned_over_c_arena']:.2f}) smallest "
                f"{row['smallest_arena_bytes']} | tflite x{row['tflite_over_c_flash']:.2f} "
                f"| PAD ops {row['pad_ops']}",
                flush=True,
            )
    for seed in range(RANDOM_NETS):
        if str(seed) in nets:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            nets[str(seed)] = random_row(seed, Path(tmp))
        if seed % 20 == 19:
            results["summary"] = summary(rows, nets)
            save_json(RESULTS, results)
    results["summary"] = summary(rows, nets)
    save_json(RESULTS, results)
    print(json.dumps(results["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
