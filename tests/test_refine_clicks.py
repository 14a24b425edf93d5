"""The simulated-click protocol: where clicks go and how NoC / IoU@k are counted."""

from __future__ import annotations

import numpy as np

from app.refine.base import RefineResult
from app.refine.clicks import ClickRun, next_click, simulate, summarize


def test_first_click_is_the_centre_of_the_object():
    gt = np.zeros((50, 80), bool)
    gt[10:31, 20:61] = True
    (x, y), label = next_click(np.zeros_like(gt), gt)
    assert label == 1 and (x, y) == (40, 20)


def test_the_largest_error_wins_and_a_false_region_gets_a_negative_click():
    gt = np.zeros((60, 60), bool)
    gt[5:15, 5:15] = True  # 100 px, predicted except a 2-px sliver
    pred = gt.copy()
    pred[5:15, 5:7] = False
    pred[30:50, 30:50] = True  # a false 400-px region
    (x, y), label = next_click(pred, gt)
    assert label == 0 and 37 <= x <= 42 and 37 <= y <= 42
    assert next_click(gt, gt) is None


def test_the_image_edge_counts_as_a_border():
    gt = np.zeros((20, 40), bool)
    gt[:, :10] = True  # touches the left edge: the centre is x = 4 or 5, not 0
    (x, y), _ = next_click(np.zeros_like(gt), gt)
    assert 4 <= x <= 5 and 9 <= y <= 10


def test_noc_and_iou_at_k():
    run = ClickRun(ious=[0.5, 0.86, 0.88, 0.91, 0.95], start_iou=0.2)
    assert run.noc(0.85) == 2 and run.noc(0.90) == 4 and run.noc(0.99) == 20
    assert run.iou_at(1) == 0.5 and run.iou_at(5) == 0.95 and run.iou_at(9) == 0.95 and run.iou_at(0) == 0.2
    assert ClickRun(ious=[0.3], start_iou=0.92).noc(0.90) == 0
    s = summarize([run, ClickRun(ious=[0.1] * 20)])
    assert s["NoC@90"] == 12 and s["fail@90"] == 1 and abs(s["IoU@1"] - 0.3) < 1e-9


class _Oracle:
    """Paints a disc of radius 6 at each positive click and clears one at each negative click."""

    name = "oracle"

    def set_image(self, image, key=None):
        return image.shape[:2]

    def refine(self, size, points=None, labels=None, box=None, prior_mask=None):
        m = np.zeros(size, bool) if prior_mask is None else prior_mask.copy()
        yy, xx = np.mgrid[: size[0], : size[1]]
        for (x, y), lab in zip(points, labels):
            m[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = bool(lab)
        return RefineResult(m[None], np.ones(1))


def test_simulate_passes_every_click_and_the_prior():
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
    prior = np.zeros_like(gt)
    prior[10:30, 10:22] = True
    run = simulate(_Oracle(), (40, 40), gt, prior, max_clicks=6)
    assert run.start_iou == 0.6 and len(run.points) == len(run.labels) == len(run.ious) <= 6
    assert run.labels[0] == 1 and run.points[0][0] >= 22  # into the missed part
    assert run.ious[0] > run.start_iou
