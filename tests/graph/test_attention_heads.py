"""Whole attention heads: nn.MultiheadAttention loses heads (and, apart from them, features
of its embedding stream), computing exactly what the zeroed layer did, in every calling
convention the layer has."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.graph import DependencyGraph, HeadPrunedAttention, load_pruned, save_pruned

from .helpers import prune_and_compare


class Attention(nn.Module):
    """A stream with no LayerNorm on it, so both its features and the heads prune."""

    def __init__(self, batch_first=True, need_weights=False, mask=None):
        super().__init__()
        self.batch_first, self.need_weights, self.mask = batch_first, need_weights, mask
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = self.embed(x)  # (batch, tokens, features)
        b, t = h.shape[:2]
        kwargs = {"need_weights": self.need_weights}
        if self.mask == "padding":
            kwargs["key_padding_mask"] = torch.arange(t).expand(b, t) >= t - 2
        elif self.mask == "causal":
            kwargs["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(t)
            kwargs["is_causal"] = True
        elif self.mask == "per_head":  # one plane per head, as (batch * heads, t, t)
            plane = torch.randn(t, t, generator=torch.Generator().manual_seed(1))
            kwargs["attn_mask"] = plane.expand(b * self.attn.num_heads, t, t)
        seq = h if self.batch_first else h.transpose(0, 1)
        out, weights = self.attn(seq, seq, seq, **kwargs)
        if not self.batch_first:
            out = out.transpose(0, 1)
        y = self.head((h + out).mean(1))
        return y if weights is None else y + weights.mean()


@pytest.mark.parametrize("mask", [None, "padding", "causal", "per_head"])
@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "weights"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_whole_heads_and_stream_features_prune_exactly(batch_first, need_weights, mask):
    torch.manual_seed(0)
    model = Attention(batch_first, need_weights, mask)
    result = prune_and_compare(model, torch.randn(3, 7, 6), ratio=0.5)
    attn = model.attn
    assert isinstance(attn, HeadPrunedAttention) and attn.head_dim == 4
    assert attn.num_heads == 2 and attn.embed_dim == 8 == model.embed.out_features
    assert result["macs_after"] < 0.6 * result["macs_before"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layers_lose_heads_and_leave_their_fast_path(batch_first):
    """A LayerNorm keeps the stream; heads and feed-forward units go. The pruned layer has
    projections of another width, so PyTorch's fused encoder path (taken in eval without
    gradients) must be skipped, or it would misread them."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first),
        2,
        enable_nested_tensor=False,
    )
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    prune_and_compare(enc, x, ratio=0.5)
    for layer in enc.layers:
        assert layer.self_attn.num_heads == 2 and layer.self_attn.embed_dim == 16
        assert layer.linear1.out_features == 16


def test_the_weakest_heads_go_first_and_the_model_reloads(tmp_path):
    torch.manual_seed(0)
    model = Attention().eval()
    rows = model.attn.in_proj_weight.data.view(3, 4, 4, 16)
    rows[:, [1, 3]] *= 0.01  # heads 1 and 3: queries, keys and values nearly zero
    x = torch.randn(2, 7, 6)
    graph = DependencyGraph(model, x)
    heads = next(g for g in graph.groups() if g.members[0].axis == "heads")
    assert heads.channels == 4 and len(heads.units[0]) == 4  # a head is one unit of 4 slots
    plan = sc.prune.plan(graph, 0.5, importance="l1")
    assert sorted(plan[heads]) == [1, 3]
    graph.prune(plan)
    with torch.no_grad():
        expected = model(x)
    fresh = Attention().eval()
    save_pruned(model, tmp_path / "pruned.pt")
    load_pruned(fresh, tmp_path / "pruned.pt")
    assert isinstance(fresh.attn, HeadPrunedAttention) and fresh.attn.num_heads == 2
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_attention_with_other_key_widths_or_bias_kv_is_kept_whole():
    class Cross(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.q, self.kv = nn.Linear(6, 16), nn.Linear(6, 10 if "kdim" in kw else 16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True, **kw)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            kv = self.kv(x)
            return self.head(self.attn(self.q(x), kv, kv, need_weights=False)[0].mean(1))

    for kw in ({"kdim": 10, "vdim": 10}, {"add_bias_kv": True}, {"add_zero_attn": True}):
        torch.manual_seed(0)
        model = Cross(**kw)
        prune_and_compare(model, torch.randn(2, 7, 6), ratio=0.5)
        assert type(model.attn) is nn.MultiheadAttention and model.attn.num_heads == 4
        assert model.attn.embed_dim == 16, kw
