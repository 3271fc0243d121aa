"""Multi-head attention with whole heads removed.

``nn.MultiheadAttention`` ties its inner width (heads x head width) to its embedding width,
the residual stream it reads and writes. Removing a head (Michel et al. 2019, "Are Sixteen
Heads Really Better than One?", arXiv 1905.10650; Voita et al. 2019, arXiv 1905.09418)
breaks that tie, so pruning turns the layer into :class:`HeadPrunedAttention`: the same
module (a subclass, same parameters and options) whose query, key and value projections
map the stream's ``embed_dim`` features to ``num_heads * head_dim``, stored as PyTorch
stores projections of different widths (``q_proj_weight``, ``k_proj_weight``,
``v_proj_weight``, the packed ``in_proj_bias``). Each kept head computes what it did before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projections(m: nn.MultiheadAttention) -> list[torch.Tensor]:
    """The query, key and value weights (rows: the inner width), as views to read or edit."""
    if m.in_proj_weight is not None:
        return list(m.in_proj_weight.chunk(3))
    return [m.q_proj_weight, m.k_proj_weight, m.v_proj_weight]


def projection_biases(m: nn.MultiheadAttention) -> list[torch.Tensor | None]:
    return [None] * 3 if m.in_proj_bias is None else list(m.in_proj_bias.chunk(3))


def prunable(m: nn.MultiheadAttention) -> bool:
    """Whether the graph can remove heads and embedding features of ``m``: one width for
    queries, keys and values, and no learned or zero key/value positions appended."""
    same = m._qkv_same_embed_dim or isinstance(m, HeadPrunedAttention)
    return same and m.bias_k is None and not m.add_zero_attn


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True: not attended) as -inf; a float mask as it is."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -torch.inf)


class HeadPrunedAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose inner width ``num_heads * head_dim`` may differ from
    ``embed_dim``. Made by pruning (the class of a pruned layer is swapped in place); it
    takes the same call as its parent: ``(query, key, value, key_padding_mask=None,
    need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)``, with
    a 3-D ``attn_mask`` holding one plane per kept head."""

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, ls = query.shape[0], query.shape[1], key.shape[1]
        h, d = self.num_heads, self.head_dim
        (wq, wk, wv), (bq, bk, bv) = projections(self), projection_biases(self)
        q = F.linear(query, wq, bq).view(b, lq, h, d).transpose(1, 2)
        k = F.linear(key, wk, bk).view(b, ls, h, d).transpose(1, 2)
        v = F.linear(value, wv, bv).view(b, ls, h, d).transpose(1, 2)
        mask = _additive(attn_mask, q.dtype)
        if mask is not None:
            mask = mask.view(b, h, lq, ls) if mask.dim() == 3 else mask.view(1, 1, lq, ls)
        elif is_causal:
            causal = torch.ones(lq, ls, dtype=torch.bool, device=q.device).triu(1)
            mask = _additive(causal, q.dtype)
        padding = _additive(key_padding_mask, q.dtype)
        if padding is not None:
            padding = padding.view(b, 1, 1, ls)
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * d**-0.5) @ k.transpose(-2, -1)
            weights = torch.softmax(scores if mask is None else scores + mask, -1)
            weights = F.dropout(weights, dropout)  # returned after dropout, as PyTorch does
            out = weights @ v
            if average_attn_weights:
                weights = weights.mean(1)
            if not batched:
                weights = weights[0]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, h * d))
        if not batched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights
