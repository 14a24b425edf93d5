"""Review and identity: accounts and roles, recorded authors, an event for every change, the
review queue and its filters, what an annotator must fix, export filters and per-person stats."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.auth import AuthError, Users, parse_entry
from app.dataset.cli import export_zip
from app.store import ConflictError, Store, StoreError
from app.store.review import last_decision, person_stats, review, review_queue, to_fix

ROOT = Path(__file__).resolve().parents[1]


def test_auth_entries_roles_and_refusals(tmp_path: Path) -> None:
    u = parse_entry("ann:s3cret", "e")
    assert u.name == "ann" and u.password == "s3cret" and u.reviewer and "s3cret" not in repr(u)
    assert parse_entry("rev:pa:ss:reviewer", "e").roles == {"reviewer"}  # a password may contain ':'
    with pytest.raises(AuthError, match="unknown role"):  # a password with ':' needs its roles after it
        parse_entry("rev:pa:ss", "e")
    assert parse_entry("x:y:annotator,reviewer", "e").roles == {"annotator", "reviewer"}
    for bad in ("nocolon", ":pw", "user:", "user::reviewer"):
        with pytest.raises(AuthError) as err:
            parse_entry(bad, "--auth entry 1")
        assert "--auth entry 1" in str(err.value) and (bad.split(":")[-1] not in str(err.value) or not bad.split(":")[-1])
    f = tmp_path / "users.txt"
    f.write_text("# the team\nann:pw1:annotator\n\nrev:pw2:reviewer\n")
    users = Users.parse(["boss:pw3"], f)
    assert users.names() == ["ann", "boss", "rev"]
    assert users.check("ann", "pw1") and not users.check("ann", "pw2") and not users.check("nobody", "pw1")
    assert not users.get("ann").reviewer and users.get("rev").reviewer
    with pytest.raises(AuthError, match="given twice"):
        Users.parse(["a:1", "a:2"])
    with pytest.raises(AuthError, match="line 1") as err:
        f.write_text("ann-without-password\n")
        Users.parse([], f)
    assert Users.parse([], None) is None


def test_launch_refuses_bad_auth_without_printing_passwords() -> None:
    r = subprocess.run([sys.executable, "launch.py", "--auth", "ann:pw", "--auth", "broken-secret-entry"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--auth entry 2" in r.stderr and "broken-secret-entry" not in r.stderr


def _store(db_at) -> tuple[Store, int]:
    s = Store(db_at("r.sqlite"))
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    return s, img


def _mask() -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[2:9, 3:11] = True
    return m


def test_every_change_is_an_event_with_its_author(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    rid = s.save_ref(img, ["the box"], masks=[_mask()], author="ann")
    s.save_ref(img, ["the box", "a square"], masks=[_mask()], author="ann", ref_id=rid, expected_version=1)
    v = review(s, rid, "reject", "rev", "wrong_mask", "the corner is cut", expected_version=2)
    s.save_ref(img, ["the box"], masks=[_mask()], author="ann", ref_id=rid, expected_version=v)
    review(s, rid, "accept", "rev")
    s.set_status(rid, "done", actor="boss")
    s.delete_ref(rid, actor="boss")
    events = s.events(rid)
    assert [(e.action, e.actor) for e in events] == [("create", "ann"), ("edit", "ann"), ("review", "rev"),
                                                    ("edit", "ann"), ("review", "rev"), ("status", "boss"),
                                                    ("delete", "boss")]
    assert events[1].detail["sentences"] == ["the box", "a square"]
    assert events[2].detail == {"decision": "reject", "reason": "wrong_mask", "comment": "the corner is cut",
                                "from": "done", "to": "rejected", "author": "ann"}
    assert events[4].detail["to"] == "reviewed" and events[0].at <= events[-1].at


def test_review_decisions_need_a_reason_and_a_current_version(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    rid = s.save_ref(img, ["x"], no_target=True, author="ann")
    with pytest.raises(StoreError, match="needs a reason"):
        review(s, rid, "reject", "rev", None, "why")
    with pytest.raises(StoreError, match="unknown decision"):
        review(s, rid, "maybe", "rev")
    with pytest.raises(ConflictError, match="changed by someone else meanwhile"):
        review(s, rid, "accept", "rev", expected_version=7)
    with pytest.raises(StoreError, match="no ref"):
        review(s, 999, "accept", "rev")
    assert s.ref(rid).status == "done"


def test_the_review_queue_is_oldest_first_and_filtered(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    img2 = s.add_image(np.ones((20, 20, 3), np.uint8))
    a = s.save_ref(img, ["a"], no_target=True, author="ann", split="val")
    time.sleep(0.01)
    b = s.save_ref(img2, ["b"], no_target=True, author="bob")
    time.sleep(0.01)
    c = s.save_ref(img, ["c"], no_target=True, author="ann")
    s.save_ref(img, ["draft"], no_target=True, author="ann", status="draft")
    time.sleep(0.01)
    s.save_ref(img, ["a2"], no_target=True, author="ann", split="val", ref_id=a, expected_version=1)  # edited: newest
    rows, total = review_queue(s)
    assert total == 3 and [r.id for r in rows] == [b, c, a]
    assert [r.id for r in review_queue(s, annotator="ann")[0]] == [c, a]
    assert [r.id for r in review_queue(s, split="val")[0]] == [a]
    assert [r.id for r in review_queue(s, image_id=img2)[0]] == [b]
    review(s, b, "accept", "rev")
    review(s, c, "reject", "rev", "missing_referent", "the second cup")
    assert [r.id for r in review_queue(s)[0]] == [a]
    (row, d), = to_fix(s, "ann")
    assert row.id == c and d.reason == "missing_referent" and d.comment == "the second cup" and d.reviewer == "rev"
    assert last_decision(s, a) is None and to_fix(s, "bob") == []
    # fixing it puts it back in the queue
    s.save_ref(img, ["c", "both cups"], no_target=True, author="ann", ref_id=c, expected_version=2)
    assert c in [r.id for r in review_queue(s)[0]] and to_fix(s, "ann") == []
    stats = {p["person"]: p for p in person_stats(s)}
    assert stats["ann"]["refs_made"] == 3 and stats["ann"]["accepted"] == 0 and stats["ann"]["rejected"] == 1
    assert stats["bob"]["acceptance_rate"] == 1.0 and stats["rev"]["reviews_given"] == 2
    assert stats["ann"]["acceptance_rate"] == 0.0


def test_export_by_status_split_and_annotator(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    a = s.save_ref(img, ["a"], masks=[_mask()], author="ann", split="val")
    b = s.save_ref(img, ["b"], no_target=True, author="bob")
    s.save_ref(img, ["c"], no_target=True, author="ann", status="draft")
    review(s, a, "accept", "rev")
    review(s, b, "accept", "rev")
    for kwargs, expected in (({"status": "reviewed"}, {a, b}), ({"status": "reviewed", "annotator": "ann"}, {a}),
                             ({"split": "val"}, {a}), ({}, {a, b, a + 2})):
        out = tmp_path / f"e{len(expected)}{sorted(kwargs)}.zip"
        summary = export_zip(s, out, **kwargs)
        with zipfile.ZipFile(out) as zf:
            grefs = json.loads(zf.read("grefcoco/grefs(unc).json"))
            meta = json.loads(zf.read("export.json"))
        assert {g["ref_id"] for g in grefs} == expected
        assert meta["filter"] == {"status": kwargs.get("status"), "split": kwargs.get("split"),
                                  "annotator": kwargs.get("annotator")} == summary["filter"]
    r = subprocess.run([sys.executable, "-m", "app.dataset", "export", "--db", str(db_at("r.sqlite")), "--out",
                        str(tmp_path / "cli.zip"), "--status", "reviewed", "--annotator", "bob"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {g["ref_id"] for g in json.loads(zipfile.ZipFile(tmp_path / "cli.zip").read("grefcoco/grefs(unc).json"))} == {b}


def test_signed_in_roles_guard_edits_deletes_and_self_review(db_at, studio_weights, tmp_path: Path) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from app.dataset.collection import import_images
    from tests.test_app import start_server

    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "a.png"), np.full((32, 32, 3), 90, np.uint8))
    db = db_at("team.sqlite")
    import_images(Store(db), folder, progress=False)
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, ["--auth", "ann:pw1:annotator", "--auth", "bob:pw2:annotator",
                                                "--auth", "rev:pw3"])
    try:
        def as_user(name: str, pw: str) -> Client:
            c = Client(url, auth=(name, pw), verbose=False)
            c.predict(False, "", 0.7, 0.5, "", "", "", "", api_name="/next_image")
            return c

        bob, ann, rev = as_user("bob", "pw2"), as_user("ann", "pw1"), as_user("rev", "pw3")
        def no_target(c: Client, text: str) -> dict:
            """Segment, then X on the canvas: the canvas value that the save sends."""
            out = c.predict(None, text, 0.7, 0.5, api_name="/segment")
            return {**out[0], "edit": {"targets": [], "no_target": True, "ops": 1}}

        nothing = no_target(bob, "the grey square")
        msg, *_ = bob.predict("", "train", "done", "", "the grey square", nothing, api_name="/save")
        rid = int(msg.split()[2])
        ann.predict(rid, api_name="/open_ref")
        with pytest.raises(AppError, match="only bob or a reviewer can change it"):
            ann.predict("", "train", "done", "", "the grey square", api_name="/save")
        with pytest.raises(AppError, match="Only bob or a reviewer can delete"):
            ann.predict(rid, "", api_name="/delete_ref")
        with pytest.raises(AppError, match="not a reviewer"):
            ann.predict("", "train", "reviewed", "", "the grey square", api_name="/save")
        # a reviewer may correct it; the author stays bob, the edit is rev's in the history
        rev.predict(rid, api_name="/open_ref")
        rev.predict("", "train", "done", "a grey box", "the grey square", api_name="/save")
        # rev's own ref cannot be accepted by rev
        rev.predict(api_name="/next_expression")
        nothing = no_target(rev, "a cat")
        rev.predict("", "train", "done", "", "a cat", nothing, api_name="/save")
        out = rev.predict("rev", "", None, False, api_name="/review_previous")  # rev's refs awaiting review
        assert "by <b>rev</b>" in out[0]
        with pytest.raises(AppError, match="so you cannot accept it"):
            rev.predict(None, "", "", "rev", "", None, False, api_name="/review_accept")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    s = Store(db)
    assert s.ref(rid).author == "bob" and s.ref(rid).sentences == ["the grey square", "a grey box"]
    assert [(e.action, e.actor) for e in s.events(rid)] == [("create", "bob"), ("edit", "rev")]


def test_signed_in_nobody_accepts_their_own_content_and_accepted_consensus_is_reviewers_only(db_at,
        studio_weights, tmp_path: Path) -> None:
    """Issue 27, served with --auth: an annotator cannot overwrite or delete an accepted consensus ref; a user
    with both roles cannot accept, by saving or by reviewing, a ref whose current content he wrote."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from app.services import Actor, RefService
    from tests.test_app import start_server

    db = db_at("team.sqlite")
    s = Store(db)
    img = s.add_image(np.full((32, 32, 3), 90, np.uint8), file_name="a.png")
    refs = RefService(s)
    consensus = refs.save(Actor.tool("agreement"), img, ["the grey square"], no_target=True, author="consensus(a,b)")
    refs.review(Actor("boss"), consensus.ref_id, "accept", expected_version=consensus.version)
    bobs = refs.save(Actor("bob"), img, ["a grey thing"], no_target=True)
    s.close()
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, ["--auth", "ann:pw1:annotator", "--auth", "rev:pw3",
                                                "--auth", "boss:pw4"])
    try:
        ann, rev, boss = (Client(url, auth=a, verbose=False) for a in (("ann", "pw1"), ("rev", "pw3"), ("boss", "pw4")))
        ann.predict(consensus.ref_id, api_name="/open_ref")
        with pytest.raises(AppError, match="was accepted; only a reviewer can change it"):
            ann.predict("", "train", "done", "", "mine now", api_name="/save")
        with pytest.raises(AppError, match="was accepted; only a reviewer can delete it"):
            ann.predict(consensus.ref_id, "", api_name="/delete_ref")
        # rev's own new ref, straight to reviewed through the save: refused, nothing saved
        rev.predict(False, "", 0.7, 0.5, "", "", "", "", api_name="/next_image")
        if "NO TARGET" not in rev.predict(None, "a cat", 0.7, 0.5, api_name="/segment")[1]:
            rev.predict(api_name="/toggle_no_target")
        with pytest.raises(AppError, match="so you cannot accept it"):
            rev.predict("", "train", "reviewed", "", "a cat", api_name="/save")
        msg, *_ = rev.predict("", "train", "done", "", "a cat", api_name="/save")  # awaiting review ...
        with pytest.raises(AppError, match="so you cannot accept it"):  # ... and again as reviewed
            rev.predict("", "train", "reviewed", "", "a cat", api_name="/save")
        # rev rewrites bob's ref, then tries to accept it in the Review view
        rev.predict(bobs.ref_id, api_name="/open_ref")
        rev.predict("", "train", "done", "a grey box", "a grey thing", api_name="/save")
        assert "by <b>bob</b>" in rev.predict("bob", "", None, False, api_name="/review_previous")[0]
        with pytest.raises(AppError, match="so you cannot accept it"):
            rev.predict(None, "", "", "bob", "", None, False, api_name="/review_accept")
        # boss wrote none of it: boss accepts
        assert "by <b>bob</b>" in boss.predict("bob", "", None, False, api_name="/review_previous")[0]
        assert "accepted by boss" in boss.predict(None, "", "", "bob", "", None, False, api_name="/review_accept")[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    s = Store(db)
    assert s.ref(consensus.ref_id).sentences == ["the grey square"] and s.ref(consensus.ref_id).status == "reviewed"
    rec = s.ref(bobs.ref_id)
    assert (rec.author, rec.editor, rec.status) == ("bob", "rev", "reviewed")
    assert [(e.action, e.actor) for e in s.events(bobs.ref_id)][-1] == ("review", "boss")
    cats = [r for r in s.refs(image_id=img) if r.sentences == ["a cat"]]
    assert len(cats) == 1 and cats[0].status == "done"


def test_nobody_accepts_content_they_wrote_that_reached_them_through_consensus(db_at, tmp_path: Path) -> None:
    """alice writes ref 1, a consensus merge copies it into ref 3: alice cannot accept ref 3 (her content,
    whoever the consensus names as its author), bob can; after a migration the provenance still holds."""
    from app.curate.quality import agreement
    from app.dataset.migrate import migrate
    from app.services.errors import Refused
    from app.services.permissions import Actor
    from app.services.refs import RefService
    from app.store.provenance import content_authors

    s, img = _store(db_at)
    mine = s.save_ref(img, ["the box"], masks=[_mask()], author="alice")
    bobs = s.save_ref(img, ["The box"], masks=[_mask()], author="bob")
    assert agreement(s, merge=True, min_iou=0.7, quorum=2)["merged"] == 1
    cons = next(r for r in s.refs() if r.author == "consensus(alice,bob)")
    assert cons.id not in (mine, bobs) and s.events(cons.id)[0].detail["copied_from"] == mine
    with s.transaction() as db:
        assert "alice" in content_authors(db, cons.id) and "bob" not in content_authors(db, cons.id)
    svc = RefService(s)
    with pytest.raises(Refused, match=f"You wrote the content of ref {cons.id}.*through agreement"):
        svc.review(Actor("alice"), cons.id, "accept")
    with pytest.raises(Refused, match="cannot"):  # accepting by saving is refused as well
        svc.save(Actor("alice"), img, cons.sentences, instance_ids=cons.instance_ids, status="reviewed",
                 ref_id=cons.id, expected_version=cons.version)
    assert s.ref(cons.id).status == "done"
    # the source changed later: the copy still holds alice's words, and carol's edit of ref 1 is not in it
    s.save_ref(img, ["the big box"], masks=[_mask()], author="alice", ref_id=mine, expected_version=1, actor="carol")
    with s.transaction() as db:
        assert content_authors(db, cons.id) == {"agreement", "alice"}
    if s.location.is_postgres:
        return  # the migration below is SQLite -> SQLite; test_migrate covers PostgreSQL
    copy = tmp_path / "copy.sqlite"
    migrate(str(db_at("r.sqlite")), str(copy), check=False)
    moved = Store(copy)
    with pytest.raises(Refused, match="You wrote the content"):
        RefService(moved).review(Actor("alice"), cons.id, "accept")
    assert RefService(moved).review(Actor("bob"), cons.id, "accept") == cons.version + 1
    svc.review(Actor("bob"), cons.id, "accept")
    assert s.ref(cons.id).status == "reviewed"


def test_nobody_accepts_content_they_wrote_that_reached_them_through_an_import(db_at, tmp_path: Path) -> None:
    """alice's ref and the consensus copy of it leave in an export and come back through an import into
    another store (their history stays behind; the import event names who wrote them): alice cannot
    accept either there, nor can bob the consensus ref he is a party to; carol can."""
    from app.curate.quality import agreement
    from app.dataset.cli import import_grefcoco
    from app.services.errors import Refused
    from app.services.permissions import Actor
    from app.services.refs import RefService
    from app.store.provenance import content_authors

    s, img = _store(db_at)
    s.save_ref(img, ["the box"], masks=[_mask()], author="alice")
    s.save_ref(img, ["The box"], masks=[_mask()], author="bob")
    assert agreement(s, merge=True, min_iou=0.7, quorum=2)["merged"] == 1
    export_zip(s, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        zf.extractall(tmp_path / "out")
    other = Store(db_at("other.sqlite"))
    assert import_grefcoco(other, tmp_path / "out")["refs"] == 3
    by_author = {r.author: r for r in other.refs()}
    alices, cons = by_author["alice"], by_author["consensus(alice,bob)"]
    assert [e.action for e in other.events(cons.id)] == ["import"]
    with other.transaction() as db:
        assert content_authors(db, alices.id) == {"alice"}
        assert content_authors(db, cons.id) == {"consensus(alice,bob)", "alice", "bob"}
    svc = RefService(other)
    with pytest.raises(Refused, match="cannot accept"):
        svc.review(Actor("alice"), alices.id, "accept")
    for who in ("alice", "bob"):
        with pytest.raises(Refused, match=f"You wrote the content of ref {cons.id}.*through agreement"):
            svc.review(Actor(who), cons.id, "accept")
    with pytest.raises(Refused, match="cannot"):  # accepting by saving is refused as well
        svc.save(Actor("alice"), cons.image_id, cons.sentences, instance_ids=cons.instance_ids, status="reviewed",
                 ref_id=cons.id, expected_version=cons.version)
    assert {r.status for r in other.refs()} == {"done"}
    # carol moves the imported consensus ref to another split (she becomes its author of record: a
    # consensus is no person's ref), its content stays alice's and bob's, as the import event says
    moved = svc.save(Actor("carol"), cons.image_id, cons.sentences, instance_ids=cons.instance_ids,
                     split="val", ref_id=cons.id, expected_version=cons.version)
    with other.transaction() as db:
        assert {"alice", "bob"} <= content_authors(db, cons.id) and "carol" not in content_authors(db, cons.id)
    with pytest.raises(Refused, match=f"You wrote the content of ref {cons.id}"):
        svc.review(Actor("alice"), cons.id, "accept")
    assert svc.review(Actor("dave"), cons.id, "accept") == moved.version + 1
    assert svc.review(Actor("carol"), alices.id, "accept") == alices.version + 1
    assert other.ref(cons.id).status == other.ref(alices.id).status == "reviewed"
