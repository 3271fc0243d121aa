"""Constant channels folded into the layers that read them, exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.measure.encoding import encoding_bytes
from secateurs.quant.fold import fold_constant_channels
from secateurs.quant.integer import run_integer


class Chain(nn.Module):
    """A padded convolution, a 1x1, a padded depthwise and a 1x1, each with a ReLU."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1, groups=6),
            nn.ReLU(),
            nn.Conv2d(6, 4, 1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.convs(x).flatten(1))


def chain_with_constant_channels(digits) -> sc.quant.QuantizedModel:
    torch.manual_seed(0)
    model = Chain()
    with torch.no_grad():  # filters with no weight: constant outputs
        first, pointwise = model.convs[0], model.convs[2]
        first.weight[[0, 1]] = 0
        first.bias[0], first.bias[1] = 0.5, -0.5  # after the ReLU: a value, and zero
        pointwise.weight[[2, 3, 4]] = 0
        pointwise.bias[2], pointwise.bias[3], pointwise.bias[4] = -1.0, 1.0, -1.0
    return sc.quant.quantize(model, digits)


def test_constant_channels_fold_into_the_next_layer_without_changing_an_output(digits):
    q = chain_with_constant_channels(digits)
    folded = fold_constant_channels(q)
    first, pointwise, depthwise, last = sorted(folded)[:4]
    # channel 1 sits at the zero point: its weights go; channel 0 holds another value,
    # and the unpadded 1x1 takes it into its bias
    assert q.layers[pointwise].weight[:, :2].abs().sum() > 0
    assert folded[pointwise].weight[:, :2].abs().sum() == 0
    assert not torch.equal(folded[pointwise].bias, q.layers[pointwise].bias)
    # the depthwise filter fed the zero point has nothing left and outputs a constant;
    # the one fed another constant keeps its weights: its border reads padding
    assert q.layers[depthwise].weight[2].abs().sum() > 0
    assert folded[depthwise].weight[2].abs().sum() == 0
    assert torch.equal(folded[depthwise].weight[3], q.layers[depthwise].weight[3])
    assert folded[last].weight[:, [2, 4]].abs().sum() == 0  # the last 1x1 reads them no more
    assert folded[first] is q.layers[first]  # the input is not constant
    x = q.quantize_input(digits.test.tensors[0][:64])
    expected = q.run_int8(x).to(torch.int64)
    got = run_integer(q.graph, q.qparams, folded, q.ops, x, q.rounding)
    assert torch.equal(got, expected)


def test_folded_channels_shrink_the_c_export_and_stay_bit_exact(digits, tmp_path):
    q = chain_with_constant_channels(digits)
    report = sc.deploy.export_c(q, tmp_path, sparse="always")
    x = digits.test.tensors[0][:32]
    assert sc.deploy.verify_c(q, tmp_path, x).bit_exact
    assert sc.deploy.verify_c(q, tmp_path, x[:4], sanitize=True).bit_exact
    program, _ = sc.deploy.build_program(q, sparse="always")
    last = [op for op in program.ops if op.kernel == "sc_conv_filterlet"][-1]
    # the last 1x1 stores weights for the 4 input channels still read, not 6
    assert last.consts["chan"].values.tolist() == [0, 1, 3, 5] and last.params["live"] == 4
    assert len(last.consts["vals"].values.reshape(-1)) == 4 * 4
    row = report["layers"][program.ops.index(last)]
    unfolded = encoding_bytes(q.layers[last.index].weight, 8, True)["filterlet_csr"]
    # 4 filterlets of 4 weights, the channel list, 4 counts in 2 bytes, 9 bytes a filter
    assert row["const_bytes"] == 4 * 4 + 4 + 2 + 4 * 9 < unfolded + 4 * 9


def test_grouped_convolution_stores_only_the_channels_its_groups_read(digits, tmp_path):
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 1, groups=2),
        nn.ReLU(),  # 4 input channels a group
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 10),
    )
    with torch.no_grad():
        model[2].weight[:, [1, 3]] = 0  # no filter of either group reads its 2nd and 4th
    q = sc.quant.quantize(model, digits)
    sc.deploy.export_c(q, tmp_path, sparse="always")
    assert sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:32]).bit_exact
    program, _ = sc.deploy.build_program(q, sparse="always")
    grouped = [op for op in program.ops if op.kernel == "sc_conv_filterlet"][1]
    assert grouped.consts["chan"].values.tolist() == [0, 2] and grouped.params["live"] == 2
    # 6 filterlets of 2 weights, then 2 zero bytes: the DSP kernel reads words
    assert grouped.consts["vals"].values.shape == (6 * 2 + 2,)
    assert not grouped.consts["vals"].values[12:].any()


@pytest.mark.parametrize("seed", range(6))
def test_folding_random_chains_never_changes_an_output(seed, digits, tmp_path):
    """Random convolution chains (groups, padding, ReLU or not) with random filters emptied
    and random biases: the folded constants compute what run_int8 computes, and so does
    the sparse C export."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=g))]  # noqa: E731
    layers, channels = [], 1
    for _ in range(4):
        out = pick([4, 6, 8])
        groups = pick([g_ for g_ in (1, 2, channels) if channels % g_ == 0 and out % g_ == 0])
        kernel = pick([1, 3])
        conv = nn.Conv2d(channels, out, kernel, padding=pick([0, kernel // 2]), groups=groups)
        with torch.no_grad():
            conv.weight[torch.rand(out, generator=g) < 0.5] = 0
            conv.bias.copy_(torch.randn(out, generator=g))
        layers += [conv] + ([nn.ReLU()] if pick([True, False]) else [])
        channels = out
    torch.manual_seed(seed)
    model = nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(10))
    model(digits.test.tensors[0][:2])  # size the classifier
    q = sc.quant.quantize(model.eval(), digits)
    folded = fold_constant_channels(q)
    assert any(folded[i] is not q.layers[i] for i in folded)  # something was folded
    x = q.quantize_input(digits.test.tensors[0][:64])
    expected = q.run_int8(x).to(torch.int64)
    assert torch.equal(run_integer(q.graph, q.qparams, folded, q.ops, x, q.rounding), expected)
    sc.deploy.export_c(q, tmp_path, sparse="always")
    assert sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:16]).bit_exact
