import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.graph import DependencyGraph, GraphError, load_pruned, save_pruned
from tests.graph.helpers import prune_and_compare, randomize_norms
from tests.graph.models import ChannelShuffle, Head, ResidualChain, cbr


def test_groups_of_a_residual_chain():
    model = ResidualChain(blocks=2).eval()
    graph = DependencyGraph(model, torch.randn(1, 3, 8, 8))
    groups = graph.groups()
    # the stream shared by stem, both residual adds and the head; one inner group per block
    assert sorted(g.channels for g in groups) == [12, 20, 20]
    stream = next(g for g in groups if g.channels == 12)
    members = {(m.module, m.axis) for m in stream.members}
    assert {("stem.0", "out"), ("blocks.0.1", "out"), ("blocks.1.1", "out")} <= members
    assert {("blocks.0.0.0", "in"), ("head.fc", "in"), ("stem.1", "chan")} <= members


def test_group_prune_edits_modules_in_place():
    model = nn.Sequential(cbr(3, 8), cbr(8, 6), nn.Flatten(), nn.Linear(6 * 16, 4)).eval()
    graph = DependencyGraph(model, torch.randn(1, 3, 4, 4))
    first = graph.groups()[0]
    assert first.channels == 8
    first.prune([1, 5])
    conv, bn, conv2 = model[0][0], model[0][1], model[1][0]
    assert (conv.out_channels, conv.weight.shape) == (6, (6, 3, 3, 3))
    assert bn.num_features == 6 and bn.running_mean.shape == (6,)
    assert (conv2.in_channels, conv2.weight.shape[1]) == (6, 6)
    with pytest.raises(GraphError, match="build a new DependencyGraph"):
        graph.groups()[1].prune([0])


def test_flatten_into_linear_removes_every_feature_of_a_channel():
    model = nn.Sequential(cbr(3, 8), nn.Flatten(), nn.Linear(8 * 9, 4)).eval()
    graph = DependencyGraph(model, torch.randn(1, 3, 3, 3))
    graph.groups()[0].prune([0, 7])
    assert model[2].in_features == 6 * 9


def test_grouped_convolution_removes_equally_per_group():
    model = nn.Sequential(cbr(3, 16), cbr(16, 24, 1, groups=4), Head(24)).eval()
    graph = DependencyGraph(model, torch.randn(1, 3, 6, 6))
    stem = graph.groups()[0]
    with pytest.raises(ValueError, match=r"a convolution with 4 groups.*equally many"):
        stem.check([0, 1, 2, 3])  # all four from the first group
    stem.prune([0, 4, 8, 12])  # one from each group
    conv = model[1][0]
    assert (conv.in_channels, conv.groups, conv.weight.shape[1]) == (12, 4, 3)


def test_depthwise_input_and_output_channels_go_together():
    model = nn.Sequential(cbr(3, 8), cbr(8, 8, 3, groups=8), cbr(8, 4, 1), Head(4)).eval()
    graph = DependencyGraph(model, torch.randn(1, 3, 6, 6))
    assert [g.channels for g in graph.groups()] == [8, 4]
    group = graph.groups()[0]
    assert {("1.0", "in"), ("1.0", "out"), ("2.0", "in")} <= {
        (m.module, m.axis) for m in group.members
    }
    group.prune([2, 3])
    dw = model[1][0]
    assert (dw.in_channels, dw.out_channels, dw.groups) == (6, 6, 6)


def test_outputs_and_inputs_are_protected_without_ignored():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 5, 1)).eval()
    graph = DependencyGraph(model, torch.randn(1, 3, 5, 5))
    members = {(m.module, m.axis) for g in graph.groups() for m in g.members}
    assert ("0", "in") not in members and ("2", "out") not in members
    assert ("0", "out") in members


def test_ignored_modules_keep_their_channels():
    model = nn.Sequential(cbr(3, 8), cbr(8, 6), cbr(6, 4), Head(4)).eval()
    x = torch.randn(1, 3, 6, 6)
    free = {m.module for g in DependencyGraph(model, x).groups() for m in g.members}
    assert "1.0" in free
    graph = DependencyGraph(model, x, ignored=["1.0"])
    touched = {(m.module, m.axis) for g in graph.groups() for m in g.members}
    # the ignored layer's inputs and outputs stay; the next layer's outputs are still free
    assert touched == {("2.0", "out"), ("2.1", "chan"), ("3.fc", "in")}
    with pytest.raises(ValueError, match="ignored module path 'nope' is not in the model"):
        DependencyGraph(model, x, ignored=["nope"])


class RawConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 8, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


class SortsChannels(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values


@pytest.mark.parametrize(
    "layer, op", [(RawConv(), "convolution"), (SortsChannels(), "sort")], ids=["weight", "op"]
)
def test_unsupported_ops_fail_naming_the_op_and_module(layer, op):
    model = nn.Sequential(
        cbr(3, 8), layer, nn.Conv2d(layer.weight.shape[0] if hasattr(layer, "weight") else 8, 4, 1)
    ).eval()
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(GraphError, match=rf"op aten\.{op}.* in module '1'.*ignored=\['1'\]"):
        DependencyGraph(model, x)
    graph = DependencyGraph(model, x, ignored=["1"])
    assert all("0.0" not in {m.module for m in g.members} for g in graph.groups())


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, digits):
    model = sc.models.create("mobilenet_v2", digits, width=0.5, seed=0, last_channels=64)
    randomize_norms(model)
    x = digits.example_inputs(3)
    sc.prune.channels(model, x, ratio=0.5)
    sc.prune.channels(model, x, ratio=0.3, scope="global")  # a second round composes
    path = tmp_path / "pruned.pt"
    save_pruned(model.eval(), path)
    fresh = sc.models.create("mobilenet_v2", digits, width=0.5, seed=5, last_channels=64)
    load_pruned(fresh, path).eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    with pytest.raises(ValueError, match="freshly built model"):
        load_pruned(fresh, path)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="is not a secateurs pruned model"):
        load_pruned(sc.models.create("mlp", digits), other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pruned(sc.models.create("mlp", digits), tmp_path / "missing.pt")


# --- property test: random networks built from the blocks above -----------------------------


class Residual(nn.Module):
    def __init__(self, c, mid):
        super().__init__()
        self.body = nn.Sequential(cbr(c, mid), nn.Conv2d(mid, c, 1), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(x + self.body(x))


class Branches(nn.Module):
    def __init__(self, c, a, b):
        super().__init__()
        self.a, self.b = cbr(c, a, 1), cbr(c, b, 3)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, max(1, c // 4), 1), nn.Conv2d(max(1, c // 4), c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class ChannelLastNorm(nn.Module):
    """LayerNorm over the channels of a map (ConvNeXt's), in channel-last layout."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class InPlace(nn.Module):
    """In-place ops: a hard-swish and a residual add_ and mul_, as tensors' methods."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = F.hardswish(self.conv(x), inplace=True)
        return y.add_(x).mul_(0.5)


class AttentionBack(nn.Module):
    """Attention over positions with bmm, added back to the branch."""

    def __init__(self, c):
        super().__init__()
        self.k, self.v = nn.Conv2d(c, 4, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        k = self.k(x).flatten(2)
        attn = torch.softmax(torch.bmm(k.transpose(1, 2), k), -1)
        return x + torch.bmm(self.v(x).flatten(2), attn.transpose(1, 2)).reshape(x.shape)


class TokenAttention(nn.Module):
    """nn.MultiheadAttention over the positions of a map, its output added back: whole
    heads and the map's channels prune."""

    def __init__(self, c, heads, need_weights):
        super().__init__()
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        y = self.attn(t, t, t, need_weights=self.need_weights)[0]
        return x + y.transpose(1, 2).reshape(x.shape)


class LayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body, self.scale = cbr(c, c), nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x):
        return x + self.scale * self.body(x)


@st.composite
def random_net(draw):
    layers, c = [cbr(3, 8)], 8
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(
            st.sampled_from(
                [
                    "conv",
                    "depthwise",
                    "grouped",
                    "residual",
                    "branches",
                    "se",
                    "shuffle",
                    "layernorm",
                    "groupnorm",
                    "inplace",
                    "attention",
                    "layerscale",
                    "heads",
                ]
            )
        )
        if kind == "layernorm":
            layers.append(ChannelLastNorm(c))
        elif kind == "groupnorm":
            layers.append(nn.GroupNorm(draw(st.sampled_from([1, c])), c))
        elif kind == "inplace":
            layers.append(InPlace(c))
        elif kind == "attention":
            layers.append(AttentionBack(c))
        elif kind == "layerscale":
            layers.append(LayerScale(c))
        elif kind == "heads":
            heads = draw(st.sampled_from([h for h in (1, 2, 4) if c % h == 0]))
            layers.append(TokenAttention(c, heads, draw(st.booleans())))
        elif kind == "conv":
            out = draw(st.integers(2, 12))
            layers.append(cbr(c, out))
            c = out
        elif kind == "depthwise":
            layers.append(cbr(c, c, 3, groups=c))
        elif kind == "grouped":
            g = draw(st.sampled_from([2, 4]))
            layers.append(cbr(c, g * 3, 1))
            out = g * draw(st.integers(1, 4))
            layers.append(cbr(g * 3, out, 3, groups=g))
            c = out
        elif kind == "residual":
            layers.append(Residual(c, draw(st.integers(2, 10))))
        elif kind == "branches":
            a, b = draw(st.integers(2, 6)), draw(st.integers(2, 6))
            layers.append(Branches(c, a, b))
            c = a + b
        elif kind == "se":
            layers.append(SE(c))
        else:
            layers.append(cbr(c, 12, 1))
            layers.append(ChannelShuffle(draw(st.sampled_from([2, 3]))))
            c = 12
    layers.append(Head(c))
    return nn.Sequential(*layers)


def _prunes_correctly(net, ratio, seed):
    torch.manual_seed(seed)
    randomize_norms(net, seed)
    summary = prune_and_compare(net, torch.randn(2, 3, 6, 6), ratio=ratio, seed=seed)
    assert summary["macs_after"] <= summary["macs_before"]
    assert np.isfinite(summary["macs_after"])


@settings(max_examples=30, deadline=None)
@given(net=random_net(), ratio=st.sampled_from([0.25, 0.5, 0.75]), seed=st.integers(0, 5))
def test_random_networks_prune_correctly(net, ratio, seed):
    _prunes_correctly(net, ratio, seed)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(net=random_net(), ratio=st.sampled_from([0.25, 0.5, 0.75]), seed=st.integers(0, 5))
def test_500_random_networks_prune_correctly(net, ratio, seed):
    _prunes_correctly(net, ratio, seed)


def test_masked_models_must_be_stripped_before_channel_pruning(digits):
    model = sc.models.create("lenet5", digits, seed=0).eval()
    sc.prune.sparsify(model, sparsity=0.5)
    with pytest.raises(GraphError, match=r"parametrized weights .* sc.prune.strip\(model\)"):
        sc.prune.channels(model, digits.example_inputs(), ratio=0.3)
    sc.prune.strip(model)
    report = sc.prune.channels(model, digits.example_inputs(), ratio=0.3)
    assert report.macs_after < report.macs_before
