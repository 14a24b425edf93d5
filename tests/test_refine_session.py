"""RefineSession: one instance's prompts (point, box, undo) and the mask they give, as the canvas calls them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.refine import RefineError, RefineSession, build_refiner
from app.refine.clicks import iou
from app.refine.grabcut import GrabCutRefiner


def _scene():
    image = np.full((120, 160, 3), 120, np.uint8)
    gt = np.zeros((120, 160), np.uint8)
    cv2.circle(gt, (50, 60), 25, 1, -1)
    image[gt > 0] = (30, 60, 210)
    image[40:80, 100:140] = (30, 60, 210)  # a second object of the same colour
    return image, gt > 0


def test_points_box_and_undo():
    image, gt = _scene()
    s = RefineSession(build_refiner("grabcut"), image)
    assert not s.mask.any()
    first = s.add_point(50, 60)
    assert iou(first, gt) > 0.85
    s.add_point(120, 60, positive=False)
    s.set_box(20, 30, 85, 95)
    assert [p.kind for p in s.prompts] == ["point", "point", "box"]
    assert s.arguments()["labels"] == [1, 0] and s.arguments()["box"] == (20.0, 30.0, 85.0, 95.0)
    assert iou(s.mask, gt) > 0.85
    s.undo()
    s.undo()
    np.testing.assert_array_equal(s.mask, first)  # the same prompts give the same mask
    s.undo()
    assert not s.mask.any() and s.prompts == []
    with pytest.raises(RefineError, match="nothing to undo"):
        s.undo()
    assert s.to_dict() == {"prompts": [], "refiner": "grabcut"}


def test_refining_a_candidate_starts_from_its_mask():
    image, gt = _scene()
    candidate = np.roll(gt, 6, axis=1)
    s = RefineSession(GrabCutRefiner(), image, prior=candidate)
    np.testing.assert_array_equal(s.mask, candidate)
    s.add_point(40, 60)
    assert iou(s.mask, gt) > iou(candidate, gt)
    s.undo()
    np.testing.assert_array_equal(s.mask, candidate)


def test_a_refused_prompt_changes_nothing():
    image, _ = _scene()
    s = RefineSession(GrabCutRefiner(), image)
    s.add_point(50, 60)
    before = s.mask.copy()
    with pytest.raises(RefineError, match="outside the 160x120 image"):
        s.add_point(500, 60)
    with pytest.raises(RefineError, match="no area"):
        s.set_box(10, 10, 10, 50)
    assert len(s.prompts) == 1
    np.testing.assert_array_equal(s.mask, before)
    with pytest.raises(RefineError, match="prior mask is"):
        RefineSession(GrabCutRefiner(), image, prior=np.ones((5, 5), bool))
