"""Schema versions (app/store/schema.py): databases of every earlier version migrate with every ref
(and learn who wrote each ref's content from its history); a newer one is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.services import Actor, RefService, Refused
from app.store import SCHEMA_VERSION, Store, StoreError
from tests.builders import rect_mask

ROOT = Path(__file__).resolve().parents[1]
V1_DB = ROOT / "tests" / "data" / "studio_v1.sqlite"  # made by the first release
V2_DB = ROOT / "tests" / "data" / "studio_v2.sqlite"  # made by the schema-2 code (commit 5681739)
V3_DB = ROOT / "tests" / "data" / "studio_v3.sqlite"  # made by the schema-3 code (commit d9ccb7a)


def test_a_database_of_the_previous_version_opens_with_every_ref(tmp_path: Path) -> None:
    db = tmp_path / "studio.sqlite"
    shutil.copy(V1_DB, db)
    s = Store(db)
    assert s.migrated_from == 1 and s.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "studio.sqlite.v1.bak").is_file()  # a copy of the old file, taken before migrating
    assert s.integrity_check() == "ok"
    refs = {r.id: r for r in s.refs()}
    assert sorted(refs) == [1, 2, 3, 4]
    assert refs[1].sentences == ["the two boxes", "both squares"] and refs[1].split == "val" and refs[1].status == "draft"
    assert refs[1].author == "ann" and len(refs[1].instance_ids) == 2 and refs[1].version == 1
    assert refs[3].no_target and refs[3].status == "reviewed" and refs[3].instance_ids == []
    assert refs[4].sentences == ["the corner box"] and refs[4].instance_ids == refs[1].instance_ids[1:]
    np.testing.assert_array_equal(s.instances(1)[0].mask, rect_mask((2, 3, 10, 12)))
    # v1 left the first drawn mask of the edited ref 4 behind; the migration removed that orphan
    assert len(s.instances()) == 2
    # hostile names of v1 are made safe, the original is kept
    im = s.image(1)
    assert im.file_name == "cat_one.png" and im.original_name == "../photos/cat one.png"
    # the migrated database works as a new one: edits are versioned, new ids are never reused
    s.save_ref(1, ["the two boxes"], instance_ids=refs[1].instance_ids, ref_id=1, expected_version=1, author="ann")
    assert s.ref(1).version == 2
    a = s.save_ref(2, ["x"], no_target=True)
    s.delete_ref(a)
    b = s.save_ref(2, ["y"], no_target=True)
    assert b > a
    s.close()
    assert Store(db).schema_version() == SCHEMA_VERSION  # reopening does not migrate again


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "new.sqlite"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer DeRIS Studio"):
        Store(db)


def test_a_version_2_database_migrates_and_knows_who_wrote_each_refs_content(tmp_path: Path) -> None:
    db = tmp_path / "studio.sqlite"
    shutil.copy(V2_DB, db)
    s = Store(db)
    assert s.migrated_from == 2 and s.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "studio.sqlite.v2.bak").is_file() and s.integrity_check() == "ok"
    refs = {r.id: r for r in s.refs()}
    assert sorted(refs) == [1, 2, 3, 4, 5]
    # 1: ann's ref, rewritten by rev, then accepted by bob: the content is rev's
    assert (refs[1].author, refs[1].editor, refs[1].status, refs[1].version) == ("ann", "rev", "reviewed", 3)
    assert refs[1].sentences == ["the left box", "a square"] and len(refs[1].instance_ids) == 1
    assert (refs[2].author, refs[2].editor, refs[2].status) == ("bob", "bob", "done")
    assert (refs[3].author, refs[3].editor) == ("consensus(ann,bob)", "agreement")
    assert (refs[4].editor, refs[4].status) == ("ann", "rejected")
    assert (refs[5].author, refs[5].editor, refs[5].status) == ("model:bundled", "model:bundled", "predicted")
    assert [e.action for e in s.events(1)] == ["create", "edit", "review"]
    # the migrated database works as a new one, with the new rule
    service = RefService(s)
    rev = Actor("rev", accounts=True)
    with pytest.raises(Refused, match="cannot accept it"):
        service.save(rev, 1, ["the right box", "rewritten"], instance_ids=refs[2].instance_ids, ref_id=2,
                     expected_version=1, status="reviewed")
    service.review(rev, 2, "accept", expected_version=1)
    assert s.ref(2).status == "reviewed"
    s.close()
    assert Store(db).migrated_from == SCHEMA_VERSION  # reopening does not migrate again


def test_a_version_2_history_with_odd_event_details_still_migrates(tmp_path: Path) -> None:
    """Hand-edited or foreign histories (a list, a number, broken JSON as the detail) must not stop the
    database from opening: those events tell nothing about who wrote the content."""
    import sqlite3

    db = tmp_path / "studio.sqlite"
    shutil.copy(V2_DB, db)
    con = sqlite3.connect(db)
    for detail in ("[1, 2]", "7", "{broken", "null"):
        con.execute("INSERT INTO events (ref_id, user, action, detail, at) VALUES (2, 'eve', 'edit', ?, 0)", (detail,))
    con.commit()
    con.close()
    s = Store(db)
    assert s.schema_version() == SCHEMA_VERSION and s.integrity_check() == "ok"
    assert s.ref(2).author == "bob"
    s.close()


def test_a_version_3_database_migrates_and_keeps_its_predictions(tmp_path: Path) -> None:
    """Schema 4 (the learning loop) adds prediction uncertainty and origin and three tables; a
    schema-3 store keeps every ref, event and prediction, and its predictions come from ``preannotate``."""
    db = tmp_path / "studio.sqlite"
    shutil.copy(V3_DB, db)
    s = Store(db)
    assert s.migrated_from == 3 and s.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "studio.sqlite.v3.bak").is_file() and s.integrity_check() == "ok"
    refs = {r.id: r for r in s.refs()}
    assert sorted(refs) == [1, 2, 4]  # 3 was deleted; ids stay as they were
    assert (refs[1].status, refs[1].editor, refs[1].sentences) == ("reviewed", "ann", ["the left box", "a square"])
    assert refs[2].no_target and refs[4].status == "predicted" and refs[4].author == "model:bundled"
    assert [e.action for e in s.events(1)] == ["create", "review"]
    assert s.read("SELECT ref_id, origin, uncertainty FROM predictions") == [(4, "preannotate", None)]
    for table in ("models", "negatives", "locks"):
        assert s.read(f"SELECT COUNT(*) FROM {table}") == [(0,)]
    new = s.save_ref(refs[1].image_id, ["a new ref after the upgrade"], no_target=True)
    assert new > 4
    s.close()
    assert Store(db).migrated_from == SCHEMA_VERSION


V4_DB = ROOT / "tests" / "data" / "studio_v4.sqlite"  # made by the schema-4 code (commit abdd2e1)


def test_a_version_4_database_migrates_and_gains_save_keys_and_sign_in_failures(tmp_path: Path) -> None:
    """Schema 5 adds the keys of save attempts and the team's sign-in failures; a schema-4 store keeps
    every ref and takes keyed saves at once."""
    from app.services import Actor, RefService

    db = tmp_path / "studio.sqlite"
    shutil.copy(V4_DB, db)
    s = Store(db)
    assert s.migrated_from == 4 and s.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "studio.sqlite.v4.bak").is_file() and s.integrity_check() == "ok"
    refs = {r.id: r for r in s.refs()}
    assert sorted(refs) == [1, 2] and refs[1].status == "reviewed" and refs[2].no_target
    assert s.read("SELECT COUNT(*) FROM save_keys") == [(0,)] and s.read("SELECT COUNT(*) FROM sign_in_failures") == [(0,)]
    saved = RefService(s).save(Actor("ann"), refs[1].image_id, ["after the upgrade"], no_target=True, save_key="k" * 16)
    assert s.read("SELECT key, ref_id FROM save_keys") == [("k" * 16, saved.ref_id)]
    s.close()
    assert Store(db).migrated_from == SCHEMA_VERSION


def test_a_version_4_postgres_database_migrates(pg_server, tmp_path: Path) -> None:
    """A PostgreSQL store made by the schema-4 code (run from that commit's files) upgrades in place."""
    import os
    import subprocess
    import sys

    old = tmp_path / "v4code"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "abdd2e1", "app", "deris_core"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip("the schema-4 commit is not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    url = pg_server.new_database()
    made = subprocess.run([sys.executable, "-c", "import sys, numpy as np; from app.store import Store; s = Store(sys.argv[1]); "
                           "i = s.add_image(np.full((8, 8, 3), 7, np.uint8)); print(s.schema_version(), "
                           "s.save_ref(i, ['kept'], no_target=True))", url], cwd=old, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(old)}, timeout=300)
    assert made.returncode == 0 and made.stdout.split() == ["4", "1"], made.stderr
    s = Store(url)
    assert s.migrated_from == 4 and s.schema_version() == SCHEMA_VERSION
    assert [r.sentences for r in s.refs()] == [["kept"]]
    assert s.read("SELECT COUNT(*) FROM save_keys") == [(0,)] and s.read("SELECT COUNT(*) FROM sign_in_failures") == [(0,)]


V5_DB = ROOT / "tests" / "data" / "studio_v5.sqlite"  # made by the schema-5 code (commit 4c2003e)


def _box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((24, 24), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_a_version_5_database_migrates_and_keeps_what_its_rejections_can_tell(tmp_path: Path) -> None:
    """Schema 6 keeps each rejected version (for Review's before / after). A schema-5 store gets them
    from its history: ref 1 (rejected, not fixed yet) with its mask; ref 2 (rejected, then fixed: the
    old drawn instance is gone) with its sentences but no mask; ref 4's old instance id now belongs to
    a newer instance (SQLite gave the id again), which is not taken for the old one; refs 3 and 5
    were never rejected."""
    from app.services import Actor, RefService

    db = tmp_path / "studio.sqlite"
    shutil.copy(V5_DB, db)
    s = Store(db)
    assert s.migrated_from == 5 and s.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "studio.sqlite.v5.bak").is_file() and s.integrity_check() == "ok"
    service = RefService(s)
    one = service.rejection(1)
    assert (one.reviewer, one.reason, one.comment, one.sentences, one.version) == (
        "rev", "wrong_mask", "the corner is cut", ["the left box"], 1)
    assert one.masks_kept and (one.masks[0] == _box(2, 2, 10, 8)).all()
    two = service.rejection(2)
    assert (two.reason, two.sentences, two.masks, two.masks_kept) == ("missing_referent", ["the right box"], [None], False)
    assert service.rejection(4).masks == [None] and service.rejection(3) is None and service.rejection(5) is None
    # ref 1 is fixed after the upgrade: its rejected version keeps the old mask, which the fix removed
    ann = Actor("ann", frozenset({"annotator"}), accounts=True)
    old = s.ref(1)
    service.save(ann, old.image_id, ["the left box"], masks=[_box(2, 2, 12, 8)], ref_id=1, expected_version=old.version)
    assert old.instance_ids[0] not in {i.id for i in s.instances()}
    assert (service.rejection(1).masks[0] == _box(2, 2, 10, 8)).all()
    s.close()
    assert Store(db).migrated_from == SCHEMA_VERSION


def test_a_version_5_postgres_database_migrates_and_keeps_its_rejection(pg_server, tmp_path: Path) -> None:
    """A PostgreSQL store made by the schema-5 code, with a rejected ref, upgrades in place and keeps the
    rejected version's mask."""
    import os
    import subprocess
    import sys

    from app.services import RefService

    old = tmp_path / "v5code"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "4c2003e", "app", "deris_core"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip("the schema-5 commit is not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    url = pg_server.new_database()
    script = ("import sys, numpy as np; from app.store import Store; from app.store.review import review; "
              "s = Store(sys.argv[1]); i = s.add_image(np.full((8, 8, 3), 7, np.uint8)); m = np.zeros((8, 8), bool); "
              "m[1:4, 2:6] = True; r = s.save_ref(i, ['the box'], masks=[m], author='ann'); "
              "review(s, r, 'reject', 'rev', 'wrong_mask', 'too small', expected_version=1); print(s.schema_version(), r)")
    made = subprocess.run([sys.executable, "-c", script, url], cwd=old, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(old)}, timeout=300)
    assert made.returncode == 0 and made.stdout.split() == ["5", "1"], made.stderr
    s = Store(url)
    assert s.migrated_from == 5 and s.schema_version() == SCHEMA_VERSION
    rejected = RefService(s).rejection(1)
    assert (rejected.reviewer, rejected.reason, rejected.comment, rejected.sentences) == ("rev", "wrong_mask", "too small",
                                                                                         ["the box"])
    assert int(rejected.masks[0].sum()) == 12
    s.close()
