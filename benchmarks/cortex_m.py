"""Generated C against CMSIS-NN on the target instruction set: executed Thumb instructions per
layer on emulated Cortex-M cores, the same int8 layer, the same outputs.

Each layer (the shapes of issue 29: a 3x3 convolution 16->32 on 16x16, a 3x3 depthwise
convolution over 32 channels on 16x16, a 1x1 pointwise 32->64 on 16x16, a fully connected
256->10, a 1-D convolution 16->32 with k=5 on L=40; each followed by ReLU) gets random
weights (seed 0), is quantized per channel (PTQ, min/max on 64 random inputs) and exported
with ``sc.deploy.export_c``. Our C is built for the core with ``arm-none-eabi-gcc`` and run
on QEMU's board for it (``sc.deploy.cortex_m``); the kernel call is counted by the emulator
plugin. CMSIS-NN (``../shared/third_party/cmsis-nn``, built from source with the same
compiler and flags) gets the very constants our export stores (weights in its OHWI layout,
biases, per-channel multipliers and shifts, zero points), the input in channel-last order,
and its wrapper function is counted the same way; both outputs must equal ``run_int8``'s.
The fully connected layer's weight sums, which TFLite Micro computes once at start-up for
CMSIS-NN, are not counted (our export folds them into the biases). Cores: Cortex-M4 and
Cortex-M7 (DSP) and Cortex-M0+ (ARMv6-M code, run on the Cortex-M3 board); -O2 and -Os.
The convolutions are measured dense and at 50, 80 and 90% filterlet sparsity (CMSIS-NN
running the pruned weights densely). Whole zoo models are run on each core, and on the M4
against CMSIS-NN layer by layer (``compare_models``), with the kernel code each links.

    python benchmarks/cortex_m.py

Writes benchmarks/results/cortex_m.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, save_json
from torch import nn

import secateurs as sc
from secateurs.deploy import cortex_m
from secateurs.deploy.codegen import build_program
from secateurs.quant.integer import run_integer

RESULTS = Path(__file__).parent / "results" / "cortex_m.json"
CMSIS = Path(__file__).resolve().parents[2] / "shared" / "third_party"
CMSIS_DIRS = (
    "ConvolutionFunctions",
    "FullyConnectedFunctions",
    "NNSupportFunctions",
    "BasicMathFunctions",
    "PoolingFunctions",
)

LAYERS = {
    "conv3x3 16->32 16x16": (lambda: nn.Conv2d(16, 32, 3, padding=1), (16, 16, 16)),
    "depthwise3x3 32 16x16": (lambda: nn.Conv2d(32, 32, 3, padding=1, groups=32), (32, 16, 16)),
    "pointwise 32->64 16x16": (lambda: nn.Conv2d(32, 64, 1), (32, 16, 16)),
    "fully_connected 256->10": (lambda: nn.Linear(256, 10), (256,)),
    "conv1d k5 16->32 L40": (lambda: nn.Conv1d(16, 32, 5, padding=2), (16, 40)),
}

INVOKE = """/* CMSIS-NN for one layer, behind the entry point the harness calls. */
#include <string.h>
#include "arm_nnfunctions.h"
#include "model.h"
#include "layer.h"

static int8_t buffer[65536];

int secateurs_invoke(const int8_t *input, int8_t *output) {
    cmsis_nn_context ctx = {buffer, 0};
#if KIND_ADD /* both operands, one after the other, in the input */
    return arm_elementwise_add_s8(input, input + COUNT, -A_ZP, A_MULT, A_SHIFT, -B_ZP, B_MULT,
                                  B_SHIFT, 20, output, OUT_ZP, OUT_MULT, OUT_SHIFT, ACT_MIN,
                                  ACT_MAX, COUNT) != ARM_CMSIS_NN_SUCCESS;
#elif KIND_MAXPOOL || KIND_AVGPOOL
    const cmsis_nn_pool_params p = {{STRIDE_W, STRIDE_H}, {PAD_W, PAD_H}, {-128, 127}};
    const cmsis_nn_dims in = {1, IN_H, IN_W, IN_C}, flt = {1, F_H, F_W, 1};
    const cmsis_nn_dims out = {1, OUT_H, OUT_W, OUT_C};
#if KIND_MAXPOOL
    return arm_max_pool_s8(&ctx, &p, &in, input, &flt, &out, output) != ARM_CMSIS_NN_SUCCESS;
#else
    ctx.size = arm_avgpool_s8_get_buffer_size(OUT_W, IN_C);
    if (ctx.size > (int32_t)sizeof(buffer)) return 4;
    return arm_avgpool_s8(&ctx, &p, &in, input, &flt, &out, output) != ARM_CMSIS_NN_SUCCESS;
#endif
#else
    const cmsis_nn_dims in = {1, IN_H, IN_W, IN_C}, flt = {F_N, F_H, F_W, F_C};
    const cmsis_nn_dims bias_dims = {1, 1, 1, OUT_C}, out = {1, OUT_H, OUT_W, OUT_C};
    cmsis_nn_per_channel_quant_params quant = {(int32_t *)mult, (int32_t *)shift};
#if KIND_CONV
    const cmsis_nn_conv_params p = {-IN_ZP, OUT_ZP, {STRIDE_W, STRIDE_H}, {PAD_W, PAD_H},
                                    {1, 1}, {ACT_MIN, ACT_MAX}};
    ctx.size = arm_convolve_wrapper_s8_get_buffer_size(&p, &in, &flt, &out);
    if (ctx.size > (int32_t)sizeof(buffer)) return 4;
    return arm_convolve_wrapper_s8(&ctx, &p, &quant, &in, input, &flt, weights, &bias_dims,
                                   bias, &out, output) != ARM_CMSIS_NN_SUCCESS;
#elif KIND_DEPTHWISE
    const cmsis_nn_dw_conv_params p = {-IN_ZP, OUT_ZP, 1, {STRIDE_W, STRIDE_H},
                                       {PAD_W, PAD_H}, {1, 1}, {ACT_MIN, ACT_MAX}};
    ctx.size = arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &in, &flt, &out);
    if (ctx.size > (int32_t)sizeof(buffer)) return 4;
    return arm_depthwise_conv_wrapper_s8(&ctx, &p, &quant, &in, input, &flt, weights,
                                         &bias_dims, bias, &out, output) != ARM_CMSIS_NN_SUCCESS;
#else
    const cmsis_nn_fc_params p = {-IN_ZP, 0, OUT_ZP, {ACT_MIN, ACT_MAX}};
    ctx.buf = 0;
    return arm_fully_connected_per_channel_s8(&ctx, &p, &quant, &in, input, &flt, weights,
                                              &bias_dims, bias, &out, output) !=
           ARM_CMSIS_NN_SUCCESS;
#endif
#endif
}
"""


def _array(name: str, ctype: str, values) -> str:
    body = ", ".join(str(int(v)) for v in np.asarray(values).ravel())
    return f"static const {ctype} {name}[] = {{{body}}};\n"


def cmsis_library(work: Path, core: str, opt: str) -> Path:
    """CMSIS-NN's convolution, fully connected and support functions as a static library."""
    lib = work / f"libcmsisnn{core}{opt}.a"
    if lib.is_file():
        return lib
    objdir = work / f"cmsis{core}{opt}"
    objdir.mkdir(parents=True, exist_ok=True)
    flags = [
        *(
            f
            for f in cortex_m.compile_flags(cortex_m.get_core(core), opt)
            if not f.startswith("-std")
        ),
        "-std=gnu11",
        f"-I{CMSIS / 'cmsis-nn' / 'Include'}",
        f"-I{CMSIS / 'cmsis-core' / 'CMSIS' / 'Core' / 'Include'}",
    ]
    sources = sorted(
        p
        for d in CMSIS_DIRS
        for p in (CMSIS / "cmsis-nn" / "Source" / d).glob("*.c")
        if "_f16" not in p.name and "_f32" not in p.name
    )  # int8 and support

    def compile_one(src: Path) -> Path:
        obj = objdir / (src.stem + ".o")
        subprocess.run(["arm-none-eabi-gcc", *flags, "-c", "-o", str(obj), str(src)], check=True)
        return obj

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        objects = list(pool.map(compile_one, sources))
    subprocess.run(["arm-none-eabi-ar", "rcs", str(lib), *map(str, objects)], check=True)
    return lib


def layer_header(op, in_shape) -> str:
    """The constants our export stores for ``op``, in the layout CMSIS-NN reads."""
    p, c = op.params, op.consts
    if op.kernel == "sc_linear":
        dims = {
            "IN_H": 1,
            "IN_W": 1,
            "IN_C": p["in_features"],
            "OUT_H": 1,
            "OUT_W": 1,
            "OUT_C": p["out_features"],
            "F_N": p["in_features"],
            "F_H": 1,
            "F_W": 1,
            "F_C": p["out_features"],
            "STRIDE_W": 1,
            "STRIDE_H": 1,
            "PAD_W": 0,
            "PAD_H": 0,
            "KIND_CONV": 0,
            "KIND_DEPTHWISE": 0,
        }
        weights = c["w"].values  # [out][in], as CMSIS-NN's fully connected reads it
    else:
        depthwise = p["groups"] == p["cin"] and p["groups"] > 1
        w = c["w"].values.reshape(p["cout"], p["kh"], p["kw"], p["cin"] // p["groups"])
        # CMSIS-NN: OHWI for a convolution, 1HWC (channels innermost) for a depthwise one
        weights = w.transpose(3, 1, 2, 0) if depthwise else w
        dims = {
            "IN_H": p["h"],
            "IN_W": p["w"],
            "IN_C": p["cin"],
            "OUT_H": p["oh"],
            "OUT_W": p["ow"],
            "OUT_C": p["cout"],
            "F_N": 1 if depthwise else p["cout"],
            "F_H": p["kh"],
            "F_W": p["kw"],
            "F_C": p["cout"] if depthwise else p["cin"],
            "STRIDE_W": p["stride_w"],
            "STRIDE_H": p["stride_h"],
            "PAD_W": p["pad_left"],
            "PAD_H": p["pad_top"],
            "KIND_CONV": int(not depthwise),
            "KIND_DEPTHWISE": int(depthwise),
        }
    dims |= {"KIND_ADD": 0, "KIND_MAXPOOL": 0, "KIND_AVGPOOL": 0}
    dims |= {
        "IN_ZP": p["in_zp"],
        "OUT_ZP": p["out_zp"],
        "ACT_MIN": p["act_min"],
        "ACT_MAX": p["act_max"],
    }
    text = "".join(f"#define {k} {v}\n" for k, v in dims.items())
    text += _array("weights", "int8_t", weights)
    text += _array("bias", "int32_t", c["bias"].values)
    text += _array("mult", "int32_t", c["mult"].values)
    text += _array("shift", "int32_t", c["shift"].values)
    return text


def measure_layer(
    name: str, work: Path, cores, opts, inputs: int, sparsity: float = 0.0
) -> list[dict]:
    """One layer on each core and option; with ``sparsity``, its filterlets pruned by
    magnitude to that fraction and exported sparse, against CMSIS-NN running the same
    (zero-filled) weights densely."""
    make, in_shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make()
    model = nn.Sequential(layer, nn.ReLU()).eval()
    if sparsity:
        sc.prune.sparsify(model, sparsity=sparsity, granularity="filterlet")
        sc.prune.strip(model)
    calib = torch.randn(64, *in_shape)
    q = sc.quant.quantize(model, calib)
    x = torch.randn(inputs, *in_shape)
    x_q = q.quantize_input(x)
    expected = q.run_int8(x_q).numpy()
    out = work / (name.replace(" ", "_").replace(">", "").replace("-", "_") + f"_{sparsity}")
    report = sc.deploy.export_c(q, out, sparse="always" if sparsity else "never")
    program, _ = build_program(q, sparse="never")
    (op,) = [o for o in program.ops if o.kernel in ("sc_conv", "sc_linear")]
    dense_macs = op.macs
    cm_dir = out / "cmsis"
    cm_dir.mkdir(exist_ok=True)
    (cm_dir / "layer.h").write_text(layer_header(op, in_shape))
    (cm_dir / "invoke.c").write_text(INVOKE)
    size_in, size_out = int(np.prod(in_shape)), int(expected[0].size)
    (cm_dir / "model.h").write_text(
        f"#include <stdint.h>\n#define SECATEURS_INPUT_SIZE {size_in}\n"
        f"#define SECATEURS_OUTPUT_SIZE {size_out}\n"
        "int secateurs_invoke(const int8_t *input, int8_t *output);\n"
    )
    channel_last = (
        (lambda t: t.permute(0, *range(2, t.dim()), 1)) if len(in_shape) > 1 else (lambda t: t)
    )
    rows = []
    for core in cores:
        lib = {opt: cmsis_library(work, core, opt) for opt in opts}
        for opt in opts:
            ours = cortex_m.measure(out, x_q, size_out, core, opt, per_op=True)
            if not np.array_equal(ours["_outputs"], expected.reshape(inputs, -1)):
                raise AssertionError(f"{name} on {core}{opt}: our C differs from run_int8")
            harness = cortex_m._copy_resource("harness.c", cm_dir / "harness.c")
            fw = cortex_m.firmware(
                [cm_dir / "invoke.c", harness],
                cm_dir / f"{core}{opt}",
                core,
                opt,
                includes=(
                    cm_dir,
                    CMSIS / "cmsis-nn" / "Include",
                    CMSIS / "cmsis-core" / "CMSIS" / "Core" / "Include",
                ),
                libraries=(lib[opt],),
            )
            run = cortex_m.run(fw, channel_last(x_q).contiguous(), size_out)
            shape = channel_last(torch.from_numpy(expected)).shape[1:]
            theirs = run.outputs.reshape(inputs, *shape)
            if len(in_shape) > 1:  # back to channel-first
                theirs = np.moveaxis(theirs, -1, 1)
            if not np.array_equal(theirs.reshape(inputs, -1), expected.reshape(inputs, -1)):
                raise AssertionError(f"{name} on {core}{opt}: CMSIS-NN differs from run_int8")
            kernel = ours["per_op_instructions"][0]  # the layer's one kernel call
            cmsis = float(np.mean(run.instructions))
            rows.append(
                {
                    "layer": name,
                    "sparsity": sparsity,
                    "core": core,
                    "opt": opt,
                    "macs": report["macs"],
                    "dense_macs": dense_macs,
                    "secateurs_instructions": kernel,
                    "cmsis_nn_instructions": cmsis,
                    "ratio": kernel / cmsis,
                    "secateurs_per_mac": kernel / dense_macs,
                    "cmsis_nn_per_mac": cmsis / dense_macs,
                    "secateurs_kernels_text": ours["sizes"]["kernels"][".text"],
                }
            )
            print(
                f"{name:26s} {sparsity:4.0%} {core:14s} {opt}  ours {kernel:>9,}  CMSIS-NN "
                f"{cmsis:>11,.0f}"
                f"  ratio {kernel / cmsis:.2f}",
                flush=True,
            )
    return rows


MODELS = [
    ("resnet8", {}),
    ("mobilenet_v2", {"width": 0.35, "last_channels": 128}),
    ("ds_cnn", {}),
    ("lenet5", {}),
]


def _quantized(name: str, kwargs: dict, task):
    """Zoo model ``name`` trained one epoch on ``task`` (seed 0), PTQ."""
    model = sc.models.create(name, task, seed=0, **kwargs)
    sc.fit(model, task, epochs=1, lr=3e-3, seed=0, progress=False)
    return sc.quant.quantize(model, task)


def measure_models(work: Path, cores, opt: str) -> list[dict]:
    """Whole zoo models on digits (one epoch of training, PTQ): instructions per inference on
    each core, bit for bit against run_int8 on 8 test inputs."""
    task = sc.data.load("digits")
    rows = []
    for name, kwargs in MODELS:
        q = _quantized(name, kwargs, task)
        out = work / f"model_{name}"
        report = sc.deploy.export_c(q, out)
        for core in cores:
            check = sc.deploy.verify_c(q, out, task.test.tensors[0][:8], target=core, opt=opt)
            if not check.bit_exact:
                raise AssertionError(f"{name} on {core}: {check.mismatches} values differ")
            entry = json.loads((out / "report.json").read_text())["cortex_m"]
            sizes = entry[f"{core}{opt}"]["sizes"]
            rows.append(
                {
                    "model": name,
                    "core": core,
                    "opt": opt,
                    "macs": report["macs"],
                    "instructions": check.instructions,
                    "per_mac": check.instructions / report["macs"],
                    "kernels_text": sizes["kernels"][".text"],
                    "model_rodata": sizes["model"][".rodata"],
                }
            )
            print(
                f"{name:14s} {core:14s} {opt} {check.instructions:>12,.0f} instructions "
                f"({check.instructions / report['macs']:.2f} per MAC)",
                flush=True,
            )
    return rows


def other_header(op) -> str | None:
    """The CMSIS-NN call for an element-wise add or a pooling op (what CMSIS-NN has beside
    convolutions and fully connected layers), or None where it has no kernel for ``op``
    (means, concatenations and copies, lookup tables, multiplies, broadcast adds, average
    pools that count padding)."""
    p = op.params
    zero = {
        "KIND_CONV": 0,
        "KIND_DEPTHWISE": 0,
        "KIND_ADD": 0,
        "KIND_MAXPOOL": 0,
        "KIND_AVGPOOL": 0,
    }
    if op.kernel == "sc_add":
        whole = p["a_div"] == p["b_div"] == 1 and p["a_mod"] == p["b_mod"] == p["count"]
        if not whole:
            return None
        names = (
            "a_zp",
            "b_zp",
            "out_zp",
            "act_min",
            "act_max",
            "a_mult",
            "a_shift",
            "b_mult",
            "b_shift",
            "out_mult",
            "out_shift",
        )
        d = zero | {"KIND_ADD": 1, "COUNT": p["count"]} | {k.upper(): p[k] for k in names}
    elif op.kernel in ("sc_max_pool", "sc_avg_pool"):
        padded = p["pad_top"] or p["pad_left"]
        if (
            p["dil_h"] != 1
            or p["dil_w"] != 1
            or (op.kernel == "sc_avg_pool" and padded and p["count_include_pad"])
        ):
            return None
        d = zero | {
            f"KIND_{'MAXPOOL' if op.kernel == 'sc_max_pool' else 'AVGPOOL'}": 1,
            "IN_H": p["h"],
            "IN_W": p["w"],
            "IN_C": p["c"],
            "OUT_H": p["oh"],
            "OUT_W": p["ow"],
            "OUT_C": p["c"],
            "F_H": p["kh"],
            "F_W": p["kw"],
            "STRIDE_W": p["stride_w"],
            "STRIDE_H": p["stride_h"],
            "PAD_W": p["pad_left"],
            "PAD_H": p["pad_top"],
        }
    else:
        return None
    return "".join(f"#define {k} {v}\n" for k, v in d.items())


def cmsis_op(
    op, header: str, x: np.ndarray, expected: np.ndarray, work: Path, core: str, opt: str, lib: Path
) -> float:
    """Instructions of CMSIS-NN's kernel for one op of a model on the op's own input ``x``
    (channel-last, or both operands one after the other for an add); its output must be
    ``expected``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "layer.h").write_text(header)
    (work / "invoke.c").write_text(INVOKE)
    (work / "model.h").write_text(
        f"#include <stdint.h>\n#define SECATEURS_INPUT_SIZE {x.size}\n"
        f"#define SECATEURS_OUTPUT_SIZE {expected.size}\n"
        "int secateurs_invoke(const int8_t *input, int8_t *output);\n"
    )
    harness = cortex_m._copy_resource("harness.c", work / "harness.c")
    fw = cortex_m.firmware(
        [work / "invoke.c", harness],
        work / f"{core}{opt}",
        core,
        opt,
        includes=(
            work,
            CMSIS / "cmsis-nn" / "Include",
            CMSIS / "cmsis-core" / "CMSIS" / "Core" / "Include",
        ),
        libraries=(lib,),
    )
    run = cortex_m.run(fw, torch.from_numpy(x.reshape(1, -1).astype(np.int8)), expected.size)
    if not np.array_equal(run.outputs.reshape(-1), expected.reshape(-1)):
        raise AssertionError(f"{op.kind} {op.module}: CMSIS-NN differs from run_int8")
    return float(run.instructions[0])


# CMSIS-NN's entry points for the ops compare_models runs through it, as TFLite Micro calls
# them (the wrappers pull in every variant they dispatch to)
CMSIS_ENTRIES = {
    "sc_conv": ["arm_convolve_wrapper_s8", "arm_convolve_wrapper_s8_get_buffer_size"],
    "sc_conv (depthwise)": [
        "arm_depthwise_conv_wrapper_s8",
        "arm_depthwise_conv_wrapper_s8_get_buffer_size",
    ],
    "sc_linear": ["arm_fully_connected_per_channel_s8"],
    "sc_add": ["arm_elementwise_add_s8"],
    "sc_max_pool": ["arm_max_pool_s8"],
    "sc_avg_pool": ["arm_avgpool_s8", "arm_avgpool_s8_get_buffer_size"],
}


def linked_code_bytes(map_file: Path, member: str) -> int:
    """Bytes of code and read-only data the linker kept (``--gc-sections``) from input files
    whose path contains ``member``, summed from the link map."""
    text = map_file.read_text()
    text = text[text.index("Linker script and memory map") :]
    pattern = r"^ \.(?:text|rodata)\S*\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)\s*$"
    return sum(int(size, 16) for size, path in re.findall(pattern, text, re.M) if member in path)


def cmsis_code_bytes(kinds, work: Path, core: str, opt: str, lib: Path) -> int:
    """Code CMSIS-NN links for a model whose ops are of ``kinds``: a firmware referencing
    those entry points, its kept CMSIS-NN sections counted from the map (not run)."""
    names = [n for k in sorted(kinds) for n in CMSIS_ENTRIES.get(k, ())]
    work.mkdir(parents=True, exist_ok=True)
    refs = ", ".join(f"(fn){n}" for n in names)
    (work / "invoke.c").write_text(
        '#include <stdint.h>\n#include "arm_nnfunctions.h"\ntypedef void (*fn)(void);\n'
        f"static fn volatile used[] = {{{refs}}};\n"
        "int secateurs_invoke(const int8_t *input, int8_t *output) {\n"
        "    (void)input; (void)output; return used[0] == 0;\n}\n"
    )
    (work / "model.h").write_text(
        "#include <stdint.h>\n#define SECATEURS_INPUT_SIZE 1\n#define SECATEURS_OUTPUT_SIZE 1\n"
        "int secateurs_invoke(const int8_t *input, int8_t *output);\n"
    )
    harness = cortex_m._copy_resource("harness.c", work / "harness.c")
    cortex_m.firmware(
        [work / "invoke.c", harness],
        work / f"{core}{opt}",
        core,
        opt,
        includes=(
            work,
            CMSIS / "cmsis-nn" / "Include",
            CMSIS / "cmsis-core" / "CMSIS" / "Core" / "Include",
        ),
        libraries=(lib,),
    )
    return linked_code_bytes(work / f"{core}{opt}" / "firmware.map", "libcmsisnn")


def _last(t: np.ndarray) -> np.ndarray:  # (C, H, W) or (C, L) -> channel-last
    return np.moveaxis(t, 0, -1) if t.ndim > 1 else t


def compare_models(work: Path, core: str, opt: str) -> list[dict]:
    """Whole zoo models against CMSIS-NN layer by layer: every op CMSIS-NN has a kernel for
    runs alone on the op's own input (from run_int8 on a test sample) with the constants
    our export stores, its output checked against run_int8; the ops it has none for are
    counted at our instructions on both sides. Ours: the per-kernel counts of the whole
    model's build with marks (a few instructions each more than without)."""
    task = sc.data.load("digits")
    lib = cmsis_library(work, core, opt)
    rows = []
    for name, kwargs in MODELS:
        q = _quantized(name, kwargs, task)
        out = work / f"compare_{name}"
        sc.deploy.export_c(q, out, sparse="never")
        x_q = q.quantize_input(task.test.tensors[0][:1])
        values: dict = {}
        run_integer(q.graph, q.qparams, q.layers, q.ops, x_q, q.rounding, values)
        ours = cortex_m.measure(out, x_q, int(values[q.graph.output][0].numel()), core, opt)
        per_op = ours["per_op_instructions"]
        program, _ = sc.deploy.build_program(q, sparse="never")
        mine = theirs = missing = 0.0
        kinds: dict[str, list[float]] = {}
        for i, op in enumerate(program.ops):
            x = values[op.inputs[0]][0].numpy()
            y = values[op.output][0].numpy()
            if op.kernel in ("sc_conv", "sc_linear"):
                header = layer_header(op, x.shape)
                x, y = _last(x), _last(y)
            else:
                header = other_header(op)
                if header and op.kernel == "sc_add":
                    other = values[op.inputs[1]][0].numpy().reshape(-1)
                    x = np.concatenate([x.reshape(-1), other])
                elif header:
                    x, y = _last(x), _last(y)
            if header is None:  # no CMSIS-NN kernel: ours on both sides
                cm = float(per_op[i])
                missing += per_op[i]
            else:
                cm = cmsis_op(op, header, x, y, out / f"cmsis{i}", core, opt, lib)
            mine += per_op[i]
            theirs += cm
            depthwise = op.kernel == "sc_conv" and op.params["cin"] == op.params["groups"] > 1
            kind = "sc_conv (depthwise)" if depthwise else op.kernel
            kinds.setdefault(kind, [0.0, 0.0])
            kinds[kind][0] += per_op[i]
            kinds[kind][1] += cm
        ours_code = linked_code_bytes(
            out / "cortex-m" / f"{core}{opt}" / "firmware.map", "sc_kernels.o"
        )
        cmsis_code = cmsis_code_bytes(kinds, out / "cmsis_code", core, opt, lib)
        rows.append(
            {
                "model": name,
                "core": core,
                "opt": opt,
                "secateurs_instructions": mine,
                "cmsis_nn_instructions": theirs,
                "ratio": mine / theirs,
                "counted_at_ours": missing,
                "by_kernel": kinds,
                "secateurs_kernel_code_bytes": ours_code,
                "cmsis_nn_kernel_code_bytes": cmsis_code,
            }
        )
        print(
            f"{name:14s} {core} {opt}  ours {mine:>12,.0f}  CMSIS-NN {theirs:>12,.0f}  "
            f"ratio {mine / theirs:.2f} ({missing / theirs:.0%} counted at ours); kernel code "
            f"{ours_code:,} B against {cmsis_code:,} B",
            flush=True,
        )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", nargs="+", default=["cortex-m4", "cortex-m7", "cortex-m0plus"])
    ap.add_argument("--opts", nargs="+", default=["-O2", "-Os"])
    ap.add_argument("--inputs", type=int, default=4)
    ap.add_argument(
        "--sparsities",
        nargs="+",
        type=float,
        default=[0.5, 0.8, 0.9],
        help="filterlet sparsities of the convolutions, beside dense",
    )
    ap.add_argument("--no-models", action="store_true", help="the layers only")
    args = ap.parse_args(argv)
    missing = cortex_m.toolchain_missing()
    if missing:
        sys.exit(f"needs {missing}: apt-get install {cortex_m.PACKAGES}")
    if not (CMSIS / "cmsis-nn" / "Include").is_dir():
        sys.exit(f"CMSIS-NN sources not found at {CMSIS}")
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in LAYERS:
            rows += measure_layer(name, Path(tmp), args.cores, args.opts, args.inputs)
        for sparsity in args.sparsities:
            for name in LAYERS:
                if not name.startswith("fully_connected"):
                    rows += measure_layer(
                        name, Path(tmp), args.cores, args.opts, args.inputs, sparsity
                    )
        models = [] if args.no_models else measure_models(Path(tmp), args.cores, "-O2")
        compared = [] if args.no_models else compare_models(Path(tmp), "cortex-m4", "-O2")
    save_json(
        RESULTS,
        {
            "machine": machine(),
            "command": "python benchmarks/cortex_m.py " + " ".join(sys.argv[1:]),
            "seconds": round(time.time() - start),
            "layers": rows,
            "models": models,
            "models_against_cmsis_nn": compared,
        },
    )


if __name__ == "__main__":
    main()
