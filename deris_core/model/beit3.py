"""BEiT-3 multiway encoder (torchscale layout), the heart of the cognition branch.

The sequence is ``[CLS, patches]`` (vision expert) followed by the text tokens (language
expert). Every linear layer and LayerNorm exists twice, one per expert; attention runs
jointly over both streams. We keep the two streams as separate tensors and only join
them for attention, which avoids split/concat copies of the whole sequence.

Numerical details that matter (see the reference README): pre-LN with sub-LN
(``inner_attn_ln`` before ``out_proj``, ``ffn_layernorm`` before ``fc2``), exact GELU,
position indices starting at 2 in each table, padded text embeddings zeroed, padded keys
masked, final multiway LayerNorm.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import BEiT3Config
from .layers import Embedding, Linear


class Multiway(nn.Module):
    """A pair of identical modules: ``vision`` for image tokens, ``text`` for text tokens."""

    def __init__(self, make: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.vision = make()
        self.text = make()

    def forward(self, xv: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        return self.vision(xv), self.text(xt)


class MultiwayAttention(nn.Module):
    """Joint self-attention over both streams with per-expert q/k/v/out projections."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = Multiway(lambda: Linear(dim, dim))
        self.k_proj = Multiway(lambda: Linear(dim, dim))
        self.v_proj = Multiway(lambda: Linear(dim, dim))
        self.sub_norm = Multiway(lambda: nn.LayerNorm(dim, eps=eps))
        self.out_proj = Multiway(lambda: Linear(dim, dim))

    def forward(self, xv: Tensor, xt: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        b, nv, d = xv.shape
        h = self.num_heads

        def heads(v: Tensor, t: Tensor) -> Tensor:
            return torch.cat((v, t), dim=1).view(b, -1, h, d // h).transpose(1, 2)

        q = heads(*self.q_proj(xv, xt))
        k = heads(*self.k_proj(xv, xt))
        v = heads(*self.v_proj(xv, xt))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        out = out.transpose(1, 2).reshape(b, -1, d)
        ov, ot = self.sub_norm(out[:, :nv], out[:, nv:])
        return self.out_proj(ov, ot)


class SubLNFeedForward(nn.Module):
    """``fc2(sub_norm(gelu(fc1(x))))``."""

    def __init__(self, dim: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.sub_norm = nn.LayerNorm(hidden, eps=eps)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.sub_norm(F.gelu(self.fc1(x))))


class MultiwayBlock(nn.Module):
    """Pre-LN transformer block with sub-LN and per-expert weights."""

    def __init__(self, cfg: BEiT3Config) -> None:
        super().__init__()
        d, eps = cfg.embed_dim, cfg.layer_norm_eps
        self.attn_norm = Multiway(lambda: nn.LayerNorm(d, eps=eps))
        self.attn = MultiwayAttention(d, cfg.num_heads, eps)
        self.ffn_norm = Multiway(lambda: nn.LayerNorm(d, eps=eps))
        self.ffn = Multiway(lambda: SubLNFeedForward(d, cfg.ffn_dim, eps))

    def forward(self, xv: Tensor, xt: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        av, at = self.attn(*self.attn_norm(xv, xt), key_mask)
        xv, xt = xv + av, xt + at
        fv, ft = self.ffn(*self.ffn_norm(xv, xt))
        return xv + fv, xt + ft


class BEiT3Encoder(nn.Module):
    """BEiT-3 on ``[CLS, patches] + text``; returns (cls, image tokens, text tokens)."""

    def __init__(self, cfg: BEiT3Config) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.text_embed = Embedding(cfg.vocab_size, d)
        self.patch_embed = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        # Rows 0 and 1 of both position tables are never used (fairseq convention).
        self.vision_pos = nn.Embedding(cfg.num_vision_tokens + 2, d)
        self.text_pos = nn.Embedding(cfg.max_text_positions, d)
        self.layers = nn.ModuleList(MultiwayBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = Multiway(lambda: nn.LayerNorm(d, eps=cfg.layer_norm_eps))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed_image(self, image: Tensor) -> Tensor:
        """Vision-token embeddings ``[B, 1 + patches, D]``; depends on the image only."""
        x = self.patch_embed(image).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x + self.vision_pos.weight[2 : 2 + x.shape[1]]

    def embed_text(self, token_ids: Tensor, padding_mask: Tensor) -> Tensor:
        """Text-token embeddings ``[B, T, D]`` with padded positions zeroed."""
        t = token_ids.shape[1]
        x = self.text_embed(token_ids) + self.text_pos.weight[2 : 2 + t]
        return x * (1 - padding_mask.unsqueeze(-1).to(x.dtype))

    def forward(self, vision_tokens: Tensor, token_ids: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the encoder.

        Args:
            vision_tokens: output of :meth:`embed_image` (may be cached per image).
            token_ids: ``[B, T]`` int64.
            padding_mask: ``[B, T]``, 1/True at padded positions.
        Returns:
            ``cls [B, D]``, ``image tokens [B, patches, D]``, ``text tokens [B, T, D]``.
        """
        b = vision_tokens.shape[0]
        if token_ids.shape[0] != b:
            vision_tokens = vision_tokens.expand(token_ids.shape[0], -1, -1)
            b = token_ids.shape[0]
        xv = vision_tokens
        xt = self.embed_text(token_ids, padding_mask)
        pad = padding_mask.bool()
        key_mask = None
        if bool(pad.any()):
            keep = torch.cat((pad.new_zeros(b, xv.shape[1]), pad), dim=1).logical_not()
            key_mask = keep[:, None, None, :]
        for layer in self.layers:
            xv, xt = layer(xv, xt, key_mask)
        xv, xt = self.final_norm(xv, xt)
        return xv[:, 0], xv[:, 1:], xt
