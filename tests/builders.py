"""Small hand-made inputs shared by several test modules: a folder of pictures for a collection,
boxes as masks and a :class:`~deris_core.predictor.Prediction` made from them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from app.store import Store
from deris_core.predictor import Prediction


def picture_folder(tmp_path: Path, n: int = 6, db: str | None = None) -> tuple[Store, Path]:
    """A new store (``db``: a path or URL, default ``c.sqlite`` in ``tmp_path``) and a folder of ``n`` small
    PNGs of different sizes, every other one in ``sub/``."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for k in range(n):
        img = np.full((24 + k, 30, 3), 10 * k, np.uint8)
        cv2.imwrite(str(folder / ("sub" if k % 2 else "") / f"img_{k}.png"), img)
    return Store(db or tmp_path / "c.sqlite"), folder


def prediction(masks: list[np.ndarray], scores: list[float], thr: float = 0.5) -> Prediction:
    """A prediction whose candidates are exactly ``masks`` (logits of +-10) with these scores."""
    h, w = masks[0].shape
    logits = torch.tensor(np.stack([np.where(m, 10.0, -10.0) for m in masks]), dtype=torch.float32)
    return Prediction("x", np.array(scores, np.float32), 0.9, np.zeros((len(masks), 4), np.float32), (h, w), thr, 0.5, logits)


def box(y0: int, x0: int, y1: int, x1: int, h: int = 40, w: int = 40) -> np.ndarray:
    """A boolean mask of the rectangle rows y0..y1, columns x0..x1."""
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def noise_image(seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    """A random RGB picture (different seeds: different content, so different images in a store)."""
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def rect_mask(box: tuple[int, int, int, int] = (2, 3, 10, 12), h: int = 24, w: int = 32) -> np.ndarray:
    """A boolean mask of the rectangle ``(y0, x0, y1, x1)``."""
    y0, x0, y1, x1 = box
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m
