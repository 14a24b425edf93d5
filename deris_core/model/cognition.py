"""Cognition branch: BEiT-3 on the 224 view + text, projections, and the post-step.

``encode`` (the official ``pre_forward``) returns the projected image map, text features,
the initial perception queries and the CLS feature. ``judge`` (the official
``post_forward``) runs a DETR-style decoder from the perception queries to the text and
predicts existence ("is anything referred?") and per-query logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import DeRISConfig, TextCorrelationConfig
from .beit3 import BEiT3Encoder
from .layers import Linear, FFN, MultiheadAttention


@dataclass
class CognitionFeatures:
    img_feat: Tensor  # [B, C, g, g]
    text_feat: Tensor  # [B, T, C]
    query_feat: Tensor  # [B, Q, C]
    cls_feat: Tensor  # [B, D] (BEiT-3 CLS, unprojected)


class TextCorrelationLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attn -> norm1, cross-attn to text -> norm2, FFN -> norm3."""

    def __init__(self, dim: int, cfg: TextCorrelationConfig) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, cfg.num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MultiheadAttention(dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, cfg.ffn_dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, text: Tensor, text_keep: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x, x, x))
        x = self.norm2(x + self.cross_attn(x, text, text, text_keep))
        return self.norm3(x + self.ffn(x))


class CognitionBranch(nn.Module):
    def __init__(self, cfg: DeRISConfig) -> None:
        super().__init__()
        d, h = cfg.beit3.embed_dim, cfg.hidden_dim
        self.beit3 = BEiT3Encoder(cfg.beit3)
        self.image_proj = Linear(d, h)
        self.text_proj = Linear(d, h)
        self.query_proj = Linear(d, h)
        self.init_query = nn.Embedding(cfg.num_queries, d)
        self.text_correlation = nn.ModuleList(
            TextCorrelationLayer(h, cfg.text_correlation) for _ in range(cfg.text_correlation.num_layers)
        )
        self.text_correlation_norm = nn.LayerNorm(h)
        self.class_embed = Linear(h, 2)
        self.existence_embed = Linear(h, 1)

    def encode(self, vision_tokens: Tensor, token_ids: Tensor, padding_mask: Tensor) -> CognitionFeatures:
        cls, img, text = self.beit3(vision_tokens, token_ids, padding_mask)
        b, n, _ = img.shape
        g = int(round(n**0.5))
        img_feat = self.image_proj(img).transpose(1, 2).reshape(b, -1, g, g)
        query = self.query_proj(self.init_query.weight)[None].expand(b, -1, -1)
        return CognitionFeatures(img_feat, self.text_proj(text), query, cls)

    def judge(self, queries: Tensor, text_feat: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``existence logit [B, 1]``, ``class logits [B, Q, 2]``, ``queries [B, Q, C]``."""
        keep = padding_mask.logical_not()[:, None, None, :]
        x = queries
        for layer in self.text_correlation:
            x = layer(x, text_feat, keep)
        x = self.text_correlation_norm(x)
        return self.existence_embed(x).mean(-2), self.class_embed(x), x
