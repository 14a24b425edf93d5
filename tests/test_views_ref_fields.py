"""The Annotate view's per-ref boxes (more sentences, split, status, the open ref's history) follow the ref
(app/views/annotate.py): every handler that changes the ref being worked on clears them (a new ref) or
reloads them (a saved ref), so that nothing typed for one ref is saved with another. Handlers called
directly, without a server, as in tests/test_views.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from app.services import Actor
from app.viewkit.session import Session
from app.views import annotate
from tests.test_views import ANY, _collection, model  # noqa: F401 - the module's model fixture

LEAKED = "both red balls"  # typed for one ref, must never reach another
CLEARED_TRAIN = ("", "train", "done", "")  # a new ref on an image without a split of its own


def _fields(out) -> tuple:
    """The four per-ref boxes (more sentences, split, status, history) of a handler's record: its
    ``fields`` (a :class:`annotate.RefFields`), or its own fields of those names (a ref opened, a save)."""
    f = getattr(out, "fields", out)
    return f.extra, f.split, f.status, f.ref_history


_saved_fields = _fields  # a save's record names the same boxes


def _kept(out) -> bool:
    return all(isinstance(v, dict) and set(v) <= {"__type__"} for v in _fields(out))


def _worked_on(svc, image_id: int = 5) -> Session:
    """A session with image ``image_id`` open, an expression run and a target picked, and a ref saved
    with a paraphrase, split val and status draft: the boxes of that ref are full."""
    sess = annotate.step_image(svc, 1, True, Session(), False, "", 0.7, 0.5, *ANY).rendered.sess
    while sess.image_id != image_id:
        sess = annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, *ANY).rendered.sess
    sess = annotate.segment(svc, None, "the red circle", 0.7, 0.5, sess).rendered.sess
    best = next((k for k in sess.prediction.order if sess.prediction.mask(k).any()), None)
    if best is not None:
        annotate.select_candidates(svc, [best], sess)
    out = annotate.save(svc, "tester", "val", "draft", LEAKED, "the red circle", sess)
    assert out.save_msg.startswith("Saved ref") and _saved_fields(out)[:3] == (LEAKED, "val", "draft")
    return out.sess


def _stored_sentences(svc, image_id: int) -> list[list[str]]:
    return [svc.refs.ref(r.id).sentences for r in svc.refs.of_image(image_id)]


@pytest.mark.parametrize("delta, without", [(1, False), (-1, False), (1, True)],
                         ids=["next image", "previous image", "next without refs"])
def test_another_image_clears_the_boxes(tmp_path: Path, model, delta, without) -> None:  # noqa: F811
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    out = annotate.step_image(svc, delta, without, sess, False, "", 0.7, 0.5, *ANY)
    new = out.rendered.sess
    assert new.image_id != 5 and new.ref_id is None
    assert _fields(out) == CLEARED_TRAIN


def test_the_imported_split_is_the_new_refs_split(tmp_path: Path, model) -> None:  # noqa: F811
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    other = svc.store.add_image(np.zeros((40, 48, 3), np.uint8), file_name="v.png", split="val")
    out = annotate.open_image(svc, other, sess, False, "", 0.7, 0.5, annotate.image_filter(*ANY))
    assert _fields(out) == ("", "val", "done", "")


def test_a_thumbnail_opened_clears_the_boxes(tmp_path: Path, model) -> None:  # noqa: F811
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    evt = SimpleNamespace(value={"caption": "6 · photo_6.png"}, index=5)
    out = annotate.jump_thumb(svc, 0, sess, False, "", 0.7, 0.5, *ANY, "", evt)
    assert out.rendered.sess.image_id == 6 and _fields(out) == CLEARED_TRAIN


def test_no_more_images_keeps_the_ref_and_its_boxes(tmp_path: Path, model) -> None:  # noqa: F811
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc, 6)  # the last image: nothing after it
    out = annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, *ANY)
    assert out.rendered.sess is sess and sess.ref_id is not None and _kept(out)


def test_next_expression_clears_the_boxes_and_the_ref(tmp_path: Path, model) -> None:  # noqa: F811
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    out = annotate.next_expression(svc, sess)
    assert out.expression == "" and sess.ref_id is None and not sess.targets
    assert out.save_msg == ""  # the last "Saved ref N" went with the ref it was about
    assert _fields(out) == CLEARED_TRAIN


def test_a_new_expression_after_a_save_clears_the_boxes(tmp_path: Path, model) -> None:  # noqa: F811
    """Typing another sentence and Enter after a save starts a new ref: the saved one's boxes go."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    out = annotate.segment(svc, None, "the blue square", 0.7, 0.5, sess)
    assert sess.ref_id is None and _fields(out) == CLEARED_TRAIN
    out = annotate.segment(svc, None, "the green square", 0.7, 0.5, sess)  # still the same new ref
    assert _kept(out)


def test_a_new_run_after_a_save_empties_the_saved_message(tmp_path: Path, model) -> None:  # noqa: F811
    """"Saved ref N" is about the ref just left: Enter on a new expression empties it; a run that stays on
    the same (new) ref keeps the message line as it is."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    out = annotate.segment(svc, None, "the blue square", 0.7, 0.5, sess)
    assert out.save_msg == "" and sess.ref_id is None
    out = annotate.segment(svc, None, "the green square", 0.7, 0.5, sess)  # the same new ref: nothing to say
    assert out.save_msg == gr.update()


def test_a_new_sentence_on_a_reopened_ref_starts_a_new_ref(tmp_path: Path, model) -> None:  # noqa: F811
    """Enter on another sentence while a saved ref is open leaves that ref as saved: the run is a new ref
    (its boxes cleared, the line says so), and saving it adds a ref instead of rewriting the old one."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    rid = sess.ref_id
    sess = annotate.open_ref(svc, rid, sess).rendered.sess
    out = annotate.segment(svc, None, "the round red thing", 0.7, 0.5, sess)
    assert sess.ref_id is None and sess.ref_version is None and not sess.editing
    assert _fields(out) == CLEARED_TRAIN
    assert out.save_msg == f"New ref (ref {rid} is unchanged)."
    saved = annotate.save(svc, "tester", *CLEARED_TRAIN[1:3], "", "the round red thing", sess)
    assert saved.save_msg.startswith("Saved ref") and saved.sess.ref_id != rid
    assert sorted(_stored_sentences(svc, 5)) == [["the red circle", LEAKED], ["the round red thing"]]


def test_a_rejected_ref_being_fixed_stays_the_ref_whatever_sentence_runs(tmp_path: Path, model) -> None:  # noqa: F811
    """A rejection may be about the sentence: its author opens the ref from the to-fix list, rewrites the
    sentence and runs it; saving fixes that ref (no new ref beside the rejected one)."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    rid = sess.ref_id
    rec = svc.refs.ref(rid)
    svc.refs.review(Actor("rev"), rid, "reject", "ambiguous", "which circle?", expected_version=rec.version)
    sess = annotate.open_to_fix(svc, "tester", sess, SimpleNamespace(index=[0, 0])).rendered.sess
    assert sess.ref_id == rid and sess.fixing
    out = annotate.segment(svc, None, "the red circle on the left", 0.7, 0.5, sess)
    assert sess.ref_id == rid and sess.editing and _kept(out) and out.save_msg == gr.update()
    saved = annotate.save(svc, "tester", "val", "done", "", "the red circle on the left", sess)
    assert saved.sess.ref_id == rid and not saved.sess.fixing
    assert [r.sentences[0] for r in svc.store.refs(image_id=sess.image_id)] == ["the red circle on the left"]


def test_rerunning_a_reopened_refs_own_sentence_keeps_editing_it(tmp_path: Path, model) -> None:  # noqa: F811
    """The same sentence (white space and case aside) run again on a reopened ref: still that ref."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    rid = sess.ref_id
    sess = annotate.open_ref(svc, rid, sess).rendered.sess
    out = annotate.segment(svc, None, "  The red  circle ", 0.7, 0.5, sess)
    assert sess.ref_id == rid and sess.editing and _kept(out) and out.save_msg == gr.update()


def test_rewording_a_reopened_ref_without_a_run_rewrites_it(tmp_path: Path, model) -> None:  # noqa: F811
    """A typo fixed in the sentence of a reopened ref, saved without running the model: the same ref,
    reworded, and the save line says what changed."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    rid = sess.ref_id
    opened = annotate.open_ref(svc, rid, sess)
    sess = opened.rendered.sess
    out = annotate.save(svc, "tester", opened.split, opened.status, opened.extra, "the red circel", sess)
    assert out.save_msg.startswith(f"Updated ref {rid}") and out.sess.ref_id == rid
    assert f"Ref {rid}'s sentence changed: 'the red circle' → 'the red circel'." in out.save_msg
    assert _stored_sentences(svc, 5) == [["the red circel", LEAKED]]
    same = annotate.save(svc, "tester", "val", "draft", LEAKED, "the red circel", out.sess)
    assert "sentence changed" not in same.save_msg


def _reloaded(out: annotate.RefOpened, rid: int) -> None:
    """The ref opened with its own boxes and history."""
    assert out.rendered.sess.ref_id == rid
    assert (out.extra, out.split, out.status) == (LEAKED, "val", "draft") and "tester" in out.ref_history


def test_opening_a_ref_reloads_its_own_boxes(tmp_path: Path, model) -> None:  # noqa: F811
    """The Dataset tab's Open, a row of the image's refs, a row of the to-fix list: the ref's own values,
    and a ref without paraphrases opened over one with them shows none."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    rid = sess.ref_id
    fresh = annotate.next_expression(svc, sess).rendered.sess
    _reloaded(annotate.open_ref(svc, rid, fresh), rid)  # the Dataset tab's Open
    _reloaded(annotate.open_image_ref(svc, fresh, SimpleNamespace(index=[0, 1])), rid)
    other = annotate.open_ref(svc, 1, fresh)  # ann's ref on image 1: one sentence, train, done
    assert (other.extra, other.split, other.status) == ("", "train", "done") and other.rendered.sess.ref_id == 1
    # the to-fix list: the reviewer rejects it, its author opens it from there
    rec = svc.refs.ref(rid)
    svc.refs.review(Actor("rev"), rid, "reject", "wrong_mask", "the left one", expected_version=rec.version)
    out = annotate.open_to_fix(svc, "tester", other.rendered.sess, SimpleNamespace(index=[0, 0]))
    assert out.rendered.sess.ref_id == rid and (out.extra, out.split) == (LEAKED, "val")
    assert out.status == "done"  # a fix is saved as done


def test_a_new_upload_clears_the_boxes_and_the_ref(tmp_path: Path, model) -> None:  # noqa: F811
    from PIL import Image

    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    path = tmp_path / "up.png"
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(path)
    out = annotate.upload(svc, str(path), sess)
    new = out.rendered.sess
    assert new.ref_id is None and new.image_id is None and _fields(out) == CLEARED_TRAIN
    again = annotate.upload(svc, str(path), new)  # the same picture again: still a new ref
    assert again.rendered.sess.ref_id is None and _fields(again) == CLEARED_TRAIN
    assert _kept(annotate.upload(svc, None, again.rendered.sess))  # the box emptied: nothing changes


def test_a_save_shows_the_ref_as_stored_and_the_next_one_gets_only_its_own_sentences(tmp_path: Path,
                                                                                      model) -> None:  # noqa: F811
    """The leak as reported: a paraphrase typed, the next image, a new ref saved there."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    out = annotate.save(svc, "tester", "val", "draft", f"\n  {LEAKED}\n\n", "the red circle", sess)  # an update
    assert out.save_msg.startswith("Updated") and _saved_fields(out)[:3] == (LEAKED, "val", "draft")
    out = annotate.step_image(svc, 1, False, sess, False, "", 0.7, 0.5, *ANY)
    sess, extra, split, status, _ = out.rendered.sess, *_fields(out)
    sess = annotate.segment(svc, None, "the purple star", 0.7, 0.5, sess).rendered.sess
    out = annotate.save(svc, "tester", split, status, extra, "the purple star", sess)
    assert out.save_msg.startswith("Saved ref") and _saved_fields(out)[:3] == ("", "train", "done")
    assert _stored_sentences(svc, sess.image_id) == [["the purple star"]]
    assert _stored_sentences(svc, 5) == [["the red circle", LEAKED]]


def test_an_api_save_without_the_new_outputs_still_works(tmp_path: Path, model) -> None:  # noqa: F811
    """Unchanged inputs: a caller of /save sends what it sent before (the outputs only grew at the end)."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    out = annotate.save(svc, "tester", "val", "done", "", "the red circle", sess)
    msg, rows = out.save_msg, out.image_refs
    assert msg.startswith("Updated") and len(rows) == 1
    with pytest.raises(gr.Error):
        annotate.save(svc, "tester", "val", "done", "", "", Session())


def test_the_negatives_hand_off_loads_the_boxes_of_the_ref_it_opens(tmp_path: Path, model) -> None:  # noqa: F811
    """The Negatives tab's N (open_sentence): the ref it names is opened with its own boxes; a sentence
    with no ref (or one deleted meanwhile) is a new ref on the image, its boxes cleared, never the boxes
    of the ref that was open before."""
    svc = _collection(tmp_path, model)
    sess = _worked_on(svc)
    rid = sess.ref_id
    other = annotate.open_ref(svc, 1, sess).rendered.sess  # ann's ref on image 1: other boxes on screen
    out = annotate.open_sentence(svc, {"image_id": 5, "sentence": "the red circle", "ref_id": rid}, other, 0.7, 0.5)
    assert out.rendered.sess.ref_id == rid and out.rendered.sess.editing and out.expression == "the red circle"
    assert _fields(out)[:3] == (LEAKED, "val", "draft") and "tester" in out.ref_history
    assert out.save_msg.startswith(f"Editing ref {rid}")
    for gone in (None, 10**6):
        out = annotate.open_sentence(svc, {"image_id": 6, "sentence": "the blue square", "ref_id": gone},
                                     out.rendered.sess, 0.7, 0.5)
        assert out.rendered.sess.image_id == 6 and out.rendered.sess.ref_id is None
        assert _fields(out) == CLEARED_TRAIN and out.expression == "the blue square"
    with pytest.raises(gr.Error):
        annotate.open_sentence(svc, None, out.rendered.sess, 0.7, 0.5)
