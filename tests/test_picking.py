"""Click-to-pick (app/viewkit/picking.py) on overlapping masks, and clicks driving the session's target set and undo."""

from __future__ import annotations

import numpy as np

from app.viewkit.picking import hit
from app.viewkit.session import Session
from tests.builders import box, prediction


def test_a_click_adds_the_best_scoring_candidate_under_it_and_removes_a_target() -> None:
    big, small, other = box(0, 0, 30, 30), box(10, 10, 20, 20), box(32, 32, 40, 40)
    pred = prediction([big, small, other], [0.4, 0.8, 0.3])
    # where the two candidates overlap, the better score (the small box) wins
    assert hit(pred, [], 15, 15).action == "add" and hit(pred, [], 15, 15).candidate == 1
    assert hit(pred, [], 2, 2).candidate == 0  # only the big one there
    assert hit(pred, [], 31, 5).action == "none"  # nothing under the cursor
    assert hit(pred, [], 100, 5).action == "none"  # outside the image
    # inside a target of the set: removed, the topmost (last) one first
    targets = [big, small]
    assert hit(pred, targets, 15, 15) == hit(pred, targets, 12, 12)
    assert hit(pred, targets, 15, 15).action == "remove" and hit(pred, targets, 15, 15).target == 1
    assert hit(pred, targets, 2, 2).target == 0
    assert hit(None, [], 2, 2).action == "none"  # no prediction yet


def test_clicks_drive_the_session_and_undo() -> None:
    big, small = box(0, 0, 30, 30), box(10, 10, 20, 20)
    pred = prediction([big, small], [0.9, 0.2], thr=0.5)
    sess = Session(image=np.zeros((40, 40, 3), np.uint8))
    sess.apply_prediction(pred)
    assert sess.selected_candidates() == [0]
    action = hit(pred, [t.mask for t in sess.targets], 15, 15)
    assert action.action == "remove"
    sess.change()
    del sess.targets[action.target]
    action = hit(pred, [t.mask for t in sess.targets], 15, 15)
    assert action.candidate == 0  # the best-scoring candidate under the point
    sess.toggle_candidates(sess.selected_candidates() + [1, 1])  # duplicates are ignored
    assert sess.selected_candidates() == [1]
    assert sess.undo() and sess.selected_candidates() == []
