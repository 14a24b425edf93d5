"""Overlays of predicted masks on the image (used by the CLI and the app)."""

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


def overlay(image: np.ndarray, masks: list[np.ndarray], colors: list[tuple[int, int, int]] | None = None, alpha: float = 0.5) -> np.ndarray:
    """Tint each mask on the RGB image and outline it; returns a new RGB uint8 array."""
    out = image.astype(np.float32).copy()
    colors = colors or [color(i) for i in range(len(masks))]
    for m, c in zip(masks, colors):
        sel = m.astype(bool)
        if not sel.any():
            continue
        out[sel] = out[sel] * (1 - alpha) + np.array(c, np.float32) * alpha
    out = out.clip(0, 255).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for m, c in zip(masks, colors):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, c, thickness)
    return out


def banner(image: np.ndarray, text: str, rgb: tuple[int, int, int] = (200, 30, 30)) -> np.ndarray:
    """Write a short verdict in a coloured bar on top of the image."""
    out = image.copy()
    h = max(18, image.shape[0] // 14)
    scale = h / 30
    cv2.rectangle(out, (0, 0), (out.shape[1], h), rgb, -1)
    cv2.putText(out, text, (6, int(h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(scale * 2)), cv2.LINE_AA)
    return out
