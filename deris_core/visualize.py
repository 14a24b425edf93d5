"""Overlays of predicted masks on the image (used by the CLI and the app), computed in uint8."""

from __future__ import annotations

import cv2
import numpy as np

PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
        (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    ],
    dtype=np.uint8,
)


def color(i: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[i % len(PALETTE)])


_OUTLINE = np.ones((3, 3), np.uint8)


def palette_lut(colors: list[tuple[int, int, int]] | None = None, first: int = 0) -> np.ndarray:
    """``[256, 3]`` colour table for label maps: label ``k >= 1`` gets ``colors[k - 1]`` (default:
    palette colour ``first + k - 1``); label 0 is background."""
    lut = np.zeros((256, 3), np.uint8)
    if colors is None:
        lut[1:] = PALETTE[(first + np.arange(255)) % len(PALETTE)]
    else:
        lut[1 : 1 + len(colors[:255])] = np.asarray(colors[:255], np.uint8).reshape(-1, 3)
    return lut


def tint(image: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float = 0.5, outline: int = 1) -> np.ndarray:
    """Blend ``lut[label]`` into the RGB image where ``labels > 0`` and outline each region in its colour.

    ``labels`` is ``[H, W]`` uint8 (0 = background; overlaps are the caller's choice). All in
    uint8: one blend and, for the outlines, one dilate/erode pair for every region at once.
    """
    colour = lut[labels]
    inside = labels > 0
    out = image.copy()
    np.copyto(out, cv2.addWeighted(image, 1 - alpha, colour, alpha, 0), where=inside[..., None])
    if outline > 0:
        edge = (cv2.dilate(labels, _OUTLINE, iterations=outline) != cv2.erode(labels, _OUTLINE, iterations=outline)) & inside
        np.copyto(out, colour, where=edge[..., None])
    return out


def overlay(image: np.ndarray, masks: list[np.ndarray], colors: list[tuple[int, int, int]] | None = None, alpha: float = 0.5) -> np.ndarray:
    """Tint each mask on the RGB image and outline it; returns a new RGB uint8 array.

    Where masks overlap the later one is shown. Outline width grows with the image (1 px per 800).
    """
    h, w = image.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    for i, m in enumerate(masks[:255]):
        labels[m.astype(bool, copy=False)] = i + 1
    ys, xs = np.flatnonzero(labels.any(1)), np.flatnonzero(labels.any(0))
    out = image.copy()
    if not ys.size:
        return out
    width = max(1, round(max(h, w) / 800))
    y0, y1 = max(0, ys[0] - width - 1), min(h, ys[-1] + width + 2)  # only the masks' bounding box
    x0, x1 = max(0, xs[0] - width - 1), min(w, xs[-1] + width + 2)
    out[y0:y1, x0:x1] = tint(image[y0:y1, x0:x1], labels[y0:y1, x0:x1], palette_lut(colors), alpha, width)
    return out


def banner(image: np.ndarray, text: str, rgb: tuple[int, int, int] = (200, 30, 30)) -> np.ndarray:
    """Write a short verdict in a coloured bar on top of the image."""
    out = image.copy()
    h = max(18, image.shape[0] // 14)
    scale = h / 30
    cv2.rectangle(out, (0, 0), (out.shape[1], h), rgb, -1)
    cv2.putText(out, text, (6, int(h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(scale * 2)), cv2.LINE_AA)
    return out
