"""Swin Transformer backbone as used by DeRIS (the Swin-Transformer-Object-Detection code path).

timm's Swin differs in ways that change the numbers (it shrinks windows and disables the
shift when a stage is no larger than the window, pads before ``norm1`` and moves patch
merging to the start of a stage), so this is an own implementation with the official
parameter names (``layers.S.blocks.K...``, ``layers.S.downsample``, ``norm0..norm3``).

Details kept from the official model: zero-padding of the normalised features (bottom /
right) up to a multiple of the window, padded positions not masked in plain windows, the
shift of ``window // 2`` in every odd block even when the map fits in one window, the
region mask with value -100 computed on the padded grid, stage outputs taken before
patch merging and passed through their own LayerNorm.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SwinConfig
from .layers import Linear


def relative_position_index(window: int) -> Tensor:
    """Index into the relative-position bias table for every pair of tokens in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


@lru_cache(maxsize=16)
def _shift_mask(hp: int, wp: int, window: int, shift: int, device_str: str) -> Tensor:
    """Additive mask (0 / -100) separating the regions a cyclic shift brings together."""
    labels = torch.zeros(hp, wp)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    n = 0
    for hs in cuts:
        for ws in cuts:
            labels[hs, ws] = n
            n += 1
    win = _partition(labels[None, :, :, None], window).flatten(1)  # [nW, w*w]
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0).to(device_str)


def _partition(x: Tensor, w: int) -> Tensor:
    """``[B, H, W, C] -> [B * nW, w, w, C]``."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, w, w, c)


def _merge(windows: Tensor, w: int, h: int, wd: int) -> Tensor:
    """Inverse of :func:`_partition`."""
    b = windows.shape[0] // ((h // w) * (wd // w))
    x = windows.view(b, h // w, wd // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, -1)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)
        self._bias_cache: tuple[tuple, Tensor] | None = None  # see position_bias
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, dtype: torch.dtype) -> Tensor:
        """The relative position bias ``[h, n, n]`` in ``dtype``.

        It depends on the weights only, so without autograd it is kept until the table changes (its
        version counter moves on any in-place write: a load or an optimizer step). The shifted
        windows' mask is added per forward: kept, it would hold ``nw`` copies for every block."""
        table = self.relative_position_bias_table
        key = (table._version, table.data_ptr(), dtype)
        if self._bias_cache is not None and self._bias_cache[0] == key and not torch.is_grad_enabled():
            return self._bias_cache[1]
        n = self.window * self.window
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).to(dtype).contiguous()
        if not torch.is_grad_enabled():
            self._bias_cache = (key, bias)
        return bias

    def forward(self, x: Tensor, shift_mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        bias = self.position_bias(q.dtype)
        if shift_mask is not None:
            nw = shift_mask.shape[0]
            bias = bias[None] + shift_mask[:, None].to(q.dtype)  # [nw, h, n, n]
            if bw != nw:  # several images: the same masks for each (no copy for a single image)
                bias = bias.repeat(bw // nw, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        ws = self.window
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = _shift_mask(hp, wp, ws, self.shift, str(x.device))
        y = self.attn(_partition(y, ws).view(-1, ws * ws, c), mask)
        y = _merge(y.view(-1, ws, ws, c), ws, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_b or pad_r:
            y = y[:, :h, :w]
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat((x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]), dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        p = self.patch
        if w % p or h % p:
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        return self.proj(x)


class SwinBackbone(nn.Module):
    """Returns the four stage outputs ``res2..res5`` as NCHW tensors."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        chans = cfg.channels
        self.layers = nn.ModuleList(
            SwinStage(chans[i], cfg.depths[i], cfg.num_heads[i], cfg.window_size, cfg.mlp_ratio, i < 3) for i in range(4)
        )
        for i, c in enumerate(chans):
            self.add_module(f"norm{i}", nn.LayerNorm(c))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        outs = []
        for i, stage in enumerate(self.layers):
            for block in stage.blocks:
                x = block(x, h, w)
            out = getattr(self, f"norm{i}")(x)
            outs.append(out.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return outs
