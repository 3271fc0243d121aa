"""Params and MACs of one small configuration of every zoo model, counted by hand.

Conventions: BatchNorm has 2 parameters per channel; a convolution costs output elements x
(input channels / groups) x kernel size; a Linear layer in x out. Pooling, activations,
additions and BatchNorm cost no MACs.
"""

import pytest
import torch

import secateurs as sc
from tests.conftest import synthetic_task


def _costs(name, task, **kw):
    model = sc.models.create(name, task, **kw)
    p = sc.measure.profile(model, task.example_inputs(), latency=False)
    return p.params, p.macs


def test_mlp(digits):
    params = (64 * 16 + 16) + (16 * 10 + 10)
    macs = 64 * 16 + 16 * 10
    assert _costs("mlp", digits, hidden=(16,)) == (params, macs)


def test_lenet_300_100(digits):
    params = (64 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)
    assert _costs("lenet_300_100", digits) == (params, 64 * 300 + 300 * 100 + 100 * 10)


def test_lenet5_on_images(digits):
    # conv 5x5 pad 2 at 8x8, pool to 4x4, conv 5x5 pad 2 at 4x4, pool to 2x2, 64-120-84-10
    params = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (64 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    macs = 64 * 6 * 25 + 16 * 16 * 6 * 25 + 64 * 120 + 120 * 84 + 84 * 10
    assert _costs("lenet5", digits) == (params, macs)


def test_lenet5_on_signals(mnist1d):
    # length 40 >= 32 needs no padding: conv 36, pool 18, conv 14, pool 7; 16*7 = 112 features
    params = (6 * 5 + 6) + (16 * 6 * 5 + 16) + (112 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    macs = 36 * 6 * 5 + 14 * 16 * 6 * 5 + 112 * 120 + 120 * 84 + 84 * 10
    assert _costs("lenet5", mnist1d) == (params, macs)


V1_SMALL = {"cfg": ((16, 1), (32, 2)), "stem_channels": 8}


def test_mobilenet_v1_on_images(digits):
    stem = (8 * 9 + 16, 8 * 64 * 9)
    block1 = (8 * 9 + 16 + 8 * 16 + 32, 9 * 8 * 64 + 8 * 16 * 64)  # 8x8 map
    block2 = (16 * 9 + 32 + 16 * 32 + 64, 9 * 16 * 16 + 16 * 32 * 16)  # stride 2: 4x4 map
    head = (32 * 10 + 10, 32 * 10)
    expected = tuple(map(sum, zip(stem, block1, block2, head)))
    assert _costs("mobilenet_v1", digits, **V1_SMALL) == expected


def test_mobilenet_v1_on_signals(mnist1d):
    macs = 8 * 40 * 3 + (3 * 8 * 40 + 8 * 16 * 40) + (3 * 16 * 20 + 16 * 32 * 20) + 32 * 10
    params = (8 * 3 + 16) + (8 * 3 + 16 + 8 * 16 + 32) + (16 * 3 + 32 + 16 * 32 + 64) + 330
    assert _costs("mobilenet_v1", mnist1d, **V1_SMALL) == (params, macs)


def test_mobilenet_v1_resolution_multiplier_scales_macs_by_rho_squared(digits):
    _, full = _costs("mobilenet_v1", digits, **V1_SMALL)
    _, half = _costs("mobilenet_v1", digits, resolution=0.5, **V1_SMALL)
    head = 32 * 10
    assert half - head == (full - head) // 4


def test_mobilenet_v1_width_multiplier_thins_every_layer(digits):
    # channels max(8, int(c * 0.5)): stem 8, blocks 8 and 16
    _params, macs = _costs("mobilenet_v1", digits, width=0.5, **V1_SMALL)
    assert macs == 8 * 64 * 9 + (9 * 8 * 64 + 8 * 8 * 64) + (9 * 8 * 16 + 8 * 16 * 16) + 160


def test_mobilenet_v2(digits):
    kw = {"cfg": ((1, 8, 1, 1), (2, 16, 1, 2)), "stem_channels": 8, "last_channels": 32}
    stem = (8 * 9 + 16, 8 * 64 * 9)
    block1 = (8 * 9 + 16 + 8 * 8 + 16, 9 * 8 * 64 + 8 * 8 * 64)  # t=1: depthwise, project
    block2 = (  # t=2: expand 8->16 at 8x8, depthwise stride 2, project 16->16 at 4x4
        8 * 16 + 32 + 16 * 9 + 32 + 16 * 16 + 32,
        8 * 16 * 64 + 9 * 16 * 16 + 16 * 16 * 16,
    )
    last = (16 * 32 + 64, 16 * 32 * 16)
    head = (330, 320)
    assert _costs("mobilenet_v2", digits, **kw) == tuple(
        map(sum, zip(stem, block1, block2, last, head))
    )


def test_shufflenet_v1(digits):
    # g=2, width 0.08: stage channels 16, 32, 64; stem 50*0.08 = 4; one unit per stage
    kw = {"groups": 2, "width": 0.08, "stem_channels": 50, "stage_repeats": (1, 1, 1)}
    stem = (4 * 9 + 8, 4 * 64 * 9)
    # stage 2, stride 2: 4 -> 16 (branch 12, bottleneck 4); first 1x1 not grouped
    s2 = (16 + 8 + 36 + 8 + 12 * 2 + 24, 4 * 4 * 64 + 9 * 4 * 16 + 2 * 12 * 16)
    # stage 3, stride 2: 16 -> 32 (branch 16, bottleneck 8), grouped 1x1s
    s3 = (8 * 8 + 16 + 72 + 16 + 16 * 4 + 32, 8 * 8 * 16 + 9 * 8 * 4 + 4 * 16 * 4)
    # stage 4 at 2x2 keeps stride 1 but still concatenates: 32 -> 64 (branch 32, bottleneck 16)
    s4 = (16 * 16 + 32 + 144 + 32 + 32 * 8 + 64, 16 * 16 * 4 + 9 * 16 * 4 + 8 * 32 * 4)
    head = (650, 640)
    assert _costs("shufflenet_v1", digits, **kw) == tuple(map(sum, zip(stem, s2, s3, s4, head)))


def test_shufflenet_v2(digits):
    # width 0.5 takes Table 5's 48, 96, 192; stage 2 has a downsampling and a split unit
    kw = {"width": 0.5, "stem_channels": 8, "last_channels": 64, "stage_repeats": (2, 1, 1)}
    stem = (8 * 9 + 16, 8 * 64 * 9)
    down2 = (  # 8 -> 48 at 8x8 -> 4x4: left dw+pw to 24, right pw, dw, pw to 24
        (72 + 16 + 192 + 48) + (192 + 48 + 216 + 48 + 576 + 48),
        (9 * 8 * 16 + 8 * 24 * 16) + (8 * 24 * 64 + 9 * 24 * 16 + 24 * 24 * 16),
    )
    split2 = (576 + 48 + 216 + 48 + 576 + 48, 24 * 24 * 16 + 9 * 24 * 16 + 24 * 24 * 16)
    down3 = (  # 48 -> 96 at 4x4 -> 2x2
        (432 + 96 + 2304 + 96) + (2304 + 96 + 432 + 96 + 2304 + 96),
        (9 * 48 * 4 + 48 * 48 * 4) + (48 * 48 * 16 + 9 * 48 * 4 + 48 * 48 * 4),
    )
    down4 = (  # 96 -> 192 at 2x2, stride kept at 1
        (864 + 192 + 9216 + 192) + (9216 + 192 + 864 + 192 + 9216 + 192),
        (9 * 96 * 4 + 96 * 96 * 4) + (96 * 96 * 4 + 9 * 96 * 4 + 96 * 96 * 4),
    )
    conv5 = (192 * 64 + 128, 192 * 64 * 4)
    head = (650, 640)
    expected = tuple(map(sum, zip(stem, down2, split2, down3, down4, conv5, head)))
    assert _costs("shufflenet_v2", digits, **kw) == expected


def test_ghostnet(digits):
    kw = {"cfg": ((3, 16, 16, 0, 1), (3, 24, 16, 0.25, 2)), "stem_channels": 8, "head_channels": 32}
    stem = (88, 8 * 64 * 9)
    block1 = (  # ghost 8->16 (8 intrinsic + 8 ghosts), ghost 16->16, dw+pw shortcut 8->16
        (64 + 16 + 72 + 16) + (128 + 16 + 72 + 16) + (72 + 16 + 128 + 32),
        (8 * 8 * 64 + 9 * 8 * 64) + (16 * 8 * 64 + 9 * 8 * 64) + (9 * 8 * 64 + 8 * 16 * 64),
    )
    block2 = (  # ghost 16->24 at 8x8, dw stride 2, SE 24->8->24, ghost 24->16, shortcut
        (192 + 24 + 108 + 24)
        + (216 + 48)
        + (192 + 8 + 192 + 24)
        + (192 + 16 + 72 + 16)
        + (144 + 32 + 256 + 32),
        (16 * 12 * 64 + 9 * 12 * 64)
        + 9 * 24 * 16
        + (24 * 8 + 8 * 24)
        + (24 * 8 * 16 + 9 * 8 * 16)
        + (9 * 16 * 16 + 16 * 16 * 16),
    )
    last = (16 * 24 + 48, 16 * 24 * 16)
    head = (24 * 32 + 32 + 330, 24 * 32 + 320)
    assert _costs("ghostnet", digits, **kw) == tuple(
        map(sum, zip(stem, block1, block2, last, head))
    )


def test_ds_cnn_on_mfcc_shaped_input(kws_shaped):
    # (10, 4) stride 2 'same' on 49x10 gives 25x5, as in the MLPerf Tiny reference
    stem = (40 * 8 + 16, 8 * 25 * 5 * 40)
    block = (72 + 16 + 64 + 16, 9 * 8 * 125 + 8 * 8 * 125)
    head = (8 * 12 + 12, 8 * 12)
    expected = tuple(map(sum, zip(stem, block, head)))
    assert _costs("ds_cnn", kws_shaped, channels=8, blocks=1) == expected


def test_ds_cnn_reference_shape(kws_shaped):
    model = sc.models.create("ds_cnn", kws_shaped)
    prof = sc.measure.profile(model, kws_shaped.example_inputs(), latency=False)
    convs = [r for r in prof.layers if r.op == "convolution"]
    assert convs[0].output_shape == (1, 64, 25, 5) and len(convs) == 9
    assert prof.params == (2560 + 128) + 4 * (576 + 128 + 4096 + 128) + (64 * 12 + 12)


def test_resnet8(digits):
    stem = (144 + 32, 16 * 64 * 9)
    stack1 = (2 * (2304 + 32), 2 * 16 * 16 * 9 * 64)
    stack2 = (4608 + 64 + 9216 + 64 + 512 + 32, 16 * 32 * 9 * 16 + 32 * 32 * 9 * 16 + 16 * 32 * 16)
    stack3 = (
        18432 + 128 + 36864 + 128 + 2048 + 64,
        32 * 64 * 9 * 4 + 64 * 64 * 9 * 4 + 32 * 64 * 4,
    )
    head = (650, 640)
    assert _costs("resnet8", digits) == tuple(map(sum, zip(stem, stack1, stack2, stack3, head)))


def test_elm(digits):
    assert _costs("elm", digits, hidden=32) == (64 * 32 + 32 + 32 * 10 + 10, 64 * 32 + 32 * 10)


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mobilenet_paper_cost_holds_for_every_separable_layer(width):
    """Howard et al. 2017, eq. 5: D_K·D_K·M·D_F·D_F + M·N·D_F·D_F per depthwise separable layer."""
    task = synthetic_task((3, 32, 32), num_classes=10, n=4)
    model = sc.models.create("mobilenet_v1", task, width=width)
    prof = sc.measure.profile(model, task.example_inputs(), latency=False)
    rows = {r.module: r for r in prof.layers if r.op == "convolution"}
    blocks = sorted(
        {m.split(".")[0] for m in rows if m.startswith("block")}, key=lambda b: int(b[5:])
    )
    assert len(blocks) == 13
    for b in blocks:
        dw, pw = rows[f"{b}.depthwise.0"], rows[f"{b}.pointwise.0"]
        m, d_f = dw.output_shape[1], dw.output_shape[2]
        n = pw.output_shape[1]
        assert dw.macs + pw.macs == 3 * 3 * m * d_f * d_f + m * n * d_f * d_f


def test_mobilenet_v3(digits):
    kw = {
        "cfg": ((3, 8, 8, True, False, 1), (5, 32, 16, False, True, 2)),
        "stem_channels": 8,
        "last_channels": 32,
    }
    stem = (8 * 9 + 16, 8 * 64 * 9)
    block1 = (  # no expansion (8 -> 8), depthwise, SE squeezed to 8 (the rounding's floor)
        (72 + 16) + (64 + 8 + 64 + 8) + (64 + 16),
        9 * 8 * 64 + (64 + 64) + 8 * 8 * 64,
    )
    block2 = (  # expand 8 -> 32 at 8x8, depthwise 5x5 stride 2, project 32 -> 16 at 4x4
        (256 + 64) + (32 * 25 + 64) + (512 + 32),
        8 * 32 * 64 + 25 * 32 * 16 + 32 * 16 * 16,
    )
    last = (16 * 576 + 1152, 16 * 576 * 16)  # the small layout's 1x1 to 576
    head = (576 * 32 + 32 + 330, 576 * 32 + 320)  # pool, 1x1 with bias, Linear
    assert _costs("mobilenet_v3", digits, **kw) == tuple(
        map(sum, zip(stem, block1, block2, last, head))
    )


@pytest.mark.parametrize("lite", [False, True])
def test_efficientnet(digits, lite):
    kw = {"cfg": ((1, 3, 1, 8, 1), (2, 5, 2, 16, 1)), "stem_channels": 8, "last_channels": 32}

    def se(cin, mid):  # squeezed to a quarter of the block's input width, at 1x1
        if lite:
            return (0, 0)
        r = cin // 4
        return (mid * r + r) + (r * mid + mid), 2 * mid * r

    stem = (8 * 9 + 16, 8 * 64 * 9)
    block1 = (  # t=1: depthwise, SE, project 8 -> 8
        (72 + 16) + se(8, 8)[0] + (64 + 16),
        9 * 8 * 64 + se(8, 8)[1] + 8 * 8 * 64,
    )
    block2 = (  # t=2: expand 8 -> 16 at 8x8, depthwise 5x5 stride 2, SE, project at 4x4
        (128 + 32) + (16 * 25 + 32) + se(8, 16)[0] + (256 + 32),
        8 * 16 * 64 + 25 * 16 * 16 + se(8, 16)[1] + 16 * 16 * 16,
    )
    last = (16 * 32 + 64, 16 * 32 * 16)
    head = (330, 320)
    assert _costs("efficientnet", digits, lite=lite, **kw) == tuple(
        map(sum, zip(stem, block1, block2, last, head))
    )


def test_efficientnet_compound_scaling_doubles_macs_per_step_of_phi():
    """alpha * beta^2 * gamma^2 ~ 2, and measured at 224x224 scaled by gamma^phi the MACs
    grow by about 2^phi (more at phi = 1, where single-block stages round up to two)."""
    from secateurs.models.efficientnet import compound_scaling

    d, w, r = compound_scaling(1)
    assert d * w**2 * r**2 == pytest.approx(2, abs=0.1)
    macs = []
    for phi in range(4):
        side = round(224 * compound_scaling(phi)[2])
        macs.append(_costs("efficientnet", synthetic_task((3, side, side), 10, n=2), phi=phi)[1])
    for phi in (1, 2, 3):
        assert 0.9 * 2**phi < macs[phi] / macs[0] < 1.35 * 2**phi
    assert (macs[3] / macs[0]) ** (1 / 3) == pytest.approx(2, abs=0.1)


def test_xception(digits):
    kw = {
        "stem_channels": (8, 8),
        "entry_channels": (8, 16),
        "middle_blocks": 1,
        "exit_channels": (16, 24, 32, 40),
    }

    def sep(cin, cout, pixels):  # depthwise 3x3, pointwise, BatchNorm
        return (9 * cin + cin * cout + 2 * cout, (9 * cin + cin * cout) * pixels)

    def total(*parts):
        return tuple(map(sum, zip(*parts)))

    stem = total((72 + 16, 8 * 64 * 9), (576 + 16, 8 * 8 * 9 * 64))
    entry1 = total(sep(8, 8, 64), sep(8, 8, 64), (64 + 16, 8 * 8 * 16))  # pool to 4x4
    entry2 = total(sep(8, 16, 16), sep(16, 16, 16), (128 + 32, 8 * 16 * 4))  # pool to 2x2
    middle = total(sep(16, 16, 4), sep(16, 16, 4), sep(16, 16, 4))
    # at 2x2 the exit block keeps stride 1 (no pool), its shortcut a 1x1 for the width
    exit_block = total(sep(16, 16, 4), sep(16, 24, 4), (384 + 48, 16 * 24 * 4))
    convs = total(sep(24, 32, 4), sep(32, 40, 4))
    head = (410, 400)
    expected = total(stem, entry1, entry2, middle, exit_block, convs, head)
    assert _costs("xception", digits, **kw) == expected


def test_masr_classifier(digits):
    kw = {"channels": (8, 16), "blocks": (1, 1), "kernels": (1, 3)}

    def block(c, pixels):  # two branches of c/2 (1x1; 1x1 + depthwise 3x3), attention, fuse
        m = c // 2
        params = 2 * (c * m + 2 * m) + (9 * m + 2 * m) + 2 * (c * c + 2 * c)
        return params, (2 * c * m + 9 * m + 2 * c * c) * pixels

    stem = (72 + 16, 8 * 64 * 9)
    down = (8 * 16 * 9 + 32, 16 * 8 * 9 * 16)  # stride 2: 8x8 -> 4x4
    head = (170, 160)
    expected = tuple(map(sum, zip(stem, block(8, 64), down, block(16, 16), head)))
    assert _costs("masr_classifier", digits, **kw) == expected


def test_shufflenet_residual_costs_what_shufflenet_v2_costs(digits):
    kw = {"width": 0.5, "stem_channels": 8, "last_channels": 64, "stage_repeats": (2, 1, 1)}
    assert _costs("shufflenet_residual", digits, **kw) == _costs("shufflenet_v2", digits, **kw)
    plain = sc.models.create("shufflenet_v2", digits, seed=0, **kw).eval()
    residual = sc.models.create("shufflenet_residual", digits, seed=0, **kw).eval()
    x = digits.example_inputs(2)
    assert not torch.allclose(plain(x), residual(x))  # same weights, the shortcut added
