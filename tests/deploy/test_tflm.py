"""The .tflite export run by TensorFlow Lite Micro's own kernels (and LiteRT's reference
kernels in their rounding mode): bit for bit equal to run_int8 and to the generated C, on
every zoo model and on random networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secateurs as sc

pytest.importorskip("tflite_micro", reason="pip install tflite-micro (a test extra)")

ZOO = [(task, name) for task in ("digits", "mnist1d", "kws") for name in sc.models.list_models()]
SMALLER = {"xception": {"width": 0.25, "middle_blocks": 2}}  # 22.9 M params by default


def _with_statistics(model, task, n=256):
    """BatchNorm statistics from data, so an untrained model's outputs vary with the input
    (the arithmetic checked is the same as a trained model's)."""
    with torch.no_grad():
        model.train()(task.train.tensors[0][:n])
    return model.eval()


def _outputs(q, x_q):
    return q.run_int8(x_q).reshape(len(x_q), -1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize(("task_name", "name"), ZOO, ids=[f"{t}-{n}" for t, n in ZOO])
def test_every_zoo_model_runs_in_tflm_bit_for_bit_like_run_int8(task_name, name, request, tmp_path):
    task = request.getfixturevalue(task_name)
    model = _with_statistics(sc.models.create(name, task, seed=0, **SMALLER.get(name, {})), task)
    q = sc.quant.quantize(model, task)
    assert q.rounding == "tflm"  # the default
    path = sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    x = task.test.tensors[0][:32]
    v = sc.deploy.verify_tflite(q, path, x)
    assert v.target == "tflm" and v.inputs == len(x)
    assert len(np.unique(_outputs(q, q.quantize_input(x)))) > 5  # outputs that vary
    assert v.bit_exact, f"{v.mismatches} values differ, by up to {v.max_abs_diff}"


def _random_case(seed: int):
    net = sc.models.random_net(seed)
    return net, torch.randn(128, *net.input_shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6))
def test_random_nets_run_bit_for_bit_in_tflm_litert_and_the_c(seed, tmp_path_factory):
    net, x = _random_case(seed)
    out = tmp_path_factory.mktemp("net")
    for rounding in ("tflm", "litert"):
        q = sc.quant.quantize(net, x, rounding=rounding)
        path = sc.deploy.export_tflite(q, out / f"{rounding}.tflite")
        v = sc.deploy.verify_tflite(q, path, x[:32])
        assert v.target == rounding and v.bit_exact, (seed, rounding, v)
    sc.deploy.export_c(q, out / "c")
    assert sc.deploy.verify_c(q, out / "c", x[:32]).bit_exact


def test_tflm_mean_folds_the_count_into_the_multiplier(tmp_path):
    """A global mean over 7 positions: 1/7 is folded into the multiplier, which differs
    from the old rule (rescale, then divide by the count with rounding) on some sums."""
    from secateurs.quant.fixedpoint import multiply_by_quantized_multiplier as mbqm
    from secateurs.quant.integer import mean_multiplier
    from secateurs.quant.observers import QParams

    x, y = QParams(0.02, -3), QParams(0.0137, 5)
    m, s = mean_multiplier(x, y, 7)
    m0, s0 = sc.quant.fixedpoint.quantize_multiplier(0.02 / 0.0137)
    assert s == s0 - 2 and m == (m0 << 2) // 7  # floor(log2(7)) = 2 bits folded in
    sums = torch.arange(-900, 900)
    old = mbqm(sums, m0, s0)
    old = torch.where(old > 0, (old + 3) // 7, -((-old + 3) // 7))
    assert (mbqm(sums, m, s) != old).any()  # the rules differ, so the test can tell them


def test_run_tflite_names_the_missing_runtime_and_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of tflm, litert"):
        sc.deploy.run_tflite(tmp_path / "m.tflite", torch.zeros(1, 4), (4,), runtime="tfl")
    with pytest.raises(FileNotFoundError, match="export_tflite"):
        sc.deploy.run_tflite(tmp_path / "none.tflite", torch.zeros(1, 4), (4,))


class Strided(torch.nn.Module):
    def __init__(self, cin=1):
        super().__init__()
        self.a = torch.nn.Conv2d(cin, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
        self.pool = torch.nn.MaxPool2d(3, 2, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.b(torch.relu(self.a(x))))).mean((2, 3)))


@pytest.mark.parametrize(
    ("side", "widen", "pads"), [(9, True, 0), (8, True, 1), (8, False, 2), (8, None, 1)]
)
def test_padding_is_same_where_it_places_windows_as_pytorch_does(side, widen, pads, tmp_path):
    """Stride 1, and stride 2 on an odd size, pad as SAME does (no PAD op). Stride 2 on an
    even size starts its windows one pixel before SAME's: the convolution gains a zero row
    and column and pads SAME (or keeps a PAD, ``widen_kernels=False``; by default the
    cheaper, here the 28 zero taps of a depthwise convolution against a 400-byte copy); max
    pooling, where an extra tap would see a real pixel, keeps its PADV2."""
    torch.manual_seed(0)
    x = torch.randn(64, 1, side, side)
    q = sc.quant.quantize(Strided().eval(), x)
    path = sc.deploy.export_tflite(q, tmp_path / "m.tflite", widen_kernels=widen)
    assert sum(n in ("PAD", "PADV2") for n in sc.deploy.tflite_operators(path)) == pads
    assert sc.deploy.verify_tflite(q, path, x[:16]).bit_exact


def test_flattening_a_one_channel_input_into_a_linear_layer_copies_nothing(kws, tmp_path):
    q = sc.quant.quantize(sc.models.create("mlp", kws, seed=0), kws)
    path = sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    assert set(sc.deploy.tflite_operators(path)) == {"FULLY_CONNECTED"}
    assert sc.deploy.verify_tflite(q, path, kws.test.tensors[0][:16]).bit_exact


class GlobalMean(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_a_mean_that_keeps_its_input_parameters_folds_the_count_too(digits, tmp_path):
    """Where the mean's output has its input's scale and zero point, TFLM still folds
    1/count into the multiplier (no truncating division of the raw sum)."""
    from secateurs.quant.ptq import build, calibrate

    torch.manual_seed(0)
    model = GlobalMean().eval()
    graph, scheme, bits, qparams = calibrate(model, digits, "int8", "minmax", 8, None)
    mean = next(n for n in graph.nodes if n.kind == "mean")
    qparams[mean.outputs[0]] = qparams[mean.inputs[0]]
    q = build(graph, model, qparams, scheme, bits)
    path = sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    assert sc.deploy.verify_tflite(q, path, digits.test.tensors[0][:64]).bit_exact


def test_an_arena_too_small_for_tflm_is_named(digits, tmp_path):
    q = sc.quant.quantize(sc.models.create("lenet5", digits, seed=0), digits)
    path = sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    x_q = q.quantize_input(digits.test.tensors[0][:2])
    with pytest.raises(RuntimeError, match=r"could not run .* in an arena of 1000 bytes"):
        sc.deploy.run_tflite(path, x_q, (10,), arena_size=1000)
    got = sc.deploy.run_tflite(path, x_q, (10,))  # the default grows until the model fits
    assert (got == q.run_int8(x_q).numpy()).all()


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2"])
def test_collapsed_untrained_layers_stay_bit_exact(name, digits, tmp_path):
    """Untrained, these models collapse to activations of scale ~1e-7: a ReLU6 bound that
    does not fit in int32 once quantized (TFLite refuses it; it clamps nothing, so it is
    written as ReLU) and biases that would fill the int32 accumulator (their weight step
    is raised until bias and products fit, as the TFLite converter does)."""
    model = sc.models.create(name, digits, seed=0).eval()
    x = digits.test.tensors[0][:32]
    for rounding in ("tflm", "litert"):
        q = sc.quant.quantize(model, digits, rounding=rounding)
        path = sc.deploy.export_tflite(q, tmp_path / f"{rounding}.tflite")
        assert sc.deploy.verify_tflite(q, path, x).bit_exact, rounding
    sc.deploy.export_c(q, tmp_path / "c")
    assert sc.deploy.verify_c(q, tmp_path / "c", x).bit_exact


def test_bias_too_large_for_the_accumulator_raises_the_weight_step():
    from secateurs.quant.integer import bias_safe_scale
    from secateurs.quant.observers import QParams

    w, b, x = torch.full((2, 100), 0.01), torch.tensor([0.5, 1e-9]), QParams(1e-9, -128)
    step = bias_safe_scale(w, b, x, 8)
    assert step[1] == pytest.approx(0.01 / 127)  # an ordinary bias: the max-magnitude step
    room = 2**31 - 1 - 100 * 255 * 127
    assert 0.5 / (x.scale * step[0]) <= room < 0.5 / (x.scale * step[0] * 0.999)


def _tflm_head(path, capfd) -> int:
    """TFLM's planned tensor memory (its arena head) for ``path``."""
    import re

    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_file(str(path), arena_size=1 << 20)
    interp.set_input(np.zeros(interp.get_input_details(0)["shape"], dtype=np.int8), 0)
    interp.invoke()
    capfd.readouterr()
    interp.print_allocations()
    return int(re.search(r"allocation head (\d+) bytes", "".join(capfd.readouterr())).group(1))


def test_the_offline_memory_plan_puts_tflm_on_the_c_arena(mnist1d, tmp_path, capfd):
    """ResNet-8 on MNIST-1D adds its residuals in place in the C; with the plan stored in
    the file TFLM does too, and its arena head equals the C arena (without it, TFLM's own
    planner needs a third more)."""
    model = _with_statistics(sc.models.create("resnet8", mnist1d, seed=0), mnist1d)
    q = sc.quant.quantize(model, mnist1d)
    planned = sc.deploy.export_tflite(q, tmp_path / "plan.tflite")
    online = sc.deploy.export_tflite(q, tmp_path / "online.tflite", memory_plan=False)
    arena = sc.deploy.export_c(q, tmp_path / "c")["arena_bytes"]
    x = mnist1d.test.tensors[0][:16]
    assert sc.deploy.verify_tflite(q, planned, x).bit_exact
    head, head_online = _tflm_head(planned, capfd), _tflm_head(online, capfd)
    assert head <= 1.05 * arena < 1.05 * head_online / 1.2


def test_compact_files_keep_what_tflm_reads(digits, tmp_path):
    """One zero point per weight tensor and no bias scales: 20 bytes less per channel,
    the same outputs in TFLM; ``compact=False`` writes the converter's layout, which LiteRT
    also loads."""
    from ai_edge_litert import schema_py_generated as schema

    model = _with_statistics(sc.models.create("lenet5", digits, seed=0), digits)
    q = sc.quant.quantize(model, digits)
    lean = sc.deploy.export_tflite(q, tmp_path / "lean.tflite")
    full = sc.deploy.export_tflite(q, tmp_path / "full.tflite", compact=False)
    x = digits.test.tensors[0][:16]
    assert sc.deploy.verify_tflite(q, lean, x).bit_exact
    assert sc.deploy.verify_tflite(q, full, x).bit_exact
    with pytest.raises(ValueError, match="compact=False"):
        sc.deploy.run_tflite(lean, q.quantize_input(x), (10,), runtime="litert")
    assert (
        sc.deploy.run_tflite(full, q.quantize_input(x), (10,), runtime="litert")
        == q.run_int8(q.quantize_input(x)).numpy()
    ).mean() > 0.95
    channels = sum(c.weight.shape[0] for c in q.layers.values())
    assert full.stat().st_size - lean.stat().st_size >= 20 * channels
    sub = schema.ModelT.InitFromObj(schema.Model.GetRootAs(lean.read_bytes(), 0)).subgraphs[0]
    per_channel = [
        t.quantization
        for t in sub.tensors
        if t.quantization is not None and len(t.quantization.scale) > 1
    ]
    assert per_channel and all(len(qp.zeroPoint) == 1 for qp in per_channel)


NATIVE = {
    "hardswish": (torch.nn.Hardswish, ["HARD_SWISH"], 1),
    "sigmoid": (torch.nn.Sigmoid, ["LOGISTIC"], 1),
    "tanh": (torch.nn.Tanh, ["TANH"], 1),
    "silu": (torch.nn.SiLU, ["LOGISTIC", "MUL"], None),  # sigmoid on steps of 1/256
    "hardsigmoid": (torch.nn.Hardsigmoid, ["ADD", "MUL"], 1),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", list(NATIVE))
def test_table_activations_run_as_the_runtimes_own_kernels_bit_for_bit(act, seed, tmp_path):
    """A table activation the runtimes compute with int8 kernels of their own runs as
    those kernels instead of CAST + ADD + GATHER with int32 indices, equal to run_int8 in
    TFLM and LiteRT (each with its own arithmetic); the table stays within one step of
    the rounded float function (SiLU: within |x|/512, the sigmoid's step times x)."""
    module, ops, bound = NATIVE[act]
    g = torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 1), module())
    with torch.no_grad():
        model[0].weight.mul_(float(torch.rand(1, generator=g)) * 6 + 0.3)
        model[0].bias.add_(float(torch.randn(1, generator=g)) * 2)
    x = torch.linspace(-4, 4, 256).repeat(4, 1, 1) * (torch.rand(4, 1, 1, generator=g) * 2)
    for rounding in ("tflm", "litert"):
        q = sc.quant.quantize(model, x, rounding=rounding)
        path = sc.deploy.export_tflite(q, tmp_path / f"{rounding}.tflite")
        assert sc.deploy.tflite_operators(path) == ["CONV_2D", *ops]
        assert sc.deploy.verify_tflite(q, path, x).bit_exact, rounding
    index = next(i for i, n in enumerate(q.graph.nodes) if n.kind == "lut")
    node = q.graph.nodes[index]
    qx, qy = q.qparams[node.inputs[0]], q.qparams[node.outputs[0]]
    levels = torch.arange(-128, 128)
    real_x = qx.dequantize(levels).double()
    real = qy.dequantize(q.ops[index].table_for("tflm"))
    ends = qy.dequantize(torch.tensor([-128, 127])).double()
    expected = module()(real_x).clamp(*ends)  # the output's range bounds any table
    if bound is None:
        assert ((real - expected).abs() <= real_x.abs() / 512 + qy.scale).all()
    else:
        assert ((real - expected).abs() <= bound * qy.scale * 1.001).all()


def test_logistic_is_tflm_fixed_point_not_the_rounded_float(tmp_path):
    """Near saturation TFLM's gemmlowp logistic and the rounded float sigmoid part by one
    step on an input step of ~2: run_int8 follows TFLM, and LiteRT's float32 table in
    its mode; a table of the rounded float fails TFLM, so the check can fail."""
    scale, zero = 2.0105042457580566, 73
    lo, hi = -(zero + 128) * scale, (127 - zero) * scale
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 1, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    x = torch.linspace(lo, hi, 256).reshape(1, 1, 256)
    q = sc.quant.quantize(model, x)
    qx = q.qparams[q.graph.nodes[1].inputs[0]]
    assert (qx.scale, qx.zero_point) == (scale, zero)
    path = sc.deploy.export_tflite(q, tmp_path / "m.tflite")
    assert sc.deploy.verify_tflite(q, path, x).bit_exact
    levels = torch.arange(-128, 128)
    rounded = torch.clamp(
        torch.round(torch.sigmoid(qx.dequantize(levels).double()) * 256) - 128, -128, 127
    ).to(torch.int64)
    assert int((q.ops[1].table != rounded).sum()) == 1
    q.ops[1].table = rounded
    assert not sc.deploy.verify_tflite(q, path, x).bit_exact
    ql = sc.quant.quantize(model, x, rounding="litert")
    assert sc.deploy.verify_tflite(
        ql, sc.deploy.export_tflite(ql, tmp_path / "l.tflite"), x
    ).bit_exact
    assert torch.equal(ql.ops[1].table_for("litert"), rounded)


def test_sigmoid_output_takes_the_fixed_quantization_unless_shared(tmp_path):
    """A sigmoid's output is quantized as TFLite's LOGISTIC writes it (1/256, -128), in
    PTQ and through QAT; concatenated with another branch it keeps the shared observed
    range, and its table runs as a GATHER."""

    class Concat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv1d(1, 2, 1), torch.nn.Conv1d(1, 2, 1)

        def forward(self, x):
            return torch.cat([torch.sigmoid(self.a(x)), torch.relu(self.b(x))], 1)

    x = torch.randn(16, 1, 32, generator=torch.Generator().manual_seed(0))
    plain = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 1), torch.nn.Sigmoid())
    q = sc.quant.quantize(plain, x)
    out = q.qparams[q.graph.output]
    assert (out.scale, out.zero_point) == (1 / 256, -128)
    qat = sc.quant.prepare_qat(plain, x)
    qat.train()
    for _ in range(3):
        qat(x * 5)
    out = sc.quant.convert(qat).qparams[qat.graph.output]
    assert (out.scale, out.zero_point) == (1 / 256, -128)
    q = sc.quant.quantize(Concat(), x)
    assert q.qparams[q.graph.output].scale != 1 / 256
    ops = sc.deploy.tflite_operators(sc.deploy.export_tflite(q, tmp_path / "c.tflite"))
    assert "GATHER" in ops and "LOGISTIC" not in ops
    assert sc.deploy.verify_tflite(q, tmp_path / "c.tflite", x).bit_exact
