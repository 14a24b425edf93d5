"""Building blocks shared by the perception and cognition branches.

Attention layers keep the parameter layout of ``torch.nn.MultiheadAttention``
(``in_proj_weight``/``in_proj_bias``/``out_proj``) so official weights map one to one, but
run through ``scaled_dot_product_attention`` with batch-first tensors and no extra copies.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hardware import onednn_prepack_enabled, packable_dtypes

_ONEDNN = onednn_prepack_enabled()


def prepack_active() -> bool:
    """Whether :class:`Linear` packs its weights in this process (decided at import)."""
    return _ONEDNN


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) with a faster CPU inference path.

    Without autograd, on CPU in float32 (and bfloat16 where oneDNN accepts bf16 on this CPU, see
    :func:`deris_core.hardware.packable_dtypes`), the weight is re-laid out once into
    oneDNN's blocked format *in place*: the ``weight`` parameter then holds the packed
    (opaque ``torch._mkldnn``) tensor and the plain copy is freed, so the linear weights cost
    no extra memory. The plain weight is rebuilt from the packed one whenever something needs
    it: ``state_dict``, ``load_state_dict``, ``.to()`` and dtype casts, autograd, other
    devices, or ``DERIS_ONEDNN_PREPACK=0``. The parameter object keeps its identity across
    packing (optimizers holding it stay valid after an unpack).

    :meth:`quantize_int8_` is the third form (``--dtype int8``): the weight kept as int8, one scale
    per output channel, packed for PyTorch's quantized CPU kernels; float32 activations are
    quantized per call (dynamic quantization). It is one-way: the float weight is freed, and
    whatever needs a plain weight later gets the dequantized one.
    """

    _plain: nn.Parameter | None = None  # the original parameter (emptied) while packed
    _int8: Any = None  # packed int8 weight and float bias (torch.ops.quantized.linear_prepack)

    def _uses_packed(self, x: Tensor) -> bool:
        return (_ONEDNN and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == self.weight.dtype and x.dtype in packable_dtypes())

    def pack_(self) -> None:
        """Replace the weight by its oneDNN-packed form (no-op when packed or not on CPU)."""
        w = self.weight
        if self._int8 is not None or self._plain is not None or w.device.type != "cpu" or w.dtype not in packable_dtypes() or not _ONEDNN:
            return
        with torch.inference_mode(False), torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), 64)
            plain = w
            plain.data = torch.empty(0, dtype=w.dtype)
        object.__setattr__(self, "_plain", plain)  # not registered: the state dict sees ``weight`` only
        self.weight = nn.Parameter(packed, requires_grad=False)

    def unpack_(self) -> None:
        """Bring back the plain weight (no-op when not packed)."""
        plain = self._plain
        if plain is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            plain.data = self.weight.detach().to_dense()
        object.__setattr__(self, "_plain", None)
        self.weight = plain

    def quantize_int8_(self) -> None:
        """Keep the weight as per-output-channel symmetric int8 for the quantized CPU kernels."""
        if self._int8 is not None:
            return
        self.unpack_()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PyTorch's notice that quantized tensors will move to torchao
            w = self.weight.detach().float()
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
            q = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            bias = None if self.bias is None else self.bias.detach().float()
            packed = torch.ops.quantized.linear_prepack(q, bias)
            self.weight.data = torch.empty(0, dtype=w.dtype)
        object.__setattr__(self, "_int8", packed)

    def dequantize_(self) -> None:
        """Bring back a float weight from the int8 one (lossy; no-op when not quantized)."""
        if self._int8 is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            q, _ = torch.ops.quantized.linear_unpack(self._int8)
            self.weight.data = q.dequantize().to(self.weight.dtype)
        object.__setattr__(self, "_int8", None)

    def forward(self, x: Tensor) -> Tensor:
        if self._int8 is not None:
            if not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32:
                # reduce_range: 7-bit activations, so AVX2's 16-bit pairwise sums cannot saturate
                return torch.ops.quantized.linear_dynamic(x.contiguous(), self._int8, True)
            self.dequantize_()
        if self._uses_packed(x):
            self.pack_()
            return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.weight, self.bias, "none", [], "")
        self.unpack_()
        return F.linear(x, self.weight, self.bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        self.dequantize_()
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._plain is not None:
            destination[prefix + "weight"] = self.weight.detach().to_dense()

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.dequantize_()  # a float weight of the right shape, which the loaded one replaces
        self.unpack_()
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self.dequantize_()
        self.unpack_()
        return super()._apply(fn, recurse)


class Embedding(nn.Embedding):
    """``nn.Embedding`` (same parameter and state dict) that int8 can keep as int8 rows.

    The text vocabulary (64010 x 768: 188 MiB in float32) is by far the largest float tensor left
    in an int8 model, and a look-up reads only a few of its rows. :meth:`quantize_int8_` keeps each
    row as symmetric int8 with one float scale (a row's error is at most half a step, 1/254 of its
    largest value); without autograd a look-up dequantizes just the rows it reads. Like
    :class:`Linear`, it is one-way, and whatever needs the plain weight gets the dequantized one.
    """

    _int8: tuple[Tensor, Tensor] | None = None  # int8 rows [V, D] and float scales [V, 1]

    def quantize_int8_(self) -> None:
        """Keep the table as int8 rows with one scale each (no-op when already quantized)."""
        if self._int8 is not None:
            return
        with torch.inference_mode(False), torch.no_grad():
            w = self.weight.detach()
            scale = (w.abs().amax(dim=1, keepdim=True).float() / 127.0).clamp(min=1e-12)
            q = torch.empty(w.shape, dtype=torch.int8)
            for start in range(0, w.shape[0], 4096):  # by blocks of rows: no float temporaries of the table's size
                rows = slice(start, start + 4096)
                q[rows] = torch.round(w[rows].float() / scale[rows]).clamp_(-127, 127)
            self.weight.data = torch.empty(0, dtype=w.dtype)
        object.__setattr__(self, "_int8", (q, scale))

    def dequantize_(self) -> None:
        """Bring back a float table from the int8 one (lossy; no-op when not quantized)."""
        if self._int8 is None:
            return
        q, scale = self._int8
        with torch.inference_mode(False), torch.no_grad():
            self.weight.data = q.float() * scale
        object.__setattr__(self, "_int8", None)

    def forward(self, ids: Tensor) -> Tensor:
        if self._int8 is not None:
            if not torch.is_grad_enabled():
                q, scale = self._int8
                return F.embedding(ids, q).float() * F.embedding(ids, scale)
            self.dequantize_()
        return super().forward(ids)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        self.dequantize_()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.dequantize_()
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self.dequantize_()
        return super()._apply(fn, recurse)


def pack_linear_weights(model: nn.Module) -> None:
    """Pack every :class:`Linear` of ``model`` now (inference on CPU); frees the plain copies."""
    for m in model.modules():
        if isinstance(m, Linear):
            m.pack_()


def unpack_linear_weights(model: nn.Module) -> None:
    """Bring back every packed :class:`Linear`'s plain weight (a model evaluated by a
    :class:`~deris_core.predictor.Predictor` that is trained next: its optimizer must see them)."""
    for m in model.modules():
        if isinstance(m, Linear):
            m.unpack_()


# Layers left in float32 under int8: the deformable attention's sampling offsets and weights (an
# error there moves where features are read) and the small heads that make the scores.
INT8_KEEP_FLOAT = ("sampling_offsets", "attention_weights", "class_embed", "refer_embed", "existence_embed")


def int8_layers(model: nn.Module, keep_float: tuple[str, ...] = INT8_KEEP_FLOAT) -> list[tuple[str, Linear]]:
    """The :class:`Linear` layers that int8 quantizes: all but those named in ``keep_float`` and
    those with fewer than 16 outputs."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Linear)
            and not any(part in keep_float for part in name.split(".")) and m.out_features >= 16]


def quantize_int8_weights(model: nn.Module) -> int:
    """int8 weights for the :func:`int8_layers` and every :class:`Embedding`, the other linear
    layers packed as usual; returns how many linear layers were quantized."""
    chosen = {id(m) for _, m in int8_layers(model)}
    for m in model.modules():
        if isinstance(m, Linear):
            m.quantize_int8_() if id(m) in chosen else m.pack_()
        elif isinstance(m, Embedding):
            m.quantize_int8_()
    return len(chosen)


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters, batch first.

    ``mask`` is either boolean (True = may attend) broadcastable to ``[B, heads, Lq, Lk]``
    or additive float.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def project_key(self, key: Tensor) -> Tensor:
        """Key projection split into heads ``[B, h, L, d]`` (cacheable for a fixed memory)."""
        d = self.dim
        return self._split(F.linear(key, self.in_proj_weight[d : 2 * d], self.in_proj_bias[d : 2 * d]))

    def project_value(self, value: Tensor) -> Tensor:
        """Value projection split into heads ``[B, h, L, d]``."""
        d = self.dim
        return self._split(F.linear(value, self.in_proj_weight[2 * d :], self.in_proj_bias[2 * d :]))

    def attend(self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention of raw queries over already projected keys/values."""
        d = self.dim
        q = self._split(F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d]))
        if k.shape[0] != q.shape[0]:
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        w, bias, d = self.in_proj_weight, self.in_proj_bias, self.dim
        if query is key:  # self-attention with q == k input: one matmul for both
            q, k = F.linear(query, w[: 2 * d], bias[: 2 * d]).chunk(2, dim=-1)
        else:
            q = F.linear(query, w[:d], bias[:d])
            k = F.linear(key, w[d : 2 * d], bias[d : 2 * d])
        v = F.linear(value, w[2 * d :], bias[2 * d :])
        out = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v), attn_mask=mask)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class FFN(nn.Module):
    """Two-layer ReLU feed-forward block (``linear1``/``linear2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = Linear(dim, hidden)
        self.linear2 = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(F.relu(self.linear1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between (Mask2Former's ``MLP``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: ``norm(x + attn(x + pos, x + pos, x))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        qk = x if pos is None else x + pos
        return self.norm(x + self.self_attn(qk, qk, x))


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention; keys/values come pre-projected from :meth:`project_memory`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def project_memory(self, memory: Tensor, memory_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Keys ``(memory + pos) W_k`` and values ``memory W_v``: image-only, so cacheable."""
        return self.attn.project_key(memory + memory_pos), self.attn.project_value(memory)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None, query_pos: Tensor) -> Tensor:
        return self.norm(x + self.attn.attend(x + query_pos, kv[0], kv[1], mask))


class FFNLayer(nn.Module):
    """Post-norm FFN block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ffn = FFN(dim, hidden)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.ffn(x))


@lru_cache(maxsize=32)
def _sine_2d(h: int, w: int, channels: int, device_str: str) -> Tensor:
    """Normalised 2-D sine embedding (DETR / Mask2Former, ``normalize=True``), ``[C, H, W]``."""
    device = torch.device(device_str)
    npf = channels // 2
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, :].expand(h, w)
    scale = 2 * math.pi
    y = y / (h + 1e-6) * scale
    x = x / (w + 1e-6) * scale
    dim_t = torch.arange(npf, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)
    px = x[..., None] / dim_t
    py = y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=-1).flatten(-2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=-1).flatten(-2)
    return torch.cat((py, px), dim=-1).permute(2, 0, 1).contiguous()


def sine_position_2d(h: int, w: int, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Cached 2-D sine position embedding ``[C, H, W]``; channel order (pos_y, pos_x)."""
    return _sine_2d(h, w, channels, str(device)).to(dtype)


def text_position_1d(length: int, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The official 1-D text position embedding ``[T, C]``.

    The official code casts its inverse frequencies to integers, so only the first
    frequency (1) survives: channel 0 = sin(pos), channel 1 = cos(pos), every other even
    channel is sin(0) = 0 and every other odd channel cos(0) = 1.
    """
    pos = torch.arange(length, dtype=torch.float32, device=device)
    emb = torch.zeros(length, channels, dtype=torch.float32, device=device)
    emb[:, 1::2] = 1.0
    emb[:, 0] = torch.sin(pos)
    emb[:, 1] = torch.cos(pos)
    return emb.to(dtype)
