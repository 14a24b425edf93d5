"""The candidate gallery of the annotate view, as a fast pure function (no Gradio): one small
thumbnail per candidate, its mask resized from the network's 384x384 output straight to
thumbnail size (never through the full image size). The target picture itself is
:mod:`app.overlay`.

Images go to the browser as JPEG (:data:`IMAGE_FORMAT`, the ``format=`` of ``gr.Image`` and
``gr.Gallery``): Gradio encodes a 1024x768 overlay in a few milliseconds as JPEG and in about
60 ms as WebP, its default. ``python -m deris_core.bench --app`` times the view's whole path.
"""

from __future__ import annotations

import cv2
import numpy as np

from deris_core.predictor import Prediction
from deris_core.visualize import palette_lut, tint

IMAGE_FORMAT = "jpeg"
THUMB_SIDE = 160


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """The image scaled down so that its longer side is at most ``side`` (area interpolation)."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def candidate_gallery(image: np.ndarray, prediction: Prediction, side: int = THUMB_SIDE) -> list[tuple[np.ndarray, str]]:
    """``(thumbnail, caption)`` per candidate, best first, each tinted in its rank's colour."""
    base = thumbnail(image, side)
    h, w = base.shape[:2]
    small = prediction.masks_384
    items = []
    for rank, k in enumerate(prediction.order):
        m = cv2.resize(small[k], (w, h), interpolation=cv2.INTER_NEAREST)
        items.append((tint(base, m, palette_lut(first=rank), outline=1), f"{rank + 1}. query {k} · {prediction.scores[k]:.3f}"))
    return items
