"""The loopback step: perception queries and cognition (text) features refine each other.

After the initial prediction heads and after every decoder layer, each query is
(1) refreshed by the official ``query_SA`` layer (see :class:`QueryRefresh` for what it
really computes; the mask embedding meant as its positional term drops out);
(2) passed through a text layer (self-attention, cross-attention to the text with an
additive -100 on padded keys, FFN, all post-norm) whose output gives the referring
logits; (3) projected from ``[query, text-aware query]`` back to the hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Linear, MultiheadAttention


class TextCrossAttention(nn.Module):
    """Cross-attention queries -> text with separate q/k/v linears; padded keys get -100."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = Linear(dim, dim)
        self.k = Linear(dim, dim)
        self.v = Linear(dim, dim)
        self.proj = Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, pad_bias: Tensor) -> Tensor:
        b, n, c = query.shape
        h = self.num_heads

        def heads(x: Tensor) -> Tensor:
            return x.view(b, -1, h, c // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(key)), heads(self.v(value)), pad_bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TextLayer(nn.Module):
    """Post-norm: self-attention -> norm2, text cross-attention -> norm1, FFN -> norm3."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = TextCrossAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = Linear(dim, ffn_dim)
        self.linear2 = Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, text: Tensor, text_pos: Tensor, pad_bias: Tensor) -> Tensor:
        x = self.norm2(x + self.self_attn(x, x, x))
        x = self.norm1(x + self.cross_attn(x, text + text_pos, text, pad_bias))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class QueryRefresh(nn.Module):
    """The official ``query_SA`` layer as it actually computes: ``norm(x + out(v(x)))``.

    Officially this is a sequence-first ``nn.MultiheadAttention`` that is handed batch-first
    ``[B, Q, C]`` queries, so it attends across the *batch* axis: with one image per forward
    (the demo, the evaluation and the released training configs) every query attends only to
    itself, the attention weight is exactly 1, and the mask embedding that was meant to be
    its positional term has no effect. We compute that result directly, per sample, so a
    batched prediction equals a loop of single ones. The q/k weights are kept (official
    checkpoints carry them) but cannot influence the output.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.self_attn
        d = attn.dim
        value = F.linear(x, attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
        return self.norm(x + attn.out_proj(value))


class LoopbackStep(nn.Module):
    """One loopback exchange; returns the new queries and the text-aware queries.

    ``feed_back=False`` (config ``decoder.loopback``) is the one-way ablation; ``proj`` then
    stays in the model, unused, so both variants share one state-dict layout.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, feed_back: bool = True) -> None:
        super().__init__()
        self.feed_back = feed_back
        self.mask_attn = QueryRefresh(dim, num_heads)
        self.text_layer = TextLayer(dim, ffn_dim)
        self.proj = Linear(2 * dim, dim)

    def forward(self, queries: Tensor, text: Tensor, text_pos: Tensor, pad_bias: Tensor) -> tuple[Tensor, Tensor]:
        queries = self.mask_attn(queries)
        referring = self.text_layer(queries, text, text_pos, pad_bias)
        if not self.feed_back:  # one-way ablation: cognition reads the queries, never writes back
            return queries, referring
        return self.proj(torch.cat((queries, referring), dim=-1)), referring
