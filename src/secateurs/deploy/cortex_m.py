"""The exported C on the target instruction set: built for a Cortex-M core with the GNU Arm
cross compiler, run on the board QEMU emulates for it, bit for bit against ``run_int8``,
with the exact number of instructions each inference executes.

The firmware is the ``export_c`` directory plus a start-up file (vector table, reset
handler, semihosting), a harness that reads the inputs from and writes the outputs to host
files through semihosting, and a linker script for the board's memory. A small QEMU plugin
(``c/cortex_m/icount.c``, built with the host compiler) counts executed instructions and
records the count whenever the harness calls ``sc_mark`` around an inference, and, in the
per-kernel build, after every kernel call. Counts are of instructions, not cycles: the
latency estimate multiplies them by a documented cycles-per-instruction figure per core.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .._io import write_atomic

PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: its ``-mcpu``, the QEMU board that runs it, where that board's
    code and data memory lie, and cycles per instruction for the latency estimate."""

    name: str
    mcpu: str
    board: str
    code: tuple[int, int]  # origin, length
    data: tuple[int, int]
    cycles_per_instruction: float
    note: str = ""
    flags: tuple[str, ...] = field(default=())


_MPS2 = ((0x0000_0000, 4 << 20), (0x2000_0000, 4 << 20))  # ZBT SSRAM1, SSRAM2/3
# Cycles per instruction: single-issue cores with a 2-3 stage pipeline (M0+, M3, M4, M33)
# run most instructions in one cycle and loads and taken branches in two; the dual-issue
# M7 and M55 pair many. Estimates, not measurements.
CORES: dict[str, Core] = {
    c.name: c
    for c in (
        Core(
            "cortex-m0plus",
            "cortex-m0plus",
            "mps2-an385",
            *_MPS2,
            1.3,
            note="QEMU has no Cortex-M0+ board: ARMv6-M code runs on the Cortex-M3 board",
        ),
        Core("cortex-m3", "cortex-m3", "mps2-an385", *_MPS2, 1.2),
        Core("cortex-m4", "cortex-m4", "mps2-an386", *_MPS2, 1.2),
        Core("cortex-m7", "cortex-m7", "mps2-an500", *_MPS2, 0.8),
        Core(
            "cortex-m33",
            "cortex-m33",
            "mps2-an505",
            (0x1000_0000, 4 << 20),
            (0x3800_0000, 4 << 20),
            1.2,
            note="secure state, secure memory aliases",
        ),
        Core(
            "cortex-m55",
            "cortex-m55",
            "mps3-an547",
            (0x1000_0000, 512 << 10),
            (0x3000_0000, 128 << 10),
            0.8,
            note="code in ITCM (512 KiB), data in DTCM (128 KiB); secure aliases",
        ),
    )
}

LINKER = """/* secateurs: {core} on QEMU's {board} */
MEMORY {{
  CODE (rx) : ORIGIN = {code_origin:#x}, LENGTH = {code_length:#x}
  DATA (rwx) : ORIGIN = {data_origin:#x}, LENGTH = {data_length:#x}
}}
SECTIONS {{
  .text : {{ KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4); }} > CODE
  .data : {{ __data_start = .; *(.data*) . = ALIGN(4); __data_end = .; }} > DATA AT > CODE
  __data_load = LOADADDR(.data);
  .bss (NOLOAD) : {{ __bss_start = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end = .; }} > DATA
  __stack_top = ORIGIN(DATA) + LENGTH(DATA);
}}
"""
MODEL_SOURCES = ("model.c", "weights.c", "sc_kernels.c")


def get_core(name: str | Core) -> Core:
    """The core called ``name``; an unknown name fails listing the known ones."""
    if isinstance(name, Core):
        return name
    if name not in CORES:
        raise ValueError(f"unknown Cortex-M core {name!r}; known: {', '.join(CORES)}")
    return CORES[name]


def toolchain_missing() -> list[str]:
    """The programs a Cortex-M build and run need that are not on PATH."""
    tools = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
    missing = [t for t in tools if shutil.which(t) is None]
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        missing.append("gcc")
    return missing


def _require_toolchain() -> None:
    missing = toolchain_missing()
    if missing:
        raise RuntimeError(
            f"building for Cortex-M needs {', '.join(missing)}: apt-get install {PACKAGES} "
            "(and gcc for the emulator's instruction counter)"
        )


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: int = 600) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def _copy_resource(name: str, dest: Path) -> Path:
    with resources.as_file(resources.files(__package__) / "c" / "cortex_m" / name) as src:
        shutil.copyfile(src, dest)
    return dest


def _plugin(build: Path) -> Path:
    """The instruction-counting QEMU plugin, built for the host into ``build``."""
    lib = build / "icount.so"
    if not lib.is_file():
        src = _copy_resource("icount.c", build / "icount.c")
        cc = os.environ.get("CC", "gcc")
        _run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], "building icount.so")
    return lib


@dataclass
class Firmware:
    """One build of an ``export_c`` directory for a core."""

    core: Core
    elf: Path
    opt: str
    per_op: bool
    sizes: dict  # {"model": {".text": n, ...}, "kernels": {...}}
    mark: int  # address of sc_mark


def _section_sizes(objects: list[Path]) -> dict[str, int]:
    """Bytes of .text, .rodata, .data and .bss over ``objects`` (each object's sections
    after -ffunction-sections are summed by prefix)."""
    totals = {".text": 0, ".rodata": 0, ".data": 0, ".bss": 0}
    for obj in objects:
        for line in _run(["arm-none-eabi-size", "-A", str(obj)], "arm-none-eabi-size").split("\n"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                for key in totals:
                    if parts[0] == key or parts[0].startswith(key + "."):
                        totals[key] += int(parts[1])
    return totals


def firmware(
    sources: list[Path],
    out: Path,
    core: str | Core = "cortex-m4",
    opt: str = "-O2",
    includes: tuple[Path, ...] = (),
    defines: tuple[str, ...] = (),
    libraries: tuple[Path, ...] = (),
) -> Firmware:
    """Compile ``sources`` (C files that define main and call ``sc_mark``) with the start-up
    code for ``core`` at ``opt`` into ``out`` and link them; any C program measured on the
    emulator, the benchmarks' CMSIS-NN harness included, is built here."""
    _require_toolchain()
    c = get_core(core)
    if opt not in OPTS:
        raise ValueError(f"opt must be one of {', '.join(OPTS)}, got {opt!r}")
    out.mkdir(parents=True, exist_ok=True)
    startup = _copy_resource("startup.c", out / "startup.c")
    write_atomic(
        out / "link.ld",
        LINKER.format(
            core=c.name,
            board=c.board,
            code_origin=c.code[0],
            code_length=c.code[1],
            data_origin=c.data[0],
            data_length=c.data[1],
        ),
    )
    flags = [*compile_flags(c, opt), *(f"-I{i}" for i in includes), *(f"-D{d}" for d in defines)]
    objects = []
    for path in (*sources, startup):
        obj = out / (Path(path).stem + ".o")
        _run(
            ["arm-none-eabi-gcc", *flags, "-c", "-o", str(obj), str(path)],
            f"compiling {Path(path).name} for {c.name}",
        )
        objects.append(obj)
    elf = out / "firmware.elf"
    _run(
        [
            "arm-none-eabi-gcc",
            *flags,
            "-nostartfiles",
            "--specs=nano.specs",
            f"-T{out / 'link.ld'}",
            "-Wl,--gc-sections",
            f"-Wl,-Map={out / 'firmware.map'}",
            "-o",
            str(elf),
            *map(str, objects),
            *map(str, libraries),
        ],
        f"linking for {c.name}",
    )
    symbols = _run(["arm-none-eabi-nm", str(elf)], "arm-none-eabi-nm")
    marks = [int(s.split()[0], 16) for s in symbols.splitlines() if s.endswith(" sc_mark")]
    if not marks:
        raise RuntimeError(f"{elf} defines no sc_mark: nothing to count between")
    return Firmware(c, elf, opt, False, {}, marks[0])


OPTS = ("-O0", "-O1", "-O2", "-O3", "-Os")


def compile_flags(core: Core, opt: str) -> list[str]:
    """The cross compiler's flags for ``core`` at ``opt``."""
    return [
        f"-mcpu={core.mcpu}",
        "-mthumb",
        "-mfloat-abi=soft",
        opt,
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-ffunction-sections",
        "-fdata-sections",
        *core.flags,
    ]


def build(
    outdir: str | os.PathLike,
    core: str | Core = "cortex-m4",
    opt: str = "-O2",
    per_op: bool = False,
    defines: tuple[str, ...] = (),
) -> Firmware:
    """Cross-compile the ``export_c`` directory ``outdir`` for ``core`` at ``opt`` (-O2,
    -Os, -O3) into ``outdir/cortex-m/<core><opt>[-ops]/``. ``per_op``: mark after every
    kernel call, for instruction counts per kernel (the marks cost a few instructions
    each, so totals come from the build without them). ``defines``: extra macros, e.g.
    ``("SC_NO_DSP=1",)`` for the portable loops (built into a folder of their own)."""
    _require_toolchain()
    c = get_core(core)
    src = Path(outdir)
    if not (src / "model.c").is_file():
        raise FileNotFoundError(f"{src} holds no model.c; run sc.deploy.export_c first")
    suffix = "".join("-" + d.split("=")[0].lower() for d in defines)
    out = src / "cortex-m" / f"{c.name}{opt}{'-ops' if per_op else ''}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    harness = _copy_resource("harness.c", out / "harness.c")
    fw = firmware(
        [*(src / s for s in MODEL_SOURCES), harness],
        out,
        c,
        opt,
        includes=(src,),
        defines=(*defines, *(("SC_PROFILE=1",) if per_op else ())),
    )
    fw.per_op = per_op
    fw.sizes = {
        "model": _section_sizes([out / "model.o", out / "weights.o"]),
        "kernels": _section_sizes([out / "sc_kernels.o"]),
    }
    return fw


@dataclass
class Run:
    """Outputs of a run on the emulator and instructions per inference."""

    outputs: np.ndarray  # (N, output_size) int8
    instructions: list[int]  # per inference
    per_op: list[list[int]] | None  # per inference, per kernel call (per_op builds)


def run(firmware: Firmware, x_q: torch.Tensor, output_size: int, timeout: int = 600) -> Run:
    """Run ``firmware`` on its QEMU board for int8 inputs ``x_q`` (N, ...)."""
    if len(x_q) == 0:
        raise ValueError("run needs at least one input")
    work = firmware.elf.parent
    plugin = _plugin(work).resolve()  # QEMU runs in ``work``: a relative path would miss
    (work / "outputs.bin").unlink(missing_ok=True)
    marks = work / "marks.txt"
    write_atomic(work / "inputs.bin", x_q.to(torch.int8).contiguous().numpy().tobytes())
    cmd = [
        "qemu-system-arm",
        "-M",
        firmware.core.board,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        firmware.elf.name,
        "-plugin",
        f"{plugin},mark={firmware.mark:#x},out={marks.name}",
    ]
    try:
        _run(cmd, f"running on {firmware.core.board}", cwd=work, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(
            f"{firmware.elf} did not finish on {firmware.core.board} within {timeout} s"
        ) from e
    got = np.frombuffer((work / "outputs.bin").read_bytes(), dtype=np.int8)
    if got.size != len(x_q) * output_size:
        raise RuntimeError(
            f"{firmware.elf} wrote {got.size} output bytes for {len(x_q)} inputs of {output_size}"
        )
    counts = [int(v) for v in marks.read_text().split()]
    overhead = counts[1] - counts[0]  # an empty pair of marks
    per = (len(counts) - 2) // len(x_q)  # marks per inference
    instructions: list[int] = []
    per_op: list[list[int]] | None = [] if firmware.per_op else None
    for i in range(len(x_q)):
        seq = counts[2 + i * per : 2 + (i + 1) * per]
        instructions.append(seq[-1] - seq[0] - overhead * (per - 1))
        if per_op is not None:
            per_op.append([b - a - overhead for a, b in itertools.pairwise(seq)])
    return Run(got.reshape(len(x_q), output_size), instructions, per_op)


def cycles_estimate(core: str | Core, instructions: int) -> int:
    """Cycles for ``instructions`` on ``core``: an estimate (see :class:`Core`)."""
    return round(get_core(core).cycles_per_instruction * instructions)


def measure(
    outdir: str | os.PathLike,
    x_q: torch.Tensor,
    output_size: int,
    core: str | Core = "cortex-m4",
    opt: str = "-O2",
    per_op: bool = True,
) -> dict:
    """Build ``outdir`` for ``core``, run it on ``x_q`` and return what ``report.json``
    records under ``"cortex_m"``: instructions per inference (each and the mean), per kernel
    call (from the build with marks), code and data sizes, and the outputs' bytes.
    The outputs come back too, under ``"_outputs"`` (not saved)."""
    fw = build(outdir, core, opt)
    r = run(fw, x_q, output_size)
    entry = {
        "core": fw.core.name,
        "board": fw.core.board,
        "opt": opt,
        "note": fw.core.note,
        "inputs": len(x_q),
        "instructions": r.instructions,
        "instructions_mean": float(np.mean(r.instructions)),
        "cycles_estimate": cycles_estimate(fw.core, int(np.mean(r.instructions))),
        "cycles_per_instruction": fw.core.cycles_per_instruction,
        "sizes": fw.sizes,
    }
    if per_op:
        r_ops = run(build(outdir, core, opt, per_op=True), x_q[:1], output_size)
        assert r_ops.per_op is not None  # a per-op build counts per op
        entry["per_op_instructions"] = r_ops.per_op[0]
    entry["_outputs"] = r.outputs
    report_path = Path(outdir) / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        saved = {k: v for k, v in entry.items() if not k.startswith("_")}
        report.setdefault("cortex_m", {})[f"{fw.core.name}{opt}"] = saved
        write_atomic(report_path, json.dumps(report, indent=2))
    return entry
