"""What the studio shows after Enter or a threshold change, as pure functions (no Gradio).

- :func:`target_overlay`: the target set tinted on the image with outlines, computed in
  uint8 with one label map for all masks (no float copy of the image, one outline pass);
- :func:`candidate_gallery`: one small thumbnail per candidate, its mask resized from the
  network's 384x384 output straight to thumbnail size (never through the full image size);
- :func:`candidate_labels`: the candidate list (label, query index), best first.

Images go to the browser as JPEG (:data:`IMAGE_FORMAT`, the ``format=`` of ``gr.Image`` and
``gr.Gallery``): Gradio encodes a 1024x768 overlay in a few milliseconds as JPEG and in about
60 ms as WebP, its default. ``python -m deris_core.bench --app`` times these functions.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from deris_core.predictor import Prediction
from deris_core.visualize import PALETTE

IMAGE_FORMAT = "jpeg"
THUMB_SIDE = 160
_OUTLINE = np.ones((3, 3), np.uint8)


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """The image scaled down so that its longer side is at most ``side`` (area interpolation)."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _palette_lut(first: int = 0) -> np.ndarray:
    """``[256, 3]`` colours: label 0 is black (unused), label ``k`` gets palette colour ``first + k - 1``."""
    n = len(PALETTE)
    lut = np.zeros((256, 3), np.uint8)
    lut[1:] = PALETTE[(first + np.arange(255)) % n]
    return lut


def tint(image: np.ndarray, labels: np.ndarray, lut: np.ndarray, outline: int = 1) -> np.ndarray:
    """Blend ``lut[label]`` at 50% where ``labels > 0`` and draw each region's outline in its colour.

    ``labels`` is ``[H, W]`` uint8 (0 = background). Where regions overlap the caller decides
    (the last one written wins). ``outline`` is the line width in pixels.
    """
    colour = lut[labels]
    inside = labels > 0
    out = image.copy()
    blended = ((image.astype(np.uint16) + colour) >> 1).astype(np.uint8)
    np.copyto(out, blended, where=inside[..., None])
    if outline > 0:
        grown = cv2.dilate(labels, _OUTLINE, iterations=outline)
        shrunk = cv2.erode(labels, _OUTLINE, iterations=outline)
        edge = (grown != shrunk) & inside
        np.copyto(out, colour, where=edge[..., None])
    return out


def target_overlay(image: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """The target set on the image: mask ``i`` tinted in palette colour ``i`` and outlined."""
    if not masks:
        return image
    labels = np.zeros(image.shape[:2], np.uint8)
    for i, m in enumerate(masks[:255]):
        labels[m.astype(bool, copy=False)] = i + 1
    return tint(image, labels, _palette_lut(), outline=max(1, round(max(image.shape[:2]) / 800)))


def candidate_gallery(image: np.ndarray, prediction: Prediction, side: int = THUMB_SIDE) -> list[tuple[np.ndarray, str]]:
    """``(thumbnail, caption)`` per candidate, best first, each tinted in its rank's colour."""
    base = thumbnail(image, side)
    h, w = base.shape[:2]
    small = prediction.masks_384
    items = []
    for rank, k in enumerate(prediction.order):
        m = cv2.resize(small[k], (w, h), interpolation=cv2.INTER_NEAREST)
        items.append((tint(base, m, _palette_lut(rank), outline=1), f"{rank + 1}. query {k} · {prediction.scores[k]:.3f}"))
    return items


def candidate_labels(prediction: Prediction) -> list[tuple[str, int]]:
    """``(label, query index)`` per candidate, best first; referred ones are ticked."""
    p = prediction
    out = []
    for rank, k in enumerate(p.order):
        mark = " ✓" if p.scores[k] > p.score_threshold else ""
        out.append((f"{rank + 1}. query {k} · score {p.scores[k]:.3f}{mark}", int(k)))
    return out
