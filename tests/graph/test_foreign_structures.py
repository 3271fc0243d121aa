"""Structures from models the project did not write: normalizations over channels,
products of activations added back to a branch, in-place activations, parametrized
weights, ops in the model's own forward. Each is pruned exactly or refused clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.graph import DependencyGraph, GraphError

from .helpers import prune_and_compare


class MobileNetV3Block(nn.Module):
    """In-place hard-swish (module and functional), a squeeze-excite gate with an in-place
    hard-sigmoid, as torchvision's MobileNet V3 writes them."""

    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.act = nn.Hardswish(inplace=True)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.se1, self.se2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.gate = nn.Hardsigmoid(inplace=True)
        self.pw, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        y = nn.functional.hardswish(self.dw(self.act(self.bn(self.a(x)))), inplace=True)
        y = y * self.gate(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        return self.fc(self.pw(y).mean((2, 3)))


def test_in_place_activations_prune_like_their_out_of_place_forms():
    torch.manual_seed(0)
    result = prune_and_compare(MobileNetV3Block(), torch.randn(2, 3, 8, 8))
    assert result["removed"] > 0 and result["macs_after"] < 0.8 * result["macs_before"]


class ConvTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.enc(self.stem(x).flatten(2).transpose(1, 2)).mean(1))


class LinearNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.ln, self.b = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.b(self.ln(self.a(x)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_norm_keeps_the_features_it_normalizes(seed):
    """Its mean and variance run over the features, so none of them may go; the
    transformer's feed-forward hidden units, which no LayerNorm reads, still prune."""
    torch.manual_seed(seed)
    model = ConvTransformer()
    result = prune_and_compare(model, torch.randn(2, 1, 6, 6), seed=seed)
    assert model.stem.out_channels == 16 and model.enc.norm1.normalized_shape == (16,)
    assert result["removed"] > 0 and model.enc.linear1.out_features < 32
    assert prune_and_compare(LinearNorm(), torch.randn(3, 8), seed=seed)["removed"] == 0


class AttentionAddedBack(nn.Module):
    """Attention over positions, written with bmm, added back to the branch it reads."""

    def __init__(self, product):
        super().__init__()
        self.product = product
        self.b, self.k = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.v, self.fc = nn.Conv2d(8, 8, 1), nn.Linear(6, 3)
        self.c = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x):
        b = torch.relu(self.b(x))
        k = self.k(b).flatten(2)
        attn = torch.softmax(self.product(k.transpose(1, 2), k), -1)
        b = b + self.product(self.v(b).flatten(2), attn.transpose(1, 2)).reshape(b.shape)
        return self.fc(torch.relu(self.c(b)).mean((2, 3)))


@pytest.mark.parametrize(
    "product", [torch.bmm, torch.matmul, lambda a, b: torch.einsum("bij,bjk->bik", a, b)]
)
def test_a_product_added_back_to_a_branch_ties_the_branch(product):
    torch.manual_seed(0)
    model = AttentionAddedBack(product)
    result = prune_and_compare(model, torch.randn(2, 3, 5, 5), ratio=0.5)
    assert model.b.out_channels == 8 and model.v.out_channels == 8  # tied to the product
    assert result["removed"] > 0 and model.c.out_channels < 6  # the rest still prunes


def test_parametrized_weights_are_refused_when_the_graph_is_built():
    model = nn.Sequential(
        nn.Conv1d(2, 8, 3),
        nn.ReLU(),
        nn.utils.parametrizations.weight_norm(nn.Conv1d(8, 4, 3)),
        nn.ReLU(),
        nn.Conv1d(4, 3, 1),
    )
    with pytest.raises(GraphError, match=r"layer '2' has parametrized tensors \(_WeightNorm"):
        DependencyGraph(model, torch.randn(1, 2, 10))
    DependencyGraph(model, torch.randn(1, 2, 10), ignored=["2"])  # the way past it works


class RootOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.fft.fft(self.a(x)).real.mean((2, 3))


def test_an_op_in_the_models_own_forward_is_named_and_the_advice_works():
    with pytest.raises(GraphError, match=r"in module '\(model\)'.*wrap it in a submodule"):
        DependencyGraph(RootOp(), torch.randn(1, 3, 6, 6))


def test_group_norm_with_one_channel_per_group_prunes_exactly():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(8, 8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    result = prune_and_compare(model, torch.randn(2, 3, 6, 6))
    assert result["removed"] > 0 and model[1].num_groups == model[1].num_channels < 8


def test_listing_the_classifier_in_ignored_warns_what_it_freezes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5))
    with pytest.warns(
        UserWarning,
        match=r"ignored=\['3'\] lists a layer that computes the "
        "model's output.*freezes the channels it reads",
    ):
        graph = DependencyGraph(model, torch.randn(1, 3, 6, 6), ignored=["3"])
    assert graph.groups() == []  # the conv's channels feed the ignored classifier
    groups = DependencyGraph(model, torch.randn(1, 3, 6, 6)).groups()
    assert [len(g) for g in groups] == [8]  # without it, the conv prunes


class ConvRecurrent(nn.Module):
    """A keyword-spotting front end: a 1-D convolution over MFCC frames, then a recurrent
    layer read at its last step."""

    def __init__(self, cell, layers, bidirectional, batch_first):
        super().__init__()
        self.front = nn.Conv1d(10, 16, 3, padding=1)
        self.rnn = cell(
            16, 12, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first
        )
        self.fc = nn.Linear(12 * (2 if bidirectional else 1), 5)

    def forward(self, x):
        y = torch.relu(self.front(x))
        batch_first = self.rnn.batch_first
        out, _ = self.rnn(y.transpose(1, 2) if batch_first else y.permute(2, 0, 1))
        return self.fc(out[:, -1] if batch_first else out[-1])


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
@pytest.mark.parametrize(
    ("layers", "bidirectional", "batch_first"),
    [(1, False, True), (2, True, True), (2, False, False)],
)
def test_recurrent_hidden_units_prune_exactly(cell, layers, bidirectional, batch_first):
    torch.manual_seed(0)
    model = ConvRecurrent(cell, layers, bidirectional, batch_first)
    result = prune_and_compare(model, torch.randn(3, 10, 7))
    assert model.rnn.hidden_size == 8 and model.front.out_channels == 10  # 40% of 12, 16
    assert model.rnn.input_size == model.front.out_channels
    assert result["macs_after"] < 0.6 * result["macs_before"]


class FinalState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(6, 8, num_layers=2), nn.Linear(8, 3)

    def forward(self, x):
        _, (h, _) = self.rnn(x)
        return self.fc(h[-1])


def test_a_classifier_on_the_final_state_prunes_with_the_last_layer():
    torch.manual_seed(0)
    model = FinalState()
    assert prune_and_compare(model, torch.randn(5, 2, 6))["removed"] > 0
    assert model.rnn.hidden_size == 5 and model.fc.in_features == 5


def test_lstm_macs_are_counted():
    lstm = nn.LSTM(16, 12, batch_first=True)
    prof = sc.measure.profile(lstm, torch.randn(1, 7, 16), latency=False)
    assert prof.macs == 7 * 4 * 12 * (16 + 12)


class LayerScaleBlock(nn.Module):
    """ConvNeXt's block: depthwise 7x7, pointwise MLP in channel-last layout, and a layer
    scale of shape (C, 1, 1) on the residual branch."""

    def __init__(self, dim):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pw1, self.pw2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x):
        y = self.pw2(nn.functional.gelu(self.pw1(self.dw(x).permute(0, 2, 3, 1))))
        return x + self.layer_scale * y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block, self.fc = nn.Conv2d(3, 8, 1), LayerScaleBlock(8), nn.Linear(8, 4)

    def forward(self, x):
        y = self.block(self.stem(x)).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        # pooling a channels-last map restrides the pooled (N, C, 1, 1) map in place
        return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


class ClassToken(nn.Module):
    """A class token (1, 1, C) and a position embedding (1, 1 + L, C), parameters of the
    model itself, as a vision transformer adds them to its patches."""

    def __init__(self):
        super().__init__()
        self.proj, self.fc = nn.Conv2d(3, 8, 2, 2), nn.Linear(8, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 1 + 16, 8))

    def forward(self, x):
        y = self.proj(x).flatten(2).transpose(1, 2)
        y = torch.cat([self.cls.expand(len(x), -1, -1), y], 1) + self.pos
        return self.fc(torch.relu(y).mean(1))


def test_per_channel_parameters_of_any_shape_are_sliced_with_their_channels():
    torch.manual_seed(0)
    model = ConvNeXtLike()
    assert prune_and_compare(model, torch.randn(2, 3, 8, 8))["removed"] > 0
    assert model.block.layer_scale.shape == (model.stem.out_channels, 1, 1)
    assert model.stem.out_channels < 8 and model.block.pw1.out_features < 32
    model = ClassToken()
    assert prune_and_compare(model, torch.randn(2, 3, 8, 8))["removed"] > 0
    assert model.cls.shape == (1, 1, model.proj.out_channels) and model.proj.out_channels < 8
    assert model.pos.shape == (1, 17, model.proj.out_channels)


class WindowAttention(nn.Module):
    """Swin's attention as torchvision writes it: the qkv and projection layers applied
    with F.linear outside their modules, cosine attention (F.normalize) and a relative
    position bias table, indexed by an integer buffer, added to the scores."""

    def __init__(self, dim=8, heads=2, tokens=4):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn(2 * tokens - 1, heads))
        pos = torch.arange(tokens)
        self.register_buffer("index", (pos[:, None] - pos[None, :] + tokens - 1).reshape(-1))

    def forward(self, x):
        n, t, c = x.shape
        qkv = nn.functional.linear(x, self.qkv.weight, self.qkv.bias)
        q, k, v = qkv.reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k = nn.functional.normalize(q, dim=-1), nn.functional.normalize(k, dim=-1)
        bias = self.table[self.index].reshape(t, t, self.heads).permute(2, 0, 1)
        attn = torch.softmax(q @ k.transpose(-2, -1) + bias, -1)
        y = (attn @ v).transpose(1, 2).reshape(n, t, c)
        return nn.functional.linear(y, self.proj.weight, self.proj.bias)


class SwinLike(nn.Module):
    """A Swin block: LayerNorm before the attention and before the MLP."""

    def __init__(self):
        super().__init__()
        self.embed, self.attn = nn.Linear(5, 8), WindowAttention()
        self.norm1, self.norm2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(self.norm1(x))
        return self.head((x + self.mlp(self.norm2(x))).mean(1))


def test_layers_applied_with_f_linear_and_bias_tables_prune_exactly():
    torch.manual_seed(0)
    model = SwinLike()
    result = prune_and_compare(model, torch.randn(2, 4, 5), ratio=0.5)
    assert result["removed"] > 0 and model.mlp[0].out_features == 8  # the MLP prunes
    # the qkv, projection and position bias stay: the attention products keep them
    assert model.attn.qkv.out_features == 24 and model.attn.table.shape == (7, 2)


class FixedChannelPick(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.a, self.c = how, nn.Conv2d(3, 8, 3), nn.Conv2d(4, 5, 1)

    def forward(self, x):
        y = self.a(x)
        picked = torch.tensor([0, 2, 4, 6])
        y = y[:, picked] if self.how == "index" else torch.index_select(y, 1, picked)
        return self.c(y).mean((2, 3))


@pytest.mark.parametrize("how", ["index", "index_select"])
def test_channels_picked_by_indices_written_in_the_code_are_kept(how):
    """Indices fixed in the code cannot follow a pruned width, so the channels they pick
    from are kept (they used to be pruned, and the indices then ran past the end)."""
    model = FixedChannelPick(how)
    prune_and_compare(model, torch.randn(2, 3, 6, 6), ratio=0.5)
    assert model.a.out_channels == 8 and model.c.in_channels == 4
