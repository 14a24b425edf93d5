"""The pictures of the studio (pure, no Gradio): the target set drawn on the image, and the
candidate gallery; :mod:`app.views.display` feeds them from a session, and the studio's benchmark
(:mod:`app.bench.latency`) times exactly that path.


Each target gets a strong palette colour, a translucent fill, a two-tone outline (dark outside,
colour inside, so it reads on light and dark content alike) and a numbered badge that matches
its row in the candidate list. A no-target verdict puts a red frame and a *NO TARGET* bar on the
picture. Small images are enlarged (nearest neighbour) so that badges and outlines stay crisp;
:func:`view_scale` says by how much, to map clicks back to image pixels.

The candidate gallery has one small thumbnail per candidate, its mask resized from the network's
384x384 output straight to thumbnail size (never through the full image size). Images go to the
browser as JPEG (:data:`IMAGE_FORMAT`, the ``format=`` of ``gr.Image`` and ``gr.Gallery``):
Gradio encodes a 1024x768 overlay in a few milliseconds as JPEG and in about 60 ms as WebP.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from deris_core.predictor import Prediction
from deris_core.visualize import palette_lut, tint

# strong, mutually distinct colours (no greys, no near-whites)
COLOURS = np.array([
    (255, 0, 102), (0, 200, 255), (255, 200, 0), (150, 60, 255), (0, 230, 120), (255, 110, 0),
    (255, 0, 255), (0, 120, 255), (180, 255, 0), (255, 80, 80), (0, 255, 220), (255, 160, 200),
], np.uint8)
IMAGE_FORMAT = "jpeg"
THUMB_SIDE = 160
MIN_VIEW_SIDE = 512
FILL_ALPHA = 0.4


def colour(rank: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in COLOURS[rank % len(COLOURS)])


def view_scale(shape: tuple[int, ...]) -> int:
    """How many times a small image is enlarged for display (1 for images of 512 px and more)."""
    side = max(shape[:2])
    return max(1, -(-MIN_VIEW_SIDE // max(1, side)))


def _badge_centre(mask: np.ndarray) -> tuple[int, int] | None:
    """A point well inside the mask (the maximum of its distance transform, on a reduced copy)."""
    h, w = mask.shape
    s = min(1.0, 256 / max(h, w))
    small = mask.astype(np.uint8)
    if s < 1:
        small = cv2.resize(small, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_NEAREST)
    if not small.any():
        ys, xs = np.nonzero(mask)
        return (int(xs.mean()), int(ys.mean())) if len(xs) else None
    dist = cv2.distanceTransform(np.pad(small, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int((x + 0.5) / s), int((y + 0.5) / s)


def render(image: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str], ranks: Sequence[int],
           no_target: bool = False) -> np.ndarray:
    """The target set on ``image`` (RGB uint8), enlarged by :func:`view_scale`.

    ``labels[i]`` is the badge text of mask ``i`` and ``ranks[i]`` picks its colour (the
    candidate's row in the list, so picture and list agree).
    """
    k = view_scale(image.shape)
    base = image if k == 1 else cv2.resize(image, (image.shape[1] * k, image.shape[0] * k), interpolation=cv2.INTER_NEAREST)
    big = [m if k == 1 else cv2.resize(m.astype(np.uint8), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_NEAREST)
           for m in masks]
    side = max(base.shape[:2])
    line = max(1, round(side / 500))
    # one label map for all targets (the last one drawn wins where they overlap), one blend, one outline
    # pass, all on the targets' bounding box (plus the outline's margin) only: a target covering a
    # tenth of a photo costs a tenth of it
    label_map = np.zeros(base.shape[:2], np.uint8)
    lut = np.zeros((256, 3), np.uint8)
    for i, (m, r) in enumerate(zip(big[:255], ranks)):
        np.copyto(label_map, np.uint8(i + 1), where=m.astype(bool, copy=False))
        lut[i + 1] = colour(r)
    out = base.copy()
    box = cv2.boundingRect(label_map)  # x, y, w, h of the non-zero pixels (all zeros: w = 0)
    if box[2] > 0:
        pad = line + 2
        x0, y0 = max(0, box[0] - pad), max(0, box[1] - pad)
        x1, y1 = min(base.shape[1], box[0] + box[2] + pad), min(base.shape[0], box[1] + box[3] + pad)
        part, crop, dst = label_map[y0:y1, x0:x1], base[y0:y1, x0:x1], out[y0:y1, x0:x1]
        inside = part > 0
        colours = lut[part]
        tinted = ((crop.astype(np.uint16) * round((1 - FILL_ALPHA) * 256)
                   + colours.astype(np.uint16) * round(FILL_ALPHA * 256)) >> 8).astype(np.uint8)
        np.copyto(dst, tinted, where=inside[..., None])
        kernel = np.ones((3, 3), np.uint8)
        changes = cv2.dilate(part, kernel, iterations=line) != cv2.erode(part, kernel, iterations=line)
        np.copyto(dst, colours, where=(changes & inside)[..., None])  # the colour edge inside each target
        ring = cv2.dilate(inside.astype(np.uint8), kernel, iterations=line + 1).astype(bool) & ~inside
        dst[ring] = 0  # a dark ring outside: the outline reads on light and dark content alike
    radius = max(9, round(side / 45))
    font = radius / 16
    for m, r, text in zip(big, ranks, labels):
        centre = _badge_centre(m)
        if centre is None:
            continue
        cv2.circle(out, centre, radius + 2, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(out, centre, radius, colour(r), -1, cv2.LINE_AA)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, round(font * 2)))
        org = (centre[0] - tw // 2, centre[1] + th // 2)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), max(2, round(font * 4)), cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), max(1, round(font * 2)), cv2.LINE_AA)
    if no_target:
        frame = max(4, round(side / 100))
        cv2.rectangle(out, (0, 0), (out.shape[1] - 1, out.shape[0] - 1), (220, 20, 20), frame)
        bar = max(24, round(side / 14))
        cv2.rectangle(out, (0, 0), (out.shape[1], bar), (220, 20, 20), -1)
        scale = bar / 42
        thick = max(1, round(scale * 2))
        (tw, _), _ = cv2.getTextSize("NO TARGET", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.putText(out, "NO TARGET", ((out.shape[1] - tw) // 2, int(bar * 0.78)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


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
