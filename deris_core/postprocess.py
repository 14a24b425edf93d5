"""Post-processing exactly as the official demo/evaluation does it, for every candidate.

- referring score of query q = ``softmax(refer_logits)[q, 0]``;
- binary mask = ``sigmoid(mask logits at 384x384) >= mask_threshold``;
- the answer is the union of the masks of queries whose score is *strictly* above the
  score threshold (empty if none: the "no target" verdict of the official evaluation);
- masks go back to the original size by nearest-neighbour resizing (OpenCV INTER_NEAREST);
- boxes: cx,cy,w,h -> x1,y1,x2,y2 in input pixels, clipped, divided by the scale factor.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor


def referring_scores(refer_logits: Tensor) -> Tensor:
    """``[..., Q, 2] -> [..., Q]``: probability that each query is referred."""
    return refer_logits.float().softmax(-1)[..., 0]


def binary_masks(mask_logits: Tensor, mask_threshold: float) -> Tensor:
    """``sigmoid(logits) >= threshold`` as uint8 (the official comparison, done on the sigmoid)."""
    return (mask_logits.float().sigmoid() >= mask_threshold).to(torch.uint8)


def union_of_referred(masks: Tensor, scores: Tensor, score_threshold: float) -> Tensor:
    """OR of the masks whose score is strictly above the threshold (``[Q, H, W] -> [H, W]``)."""
    keep = scores > score_threshold
    if not bool(keep.any()):
        return torch.zeros(masks.shape[-2:], dtype=torch.uint8, device=masks.device)
    return masks[keep].amax(0)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``[H, W]`` or ``[N, H, W]`` uint8 masks to ``size = (H, W)``."""
    h, w = size
    if mask.ndim == 2:
        return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    if mask.shape[0] == 0:
        return np.zeros((0, h, w), dtype=mask.dtype)
    # OpenCV handles up to 512 channels at once; resize in channel chunks.
    chunks = []
    for start in range(0, mask.shape[0], 512):
        part = np.ascontiguousarray(mask[start : start + 512].transpose(1, 2, 0))
        out = cv2.resize(part, (w, h), interpolation=cv2.INTER_NEAREST)
        chunks.append(out.reshape(h, w, -1).transpose(2, 0, 1))
    return np.ascontiguousarray(np.concatenate(chunks, 0))


def nearest_index_maps(src: tuple[int, int], dst: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of every destination pixel under :func:`resize_nearest`.

    ``mask[rows][:, cols]`` equals ``resize_nearest(mask, dst)`` exactly (the maps come from
    OpenCV itself, resizing index ramps), and row/column counts give areas without resizing.
    """
    (sh, sw), (dh, dw) = src, dst
    cols = cv2.resize(np.arange(sw, dtype=np.uint16)[None, :], (dw, 1), interpolation=cv2.INTER_NEAREST).reshape(-1)
    rows = cv2.resize(np.arange(sh, dtype=np.uint16)[:, None], (1, dh), interpolation=cv2.INTER_NEAREST).reshape(-1)
    return rows.astype(np.intp), cols.astype(np.intp)


def boxes_to_original(boxes: Tensor, input_size: tuple[int, int], scale_factor: tuple[float, ...]) -> Tensor:
    """``[Q, 4]`` cx,cy,w,h in [0, 1] -> x1,y1,x2,y2 in original pixels (official rounding path)."""
    h, w = input_size
    cx, cy, bw, bh = boxes.float().unbind(-1)
    xyxy = torch.stack((cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh), -1)
    xyxy = xyxy * torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
    return xyxy / torch.tensor(scale_factor, dtype=xyxy.dtype, device=xyxy.device)
