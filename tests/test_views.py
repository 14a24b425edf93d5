"""The views' handlers called directly, without a server (app/views/annotate.py, review.py,
dataset_tab.py): each is a function of (services, inputs) with the widgets' values as arguments."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from app.auth import User, Users
from app.services import Actor, BadInput, ModelHolder, Refused, Services, StoreError
from app.viewkit.session import Session
from app.views import annotate, dataset_tab, review

ANY = ("", "", "", "")  # the four queue filters, empty


@pytest.fixture(scope="module")
def model(studio_weights) -> ModelHolder:
    from deris_core.weights import load_predictor

    return ModelHolder(load_predictor(str(studio_weights[0])), "test model")


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)


def _collection(tmp_path: Path, model: ModelHolder, users: Users | None = None) -> Services:
    """Six images: 1 ann's ref (done, train), 2 bob's (accepted, val), 3 ann's draft, 4 the model's
    prediction, 5 and 6 without refs."""
    from app.store import Store

    svc = Services(model, Store(tmp_path / "v.sqlite"), users=users)
    ids = [svc.store.add_image(_image(k), file_name=f"photo_{k}.png") for k in range(1, 7)]
    refs = svc.refs
    refs.save(Actor("ann"), ids[0], ["a thing"], no_target=True)
    bobs = refs.save(Actor("bob"), ids[1], ["b thing"], no_target=True, split="val")
    refs.review(Actor("rev"), bobs.ref_id, "accept", expected_version=bobs.version)
    refs.save(Actor("ann"), ids[2], ["c thing"], no_target=True, status="draft")
    refs.save(Actor.tool("model:bundled"), ids[3], ["d thing"], no_target=True, status="predicted")
    return svc


def _total(queue_html: str) -> int:
    return int(queue_html.split(" in the queue")[0].split()[-1].replace(",", ""))


def test_each_annotate_filter_changes_the_queue_and_the_thumbnails(tmp_path: Path, model) -> None:
    svc = _collection(tmp_path, model)
    sess = Session()
    expected = {ANY: 6, ("", "", "none", ""): 2, ("", "", "todo", ""): 4, ("", "", "predicted", ""): 1,
                ("", "", "reviewed", ""): 1, ("", "val", "", ""): 1, ("", "", "", "ann"): 2, ("photo_5", "", "", ""): 1,
                ("", "train", "done", "ann"): 1}
    for flt, n in expected.items():
        shown = annotate.refilter(svc, sess, *flt)
        items, page, queue = shown.thumbs, shown.thumb_page, shown.queue_pos
        assert (_total(queue), len(items), page) == (n, n, 0), flt
    # moving through the queue follows the filter: images without refs are 5 and 6
    out = annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, "", "", "none", "")
    sess = out.rendered.sess
    assert sess.image_id == 5 and "1 / 2" in out.queue_pos
    sess = annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, "", "", "none", "").rendered.sess
    assert sess.image_id == 6
    assert annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, "", "", "none", "").rendered.sess is sess  # the end


def test_the_annotate_queue_in_the_most_uncertain_first_order(tmp_path: Path, model) -> None:
    from app.curate.preannotate import PairResult, write_results
    from app.store import encode_mask

    svc = _collection(tmp_path, model)
    rle = encode_mask(np.ones((40, 48), bool))
    write_results(svc.store, [PairResult(5, "sure", 0.99, 0.5, 0.5, [(0, 0.99, rle)]),
                              PairResult(6, "unsure", 0.5, 0.5, 0.5, [(0, 0.6, rle)])], "m|cfg")
    order = ("", "", "predicted", "", "uncertain")
    shown = annotate.refilter(svc, Session(), *order)
    items, queue = shown.thumbs, shown.queue_pos
    assert [int(c.split(" ·")[0]) for _, c in items] == [6, 5, 4] and _total(queue) == 3
    sess = annotate.step_image(svc, 1, False, Session(), False, "", 0.7, 0.5, *order).rendered.sess
    assert sess.image_id == 6
    out = annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, *order)
    assert out.rendered.sess.image_id == 5 and "2 / 3" in out.queue_pos
    assert annotate.thumbs_turn(svc, 0, 0, *order).thumbs == items


def test_enter_leaves_the_candidate_gallery_to_the_event_after_it(tmp_path: Path, model) -> None:
    """Enter in the box (``segment_typed``) shows the picture and verdict without the gallery, which
    ``show_gallery`` (chained after it) gives; the API's ``segment`` still returns it at once."""
    from app.views.records import is_skip

    svc = _collection(tmp_path, model)
    sess = annotate.step_image(svc, 1, True, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess
    typed = annotate.segment_typed(svc, None, "the red circle", 0.7, 0.5, sess).rendered
    assert is_skip(typed.gallery) and "existence probability" in typed.verdict
    later = annotate.show_gallery(svc, typed.sess)
    api = annotate.segment(svc, None, "the red circle", 0.7, 0.5, typed.sess).rendered
    assert len(later) == len(api.gallery) == len(typed.candidates["choices"]) > 0


def test_segment_save_and_reopen_without_a_server(tmp_path: Path, model) -> None:
    svc = _collection(tmp_path, model)
    sess = annotate.step_image(svc, 1, True, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess  # first image without refs
    assert sess.image_id == 5
    shown = annotate.segment(svc, None, "the red circle", 0.7, 0.5, sess).rendered
    verdict, cands, gallery, sess = shown.verdict, shown.candidates, shown.gallery, shown.sess
    assert "existence probability" in verdict and len(cands["choices"]) == len(gallery) > 0
    best = next(k for k in sess.prediction.order if sess.prediction.mask(k).any())
    verdict = annotate.select_candidates(svc, [best], sess).verdict
    assert "1 target instance" in verdict
    saved = annotate.save(svc, "tester", "val", "done", "same again", "the red circle", sess)
    msg, rows, sess, history = saved.save_msg, saved.image_refs, saved.sess, saved.ref_history
    assert msg.startswith("Saved ref") and len(rows) == 1 and "tester" in history
    with pytest.raises(gr.Error, match="cannot accept it"):  # the same person cannot accept it by saving
        annotate.save(svc, "tester", "val", "reviewed", "same again", "the red circle", sess)
    rid = sess.ref_id
    out = annotate.open_ref(svc, rid, Session())
    assert (out.expression, out.extra, out.split) == ("the red circle", "same again", "val")
    assert out.rendered.sess.ref_id == rid


def test_review_handlers_accept_and_refuse(tmp_path: Path, model) -> None:
    svc = _collection(tmp_path, model)
    seen = review.show(svc, 0, "", "", None)
    info, pos, shown = seen.info, seen.pos, seen.ref
    assert "1 / 1" in info and "by <b>ann</b>" in info and shown is not None and seen.shown == f"{shown[0]}:{shown[1]}"
    # handlers raise the application layer's errors; app.views.shell.bind shows them as gr.Error
    with pytest.raises(Refused, match="cannot accept it"):
        review.decide(svc, "accept", shown, None, "", "ann", pos, "", "", None, False)
    with pytest.raises(BadInput, match="Choose a reason for the rejection first: wrong mask; missing referent"):
        review.decide(svc, "reject", shown, None, "", "rev", pos, "", "", None, False)
    # a decision sent for another ref than the one on screen (a held key, a double tap) is refused
    with pytest.raises(Refused, match="no longer on screen"):
        review.decide(svc, "accept", shown, None, "", "rev", pos, "", "", None, False, on_screen=f"{shown[0] + 1}:1")
    with pytest.raises(Refused, match="no longer on screen"):  # the same ref at another version
        review.decide(svc, "accept", shown, None, "", "rev", pos, "", "", None, False,
                      on_screen=f"{shown[0]}:{shown[1] - 1}")
    assert svc.store.ref(shown[0]).status == "done"
    decided = review.decide(svc, "accept", shown, None, "", "rev", pos, "", "", None, False,
                            on_screen=f"{shown[0]}:{shown[1]}")
    assert decided.msg == f"Ref {shown[0]} accepted by rev." and "Nothing awaits review" in decided.shown.info
    assert decided.shown.reason is None and decided.shown.comment == "" and decided.shown.shown == ""
    # the same key again (the second of a double tap): the ref it names is no longer on screen
    with pytest.raises(gr.Error, match="Nothing to review"):
        review.decide(svc, "accept", decided.shown.ref, None, "", "rev", pos, "", "", None, False,
                      on_screen=f"{shown[0]}:{shown[1]}")


def test_a_rejection_for_a_ref_no_longer_on_screen_is_refused(tmp_path: Path, model) -> None:
    """Review's R, as Y: with a reason chosen, a rejection whose page key names another ref (a held key,
    a double tap, a stale page) or another version of it is refused and writes nothing."""
    svc = _collection(tmp_path, model)
    seen = review.show(svc, 0, "", "", None)
    shown, pos = seen.ref, seen.pos
    before = (svc.store.ref(shown[0]).status, svc.store.ref(shown[0]).version, len(svc.store.events(shown[0])))
    for stale in (f"{shown[0] + 1}:1", f"{shown[0]}:{shown[1] - 1}", f"{shown[0]}:{shown[1] + 1}"):
        with pytest.raises(Refused, match="no longer on screen"):
            review.decide(svc, "reject", shown, "wrong_mask", "the outline is off", "rev", pos, "", "", None, False,
                          on_screen=stale)
    after = svc.store.ref(shown[0])
    assert (after.status, after.version, len(svc.store.events(shown[0]))) == before == ("done", shown[1], before[2])
    decided = review.decide(svc, "reject", shown, "wrong_mask", "the outline is off", "rev", pos, "", "", None, False,
                            on_screen=seen.shown)
    assert decided.msg == f"Ref {shown[0]} rejected by rev." and svc.store.ref(shown[0]).status == "rejected"
    # the second R of a double tap still names the rejected ref: nothing more is written
    with pytest.raises(gr.Error, match="Nothing to review"):
        review.decide(svc, "reject", decided.shown.ref, "wrong_mask", "", "rev", pos, "", "", None, False,
                      on_screen=seen.shown)
    assert len(svc.store.events(shown[0])) == before[2] + 1


def test_dataset_handlers_filter_delete_and_refuse(tmp_path: Path, model) -> None:
    users = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw")])
    svc = _collection(tmp_path, model, users)
    for flt, n in ((("", "", ""), 4), (("reviewed", "", ""), 1), (("", "val", ""), 1), (("", "", "ann"), 2),
                   (("draft", "", "ann"), 1)):
        page = dataset_tab.refs_page(svc, 1, *flt)
        assert page.page_info.startswith(f"{n} refs") and len(page.refs_table) == n and page.page == 1, flt
    ann, rev = SimpleNamespace(username="ann"), SimpleNamespace(username="rev")
    bobs = svc.store.refs(image_id=2)[0]
    with pytest.raises(Refused, match="only a reviewer can delete it"):  # accepted: reviewers only
        dataset_tab.delete_ref(svc, bobs.id, "", ann)
    assert dataset_tab.delete_ref(svc, bobs.id, "", rev) == f"Deleted ref {bobs.id}."
    predicted = svc.store.refs(image_id=4)[0]
    assert dataset_tab.delete_ref(svc, predicted.id, "", ann).startswith("Deleted")  # the model's: free to take
    with pytest.raises(Refused, match="Sign in first"):
        dataset_tab.delete_ref(svc, 1, "ann", SimpleNamespace(username=None))
    for bad in (float("nan"), float("inf"), -3, 0, 2.5, 2**70, "x", None):  # as an API caller may send them
        with pytest.raises(gr.Error):
            dataset_tab.delete_ref(svc, bad, "", rev)
    refreshed = dataset_tab.refresh(svc, 1, "", "", "")
    assert "<b>2 refs</b>" in refreshed.progress and refreshed.refs.page_info.startswith("2 refs")



def test_the_save_handler_twice_with_the_same_content_makes_one_ref(tmp_path: Path, model) -> None:
    """Ctrl+Enter held or double-tapped, as the server sees it: the save handler called again with the same
    session and content updates the ref it made, and a second call carrying the session as it was before
    the first save (its answer lost on the way) is the same save attempt (its key): one ref either way."""
    import copy

    svc = _collection(tmp_path, model)
    sess = annotate.step_image(svc, 1, True, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess
    sess = annotate.segment(svc, None, "the red circle", 0.7, 0.5, sess).rendered.sess
    best = next(k for k in sess.prediction.order if sess.prediction.mask(k).any())
    annotate.select_candidates(svc, [best], sess)
    before_save = copy.copy(sess)  # what a request sent before the first answer came back carries
    first = annotate.save(svc, "tester", "val", "done", "", "the red circle", sess).save_msg
    rid = sess.ref_id
    assert first.startswith(f"Saved ref {rid} ") and len(svc.store.refs(image_id=sess.image_id)) == 1
    again = annotate.save(svc, "tester", "val", "done", "", "the red circle", sess).save_msg
    assert again.startswith(f"Updated ref {rid} ") and sess.ref_id == rid
    lost = annotate.save(svc, "tester", "val", "done", "", "the red circle", before_save).save_msg
    assert f"ref {rid} " in lost and before_save.ref_id == rid
    refs = svc.store.refs(image_id=sess.image_id)
    assert [r.id for r in refs] == [rid] and refs[0].sentences == ["the red circle"]
    assert [e.action for e in svc.store.events(rid)].count("create") == 1


def test_a_save_whose_outcome_is_unknown_is_not_called_not_saved(tmp_path: Path, model, monkeypatch) -> None:
    """The COMMIT answer was lost and the server cannot be reached to look it up: the message says so,
    without the "Not saved:" that other refusals start with (it may have been saved)."""
    from app.services import OutcomeUnknown

    svc = _collection(tmp_path, model)
    sess = annotate.step_image(svc, 1, True, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess
    sess = annotate.segment(svc, None, "the red circle", 0.7, 0.5, sess).rendered.sess

    def lost(*a, **k):
        raise OutcomeUnknown("the connection to the database server was lost while saving, and it cannot be "
                             "reached to check whether the save was stored; reopen it to check before saving again")

    monkeypatch.setattr(svc.refs, "save", lost)
    with pytest.raises(gr.Error) as err:
        annotate.save(svc, "tester", "val", "done", "", "the red circle", sess)
    assert not err.value.message.startswith("Not saved") and "cannot be reached to check" in err.value.message
    monkeypatch.setattr(svc.refs, "save", lambda *a, **k: (_ for _ in ()).throw(StoreError("the disk is full")))
    with pytest.raises(gr.Error, match="Not saved: the disk is full"):
        annotate.save(svc, "tester", "val", "done", "", "the red circle", sess)


def test_a_save_while_a_stopped_job_holds_the_lock_is_answered_and_keeps_the_edit(tmp_path: Path, model,
                                                                                  monkeypatch) -> None:
    """A stopped process holds the writers' lock: the person hears so within seconds, the edit stays in
    the session, and the same save goes through once the lock is free."""
    import time

    from tests.test_store_faults import _end, _holder

    monkeypatch.setenv("DERIS_DB_LOCK_WAIT", "1")
    svc = _collection(tmp_path, model)
    sess = annotate.step_image(svc, 1, True, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess
    sess = annotate.segment(svc, None, "the red circle", 0.7, 0.5, sess).rendered.sess
    best = next(k for k in sess.prediction.order if sess.prediction.mask(k).any())
    annotate.select_candidates(svc, [best], sess)
    targets = [t.mask.copy() for t in sess.targets]
    p = _holder(str(svc.store.path))
    try:
        t0 = time.monotonic()
        with pytest.raises(gr.Error, match="the database is busy.*your edit is still here"):
            annotate.save(svc, "tester", "val", "done", "", "the red circle", sess)
        assert time.monotonic() - t0 < 6
        assert sess.ref_id is None and len(sess.targets) == len(targets) == 1
        assert all((t.mask == m).all() for t, m in zip(sess.targets, targets))
    finally:
        _end(p)
    msg = annotate.save(svc, "tester", "val", "done", "", "the red circle", sess).save_msg
    assert msg.startswith("Saved ref") and len(svc.store.refs(image_id=sess.image_id)) == 1


def test_an_empty_expression_from_the_page_changes_nothing_and_says_what_to_do(tmp_path: Path, model,
                                                                                monkeypatch) -> None:
    """Enter on an empty box (the page sends nothing; a stray call still keeps the screen): no output
    changes, a hint; an API caller gets the error."""
    svc = _collection(tmp_path, model)
    sess = annotate.step_image(svc, 1, False, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess
    hints: list[str] = []
    monkeypatch.setattr(gr, "Info", hints.append)
    page = SimpleNamespace(headers={"x-gradio-user": "app"}, session_hash="p")
    assert annotate.segment(svc, None, "   ", 0.7, 0.5, sess, request=page) == gr.skip()
    assert hints == [annotate.EMPTY_EXPRESSION_HINT] and sess.prediction is None
    with pytest.raises(Exception, match="Type an expression first"):
        annotate.segment(svc, None, "", 0.7, 0.5, sess, request=SimpleNamespace(headers={"x-gradio-user": "api"}))
