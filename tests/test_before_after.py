"""Review's before / after of a fixed ref, without a browser: every rejection keeps the version it
rejected (app/store/versions.py), on both backends and by every way of rejecting; the service gives the
last one with its masks (app/services/review.py) and says what the fix changed; the Review handler
sends both target sets to the canvas with the one-line summary (app/views/review.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.services import Actor, RefService, compare
from app.services.review import MATCH_IOU, Rejection, TargetChange, target_changes
from app.store import Store
from app.store.review import review

ANN = Actor("ann", frozenset({"annotator"}), accounts=True)
REV = Actor("rev", frozenset({"reviewer"}), accounts=True)


def box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((30, 30), bool)
    m[y0:y1, x0:x1] = True
    return m


def _store(db_at) -> tuple[Store, RefService, int]:
    s = Store(db_at("ba.sqlite"))
    return s, RefService(s), s.add_image(np.zeros((30, 30, 3), np.uint8), file_name="boxes.png")


def _masks(s: Store, ref_id: int) -> list[np.ndarray]:
    rec = s.ref(ref_id)
    by_id = {i.id: i.mask for i in s.instances(rec.image_id)}
    return [by_id[i] for i in rec.instance_ids]


def test_a_fixed_ref_keeps_its_rejected_version_and_the_diff_says_what_changed(db_at) -> None:
    s, svc, img = _store(db_at)
    made = svc.save(ANN, img, ["the left box", "a square"], masks=[box(2, 2, 12, 12), box(20, 20, 26, 26)])
    assert svc.rejection(made.ref_id) is None  # never rejected
    v = svc.review(REV, made.ref_id, "reject", "wrong_mask", "the corner is cut", expected_version=made.version)
    # the fix: target 1 redrawn larger, target 2 dropped, a new target 3 -> 2, one sentence swapped
    svc.save(ANN, img, ["the left box", "the square on the left"], masks=[box(2, 2, 12, 14), box(0, 20, 4, 30)],
             ref_id=made.ref_id, expected_version=v)
    old_ids = set(s.events(made.ref_id)[0].detail["targets"])
    assert not old_ids & {i.id for i in s.instances(img)}  # the fix removed the old drawn instances ...
    before = svc.rejection(made.ref_id)  # ... and the rejected version still has them
    assert (before.reviewer, before.reason, before.reason_label, before.comment) == ("rev", "wrong_mask", "wrong mask",
                                                                                    "the corner is cut")
    assert before.sentences == ["the left box", "a square"] and not before.no_target and before.version == made.version
    assert [m.sum() for m in before.masks] == [100, 36] and (before.masks[0] == box(2, 2, 12, 12)).all()
    now = s.ref(made.ref_id)
    changes = compare(before, now.sentences, _masks(s, made.ref_id), now.no_target)
    assert changes.targets == (TargetChange(1, 1, 20, 0), TargetChange(None, 2), TargetChange(2, None))
    assert changes.sentences_added == ("the square on the left",) and changes.sentences_removed == ("a square",)
    assert changes.summary() == ("target 1: 20 px changed (+20 / −0); target 2 added; rejected target 2 removed; "
                                 "sentences: 1 added, 1 removed")


def test_the_last_of_several_rejections_counts_and_each_way_of_rejecting_keeps_one(db_at) -> None:
    s, svc, img = _store(db_at)
    ref = svc.save(ANN, img, ["the box"], masks=[box(0, 0, 5, 5)])
    v = review(s, ref.ref_id, "reject", "rev", "wrong_mask", "first", expected_version=ref.version)  # the store's door
    v = svc.save(ANN, img, ["the box"], masks=[box(0, 0, 6, 6)], ref_id=ref.ref_id, expected_version=v).version
    v = svc.review(REV, ref.ref_id, "reject", "missing_referent", "second", expected_version=v)
    assert svc.rejection(ref.ref_id).comment == "second" and svc.rejection(ref.ref_id).masks[0].sum() == 36
    # a reviewer saving someone's ref as rejected (Annotate's status box) is a rejection too
    v = svc.save(ANN, img, ["the box"], masks=[box(0, 0, 7, 7)], ref_id=ref.ref_id, expected_version=v).version
    svc.save(REV, img, ["the box"], masks=[box(0, 0, 7, 7)], ref_id=ref.ref_id, expected_version=v, status="rejected")
    last = svc.rejection(ref.ref_id)
    assert (last.reviewer, last.reason, last.masks[0].sum()) == ("rev", None, 49)
    assert s.read("SELECT COUNT(*) FROM rejected_versions WHERE ref_id = ?", (ref.ref_id,)) == [(3,)]
    svc.delete(REV, ref.ref_id)  # the kept versions go with the ref (its history stays)
    assert s.read("SELECT COUNT(*) FROM rejected_versions") == [(0,)] and svc.rejection(ref.ref_id) is None


def test_a_fix_to_no_target_and_a_resubmission_without_change(db_at) -> None:
    s, svc, img = _store(db_at)
    ref = svc.save(ANN, img, ["the red ball"], masks=[box(3, 3, 9, 9), box(10, 10, 14, 14)])
    v = svc.review(REV, ref.ref_id, "reject", "ungroundable", "", expected_version=ref.version)
    same = svc.save(ANN, img, ["the red ball"], masks=[box(3, 3, 9, 9), box(10, 10, 14, 14)], ref_id=ref.ref_id,
                    expected_version=v)
    before = svc.rejection(ref.ref_id)
    assert compare(before, ["the red ball"], _masks(s, ref.ref_id), False).summary() == "nothing changed since the rejection"
    svc.save(ANN, img, ["the red ball"], no_target=True, ref_id=ref.ref_id, expected_version=same.version)
    changes = compare(before, ["the red ball"], [], True)
    assert changes.summary() == "was 2 targets, now no target; sentences unchanged" and not changes.nothing


def test_matching_prefers_the_same_pixels_then_the_best_overlap() -> None:
    a, b, c = box(0, 0, 10, 10), box(0, 20, 10, 30), box(20, 0, 30, 10)
    # the targets of the rejected version reordered; one redrawn slightly, one replaced by another object
    assert target_changes([a, b], [b, a]) == (TargetChange(2, 1), TargetChange(1, 2))
    moved = box(0, 1, 10, 11)  # IoU with a: 90 / 110
    assert target_changes([a, b], [moved, c]) == (TargetChange(1, 1, 10, 10), TargetChange(None, 2), TargetChange(2, None))
    sliver = box(0, 9, 10, 19)  # IoU with a: 10 / 190, below MATCH_IOU: another object
    assert 10 / 190 < MATCH_IOU and target_changes([a], [sliver]) == (TargetChange(None, 1), TargetChange(1, None))


def test_a_rejection_from_before_the_masks_were_kept_says_so() -> None:
    old = Rejection(1, 2, 0.0, "rev", "wrong_mask", "", ["the box"], False, [None])
    changes = compare(old, ["the box", "a square"], [box(0, 0, 4, 4)], False)
    assert not changes.masks_kept and changes.targets == ()
    assert changes.summary() == ("the rejected masks were not kept (1 target then, 1 now); sentences: 1 added")


@pytest.fixture
def review_services(tmp_path: Path):
    """Services over a SQLite store, without a model (Review needs none)."""
    from app.services import ModelHolder, Services

    svc = Services(ModelHolder(None, "no model"), Store(tmp_path / "v.sqlite"))
    yield svc
    svc.store.close()


def test_the_review_handler_sends_both_versions_and_says_what_changed(review_services) -> None:
    from app.views import review as review_view
    from app.views.canvas import decode_mask

    svc = review_services
    img = svc.store.add_image(np.random.default_rng(1).integers(0, 255, (30, 30, 3), dtype=np.uint8), file_name="b.png")
    plain = svc.refs.save(ANN, img, ["the top strip"], masks=[box(0, 0, 2, 30)])
    made = svc.refs.save(ANN, img, ["the left box", "a square"], masks=[box(2, 2, 12, 12)])
    v = svc.refs.review(REV, made.ref_id, "reject", "wrong_mask", "the corner is cut", expected_version=made.version)
    svc.refs.save(ANN, img, ["the left box", "the box on the left"], masks=[box(2, 2, 12, 14), box(20, 20, 26, 26)],
                  ref_id=made.ref_id, expected_version=v)

    first = review_view.show(svc, 0, "", "", None)  # the oldest change first: the ref never rejected
    assert first.ref[0] == plain.ref_id and first.changes == "" and "before" not in first.picture
    assert "sent-new" not in first.sentences and "removed since" not in first.sentences

    shown = review_view.show(svc, 1, "", "", None)
    assert shown.ref[0] == made.ref_id
    assert "Fixed after a rejection</b> by rev (wrong mask)" in shown.changes
    assert "title='the corner is cut'" in shown.changes
    assert ("target 1: 20 px changed (+20 / −0); target 2 added; sentences: 1 added, 1 removed"
            in shown.changes)
    pic = shown.picture
    now = [decode_mask(t["rle"], 30, 30) for t in pic["targets"]]
    before = [decode_mask(t["rle"], 30, 30) for t in pic["before"]["targets"]]
    assert [t["label"] for t in pic["before"]["targets"]] == ["1"] and pic["before"]["no_target"] is False
    assert (before[0] == box(2, 2, 12, 12)).all() and (now[0] == box(2, 2, 12, 14)).all() and len(now) == 2
    assert "the box on the left <span class='sent-new'>new</span>" in shown.sentences
    assert "removed since the rejection: <s>a square</s>" in shown.sentences
    assert review_view.ReviewShown.counter("x").changes == {"__type__": "update"}  # the live timer leaves it


def test_review_of_refs_rejected_before_the_masks_were_kept(review_services, tmp_path: Path) -> None:
    """A schema-5 database (tests/data/studio_v5.sqlite): ref 2 was rejected and fixed before the
    upgrade, its old mask is gone: the line says so and the canvas gets no before to switch to; ref 4
    was fixed to no target."""
    import shutil

    from app.services import ModelHolder, Services
    from app.views import review as review_view

    db = tmp_path / "old.sqlite"
    shutil.copy(Path(__file__).parent / "data" / "studio_v5.sqlite", db)
    svc = Services(ModelHolder(None, "no model"), Store(db))
    try:
        two, four = (review_view.show(svc, k, "", "", None) for k in (0, 1))
        assert two.ref[0] == 2 and four.ref[0] == 4
        assert ("by rev (missing referent): <span id='review-diff'>the rejected masks were not kept (1 target then, "
                "2 now); sentences: 1 added</span></div>") in two.changes
        assert two.picture is None or "before" not in two.picture  # nothing to switch to
        assert "was 1 target, now no target; sentences unchanged" in four.changes
    finally:
        svc.store.close()
