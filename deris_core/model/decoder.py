"""Masked-attention query decoder (Mask2Former style) with DeRIS's loopback.

The queries come from the cognition branch; ``query_pos`` is a learned positional query.
Layer ``i`` cross-attends (masked by the previous prediction) to multi-scale level
``i % 3`` (12x12, 24x24, 48x48 at 384 input), then self-attends, then runs an FFN; the
prediction heads and a loopback step follow the initial queries and every layer.

Image-only work is split out so a predictor can cache it: :meth:`prepare_image` turns the
pixel-decoder outputs into per-layer key/value projections and the image half of the
mask-feature fusion (``channel_proj_conv`` is a 1x1 conv over ``[mask_features,
upsampled img_feat]``; being linear it splits into an image-only term and a term on the
14x14 cognition map that commutes with the bilinear upsampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DecoderConfig
from .layers import Linear, MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer, sine_position_2d, text_position_1d
from .loopback import LoopbackStep


@dataclass
class DecoderMemory:
    """Everything the decoder needs that depends on the image alone."""

    kv: list[tuple[Tensor, Tensor]]  # per layer: projected keys/values of its level
    level_sizes: list[tuple[int, int]]
    mask_features_term: Tensor  # W_mask * mask_features + bias, [B, C, 96, 96]


@dataclass
class DecoderOutput:
    mask_logits: list[Tensor]  # per stage [B, Q, 96, 96] (before the x4 upsampling)
    boxes: list[Tensor]  # per stage [B, Q, 4], cx cy w h in [0, 1]
    class_logits: list[Tensor]  # per stage [B, Q, 2] (perception "objectness" head)
    refer_logits: list[Tensor]  # per stage [B, Q, 2] (class 0 = referred)
    stage_queries: list[Tensor]  # per stage [B, Q, C]: the normed queries the heads read
    queries: Tensor  # [B, Q, C] after the last loopback


class MaskedDecoder(nn.Module):
    def __init__(self, dim: int, num_queries: int, cfg: DecoderConfig) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers
        self.cross_attn = nn.ModuleList(CrossAttentionLayer(dim, cfg.num_heads) for _ in range(cfg.num_layers))
        self.self_attn = nn.ModuleList(SelfAttentionLayer(dim, cfg.num_heads) for _ in range(cfg.num_layers))
        self.ffn = nn.ModuleList(FFNLayer(dim, cfg.ffn_dim) for _ in range(cfg.num_layers))
        self.loopback = nn.ModuleList(LoopbackStep(dim, cfg.ffn_dim, cfg.num_heads, cfg.loopback) for _ in range(cfg.num_layers + 1))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_pos = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(3, dim)
        self.mask_embed = MLP(dim, dim, dim, 3)
        self.box_embed = MLP(dim, dim, 4, 3)
        self.class_embed = Linear(dim, 2)
        self.refer_embed = Linear(dim, 2)
        self.fuse = nn.Conv2d(2 * dim, dim, kernel_size=1)

    def prepare_image(self, mask_features: Tensor, multi_scale: list[Tensor]) -> DecoderMemory:
        """Image-only part of the decoder (cacheable per image)."""
        kv = []
        sizes = [tuple(feat.shape[-2:]) for feat in multi_scale]
        for i, layer in enumerate(self.cross_attn):
            lvl = i % 3
            feat = multi_scale[lvl]
            c = feat.shape[1]
            src = feat.flatten(2).transpose(1, 2) + self.level_embed.weight[lvl]
            pos = sine_position_2d(*sizes[lvl], c, feat.device, feat.dtype).flatten(1).transpose(0, 1)
            kv.append(layer.project_memory(src, pos))
        w = self.fuse.weight[:, : mask_features.shape[1]]
        return DecoderMemory(kv=kv, level_sizes=sizes, mask_features_term=F.conv2d(mask_features, w, self.fuse.bias))

    def fuse_mask_features(self, memory: DecoderMemory, img_feat: Tensor) -> tuple[Tensor, Tensor]:
        """``fuse(cat[mask_features, bilinear(img_feat)])`` as its two terms, never added up:
        the image term ``[b, C, 96, 96]`` (cached) and the text-dependent term at 14x14."""
        c = memory.mask_features_term.shape[1]
        return memory.mask_features_term, F.conv2d(img_feat, self.fuse.weight[:, c:])

    def _heads(self, queries: Tensor, features: tuple[Tensor, Tensor], next_size: tuple[int, int]) -> tuple[Tensor, ...]:
        x = self.decoder_norm(queries)
        embed = self.mask_embed(x)
        term, small = features
        # mask = embed . (term + up(small)) = embed . term + up(embed . small): bilinear upsampling is
        # linear per channel, so it commutes with the channel mix; Q maps are upsampled instead of C,
        # and the fused [B, C, 96, 96] features of every expression never exist.
        flat = term.flatten(2)
        masks = torch.matmul(embed, flat[0] if flat.shape[0] == 1 else flat).view(*embed.shape[:2], *term.shape[-2:])
        low = torch.matmul(embed, small.flatten(2)).view(*embed.shape[:2], *small.shape[-2:])
        masks = masks.add_(F.interpolate(low, size=term.shape[-2:], mode="bilinear", align_corners=False))
        boxes = self.box_embed(x).sigmoid()
        logits = self.class_embed(x)
        small_masks = F.interpolate(masks, size=next_size, mode="bilinear", align_corners=False)
        allowed = small_masks.sigmoid().flatten(2) >= 0.5  # [B, Q, HW]; True = may attend
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # a query masked everywhere sees everything
        return masks, boxes, logits, allowed[:, None], x

    def forward(
        self, queries: Tensor, memory: DecoderMemory, img_feat: Tensor, text: Tensor, text_padding: Tensor
    ) -> DecoderOutput:
        """``queries [B, Q, C]`` from cognition, ``img_feat [B, C, 14, 14]``, ``text [B, T, C]``."""
        features = self.fuse_mask_features(memory, img_feat)
        text_pos = text_position_1d(text.shape[1], text.shape[2], text.device, text.dtype)
        pad_bias = (text_padding.to(text.dtype) * -100.0)[:, None, None, :]
        query_pos = self.query_pos.weight[None]
        out = DecoderOutput([], [], [], [], [], queries)
        sizes = memory.level_sizes

        masks, boxes, logits, allowed, normed = self._heads(queries, features, sizes[0])
        queries, referring = self.loopback[0](queries, text, text_pos, pad_bias)
        self._record(out, masks, boxes, logits, referring, normed)
        for i in range(self.num_layers):
            queries = self.cross_attn[i](queries, memory.kv[i], allowed, query_pos)
            queries = self.self_attn[i](queries, pos=query_pos)
            queries = self.ffn[i](queries)
            masks, boxes, logits, allowed, normed = self._heads(queries, features, sizes[(i + 1) % 3])
            queries, referring = self.loopback[i + 1](queries, text, text_pos, pad_bias)
            self._record(out, masks, boxes, logits, referring, normed)
        out.queries = queries
        return out

    def _record(self, out: DecoderOutput, masks: Tensor, boxes: Tensor, logits: Tensor, referring: Tensor,
                normed: Tensor) -> None:
        out.mask_logits.append(masks)
        out.stage_queries.append(normed)
        out.boxes.append(boxes)
        out.class_logits.append(logits)
        out.refer_logits.append(self.refer_embed(referring))


def upsample_masks(mask_logits: Tensor) -> Tensor:
    """The official x4 upsampling of mask logits (bilinear, ``align_corners=True``)."""
    h, w = mask_logits.shape[-2:]
    return F.interpolate(mask_logits, size=(4 * h, 4 * w), mode="bilinear", align_corners=True)
