"""The candidate gallery (app/viewkit/overlay.py) and the overlay tint."""

from __future__ import annotations

import numpy as np
import torch

from app.viewkit.overlay import candidate_gallery, thumbnail
from deris_core.visualize import tint
from deris_core.predictor import Prediction


def _prediction(h: int = 300, w: int = 451, q: int = 5) -> Prediction:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(q, 96, 96, generator=g) * 4
    scores = np.linspace(0.9, 0.1, q)[::-1].copy()
    return Prediction("x", scores, 0.5, np.zeros((q, 4)), (h, w), 0.5, 0.5, logits)


def test_tint_without_outline_only_blends():
    img = np.zeros((4, 4, 3), np.uint8)
    labels = np.zeros((4, 4), np.uint8)
    labels[1:3, 1:3] = 1
    lut = np.zeros((256, 3), np.uint8)
    lut[1] = (200, 100, 50)
    out = tint(img, labels, lut, outline=0)
    np.testing.assert_allclose(out[1, 1], (100, 50, 25), atol=1)
    assert out[0].sum() == 0


def test_gallery_and_labels_follow_the_ranking():
    p = _prediction()
    items = candidate_gallery(np.zeros((300, 451, 3), np.uint8), p, side=100)
    assert [c.split(".")[0] for _, c in items] == [str(i + 1) for i in range(5)]
    assert all(t.shape == (67, 100, 3) for t, _ in items)
    assert thumbnail(np.zeros((50, 40, 3), np.uint8)).shape == (50, 40, 3)  # never upscaled


def test_the_overlay_blends_and_outlines_only_the_targets_bounding_box(monkeypatch):
    """Enter on a photo: a small target costs its box, not the whole picture (the outline passes
    see only the box and its margin), and the picture is the same as drawn on the whole image."""
    import cv2

    from app.viewkit import overlay

    img = np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    m = np.zeros((768, 1024), bool)
    m[100:180, 200:300] = True
    seen = []
    real = cv2.dilate
    monkeypatch.setattr(overlay.cv2, "dilate", lambda a, *args, **kw: seen.append(a.shape) or real(a, *args, **kw))
    out = overlay.render(img, [m], ["1"], [0])
    assert seen and all(h <= 80 + 12 and w <= 100 + 12 for h, w in seen), seen
    outside = np.ones((768, 1024), bool)
    outside[90:190, 190:310] = False
    assert (out[outside] == img[outside]).all()  # nothing drawn away from the target
    ring = out[99, 200:300]
    assert (ring == 0).all()  # the dark ring just outside the target
    inside = out[112, 215].astype(int)  # inside, away from the outline and the badge
    expected = (img[112, 215].astype(int) * round(0.6 * 256) + np.array(overlay.colour(0)) * round(0.4 * 256)) >> 8
    assert (inside == expected).all()
