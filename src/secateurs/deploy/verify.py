"""Compile the generated C and compare it with the integer reference, on the host or on an
emulated Cortex-M core (``cortex_m.py``).

The host harness reads int8 inputs from stdin and writes int8 outputs to stdout, one
inference after another, so one process checks a whole batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._io import write_atomic
from .._progress import Steps
from ..measure.devices import Target, get_target
from ..quant.ptq import QuantizedModel

CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
SOURCES = ("model.c", "weights.c", "sc_kernels.c", "harness.c")

HARNESS = """/* secateurs host harness: int8 inputs on stdin, int8 outputs on stdout. */
#include <stdio.h>
#include "model.h"

int main(void) {
    static int8_t input[SECATEURS_INPUT_SIZE];
    static int8_t output[SECATEURS_OUTPUT_SIZE];
    while (fread(input, 1, SECATEURS_INPUT_SIZE, stdin) == SECATEURS_INPUT_SIZE) {
        if (secateurs_invoke(input, output) != 0) {
            return 2;
        }
        fwrite(output, 1, SECATEURS_OUTPUT_SIZE, stdout);
    }
    return 0;
}
"""


@dataclass
class Verification:
    """How the C outputs compare with ``run_int8``'s on the same inputs."""

    inputs: int
    mismatches: int  # output values that differ
    max_abs_diff: int
    binary: Path
    target: str = "host"
    instructions: float | None = None  # per inference on the core, where target is one

    @property
    def bit_exact(self) -> bool:
        return self.mismatches == 0


def compile_c(outdir: str | os.PathLike, *, sanitize: bool = False, cc: str | None = None) -> Path:
    """Build the host harness from the ``export_c`` directory ``outdir`` with ``cc`` (default:
    gcc), under ASan and UBSan with ``sanitize``; returns the executable."""
    out = Path(outdir)
    cc = cc or os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH; install gcc or set CC")
    (out / "harness.c").write_text(HARNESS)
    binary = out / ("harness_asan" if sanitize else "harness")
    cmd = [
        cc,
        *CFLAGS,
        *(SANITIZE if sanitize else ()),
        "-o",
        str(binary),
        *(str(out / s) for s in SOURCES),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip()[-4000:] or "(it printed nothing)"
        raise RuntimeError(
            f"compiling {out} with {cc!r} (CC) failed with exit status {result.returncode}: "
            f"{said}\ncommand: {' '.join(cmd)[:500]}"
        )
    return binary


def run_c(binary: str | os.PathLike, x_q: torch.Tensor, output_size: int) -> np.ndarray:
    """Outputs of the compiled harness ``binary`` for int8 inputs ``x_q`` (N, ...): (N,
    ``output_size``)."""
    data = x_q.to(torch.int8).contiguous().numpy().tobytes()
    result = subprocess.run([str(binary)], input=data, capture_output=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(
            f"{binary} failed ({result.returncode}): {result.stderr.decode()[-4000:]}"
        )
    return np.frombuffer(result.stdout, dtype=np.int8).reshape(len(x_q), output_size)


def check_inputs(qmodel, x, what: str) -> None:
    """Fail with a clear message unless ``x`` is a float batch the model takes (a tuple of
    batches, one per input, for a model with several inputs)."""
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(
            f"{what} takes a QuantizedModel (sc.quant.quantize(model, data)), "
            f"got {type(qmodel).__name__}"
        )
    for t in x if isinstance(x, (tuple, list)) else (x,):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(
                f"{what} takes float inputs (it quantizes them itself), got "
                f"{getattr(t, 'dtype', type(t).__name__)}"
            )
    xs = qmodel._check_batch(x, what)
    if len(xs[0]) == 0:
        raise ValueError(f"{what} needs at least one input sample")
    if not all(torch.isfinite(t).all() for t in xs):
        raise ValueError(f"{what}: the inputs hold NaN or infinite values")


def verify_c(
    qmodel: QuantizedModel,
    outdir: str | os.PathLike,
    x,
    *,
    sanitize: bool = False,
    target: str | None = None,
    opt: str = "-O2",
    progress: bool = True,
) -> Verification:
    """Compile ``outdir`` (from ``export_c(qmodel, outdir)``), run it on float inputs ``x``
    (a tuple of batches, one per input, for a model with several inputs) and count the
    int8 outputs that differ from ``qmodel.run_int8``.

    ``target``: None builds for the host with gcc (``sanitize``: with ASan and UBSan); a
    Cortex-M core ("cortex-m4", see ``sc.deploy.cortex_m.CORES``) cross-compiles at
    ``opt`` and runs on the board QEMU emulates for it, and records instructions per
    inference, per kernel call and code sizes in ``report.json`` under ``"cortex_m"``.
    ``progress``: a bar over building and running, where output reaches a person."""
    check_inputs(qmodel, x, "verify_c")
    q = qmodel.quantize_input(x)
    x_q = qmodel.packed_input(q)  # (N, SECATEURS_INPUT_SIZE), as the C reads it
    expected = qmodel.run_int8(q).reshape(len(x_q), -1).numpy()
    instructions = None
    if target is None or target == "host":
        with Steps("verify_c: compile, then run on the host", 2, progress) as bar:
            binary = compile_c(outdir, sanitize=sanitize)
            bar.advance(status=f"running {len(x_q)} inputs")
            got = run_c(binary, x_q, expected.shape[1])
            bar.advance()
    else:
        from . import cortex_m

        cortex_m.get_core(target)  # an unknown core fails here, listing the known ones
        with Steps(f"verify_c: build and run on {target} (QEMU)", 1, progress) as bar:
            entry = cortex_m.measure(outdir, x_q, expected.shape[1], target, opt)
            bar.advance()
        got, instructions = entry["_outputs"], entry["instructions_mean"]
        binary = Path(outdir) / "cortex-m" / f"{entry['core']}{opt}" / "firmware.elf"
    diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
    return Verification(
        len(x_q),
        int((diff != 0).sum()),
        int(diff.max(initial=0)),
        binary,
        target or "host",
        instructions,
    )


def count_instructions(binary: str | os.PathLike, x_q: torch.Tensor) -> int:
    """Instructions per inference of the compiled harness ``binary`` on int8 inputs ``x_q``
    (N, ...),
    counted by ``valgrind --tool=callgrind``: (count for the N inputs - count for none) / N,
    so start-up is not charged. Deterministic for a given binary and input."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("counting instructions needs valgrind: apt-get install valgrind")
    if len(x_q) == 0:
        raise ValueError("count_instructions needs at least one input")

    def count(data: bytes) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            result = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(binary)],
                input=data,
                capture_output=True,
                timeout=1200,
            )
            if result.returncode != 0:
                raise RuntimeError(f"callgrind on {binary} failed: {result.stderr[-2000:]!r}")
            summary = re.search(r"^summary:\s*(\d+)", out.read_text(), re.M)
            if summary is None:
                raise RuntimeError(f"callgrind wrote no instruction summary for {binary}")
            return int(summary.group(1))

    data = x_q.to(torch.int8).contiguous().numpy().tobytes()
    return (count(data) - count(b"")) // len(x_q)


ESTIMATE_MODEL = (
    "instructions per inference counted on the host build (gcc -O2, valgrind callgrind), "
    "times the target's cycles per instruction over its clock, times its active power: an "
    "estimate that ranks models, not a measurement on the board (the fallback where the "
    "target is no emulated Cortex-M core or its toolchain is missing)"
)
CORTEX_M_MODEL = (
    "Thumb instructions per inference executed on QEMU's {board} ({core}, arm-none-eabi-gcc "
    "-O2, counted exactly by the emulator), times {cpi} cycles per instruction for this core "
    "over the target's clock, times its active power: an estimate, not a measurement on "
    "the board"
)


def estimate_c(
    qmodel: QuantizedModel,
    outdir: str | os.PathLike,
    x,
    *,
    target: str | Target | None = None,
    binary: str | os.PathLike | None = None,
) -> dict:
    """Latency and energy per inference *estimated* from the instructions the exported C executes
    on float inputs ``x`` for ``qmodel`` (exported to ``outdir``), for ``target`` (default: the
    export's). Where the target names a Cortex-M core (``sc.deploy.cortex_m.CORES``) and the
    cross toolchain is installed, the count is the core's own, on the emulator, with the core's
    cycles per instruction (``model`` says which); otherwise the host build's (see
    :func:`count_instructions`; ``binary``: that harness already built from ``outdir``, by
    ``verify_c`` say) with the target's. Added to ``outdir/report.json`` under ``"estimates"``
    and returned."""
    from . import cortex_m

    out = Path(outdir)
    report_path = out / "report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{out} holds no report.json; run sc.deploy.export_c first")
    t = get_target(target if target is not None else json.loads(report_path.read_text())["target"])
    q = qmodel.quantize_input(x)
    x_q = qmodel.packed_input(q)
    core = cortex_m.CORES.get(t.name)
    if core is not None and not cortex_m.toolchain_missing():
        size = math.prod(qmodel.graph.shapes[qmodel.graph.output][1:])  # one output
        n = round(cortex_m.measure(out, x_q, size, core, "-O2", per_op=False)["instructions_mean"])
        cpi = core.cycles_per_instruction
        model = CORTEX_M_MODEL.format(board=core.board, core=core.name, cpi=cpi)
    else:
        n = count_instructions(binary or compile_c(out), x_q)
        cpi, model = t.cycles_per_instruction, ESTIMATE_MODEL
    timed = dataclasses.replace(t, cycles_per_instruction=cpi)  # the core's, where counted there
    estimates = {
        "target": t.name,
        "instructions": n,
        "inputs": len(x_q),
        "cycles_per_instruction": cpi,
        "latency_ms": timed.latency_ms(n),
        "energy_mj": timed.energy_mj(n),
        "model": model,
    }
    report = json.loads(report_path.read_text())  # after the emulator's entry was added
    report["estimates"] = estimates
    write_atomic(report_path, json.dumps(report, indent=2))
    return estimates
