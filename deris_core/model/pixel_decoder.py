"""Mask2Former's multi-scale deformable-attention pixel decoder, in pure PyTorch.

The deformable sampling uses ``grid_sample`` (bilinear, zero padding,
``align_corners=False``), which is exactly what the official code runs on a CPU; its CUDA
kernel computes the same sampling in another summation order.

Order facts: the transformer levels are (res5, res4, res3), so ``input_proj.0`` belongs to
res5; the FPN adds the res2 lateral to a *bilinear* upsampling of the finest encoder level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PixelDecoderConfig
from .layers import Linear, FFN, sine_position_2d


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR)."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int) -> None:
        super().__init__()
        self.dim, self.levels, self.heads, self.points = dim, num_levels, num_heads, num_points
        self.sampling_offsets = Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = Linear(dim, dim)
        self.output_proj = Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * torch.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2)
        grid = grid.repeat(1, self.levels, self.points, 1) * torch.arange(1, self.points + 1).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference: Tensor, value_in: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """``query [B, Lq, C]``, ``reference [Lq, 2]`` in [0, 1] (x, y), ``value_in [B, Lv, C]``."""
        b, lq, c = query.shape
        m, lv, p = self.heads, self.levels, self.points
        value = self.value_proj(value_in)
        offsets = self.sampling_offsets(query).view(b, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(b, lq, m, lv * p).softmax(-1).view(b, lq, m, lv, p)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[None, :, None, None, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = deformable_sample(value, shapes, locations, weights, m)
        return self.output_proj(out)


def deformable_sample(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor, heads: int) -> Tensor:
    """Attention-weighted bilinear sampling of multi-scale values.

    Equivalent to ``grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)``
    at every location followed by the attention-weighted sum over levels and points, but
    computed as one ``embedding_bag``: each output row gathers the 4 bilinear corners of
    every sampling point and sums them with weight ``attention x bilinear`` (out-of-image
    corners get weight 0). Nothing of size ``[heads, dim, queries, points]`` is materialised.

    The corner rows and weights are worked out level by level with the level's size as plain
    numbers, in int32: element-wise passes over contiguous ``[B, Lq, M, P]`` tensors vectorise on
    every CPU (AVX2 has no int64 minimum, and broadcasting over a last axis of 4 does not
    vectorise), about 3x faster than one pass over ``[B, Lq, M, L, P, 4]`` and bit for bit the same.

    Shapes: ``value [B, Lv, C]``, ``locations [B, Lq, M, L, P, 2]`` in [0, 1] (x, y),
    ``weights [B, Lq, M, L, P]``. Returns ``[B, Lq, C]``.
    """
    b, lv_total, c = value.shape
    _, lq, m, nl, p, _ = locations.shape
    dh = c // heads
    rows, wts = [], []
    # first table row of (batch, head) at this level's first position; the table is built below
    start = (torch.arange(b * m, device=value.device, dtype=torch.int32) * lv_total).view(b, 1, m, 1)
    for level, (h, w) in enumerate(shapes):
        x = locations[:, :, :, level, :, 0] * float(w) - 0.5  # pixel coordinates, align_corners=False
        y = locations[:, :, :, level, :, 1] * float(h) - 0.5
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        gx, gy = 1 - fx, 1 - fy
        xi, yi = x0.to(torch.int32), y0.to(torch.int32)
        in_x0, in_x1 = (xi >= 0) & (xi < w), (xi >= -1) & (xi < w - 1)
        in_y0, in_y1 = (yi >= 0) & (yi < h), (yi >= -1) & (yi < h - 1)
        a = weights[:, :, :, level]
        # the 4 corners as a last axis (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1)
        wts.append(torch.stack((gx * gy * a * (in_x0 & in_y0), fx * gy * a * (in_x1 & in_y0),
                                gx * fy * a * (in_x0 & in_y1), fx * fy * a * (in_x1 & in_y1)), -1))
        # out-of-image corners weigh 0, so any in-range row will do for them: clamp instead of select
        c0, c1 = xi.clamp(0, w - 1), (xi + 1).clamp_(0, w - 1)
        r0, r1 = yi.clamp(0, h - 1).mul_(w) + start, (yi + 1).clamp_(0, h - 1).mul_(w) + start
        rows.append(torch.stack((r0 + c0, r0 + c1, r1 + c0, r1 + c1), -1))
        start = start + h * w
    # One table per (batch, head): rows (b, head, position) of the head's dh channels.
    table = value.view(b, lv_total, m, dh).permute(0, 2, 1, 3).reshape(b * m * lv_total, dh)
    idx = torch.stack(rows, 3).reshape(b * lq * m, -1)  # [B, Lq, M, L, P, 4] -> one bag per (b, query, head)
    per_sample = torch.stack(wts, 3).reshape(b * lq * m, -1).to(table.dtype)
    out = F.embedding_bag(idx, table, per_sample_weights=per_sample, mode="sum")
    return out.view(b, lq, m * dh)


class DeformableEncoderLayer(nn.Module):
    """Post-norm: ``x = LN(x + attn(x + pos))``, ``x = LN(x + FFN(x))``."""

    def __init__(self, dim: int, cfg: PixelDecoderConfig, num_levels: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_levels, cfg.num_heads, cfg.num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, cfg.ffn_dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        x = self.norm1(x + self.self_attn(x + pos, reference, x, shapes))
        return self.norm2(x + self.ffn(x))


def _conv_gn(cin: int, cout: int, k: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2), nn.GroupNorm(groups, cout))


def _reference_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1], as (x, y)."""
    refs = []
    for h, w in shapes:
        ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h
        xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((gx.reshape(-1), gy.reshape(-1)), -1))
    return torch.cat(refs).to(dtype)


class PixelDecoder(nn.Module):
    """Swin features -> (mask features at stride 4, three multi-scale maps at 32/16/8)."""

    def __init__(self, in_channels: list[int], dim: int, cfg: PixelDecoderConfig) -> None:
        super().__init__()
        g = cfg.num_groups
        # Index 0 = res5, 1 = res4, 2 = res3 (the official reversed order).
        self.input_proj = nn.ModuleList(_conv_gn(c, dim, 1, g) for c in (in_channels[3], in_channels[2], in_channels[1]))
        self.level_embed = nn.Parameter(torch.randn(3, dim))
        self.layers = nn.ModuleList(DeformableEncoderLayer(dim, cfg, 3) for _ in range(cfg.num_layers))
        self.lateral = _conv_gn(in_channels[0], dim, 1, g)
        self.output = _conv_gn(dim, dim, 3, g)
        self.mask_features = nn.Conv2d(dim, dim, kernel_size=1)
        for seq in (*self.input_proj, self.lateral, self.output):
            nn.init.xavier_uniform_(seq[0].weight)
            nn.init.zeros_(seq[0].bias)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``feats`` = [res2, res3, res4, res5]. Returns ``mask_features``, ``[12x12, 24x24, 48x48]``."""
        levels = (feats[3], feats[2], feats[1])
        srcs, pos, shapes = [], [], []
        for i, f in enumerate(levels):
            x = self.input_proj[i](f)
            b, c, h, w = x.shape
            shapes.append((h, w))
            srcs.append(x.flatten(2).transpose(1, 2))
            p = sine_position_2d(h, w, c, x.device, x.dtype).flatten(1).transpose(0, 1)
            pos.append(p + self.level_embed[i])
        x = torch.cat(srcs, 1)
        pos_all = torch.cat(pos, 0)[None]
        reference = _reference_points(shapes, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, pos_all, reference, shapes)
        outs = []
        start = 0
        for h, w in shapes:
            outs.append(x[:, start : start + h * w].transpose(1, 2).reshape(b, -1, h, w))
            start += h * w
        lateral = F.relu(self.lateral(feats[0]))
        up = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        fpn = F.relu(self.output(lateral + up))
        return self.mask_features(fpn), outs
