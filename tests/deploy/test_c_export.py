"""Generated C, compiled with the system gcc, against the integer reference, bit for bit."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.deploy import cortex_m

ZOO = [
    ("mlp", {}),
    ("lenet_300_100", {}),
    ("lenet5", {}),
    ("resnet8", {}),
    ("ds_cnn", {}),
    ("mobilenet_v1", {"width": 0.25}),
    ("mobilenet_v2", {"width": 0.35, "last_channels": 128}),
    ("shufflenet_v1", {"width": 0.5}),
    ("shufflenet_v2", {"width": 0.5}),
    ("ghostnet", {"width": 0.3}),
    ("elm", {}),
    ("mobilenet_v3", {"width": 0.35, "last_channels": 128}),
    ("efficientnet", {"width": 0.25, "depth": 0.34, "last_channels": 128}),
    ("efficientnet", {"lite": True, "width": 0.25, "depth": 0.34, "last_channels": 128}),
    ("xception", {"width": 0.0625, "middle_blocks": 1}),
    ("shufflenet_residual", {"width": 0.5}),
    ("masr_classifier", {}),
]


IDS = [n + ("_lite" if kw.get("lite") else "") for n, kw in ZOO]
_CACHE: dict = {}


def _quantized(name, task, **kwargs):
    """A zoo model trained one epoch and quantized; shared by the tests of this module."""
    key = (name, task.name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        model = sc.models.create(name, task, seed=0, **kwargs)
        sc.fit(model, task, epochs=1, lr=3e-3, seed=0, progress=False)
        _CACHE[key] = (model, sc.quant.quantize(model, task))
    return _CACHE[key]


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
@pytest.mark.parametrize(("name", "kwargs"), ZOO, ids=IDS)
def test_every_zoo_model_compiles_and_matches_run_int8_bit_for_bit(
    name, kwargs, task_name, request, tmp_path
):
    task = request.getfixturevalue(task_name)
    _, q = _quantized(name, task, **kwargs)
    report = sc.deploy.export_c(q, tmp_path, target="cortex-m4")
    result = sc.deploy.verify_c(q, tmp_path, task.test.tensors[0][:64])
    assert result.inputs == 64
    assert result.bit_exact, f"{result.mismatches} values differ, by up to {result.max_abs_diff}"
    assert report["arena_lower_bound"] <= report["arena_bytes"]
    # never below the smallest encodings sc.measure counts (ELM's elastic-net head is
    # sparse enough for the bitmask)
    assert report["flash_bytes"] >= q.flash_bytes() - 1
    assert report["macs"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
@pytest.mark.parametrize(("name", "kwargs"), ZOO, ids=IDS)
def test_every_zoo_model_is_bit_exact_with_sparse_kernels(
    name, kwargs, task_name, request, tmp_path
):
    """90% of filterlets (single weights in fully connected layers) pruned, every layer
    that can be stored sparse stored sparse, including the filters that keep nothing and
    become constants (most of a 1x1 or depthwise layer's at this sparsity)."""
    task = request.getfixturevalue(task_name)
    model = sc.models.create(name, task, seed=0, **kwargs)
    sc.prune.sparsify(model, sparsity=0.9, scope="local", granularity="filterlet")
    sc.prune.strip(model)
    q = sc.quant.quantize(model, task)
    report = sc.deploy.export_c(q, tmp_path, sparse="always")
    assert any(r["encoding"] in ("filterlet", "bitmask") for r in report["layers"])
    result = sc.deploy.verify_c(q, tmp_path, task.test.tensors[0][:16])
    assert result.bit_exact, f"{result.mismatches} values differ, by up to {result.max_abs_diff}"


@pytest.mark.parametrize("bits", [4, 2, "mixed"])
def test_sub_8_bit_weights_are_packed_in_c_and_bit_exact(bits, digits, tmp_path):
    model, _ = _quantized("resnet8", digits)
    weight_bits = {"stem.0": 4, "head.fc": 2} if bits == "mixed" else bits
    q = sc.quant.quantize(model, digits, weight_bits=weight_bits)
    report = sc.deploy.export_c(q, tmp_path)
    assert report["flash_bytes"] == q.flash_bytes("dense")  # stored as counted
    packed = [r for r in report["layers"] if (r["encoding"] or "").startswith("packed")]
    expected = (
        2 if bits == "mixed" else sum(r["kind"] in ("conv", "linear") for r in report["layers"])
    )
    assert len(packed) == expected and report["scratch_bytes"] > 0
    assert sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:32]).bit_exact


def test_sparse_fully_connected_layers_use_the_bitmask_where_it_pays(digits, tmp_path):
    model, _ = _quantized("lenet_300_100", digits)
    x = digits.test.tensors[0][:32]
    for sparsity, auto in ((0.5, "dense"), (0.9, "bitmask")):
        m = copy.deepcopy(model)
        sc.prune.sparsify(m, sparsity=sparsity, scope="local")
        q = sc.quant.quantize(sc.prune.strip(m), digits)
        out = {}
        for mode in ("never", "auto", "always"):
            report = sc.deploy.export_c(q, tmp_path / f"{sparsity}-{mode}", sparse=mode)
            check = sc.deploy.verify_c(q, tmp_path / f"{sparsity}-{mode}", x)
            assert check.bit_exact, (sparsity, mode, check.mismatches)
            out[mode] = report
        assert {r["encoding"] for r in out["auto"]["layers"] if r["encoding"]} == {auto}
        assert {r["encoding"] for r in out["always"]["layers"] if r["encoding"]} == {"bitmask"}
        assert out["always"]["flash_bytes"] < out["never"]["flash_bytes"]
    # at 90% the bitmask stores a bit per weight and the kept bytes: about 0.28 of dense
    assert out["auto"]["flash_bytes"] < 0.3 * out["never"]["flash_bytes"]
    # within 1% of the smallest encoding sc.measure knows (CSR, which the C lacks, wins
    # on the last, 10-row layer)
    assert q.flash_bytes() <= out["auto"]["flash_bytes"] < 1.01 * q.flash_bytes()


def test_packing_puts_low_bits_first_in_twos_complement():
    from secateurs.deploy.lower import pack

    assert pack(np.array([1, -1, -8, 7, 3]), 4).tolist() == [0xF1, 0x78, 0x03]
    assert pack(np.array([1, -1, 0, -2, 1]), 2).tolist() == [0b10001101, 0b01]


def test_the_c_output_changes_with_the_input(digits, tmp_path):
    """Guards the comparison itself: different inputs give different C outputs."""
    _, q = _quantized("lenet5", digits)
    sc.deploy.export_c(q, tmp_path)
    binary = sc.deploy.compile_c(tmp_path)
    x = q.quantize_input(digits.test.tensors[0][:8])
    out = sc.deploy.run_c(binary, x, digits.num_classes)
    assert len({bytes(row) for row in out}) > 1
    assert (out.argmax(1) == q.run_int8(x).argmax(1).numpy()).all()


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_instruction_counts_are_deterministic_and_follow_the_macs(digits, tmp_path):
    counts = {}
    for name in ("mlp", "lenet5"):
        _, q = _quantized(name, digits)
        report = sc.deploy.export_c(q, tmp_path / name)
        binary = sc.deploy.compile_c(tmp_path / name)
        x = q.quantize_input(digits.test.tensors[0][:4])
        counts[name] = sc.deploy.count_instructions(binary, x)
        assert counts[name] == sc.deploy.count_instructions(binary, x)  # deterministic
        # other inputs take other branches (clamps, ReLUs) but not many
        assert counts[name] == pytest.approx(sc.deploy.count_instructions(binary, x[2:]), rel=0.02)
        assert counts[name] > report["macs"]  # at least one instruction per MAC
    assert counts["lenet5"] > counts["mlp"]  # lenet5 does several times the MACs
    # a target that is no emulated core: the host count, the target's cycles per instruction
    est = sc.deploy.estimate_c(q, tmp_path / "lenet5", digits.test.tensors[0][:4], target="generic")
    generic = sc.measure.get_target("generic")
    assert est["instructions"] == counts["lenet5"]
    assert est["latency_ms"] == pytest.approx(1e3 * counts["lenet5"] / generic.clock_hz)
    assert "host build" in est["model"] and "estimate" in est["model"]
    report = json.loads((tmp_path / "lenet5" / "report.json").read_text())
    assert report["estimates"] == est


@pytest.mark.skipif(bool(cortex_m.toolchain_missing()), reason="needs the Arm cross toolchain")
def test_target_estimates_count_on_the_emulated_core(digits, tmp_path):
    _, q = _quantized("lenet5", digits)
    sc.deploy.export_c(q, tmp_path)
    x = digits.test.tensors[0][:2]
    est = sc.deploy.estimate_c(q, tmp_path, x, target="cortex-m4")
    m4, core = sc.measure.get_target("cortex-m4"), cortex_m.get_core("cortex-m4")
    run = cortex_m.run(cortex_m.build(tmp_path, "cortex-m4"), q.quantize_input(x), 10)
    assert est["instructions"] == round(np.mean(run.instructions))
    assert est["cycles_per_instruction"] == core.cycles_per_instruction
    assert est["latency_ms"] == pytest.approx(1.2e3 * est["instructions"] / m4.clock_hz)
    assert est["energy_mj"] == pytest.approx(m4.active_power_mw * est["latency_ms"] / 1e3)
    assert "mps2-an386" in est["model"] and "estimate" in est["model"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["estimates"] == est and "cortex-m4-O2" in report["cortex_m"]


def test_filterlet_sparse_kernels_are_bit_exact_smaller_and_do_fewer_macs(digits, tmp_path):
    model = sc.models.create("resnet8", digits, seed=0)
    sc.fit(model, digits, epochs=1, lr=3e-3, progress=False)
    sc.prune.sparsify(model, sparsity=0.8, granularity="filterlet")
    sc.prune.strip(model)
    q = sc.quant.quantize(model, digits)
    x = digits.test.tensors[0][:32]
    reports = {}
    for sparse in ("never", "auto", "always"):
        out = tmp_path / sparse
        reports[sparse] = sc.deploy.export_c(q, out, sparse=sparse)
        assert sc.deploy.verify_c(q, out, x).bit_exact, sparse
    encodings = [row["encoding"] for row in reports["auto"]["layers"] if row["encoding"]]
    assert "filterlet" in encodings
    assert all(e == "dense" for r in reports["never"]["layers"] if (e := r["encoding"]))
    assert reports["auto"]["flash_bytes"] < 0.4 * reports["never"]["flash_bytes"]
    assert reports["auto"]["macs"] < 0.4 * reports["never"]["macs"]


@pytest.mark.slow
def test_sanitizers_find_nothing_in_a_sparse_residual_model(digits, tmp_path):
    model = sc.models.create("mobilenet_v2", digits, seed=0, width=0.35, last_channels=128)
    sc.prune.sparsify(model, sparsity=0.6, granularity="filterlet")
    sc.prune.strip(model)
    q = sc.quant.quantize(model, digits)
    sc.deploy.export_c(q, tmp_path, sparse="auto")
    result = sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:16], sanitize=True)
    assert result.bit_exact


def test_generated_code_is_plain_c99_without_malloc_or_floats(digits, tmp_path):
    _, q = _quantized("resnet8", digits)
    sc.deploy.export_c(q, tmp_path)
    for name in ("model.c", "weights.c", "sc_kernels.c", "sc_kernels.h"):
        text = (tmp_path / name).read_text()
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        assert not re.search(r"\b(malloc|calloc|free|float|double)\b", code), name
        includes = set(re.findall(r"#include [<\"]([^>\"]+)[>\"]", code))
        assert includes <= {
            "stdint.h",
            "string.h",
            "model.h",
            "sc_kernels.h",
            "weights.h",
            "sc_config.h",
            "sc_kernels_dsp.h",  # where the compiler has the Arm DSP extension
            "arm_acle.h",  # the compiler's own intrinsics, on that path only
        }
    header = (tmp_path / "model.h").read_text()
    assert "int secateurs_invoke(const int8_t *input, int8_t *output);" in header
    assert f"#define SECATEURS_OUTPUT_SIZE {digits.num_classes}" in header


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("conv*/ #include <evil>", nn.Conv2d(1, 4, 3, padding=1))
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(getattr(self, "conv*/ #include <evil>")(x)).flatten(1))


def test_layer_names_reach_the_c_only_sanitized(digits, tmp_path):
    q = sc.quant.quantize(Odd(), digits)
    sc.deploy.export_c(q, tmp_path)
    text = (tmp_path / "model.c").read_text()
    assert "evil" in text and "<evil>" in text  # the name is there, as a comment
    assert "*/ #include" not in text and text.count("#include") == 3
    assert sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:8]).bit_exact


def test_the_memory_plan_reaches_its_lower_bound_and_never_overlaps_live_buffers(digits):
    for name, kwargs in ZOO[:10]:
        _, q = _quantized(name, digits, **kwargs)
        program, memory = sc.deploy.build_program(q)
        lives = memory.lifetimes
        assert set(lives) == {program.buffer(v) for v in lives}  # slices live in their owner
        for a in lives:
            for b in lives:
                if a < b and lives[a][0] <= lives[b][1] and lives[b][0] <= lives[a][1]:
                    ra = (memory.offsets[a], memory.offsets[a] + program.sizes[a])
                    rb = (memory.offsets[b], memory.offsets[b] + program.sizes[b])
                    assert ra[1] <= rb[0] or rb[1] <= ra[0], (name, a, b)
        assert memory.arena_bytes == memory.lower_bound, name


def test_concatenations_of_whole_tensors_cost_no_copy(digits, tmp_path):
    _, q = _quantized("ghostnet", digits, width=0.3)
    program, memory = sc.deploy.build_program(q)
    ghost = [n for n in q.graph.nodes if n.kind == "move" and len(set(n.inputs)) == 2]
    assert ghost and len(memory.concats) == len(ghost)  # every ghost module's concat
    assert not [op for op in program.ops if op.kernel == "sc_copy"]
    for v, (owner, offset) in program.slices.items():
        assert offset >= 0 and offset + program.sizes[v] <= program.sizes[owner]
    sc.deploy.export_c(q, tmp_path)
    assert sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:16]).bit_exact


class Concats(nn.Module):
    """Concatenations the planner must copy or place with care: a repeated input, an
    input read again after the concatenation, a concatenation of a concatenation, one
    along the width (not whole slices of channels) and one of the model's input."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
        self.c = nn.Conv2d(10, 4, 1)
        self.fc = nn.Linear(4 * 8 * 16 + 8 * 8 * 2, 10)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), self.b(x)
        ab = torch.cat([a, b], 1)
        aa = torch.cat([a, a], 1)  # the same tensor twice
        both = torch.cat([ab, aa[:, :5]], 1)  # a concatenation of a concatenation
        y = self.c(both) + torch.cat([a, a[:, :1]], 1)  # a read again afterwards
        wide = torch.cat([y, torch.relu(y)], 3)  # along the width
        return self.fc(torch.cat([wide.flatten(1), torch.cat([x, x], 1).flatten(1)], 1))


def test_concatenations_stay_exact_wherever_they_are_placed(digits, tmp_path):
    q = sc.quant.quantize(Concats(), digits)
    _program, memory = sc.deploy.build_program(q)
    assert memory.concats  # at least [a, b] is placed in its output
    sc.deploy.export_c(q, tmp_path)
    result = sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:32], sanitize=True)
    assert result.bit_exact, f"{result.mismatches} values differ"


def test_residual_adds_run_in_place(digits):
    _, q = _quantized("resnet8", digits)
    program, memory = sc.deploy.build_program(q)
    adds = [i for i, op in enumerate(program.ops) if op.kind == "add"]
    assert adds and set(adds) <= set(memory.inplace)


def test_report_json_lists_every_kernel(digits, tmp_path):
    _, q = _quantized("ds_cnn", digits)
    report = sc.deploy.export_c(q, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == report
    kinds = [row["kind"] for row in saved["layers"]]
    assert kinds.count("conv") == sum(n.kind == "conv" for n in q.graph.nodes)
    assert saved["flash_bytes"] == sum(row["const_bytes"] for row in saved["layers"])
    assert saved["macs"] == sum(row["macs"] for row in saved["layers"])


def test_export_fails_when_the_model_does_not_fit_the_target(digits, tmp_path):
    _, q = _quantized("mobilenet_v2", digits, width=0.5)  # about 700 KB of constants
    fit = sc.measure.check(q, target="cortex-m0plus")
    assert not fit.ok and any("flash" in p for p in fit.problems)
    with pytest.raises(ValueError, match="does not fit cortex-m0plus: flash"):
        sc.deploy.export_c(q, tmp_path / "out", target="cortex-m0plus")
    assert not (tmp_path / "out").exists()
    assert sc.measure.check(q, target="cortex-m4").ok


def test_export_fails_naming_an_op_the_target_lacks(digits, tmp_path):
    _, q = _quantized("ghostnet", digits, width=0.3)  # hard-sigmoid gates are tables
    no_lut = sc.measure.Target(
        "tiny-core", 10**6, 10**7, 48_000_000, 5.0, kernels=sc.measure.target.ALL_KERNELS - {"lut"}
    )
    assert "['lut']" in sc.measure.check(q, target=no_lut).problems[0]
    with pytest.raises(ValueError, match="tiny-core has no kernel for \\['lut'\\]"):
        sc.deploy.export_c(q, tmp_path, target=no_lut)


def test_check_measures_float_models_too(digits):
    model = sc.models.create("lenet5", digits)
    fit = sc.measure.check(model, target="cortex-m4", example=digits.example_inputs())
    assert fit.ok and 0 < fit.flash_bytes < 10**5 and fit.sram_bytes > 0
    with pytest.raises(ValueError, match="example inputs"):
        sc.measure.check(model, target="cortex-m4")


def test_unknown_target_and_bad_arguments_are_named(digits, tmp_path):
    _, q = _quantized("mlp", digits)
    with pytest.raises(ValueError, match=r"unknown target 'cortex-m99'.*cortex-m4"):
        sc.deploy.export_c(q, tmp_path, target="cortex-m99")
    with pytest.raises(ValueError, match="sparse must be one of"):
        sc.deploy.export_c(q, tmp_path, sparse="sometimes")
    with pytest.raises(TypeError, match="QuantizedModel"):
        sc.deploy.export_c(sc.models.create("mlp", digits), tmp_path)


REQUANTIZE_HARNESS = """#include <stdio.h>
#include "sc_kernels.c"

int main(void) {
    int64_t acc;
    int32_t mult, shift;
    while (fread(&acc, 8, 1, stdin) == 1 && fread(&mult, 4, 1, stdin) == 1 &&
           fread(&shift, 4, 1, stdin) == 1) {
        const int32_t r = sc_requantize(acc, mult, shift);
        fwrite(&r, 4, 1, stdout);
    }
    return 0;
}
"""


def test_c_requantization_equals_the_integer_reference_at_every_shift(tmp_path):
    """The kernels' requantization (offset floors, no shifts of negatives) against
    multiply_by_quantized_multiplier: ties, saturation, zero, every TFLite shift."""
    sc.deploy.export_c(sc.quant.quantize(Odd(), sc.data.load("digits")), tmp_path)
    (tmp_path / "rq.c").write_text(REQUANTIZE_HARNESS)
    binary = tmp_path / "rq"
    subprocess.run(
        [
            "gcc",
            *sc.deploy.verify.CFLAGS,
            "-Wno-unused-function",
            "-o",
            str(binary),
            str(tmp_path / "rq.c"),
        ],
        check=True,
        cwd=tmp_path,
    )
    rng = np.random.default_rng(0)
    shift = np.repeat(np.arange(-31, 31), 3000)
    n = len(shift)
    mult = rng.integers(2**30, 2**31, n)
    mult[::7] = 2**30  # exact halves
    mult[1::7] = 2**31 - 1
    mult[2::7] = 0
    acc = rng.integers(-(2**31), 2**31, n)
    acc[::5] = rng.integers(-3000, 3000, n)[::5]  # the usual accumulators
    acc[1::5] = rng.choice([0, 1, -1, 2**31 - 1, -(2**31), 2**33, -(2**33)], n)[1::5]
    acc[2::5] = (rng.integers(-64, 64, n) * 2 + 1)[2::5] << rng.integers(0, 20, n)[2::5]
    record = np.zeros(n, dtype=[("acc", "<i8"), ("mult", "<i4"), ("shift", "<i4")])
    record["acc"], record["mult"], record["shift"] = acc, mult, shift
    out = subprocess.run([str(binary)], input=record.tobytes(), capture_output=True, check=True)
    got = np.frombuffer(out.stdout, dtype="<i4")
    expected = sc.quant.multiply_by_quantized_multiplier(
        torch.from_numpy(acc), torch.from_numpy(mult), torch.from_numpy(shift)
    ).numpy()
    assert len(got) == n
    np.testing.assert_array_equal(got, expected)


class Geometry(nn.Module):
    """Convolutions the zoo has few of: a 4x4 kernel (16 positions: a byte per filterlet
    count) at stride 2, dilation 2, grouped with two input channels per group, a 1x5
    kernel, depthwise at stride 3, a width-1 row, a 1x1 kernel with an odd channel count."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 4, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, dilation=2, padding=2, groups=2),
            nn.ReLU(),
            nn.Conv2d(4, 6, (1, 5), padding=(0, 2)),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, stride=3, padding=1, groups=6),
            nn.ReLU(),
            nn.Conv2d(6, 8, (2, 1), stride=(1, 2)),
            nn.ReLU(),
            nn.Conv2d(8, 5, 1),
        )
        self.fc = nn.Linear(5 * 1 * 1, 10)

    def forward(self, x):
        return self.fc(self.convs(x).flatten(1))


@pytest.mark.parametrize("sparse", ["never", "always"])
def test_row_by_row_convolutions_are_exact_at_every_stride_dilation_and_group(
    sparse, digits, tmp_path
):
    model = Geometry()
    sc.fit(model, digits, epochs=1, lr=3e-3, seed=0, progress=False)
    if sparse == "always":
        sc.prune.sparsify(model, sparsity=0.5, granularity="filterlet")
        sc.prune.strip(model)
    q = sc.quant.quantize(model, digits)
    report = sc.deploy.export_c(q, tmp_path, sparse=sparse)
    kernels = {r["kernel"] for r in report["layers"] if r["kind"] == "conv"}
    assert kernels == {"sc_conv_filterlet" if sparse == "always" else "sc_conv"}
    # the DSP paths' largest need. Dense: the 1x5 convolution's (4 -> 6 channels on a
    # 4-wide map): per output channel a weight sum, bias, multiplier, shift and two
    # accumulators, two im2col columns of 5 * 4 bytes (as bytes and as int16 pairs), one
    # input row of 8 padded columns x 4 channels, and 4 bytes (the stem's padded plane is
    # 10 x 10 + 4). Sparse: per layer with several input channels a group, seven int32 per
    # output channel, per kernel position the live channels of two columns as int16 pairs
    # in whole words, kh input rows of the padded width's live channels, and 4 bytes
    dense = 24 * 6 + 6 * 20 + 8 * 4 + 4
    program, _ = sc.deploy.build_program(q, sparse=sparse)
    sparse_need = (
        max(
            28 * o.params["cout"]
            + 16 * -(-o.params["live"] // 4) * o.params["kh"] * o.params["kw"]
            + o.params["kh"]
            * (
                (o.params["ow"] - 1) * o.params["stride_w"]
                + (o.params["kw"] - 1) * o.params["dil_w"]
                + 1
            )
            * o.params["live"]
            + 4
            for o in program.ops
            if o.kernel == "sc_conv_filterlet" and o.params["cin"] > o.params["groups"]
        )
        if sparse == "always"
        else None
    )
    assert report["scratch_bytes"] == (sparse_need if sparse == "always" else dense)
    x = digits.test.tensors[0][:64]
    assert sc.deploy.verify_c(q, tmp_path, x).bit_exact
    assert sc.deploy.verify_c(q, tmp_path, x[:8], sanitize=True).bit_exact
    if not cortex_m.toolchain_missing():  # the DSP paths, on the emulated Cortex-M4
        assert sc.deploy.verify_c(q, tmp_path, x[:16], target="cortex-m4").bit_exact


def test_filters_without_filterlets_become_one_constant_byte(digits, tmp_path):
    from secateurs.measure.encoding import encoding_bytes
    from secateurs.quant.fold import fold_constant_channels

    model = Geometry()
    sc.fit(model, digits, epochs=1, lr=3e-3, seed=0, progress=False)
    sc.prune.sparsify(model, sparsity=0.5, granularity="filterlet")
    sc.prune.strip(model)
    with torch.no_grad():  # filters with nothing left: their outputs are constants
        model.convs[4].weight[[1, 4]] = 0
        model.convs[0].weight[2] = 0
    q = sc.quant.quantize(model, digits)
    report = sc.deploy.export_c(q, tmp_path, sparse="always")
    assert sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:64]).bit_exact
    program, _ = sc.deploy.build_program(q, sparse="always")
    folded = fold_constant_channels(q)  # what the export stores
    fills = []
    for op, row in zip(program.ops, report["layers"]):
        if op.kernel != "sc_conv_filterlet":
            continue
        weight = folded[op.index].weight
        empty = int((weight.flatten(1) == 0).all(1).sum())
        fills.append(len(op.consts["fill"].values))
        assert fills[-1] == empty
        kept = len(weight) - empty
        assert len(op.consts["bias"].values) == len(op.consts["shift"].values) == kept
        # as sc.measure counts it: the CSR, 9 bytes per filter with weights, 1 without
        csr = encoding_bytes(weight, 8, True)["filterlet_csr"]
        assert row["const_bytes"] == csr + 9 * kept + empty
    assert fills[0] >= 1 and fills[2] >= 2


class Padded(nn.Module):
    """Zero padding of a side x side image, a strided convolution and a classifier."""

    def __init__(self, side: int):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 4, stride=16)
        self.fc = nn.Linear(2 * ((side + 2 - 4) // 16 + 1) ** 2, 3)

    def forward(self, x):
        return self.fc(self.conv(nn.functional.pad(x, (1, 1, 1, 1))).flatten(1))


@pytest.mark.parametrize("side", [20, 190])
def test_copy_runs_take_int16_fields_where_every_offset_fits(side, tmp_path):
    model = Padded(side)
    x = torch.randn(8, 1, side, side, generator=torch.Generator().manual_seed(0))
    q = sc.quant.quantize(model.eval(), x)
    report = sc.deploy.export_c(q, tmp_path)
    program, _ = sc.deploy.build_program(q)
    (pad,) = [op for op in program.ops if op.kernel == "sc_copy"]
    short = side == 20  # 22 x 22 bytes; 192 x 192 = 36,864 do not fit in int16
    assert program.short_runs == short
    assert f"#define SC_SHORT_RUNS {int(short)}" in (tmp_path / "sc_config.h").read_text()
    assert pad.consts["runs"].nbytes == len(pad.consts["runs"].values) * 4 * (2 if short else 4)
    assert report["layers"][0]["const_bytes"] == pad.consts["runs"].nbytes
    assert sc.deploy.verify_c(q, tmp_path, x).bit_exact


class _Broadcasts(nn.Module):
    """Element-wise kernels on operands of both shapes: an addition and a product of a
    feature map with its per-channel mean (broadcast), and with itself (not broadcast)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        m = y.mean((2, 3), keepdim=True)
        z = (y + m) * m + y * y
        return self.head(z.mean((2, 3)))


def test_elementwise_kernels_are_exact_on_broadcast_and_whole_operands(digits, tmp_path):
    torch.manual_seed(0)
    model = _Broadcasts()
    sc.fit(model, digits, epochs=1, lr=3e-3, seed=0, progress=False)
    q = sc.quant.quantize(model, digits)
    kinds = [n.kind for n in q.graph.nodes]
    assert kinds.count("add") >= 2 and kinds.count("mul") >= 2
    sc.deploy.export_c(q, tmp_path)
    check = sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:32])
    assert check.bit_exact, check.mismatches


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
def test_flash_bytes_is_what_export_c_stores_on_every_zoo_model(task_name, request, tmp_path):
    task = request.getfixturevalue(task_name)
    for name in sc.models.list_models():
        kwargs = {"width": 0.25, "middle_blocks": 2} if name == "xception" else {}
        model = sc.models.create(name, task, seed=0, **kwargs)
        q = sc.quant.quantize(model, task, num_batches=1)
        for sparse, encoding in (("auto", "best"), ("never", "dense")):
            report = sc.deploy.export_c(q, tmp_path / f"{name}-{sparse}", sparse=sparse)
            assert q.flash_bytes(encoding) == report["flash_bytes"], (name, sparse)
