"""What the views show (app/views/display.py): targets numbered like the candidate list, drawn by
app/viewkit/overlay.py, and the NO TARGET flag."""

from __future__ import annotations

import numpy as np

from app.viewkit.overlay import COLOURS, render, view_scale
from app.viewkit.session import Session, Target
from app.views import display
from tests.builders import box, prediction


def test_overlays_number_targets_like_the_candidate_list_and_flag_no_target() -> None:
    img = np.full((100, 100, 3), 128, np.uint8)
    a, b = box(5, 5, 50, 50, 100, 100), box(60, 60, 95, 95, 100, 100)
    pred = prediction([a, b], [0.3, 0.9])
    sess = Session(image=img)
    sess.apply_prediction(pred)
    sess.toggle_candidates([1, 0])
    sess.targets.append(Target(box(0, 90, 10, 100, 100, 100)))
    assert display.target_numbers(sess) == [("1", 0), ("2", 1), ("D1", 10)]
    assert [c[0].split(" ·")[0] for c in display.candidate_choices(sess)] == ["candidate 1", "candidate 2"]
    out = display.picture(sess)
    k = view_scale(img.shape)
    assert out.shape == (100 * k, 100 * k, 3) and k == 6
    # candidate 1 (row 1, colour 0) is tinted with colour 0 and outlined in black
    inside = out[70 * k, 65 * k].astype(int)
    assert np.abs(inside - (0.6 * 128 + 0.4 * COLOURS[0])).max() < 3
    assert (out == 0).all(axis=2).any()  # the dark outer outline
    sess.toggle_candidates([])
    sess.targets, sess.no_target = [], True
    flagged = display.picture(sess)
    assert (flagged[2, :, 0] > 200).all() and (flagged[2, :, 1] < 40).all()  # red NO TARGET bar
    assert "NO TARGET" in display.verdict_html(sess)
    assert render(img, [], [], []).shape == out.shape


def test_the_rejection_note_is_the_views_markdown_from_the_services_record() -> None:
    from types import SimpleNamespace

    from app.services import Decision

    plain = SimpleNamespace(ref_id=7, rejection=None)
    assert display.reopened_note(plain) == "Editing ref 7: saving updates it; Alt+N starts a new ref."
    rejected = SimpleNamespace(ref_id=7, rejection=Decision(7, "rev", 0.0, "reject", "wrong_mask", "left edge"))
    assert display.reopened_note(rejected) == ("**Rejected by rev**: wrong mask (the outline is off) — “left edge”. "
                                               "Fix it and save: it goes back to *done*.")
