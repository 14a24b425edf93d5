"""Issue 35's handlers, called without a server: who may switch the shared model and what the other
sessions are told, a delete that asks first and can be undone, labels people read, studio-wide errors
said in a status line."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from app.auth import User, Users
from app.services import ModelHolder
from app.services.permissions import Actor, why_not_studio
from app.views import model_panel
from tests.test_views import _collection, model  # noqa: F401 - the module's model fixture

ACCOUNTS = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw", frozenset({"reviewer"})),
                  User("op", "pw", frozenset({"operator"}))])


def _request(name: str):
    return type("Req", (), {"username": name, "session_hash": name})()


def test_only_reviewers_and_operators_switch_the_model_and_a_failed_load_names_the_model_in_use(
        tmp_path: Path, model) -> None:  # noqa: F811
    svc = _collection(tmp_path, ModelHolder(model.predictor, "the launched model"), ACCOUNTS)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    svc.switchable = {"junk.safetensors": str(junk), "launched": "bundled"}
    status = model_panel.load_weights(svc, "launched", "", _request("ann")).status
    assert "Only reviewers or operators may switch the shared model" in status
    assert svc.model.version == 0 and svc.model.notice() == ""
    failed = model_panel.load_weights(svc, "junk.safetensors", "", _request("rev"))
    assert "Could not load junk.safetensors" in failed.status and "still in use: the launched model" in failed.status
    assert "the launched model" in failed.model_md and failed.score_thr == gr.update() and svc.model.version == 0
    loaded = model_panel.load_weights(svc, "launched", "", _request("op"))
    assert loaded.status.startswith("Loaded") and loaded.score_thr["value"] is not None and svc.model.version == 1
    assert "switched to" in svc.model.notice() and "by op at" in svc.model.notice()
    assert why_not_studio(Actor("ann", frozenset({"annotator"}), accounts=True), "import_folder")
    assert why_not_studio(Actor("x"), "import_folder") is None  # an open studio: its operator chose the flags


def test_another_session_is_told_who_switched_the_model(tmp_path: Path, model) -> None:  # noqa: F811
    from app.views import live

    svc = _collection(tmp_path, ModelHolder(model.predictor, "the launched model"))
    svc.switchable = {"launched": "bundled"}
    seen = live.model_tick(svc, None).seen_model  # the other page's first tick: nothing to tell
    assert live.model_tick(svc, seen).notice == gr.update()
    model_panel.load_weights(svc, "launched", "bob")
    tick = live.model_tick(svc, seen)
    assert "switched to" in tick.notice and "by bob at" in tick.notice and tick.seen_model == seen + 1
    assert live.model_tick(svc, tick.seen_model).notice == gr.update()  # told once


def test_delete_in_the_dataset_tab_asks_first(tmp_path: Path, model) -> None:  # noqa: F811
    from app.views import dataset_tab

    users = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw")])
    svc = _collection(tmp_path, model, users)
    mine = svc.store.refs(image_id=1)[0]
    asked = dataset_tab.ask_delete(svc, mine.id, "", _request("ann"))
    assert f"Delete ref {mine.id}" in asked.msg and "a thing" in asked.msg and asked.confirm_btn["visible"]
    assert asked.cancel_btn["visible"] and asked.pending == mine.id
    assert svc.store.ref(mine.id)  # nothing deleted yet
    kept = dataset_tab.cancel_delete(asked.pending)
    assert kept.msg == f"Kept ref {mine.id}." and not kept.confirm_btn["visible"] and kept.pending is None
    assert "Nothing to delete" in dataset_tab.confirm_delete(svc, None, None, "", _request("ann")).msg
    accepted = svc.store.refs(image_id=2)[0]
    with pytest.raises(Exception, match="only a reviewer can delete it"):  # refused at the first click
        dataset_tab.ask_delete(svc, accepted.id, "", _request("ann"))
    pending = dataset_tab.ask_delete(svc, mine.id, "", _request("ann")).pending
    page = type("Req", (), {"username": "ann", "headers": {"x-gradio-user": "app"}})()
    assert "Nothing to delete" in dataset_tab.confirm_delete(svc, pending, None, "", page).msg  # a page must ask first
    assert dataset_tab.confirm_delete(svc, None, pending, "", page).msg == f"Deleted ref {mine.id}."
    assert not svc.store.refs(image_id=1)


def test_an_empty_id_box_is_empty_and_means_type_an_id(tmp_path: Path, model) -> None:  # noqa: F811
    """The ref id, job and image-filter boxes are text boxes that look empty when they are (a
    ``gr.Number`` shows 0, and "0 is not a ref id" answered a person who typed nothing): empty asks
    for an id (or, for the review filter, means every image), a typed number is read as one,
    anything else is named in a clear message."""
    from app.views import dataset_tab, jobs, review

    svc = _collection(tmp_path, model)
    mine = svc.store.refs(image_id=1)[0]
    for empty in ("", "   ", None):
        with pytest.raises(gr.Error, match="Type a ref id"):
            dataset_tab.ask_delete(svc, empty, "ann")
        with pytest.raises(gr.Error, match="Type the number of the job"):
            jobs.cancel(svc, empty, "rev")
    for bad, said in (("abc", "'abc' is not a ref id"), ("0", "0 is not a ref id"), ("2.5", "2.5 is not a ref id")):
        with pytest.raises(gr.Error, match=said):
            dataset_tab.ask_delete(svc, bad, "ann")
    assert f"Delete ref {mine.id}" in dataset_tab.ask_delete(svc, f" {mine.id} ", "ann").msg  # typed: a string
    with pytest.raises(gr.Error, match="'x' is not a job number"):
        jobs.cancel(svc, "x", "rev")
    # the review queue's image filter: empty is every image, a number filters, a word is said
    everyone = review.show(svc, 0, "", "", "")
    assert "1 / 1" in everyone.info and "image 1" in everyone.info
    assert "Nothing awaits review" in review.show(svc, 0, "", "", "5").info
    assert "image 1" in review.show(svc, 0, "", "", " 1 ").info
    with pytest.raises(gr.Error, match="'one' is not an image id"):
        review.show(svc, 0, "", "", "one")
    assert review.live(svc, 0, None, "", "", "one", tab="Review") == gr.skip()  # the timer stays quiet


def test_small_ones_history_candidates_reviewer_panel_and_reasons(tmp_path: Path, model) -> None:  # noqa: F811
    from app.services.errors import BadInput
    from app.views import display, review

    users = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw")])
    svc = _collection(tmp_path, model, users)
    rec = svc.store.refs(image_id=1)[0]
    rid = rec.id
    svc.refs.save(Actor("ann"), 1, ["a thing", "the thing"], no_target=True, ref_id=rid, expected_version=rec.version)
    text = display.history_html(svc.refs.history(rid))
    assert "edited:" in text and "created:" in text and "editd" not in text
    # candidates: "candidate N", never the model's query index
    from types import SimpleNamespace

    import numpy as np
    fake = SimpleNamespace(order=[7, 2], scores=np.array([0.0, 0, 0.4, 0, 0, 0, 0, 0.9]), score_threshold=0.5)
    labels = [label for label, _ in display.candidate_choices(SimpleNamespace(prediction=fake))]
    assert labels == ["candidate 1 · score 0.900 ✓", "candidate 2 · score 0.400"]
    # the decision panel: reviewers only; R needs a reason, said with labels
    for who, visible in (("ann", False), ("rev", True)):
        panel = review.for_user(svc, "", _request(who))
        assert [u["visible"] for u in (panel.accept, panel.reason, panel.comment, panel.reject)] == [visible] * 4
        assert ("for reviewers" in panel.msg) if not visible else panel.msg == ""
    # moving on (← / →) empties the message line, except an annotator's note
    assert review.moved_on(svc, "", _request("rev")) == "" and "for reviewers" in review.moved_on(svc, "", _request("ann"))
    assert review.reason_chosen(None)["interactive"] is False
    assert review.reason_chosen("wrong_mask")["interactive"] is True
    seen = review.show(svc, 0, "", "", None)
    with pytest.raises(BadInput) as err:
        review.decide(svc, "reject", seen.ref, None, "", "", seen.pos, "", "", None, False, request=_request("rev"))
    assert "wrong mask; missing referent" in str(err.value) and "wrong_mask" not in str(err.value)


def test_a_reason_or_comment_written_for_one_ref_never_rejects_another(tmp_path: Path, model) -> None:  # noqa: F811
    """Review's reason, comment and Reject belong to the ref shown: ← / →, a filter and a decision show
    the next ref with them emptied and Reject disabled (the walk of docs/walkthrough.md found a comment
    written for one ref waiting, with Reject enabled, under the next); the live counter leaves them."""
    from app.views import review
    from app.views.records import Outputs

    users = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw", frozenset({"reviewer"})),
                   User("bob", "pw")])
    svc = _collection(tmp_path, model, users)
    for k in (5, 6):
        svc.refs.save(Actor("bob"), k, [f"thing {k}"], no_target=True)
    emptied = (None, "", gr.update(interactive=False))
    first = review.show(svc, 0, "", "", None)
    nxt = review.step(svc, 1, first.pos, first.ref, "", "", None, False)
    assert nxt.ref != first.ref and (nxt.reason, nxt.comment, nxt.reject) == emptied
    back = review.step(svc, -1, nxt.pos, nxt.ref, "", "", None, False)
    assert back.ref == first.ref and (back.reason, back.comment, back.reject) == emptied
    filtered = review.move(svc, -10**9, 0, "bob", "", None, False)
    assert (filtered.reason, filtered.comment, filtered.reject) == emptied
    decided = review.decide(svc, "reject", first.ref, "wrong_mask", "for this one only", "", first.pos, "", "", None,
                            False, request=_request("rev"))
    assert "rejected by rev" in decided.msg and decided.shown.ref != first.ref
    assert (decided.shown.reason, decided.shown.comment, decided.shown.reject) == emptied
    # the timer's counter keeps what is being typed
    tick = review.ReviewShown.counter("x")
    assert (tick.reason, tick.comment, tick.reject) == (gr.skip(),) * 3
    # and these fields reach the widgets: the decision's outputs name each box once
    ui = type("UI", (), {f"rv_{n}": object() for n in ("info", "picture", "sentences", "history", "pos", "ref",
                                                       "changes", "reason", "comment", "reject", "shown", "msg")})()
    names = Outputs.of(review.ReviewDecided, ui, prefix="rv_").names
    assert names.count("reason") == names.count("comment") == names.count("reject") == 1


def test_a_page_keeps_its_screen_on_an_expected_error_and_an_api_caller_gets_the_error() -> None:
    from app.store import StoreError
    from app.views.shell import bind

    def handler(svc, value):
        raise StoreError(f"no ref {value}")

    page = type("Req", (), {"headers": {"x-gradio-user": "app"}})()
    api = type("Req", (), {"headers": {"x-gradio-user": "api"}})()
    said = bind(handler, None, status=(1, 3))(5, page)
    assert said[1] == "⚠ no ref 5" and said[0] == said[2] == gr.skip()
    assert bind(handler, None, status=(0, 1))(5, page) == "⚠ no ref 5"  # one output: the value itself
    with pytest.warns(UserWarning, match="no ref 5"):  # no status line: a toast, the outputs unchanged
        assert bind(handler, None)(5, page) == gr.skip()
    with pytest.raises(gr.Error, match="no ref 5"):
        bind(handler, None, status=(1, 3))(5, api)
    with pytest.raises(gr.Error, match="no ref 5"):  # a chain that must stop: raised on a page too
        bind(handler, None, soft=False)(5)


def test_the_timer_refreshes_what_the_tab_shows_without_moving_anyone(tmp_path: Path, model) -> None:  # noqa: F811
    from app.views import annotate, dataset_tab, live, review

    users = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw"), User("bob", "pw")])
    svc = _collection(tmp_path, model, users)
    first = svc.store.refs(image_id=1)[0]
    svc.refs.review(Actor("rev", accounts=True), first.id, "accept", expected_version=first.version)
    empty = review.show(svc, 0, "", "", None)
    assert "Nothing awaits review" in empty.info and empty.ref is None and empty.shown == ""
    assert review.live(svc, 0, None, "", "", None, tab="Annotate") == gr.skip()  # another tab: no query
    assert review.live(svc, 0, None, "", "", None, tab="Review") == gr.skip()  # still nothing
    a = svc.refs.save(Actor("bob"), 5, ["e thing"], no_target=True)
    svc.refs.save(Actor("bob"), 6, ["f thing"], no_target=True)
    arrived = review.live(svc, 0, None, "", "", None, tab="Review")
    out = arrived.shown
    assert "1 / 2" in out.info and out.ref[0] == a.ref_id and out.shown == f"{a.ref_id}:{out.ref[1]}"  # at 1 / 2
    assert arrived.msg == ""  # "Ref 1 accepted by rev." was about another ref (the walk's remark D)
    again = review.live(svc, out.pos, out.ref, "", "", None, tab="Review")
    out2 = again.shown
    kept = (out2.picture, out2.sentences, out2.history, out2.pos, out2.ref, out2.shown, again.msg)
    assert "1 / 2" in out2.info and all(o == gr.skip() for o in kept)  # the ref on screen (and its message) stay
    assert "1 / 2" in review.step(svc, 1, 0, None, "", "", None, False).info  # → on an empty screen: the first
    # the dataset counters, only on the Dataset tab and only when changed
    assert dataset_tab.live_counters(svc, "Review", "") == gr.skip()
    counters = dataset_tab.live_counters(svc, "Dataset", "")
    assert "refs" in counters and dataset_tab.live_counters(svc, "Dataset", counters) == gr.skip()
    # the to-fix list reaches ann without a reload, and is not sent again when unchanged
    tick = live.fix_tick(svc, annotate.fix_rows, "", None, "Annotate", _request("ann"))
    assert tick.to_fix["visible"] is False
    draft = svc.store.refs(image_id=3)[0]
    svc.refs.save(Actor("ann", accounts=True), 3, ["c thing"], no_target=True, ref_id=draft.id,
                  expected_version=draft.version)
    again = svc.store.ref(draft.id)
    svc.refs.review(Actor("rev", accounts=True), draft.id, "reject", "wrong_mask", "look again",
                    expected_version=again.version)
    tick = live.fix_tick(svc, annotate.fix_rows, "", tick.fix_seen, "Annotate", _request("ann"))
    assert tick.to_fix["visible"] is True and tick.to_fix["value"][0][3] == "look again"
    again = live.fix_tick(svc, annotate.fix_rows, "", tick.fix_seen, "Annotate", _request("ann"))
    assert again.to_fix == gr.skip() and again.fix_seen == tick.fix_seen


def test_add_images_from_the_app_uploads_and_a_confined_server_folder(tmp_path: Path, model) -> None:  # noqa: F811
    import os

    import numpy as np
    from PIL import Image

    from app.services import Services
    from app.services.errors import BadInput, Refused
    from app.store import Store
    from app.views import add_images

    root = tmp_path / "allowed"
    (root / "shoot").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(root / "shoot" / f"p{k}.png")
    (tmp_path / "secret").mkdir()
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "secret" / "s.png")
    os.symlink(tmp_path / "secret", root / "escape")
    users = Users([User("ann", "pw", frozenset({"annotator"})), User("op", "pw", frozenset({"operator"}))])
    svc = Services(model, Store(tmp_path / "empty.sqlite"), users=users, import_roots=[root])
    opened = add_images.on_load(svc)
    assert opened.box["open"] is True and "The collection is empty" in opened.msg and "folder of the server" in opened.msg
    # several files at once, idempotent; a file that is no image is named and skipped
    (tmp_path / "notes.txt").write_text("x")
    files = [str(root / "shoot" / "p0.png"), str(root / "shoot" / "p1.png"), str(tmp_path / "notes.txt")]
    added = add_images.upload(svc, files, "", _request("ann"))
    assert added.msg.startswith("Added 2 images") and "notes.txt (not an image file)" in added.msg and added.files is None
    assert added.box == gr.update()  # a skipped file: the box stays open, its message naming the file
    again = add_images.upload(svc, files[:2], "", _request("ann"))
    assert again.msg.startswith("Added 0 images; 2 already") and "PgDn" in again.msg
    assert again.box == gr.update(open=False)  # nothing skipped: the box closes, the picture comes back up
    assert add_images.on_load(svc) == add_images.BoxOpened(gr.update(), gr.update())
    # a folder of the server: operators only, confined to the roots, hostile names refused
    with pytest.raises(Refused, match="Only operators may import a folder"):
        add_images.import_folder(svc, str(root / "shoot"), "", _request("ann"))
    assert add_images.import_folder(svc, "shoot", "", _request("op")).startswith("Added 1 image; 2 already")
    assert add_images.import_folder(svc, "shoot", "", _request("op")).startswith("Added 0 images; 3 already")
    for hostile, why in (("../secret", "outside the folders"), (str(tmp_path / "secret"), "outside the folders"),
                         ("escape", "outside the folders"), ("/etc", "outside the folders"),
                         ("shoot\x00x", "control characters"), ("nope", "no such folder"), ("", "type a folder")):
        with pytest.raises(BadInput, match=why):
            add_images.import_folder(svc, hostile, "", _request("op"))
    svc.import_roots = []
    with pytest.raises(BadInput, match="--import-root"):
        add_images.import_folder(svc, "shoot", "", _request("op"))


def test_import_images_without_db_fills_the_database_launch_opens(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from deris_core.synthetic import generate

    from app.settings import Settings, studio_db
    from app.store import Store

    generate(tmp_path / "syn", seed=2, images=2)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DERIS_DB", "DERIS_DB_URL")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(tmp_path / "syn" / "images" / "train2014")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert studio_db(Settings(), cwd=work) == str(work / "deris_studio.sqlite")
    assert len(Store(work / "deris_studio.sqlite").read("SELECT id FROM images")) == 2


def test_verdict_colour_and_words_follow_the_decision_and_say_out_of_domain(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import numpy as np

    from app.services.scene_domain import out_of_domain_note, scene_stats
    from app.views import display
    from deris_core.preprocess import load_image
    from deris_core.synthetic import generate

    def sess(existence: float, targets: int, no_target: bool = False, note: str = "") -> SimpleNamespace:
        return SimpleNamespace(image=np.zeros((4, 4, 3), np.uint8), prediction=SimpleNamespace(existence=existence),
                               targets=[object()] * targets, no_target=no_target, domain_note=note)

    doubtful = display.verdict_html(sess(0.08, 1))
    assert "verdict-t'" not in doubtful and "verdict-warn" in doubtful and "leans to <b>no target</b>" in doubtful
    assert "verdict-t'" in display.verdict_html(sess(0.9, 2))
    assert "verdict-warn" in display.verdict_html(sess(0.9, 0, no_target=True))
    assert "verdict-nt" in display.verdict_html(sess(0.1, 0, no_target=True))
    outside = display.verdict_html(sess(0.9, 2, note="Out of the bundled model's domain"))
    assert "Out of the" in outside and "verdict-warn" in outside and "verdict-t'" not in outside  # never green there
    # the domain test: generated scenes pass, the photos of assets/photos do not, other models never warn
    generate(tmp_path / "syn", seed=21, images=24)
    scenes = sorted((tmp_path / "syn" / "images" / "train2014").glob("*.png"))
    assert [p.name for p in scenes if out_of_domain_note(load_image(p), bundled=True)] == []
    photos = sorted((Path(__file__).resolve().parents[1] / "assets" / "photos").glob("*.jpg"))
    assert len(photos) == 3
    for p in photos:
        rgb = load_image(p)
        assert not scene_stats(rgb).synthetic_like, p.name
        assert "Out of the bundled model's domain" in out_of_domain_note(rgb, bundled=True)
        assert out_of_domain_note(rgb, bundled=False) == ""


def test_the_bundled_model_on_a_photo_says_so_on_the_verdict(tmp_path: Path, model) -> None:  # noqa: F811
    from app.viewkit.model_info import is_bundled
    from app.viewkit.session import Session
    from app.views import display

    if not is_bundled(model.predictor):
        pytest.skip("the studio weights are not the bundled model here")
    svc = _collection(tmp_path, model)
    photo = Path(__file__).resolve().parents[1] / "assets" / "photos" / "coffee.jpg"
    sess = svc.workspace.open_upload(str(photo), Session()).session
    svc.workspace.predict(sess, "the red car", 0.7, 0.5)
    assert "Out of the bundled model" in display.verdict_html(sess)
    shapes = Path(__file__).resolve().parents[1] / "assets" / "examples" / "shapes_2.png"
    sess = svc.workspace.open_upload(str(shapes), Session()).session
    svc.workspace.predict(sess, "the red circle", 0.7, 0.5)
    assert "Out of" not in display.verdict_html(sess)


def test_jobs_panel_runs_the_commands_with_progress_cancel_and_plain_errors(tmp_path: Path, model) -> None:  # noqa: F811
    import time

    from app.dataset.collection import import_images
    from app.services import Services
    from app.services.errors import BadInput, Refused
    from app.store import Store
    from app.views import jobs
    from deris_core.synthetic import generate

    generate(tmp_path / "syn", seed=3, images=3)
    store = Store(tmp_path / "jobs.sqlite")
    import_images(store, tmp_path / "syn" / "images" / "train2014", progress=False)
    users = Users([User("ann", "pw", frozenset({"annotator"})), User("rev", "pw", frozenset({"reviewer"}))])
    svc = Services(model, store, users=users)
    buttons = jobs.for_user(svc, "", _request("ann"))
    assert buttons.start_btn["visible"] is False and buttons.cancel_btn["visible"] is False
    assert buttons.kind["visible"] is False and buttons.sentences["visible"] is False  # the form too: they read the board
    assert "Only reviewers or operators" in buttons.msg
    assert jobs.for_user(svc, "", _request("rev")).kind["visible"] is True
    with pytest.raises(Refused):
        jobs.start(svc, "preannotate", "the red circle", 5, False, "", "", _request("ann"))
    with pytest.raises(BadInput, match="type the sentences"):
        jobs.start(svc, "preannotate", "  \n", 5, False, "", "", _request("rev"))

    def wait(job_id: int) -> None:
        deadline = time.time() + 300
        while svc.jobs.get(job_id).state == "running" and time.time() < deadline:
            time.sleep(0.5)

    started = jobs.start(svc, "preannotate", "the red circle\nall blue shapes", 5, False, "", "", _request("rev"))
    job_id = started.job_id
    assert started.msg.startswith(f"Started job {job_id}") and "Pre-annotation" in started.jobs.board
    with pytest.raises(BadInput, match="running already"):
        jobs.start(svc, "preannotate", "the red circle", 5, False, "", "", _request("rev"))
    wait(job_id)
    job = svc.jobs.get(job_id)
    assert job.state == "finished" and job.result["written"] == 6, job.tail()
    assert "✓ done" in jobs.board(svc).board and len([r for r in store.refs() if r.author.startswith("model:")]) == 6
    # a failure in plain words (no reviewed refs to learn from), from the command's own error line
    failing = jobs.start(svc, "finetune", "", 0.1, False, "", "", _request("rev")).job_id
    wait(failing)
    bad = svc.jobs.get(failing)
    assert bad.state == "failed" and bad.problem and "Traceback" not in bad.problem, bad.tail()
    assert "✗ failed" in jobs.board(svc).board
    # cancel: stopped, said, and what was committed is kept
    running = jobs.start(svc, "negatives", "", 5, False, "", "", _request("rev")).job_id
    cancelled = jobs.cancel(svc, running, "", _request("rev"))
    assert cancelled.msg == f"Job {running} cancelled." and "cancelled by rev" in cancelled.jobs.board
    with pytest.raises(BadInput, match="not running"):
        jobs.cancel(svc, running, "", _request("rev"))
