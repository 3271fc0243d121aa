"""Generated C on emulated Cortex-M cores: bit for bit against the integer reference, exact
instruction counts, code sizes, and the errors a missing toolchain or core gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.deploy import cortex_m

needs_toolchain = pytest.mark.skipif(
    bool(cortex_m.toolchain_missing()),
    reason=f"needs {cortex_m.toolchain_missing()}: apt-get install {cortex_m.PACKAGES}",
)


@pytest.fixture(scope="module")
def small_model(digits):
    """A residual CNN of every dense kernel kind the DSP paths take: a stem with one input
    channel, a 3x3 convolution, a depthwise 3x3, a pointwise, a strided and a dilated
    convolution, a residual add, a 2x2 max pool, a depthwise 3x3 on a 2x2 map (the small
    plane path), a global mean and a fully connected head."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
            self.conv = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.ReLU())
            self.pw = nn.Conv2d(12, 8, 1)
            self.down = nn.Sequential(
                nn.Conv2d(8, 10, 3, stride=2, padding=2, dilation=2), nn.ReLU()
            )
            self.pool = nn.MaxPool2d(2)
            self.small = nn.Sequential(nn.Conv2d(10, 10, 3, padding=1, groups=10), nn.ReLU())
            self.head = nn.Linear(10, 10)

        def forward(self, x):
            s = self.stem(x)
            x = s + self.pw(self.dw(self.conv(s)))
            return self.head(self.small(self.pool(self.down(x))).mean((2, 3)))

    torch.manual_seed(0)
    model = Net()
    sc.fit(model, digits, epochs=1, lr=3e-3, seed=0, progress=False)
    return sc.quant.quantize(model, digits)


@needs_toolchain
@pytest.mark.slow
@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m0plus"])
def test_small_model_on_emulated_core_matches_run_int8_bit_for_bit(
    core, small_model, digits, tmp_path
):
    q = small_model
    report = sc.deploy.export_c(q, tmp_path)
    x = digits.test.tensors[0][:16]
    result = sc.deploy.verify_c(q, tmp_path, x, target=core)
    assert result.target == core
    assert result.inputs == 16
    assert result.bit_exact, f"{result.mismatches} values differ, by up to {result.max_abs_diff}"
    saved = json.loads((tmp_path / "report.json").read_text())["cortex_m"][f"{core}-O2"]
    # more than one instruction per MAC, and fewer than the bound of each core: this model
    # has few MACs per output (9 in the stem, 12 in the pointwise), so requantizing weighs;
    # the M4 runs it in about 6 per MAC, the M0+ (no 32x32->64 multiply) in about 23
    bound = {"cortex-m4": 8, "cortex-m0plus": 28}[core]
    assert report["macs"] < min(saved["instructions"])
    assert max(saved["instructions"]) < bound * report["macs"]
    # the per-kernel build accounts for the whole inference: one count per kernel call and
    # one for the copy of the output, adding up to within the marks' own cost
    per_op = saved["per_op_instructions"]
    assert len(per_op) == len(report["layers"]) + 1
    assert sum(per_op) == pytest.approx(saved["instructions"][0], rel=0.01)
    assert saved["sizes"]["kernels"][".text"] > 0
    assert saved["sizes"]["model"][".rodata"] >= report["flash_bytes"] - 64
    assert saved["cycles_estimate"] > 0


@needs_toolchain
@pytest.mark.slow
def test_instruction_count_is_exact_and_deterministic(small_model, digits, tmp_path):
    q = small_model
    sc.deploy.export_c(q, tmp_path)
    x_q = q.quantize_input(digits.test.tensors[0][:4])
    out_size = 10
    fw = cortex_m.build(tmp_path, "cortex-m4")
    first = cortex_m.run(fw, x_q, out_size)
    again = cortex_m.run(fw, x_q, out_size)
    assert first.instructions == again.instructions  # the same inputs, the same count
    # one input run alone counts what it counted among others
    alone = cortex_m.run(fw, x_q[2:3], out_size)
    assert alone.instructions == [first.instructions[2]]
    assert np.array_equal(alone.outputs[0], first.outputs[2])


@needs_toolchain
@pytest.mark.slow
def test_dsp_path_takes_fewer_instructions_than_the_portable_loops(small_model, digits, tmp_path):
    """The same C built for the Cortex-M4 with the DSP kernels and with them turned off
    (SC_NO_DSP): equal outputs, and the DSP build at most 0.6x the instructions."""
    q = small_model
    sc.deploy.export_c(q, tmp_path)
    x_q = q.quantize_input(digits.test.tensors[0][:4])
    dsp = cortex_m.run(cortex_m.build(tmp_path, "cortex-m4"), x_q, 10)
    portable = cortex_m.build(tmp_path, "cortex-m4", defines=("SC_NO_DSP=1",))
    plain = cortex_m.run(portable, x_q, 10)
    assert np.array_equal(dsp.outputs, plain.outputs)
    assert max(dsp.instructions) < 0.6 * min(plain.instructions)


def test_unknown_core_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: cortex-m0plus, cortex-m3, cortex-m4"):
        cortex_m.get_core("cortex-m99")


def test_missing_toolchain_names_the_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(cortex_m.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install gcc-arm-none-eabi"):
        cortex_m.build(tmp_path, "cortex-m4")


def test_verify_c_checks_its_inputs(small_model, tmp_path):
    q = small_model
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        sc.deploy.verify_c(q, tmp_path, torch.zeros(4, 64))
    with pytest.raises(TypeError, match="float inputs"):
        sc.deploy.verify_c(q, tmp_path, torch.zeros(4, 1, 8, 8, dtype=torch.int8))
    with pytest.raises(ValueError, match="NaN"):
        sc.deploy.verify_c(q, tmp_path, torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(TypeError, match="QuantizedModel"):
        sc.deploy.verify_c(nn.Linear(64, 10), tmp_path, torch.zeros(4, 64))


@needs_toolchain
@pytest.mark.slow
@pytest.mark.parametrize("core", ["cortex-m3", "cortex-m7", "cortex-m33", "cortex-m55"])
def test_every_other_core_runs_the_model_bit_for_bit(core, small_model, digits, tmp_path):
    q = small_model
    sc.deploy.export_c(q, tmp_path)
    result = sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:8], target=core)
    assert result.bit_exact, f"{result.mismatches} values differ on {core}"
    assert result.instructions > 0


@needs_toolchain
@pytest.mark.slow
def test_sparse_kernels_on_the_dsp_path_match_run_int8(digits, tmp_path):
    """Filterlet-sparse convolutions on the Cortex-M4's DSP paths: a 3x3 convolution reading
    a list of live input channels whose count is no multiple of 4 (the split columns padded
    with zeros, the weights padded to a word), a 1-D-like 1x3 one, and a depthwise one."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 9, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(9, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 12, (1, 3), padding=(0, 1)),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1, groups=12),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12 * 64, 10),
    )
    sc.fit(model, digits, epochs=1, lr=3e-3, seed=0, progress=False)
    with torch.no_grad():  # input channels 1, 4 and 7 of the second layer read by no filter
        model[2].weight[:, [1, 4, 7]] = 0
    sc.prune.sparsify(model, sparsity=0.6, granularity="filterlet", ignored=["0", "9"])
    sc.prune.strip(model)
    q = sc.quant.quantize(model, digits)
    sc.deploy.export_c(q, tmp_path, sparse="always")
    program, _ = sc.deploy.build_program(q, sparse="always")
    sparse = [o for o in program.ops if o.kernel == "sc_conv_filterlet"]
    assert len(sparse) >= 3
    second = next(o for o in sparse if o.params["cin"] == 9)
    assert second.params["live"] == 6  # a list of 6 channels: no whole number of words
    assert any(o.params["groups"] == o.params["cin"] == 12 for o in sparse)
    x = digits.test.tensors[0][:16]
    result = sc.deploy.verify_c(q, tmp_path, x, target="cortex-m4")
    assert result.bit_exact, result.mismatches


@needs_toolchain
def test_a_relative_export_folder_runs_on_the_emulator(small_model, digits, tmp_path, monkeypatch):
    """QEMU runs inside the build folder, so the counting plugin's path must not be
    relative to where the caller stands (a grid's run folder usually is)."""
    monkeypatch.chdir(tmp_path)
    sc.deploy.export_c(small_model, "relative/c")
    result = sc.deploy.verify_c(
        small_model, "relative/c", digits.test.tensors[0][:2], target="cortex-m4"
    )
    assert result.bit_exact and result.instructions > 0


ARMV6M_REQUANT_CHECK = r"""
#include <stdio.h>
#include "sc_kernels.c"
/* the ARMv6-M requantization (32-bit pieces) against the int64 reference, on the edges and
 * on random accumulators, multipliers and shifts (x and the seed from argv) */
int main(int argc, char **argv) {
    static const int32_t edge[] = {0, 1, -1, 2147483647, -2147483647 - 1, 65535, -65536,
                                   65536, -65535, 32768, -32768, 1073741824, -1073741824};
    unsigned long long s = strtoull(argv[2], 0, 10);
    long n = atol(argv[1]), bad = 0, i;
    (void)argc;
    for (i = 0; i < n; ++i) {
        int32_t x, b, m, shift;
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x = (int32_t)s;
        b = (int32_t)(s >> 17) >> (s & 31);
        m = (int32_t)((s >> 32) & 0x7fffffff) | (i & 1 ? 0x40000000 : 0);
        shift = (int32_t)((s >> 40) % 42) - 31; /* -31 .. 10 */
        if (i < 169) {
            x = edge[i % 13];
            b = edge[(i / 13) % 13];
        }
        if ((i & 3) == 0) {
            x >>= (s >> 59);
        }
        if (sc_rq_v6m(sc_qadd_v6m(x, b), m, shift) != sc_requantize((int64_t)x + b, m, shift)) {
            if (bad++ < 3) printf("x=%d b=%d m=%d shift=%d\n", x, b, m, shift);
        }
    }
    printf("%ld\n", bad);
    return 0;
}
"""


def test_the_armv6m_requantization_equals_the_int64_one(tmp_path):
    """The 32-bit requantization the Cortex-M0+ build runs (sc_rq_v6m) gives the bytes of
    the int64 reference for every accumulator, bias, multiplier and shift tried: built for
    the host with the ARMv6-M path on (-O0 keeps the assembly out)."""
    import shutil
    import subprocess

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc: apt-get install gcc")
    kernels = Path(sc.deploy.__file__).parent / "c"
    (tmp_path / "sc_config.h").write_text("#define SC_LITERT_ROUNDING 0\n")
    (tmp_path / "check.c").write_text(ARMV6M_REQUANT_CHECK)
    binary = tmp_path / "check"
    subprocess.run(
        [
            "gcc",
            "-O0",
            "-D__ARM_ARCH_6M__",
            f"-I{tmp_path}",
            f"-I{kernels}",
            str(tmp_path / "check.c"),
            "-o",
            str(binary),
        ],
        check=True,
    )
    out = subprocess.run(
        [str(binary), "3000000", "88172645463325252"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "0", out
