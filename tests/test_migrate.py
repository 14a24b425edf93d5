"""app/dataset/migrate.py: a whole store SQLite -> PostgreSQL -> SQLite, checked by counts, pixels and identical
exports; ids ever given move with it; locks stay behind; a non-empty target, a copy that lost pixels and
an image whose file is gone are said plainly."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.dataset.migrate import migrate, table_columns
from app.store import Store, StoreError
from app.store.models import ModelRecord
from app.store.review import review
from tests.builders import noise_image, rect_mask


def _team_store(path: Path) -> Store:
    """A small store with a bit of everything: images (one imported by path), refs of every status,
    a deleted ref (its id must stay unused), reviews, a registered model and a held lock."""
    store = Store(path)
    ids = [store.add_image(noise_image(k), f"img_{k}.png", split="train") for k in range(3)]
    on_disk = path.parent / "photo.png"
    import cv2

    cv2.imwrite(str(on_disk), noise_image(9)[:, :, ::-1])
    ids.append(store.add_image(noise_image(9), "photo.png", split="val", path=on_disk))
    a = store.save_ref(ids[0], ["the left box"], masks=[rect_mask()], author="ann")
    b = store.save_ref(ids[1], ["nothing green"], no_target=True, author="ann")
    c = store.save_ref(ids[2], ["the box", "the square"], masks=[rect_mask((5, 5, 20, 30))], author="ann2")
    store.save_ref(ids[3], ["a box on a photo"], masks=[rect_mask()], author="ann", split="val")
    gone = store.save_ref(ids[0], ["to be deleted"], masks=[rect_mask((1, 1, 4, 4))], author="ann")
    store.delete_ref(gone, actor="ann")
    review(store, a, "accept", "rev")
    review(store, c, "reject", "rev", reason="wrong_mask", comment="too loose")
    store.save_ref(b, ["nothing green here"], no_target=True, author="ann", ref_id=b,
                   expected_version=store.ref(b).version)
    store.register_model(ModelRecord(0, "team-v1", "/runs/team-v1/model.safetensors", "deris-small", "bundled (sha256:x)",
                                     {"refs": 3}, {"gIoU": 20.0}, {"gIoU": 40.0}, "ann"))
    assert store.take_lock("finetune", "otherhost:123:ann:run") is None
    return store


def _counts(store: Store) -> dict[str, int]:
    return {t: int(store.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in table_columns() if t != "locks"}


def test_a_store_goes_to_postgres_and_back_unchanged(tmp_path: Path, pg_server) -> None:
    src = _team_store(tmp_path / "team.sqlite")
    before = _counts(src)
    src_refs = [(r.id, r.sentences, r.status, r.version, r.author) for r in src.refs()]
    src.close()
    url = pg_server.new_database()
    res = migrate(str(tmp_path / "team.sqlite"), url)
    assert res["identical_export"] and res["images_without_pixels"] == 0
    assert "locks" not in res["copied"]  # a lock belongs to a process working on the source
    pg = Store(url)
    assert _counts(pg) == before and pg.read("SELECT COUNT(*) FROM locks")[0][0] == 0
    assert [(r.id, r.sentences, r.status, r.version, r.author) for r in pg.refs()] == src_refs
    assert [m.name for m in pg.models()] == ["team-v1"]
    assert all(pg.image_bytes(i) is not None for (i,) in pg.read("SELECT id FROM images"))
    new = pg.save_ref(1, ["a new ref after the move"], no_target=True, author="ann")
    assert new > max(r[0] for r in src_refs) + 1  # the deleted ref's id was given once: never again
    pg.delete_ref(new, actor="ann")
    pg.close()
    back = tmp_path / "back.sqlite"
    res2 = migrate(url, str(back))
    assert res2["identical_export"] and res2["images_without_pixels"] == 0
    again = Store(back)
    assert _counts(again)["refs"] == before["refs"] and again.load_image(4) is not None
    assert [(r.id, r.sentences, r.status, r.version, r.author) for r in again.refs()] == src_refs
    again.close()
    with pytest.raises(StoreError, match="is not empty"):
        migrate(str(tmp_path / "team.sqlite"), url)


def test_an_image_whose_file_is_gone_is_listed(tmp_path: Path, pg_server) -> None:
    store = _team_store(tmp_path / "team.sqlite")
    store.close()
    (tmp_path / "photo.png").unlink()  # the imported folder moved away
    for target in (pg_server.new_database(), str(tmp_path / "copy.sqlite")):  # into the database, into files
        res = migrate(str(tmp_path / "team.sqlite"), target)
        assert res["images_without_pixels"] == 1 and res["without_pixels_e_g"] == ["4"] and res["identical_export"]


def test_a_copy_that_lost_pixels_fails_and_says_the_target_holds_it(tmp_path: Path, pg_server,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    real = Store.write_media

    def lossy(self, db, image_id, data):  # a target that drops one image's bytes
        if image_id != 2:
            real(self, db, image_id, data)

    monkeypatch.setattr(Store, "write_media", lossy)
    with pytest.raises(StoreError, match=r"pixels for 3 images, the source for 4.*drop that database"):
        migrate(str(tmp_path / "team.sqlite"), url)


# --- a killed migration runs again (#38) ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]

_KILL_AFTER_COPY = """
import os, signal, sys
from app.store.pg import PgConnection
from app.dataset.migrate import migrate
real_many, real_exec, seen = PgConnection.executemany, PgConnection.execute, []
def many(self, sql, rows):
    if sql.startswith("INSERT INTO refs"):
        seen.append(1)
    return real_many(self, sql, rows)
def execute(self, sql, args=()):
    cur = real_exec(self, sql, args)
    if seen and sql.lstrip().upper().startswith("COMMIT"):  # the rows are in: killed while checking them
        os.kill(os.getpid(), signal.SIGKILL)
    return cur
PgConnection.executemany, PgConnection.execute = many, execute
migrate(sys.argv[1], sys.argv[2])
"""

_KILL_WHILE_WRITING_FILES = """
import os, signal, sys
from app.dataset.migrate import migrate
real, calls = os.replace, []
def replace(a, b):
    calls.append(1)
    if len(calls) == 2:  # the first file is in place, the second one only under its temporary name
        os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b)
os.replace = replace
migrate(sys.argv[1], sys.argv[2])
"""


def _killed(script: str, *args: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_a_migration_killed_after_its_copy_into_postgres_runs_again(tmp_path: Path, pg_server) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    _killed(_KILL_AFTER_COPY, str(tmp_path / "team.sqlite"), url)
    pg = Store(url)
    assert pg.read("SELECT COUNT(*) FROM refs")[0][0] > 0  # killed after the rows were committed
    pg.close()
    res = migrate(str(tmp_path / "team.sqlite"), url)
    assert res["resumed"] and res["identical"] and res["copied"]["refs"] == 4
    pg = Store(url)
    assert not pg.read("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE tablename = 'deris_migration'")[0][0]
    pg.close()
    other = tmp_path / "other.sqlite"
    Store(other).close()
    with pytest.raises(StoreError, match="not empty"):  # a finished copy is no unfinished one
        migrate(str(other), url)


def test_a_target_marked_for_another_source_is_refused(tmp_path: Path, pg_server) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    _killed(_KILL_AFTER_COPY, str(tmp_path / "team.sqlite"), url)
    other = _team_store(tmp_path / "other" / "team.sqlite")
    other.close()
    with pytest.raises(StoreError, match=r"unfinished migration of another store \(.*team\.sqlite\)"):
        migrate(str(tmp_path / "other" / "team.sqlite"), url)


def test_a_migration_into_sqlite_killed_while_writing_files_runs_again(tmp_path: Path) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    copy = tmp_path / "copy.sqlite"
    _killed(_KILL_WHILE_WRITING_FILES, str(tmp_path / "team.sqlite"), str(copy))
    assert len([p for p in (tmp_path / "copy_media").iterdir() if not p.name.startswith(".")]) == 1
    res = migrate(str(tmp_path / "team.sqlite"), str(copy))
    assert res["identical"] and res["images_without_pixels"] == 0 and res["media"] == 4


def test_a_cut_image_file_left_in_the_media_folder_is_written_again(tmp_path: Path) -> None:
    import hashlib

    src = _team_store(tmp_path / "team.sqlite")
    data = src.image_bytes(1)
    src.close()
    cut = tmp_path / "copy_media" / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])  # what a run killed in the middle of writing it left
    res = migrate(str(tmp_path / "team.sqlite"), str(tmp_path / "copy.sqlite"))
    assert res["identical"] and cut.read_bytes() == data


def test_a_copy_that_failed_its_check_runs_again(tmp_path: Path, pg_server, monkeypatch: pytest.MonkeyPatch) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    real = Store.write_media
    with monkeypatch.context() as m:
        m.setattr(Store, "write_media", lambda self, db, i, data: real(self, db, i, data) if i != 2 else None)
        with pytest.raises(StoreError, match="run the same migrate again"):
            migrate(str(tmp_path / "team.sqlite"), url)
    res = migrate(str(tmp_path / "team.sqlite"), url)
    assert res["resumed"] and res["identical"] and res["media"] == 4


# --- one moment in time (#38) --------------------------------------------------------------------


def _consistent(path: Path) -> None:
    """Every sentence and target of the copy belongs to a copied ref, and every ref has a sentence."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("SELECT COUNT(*) FROM refs WHERE id NOT IN (SELECT ref_id FROM sentences)").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM events WHERE ref_id NOT IN (SELECT id FROM refs)").fetchone()[0] == 0
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_store_being_saved_to_is_copied_as_of_one_moment(tmp_path: Path, pg_server, backend: str) -> None:
    import threading

    source = pg_server.new_database() if backend == "postgresql" else str(tmp_path / "live.sqlite")
    writer = Store(source)
    image = writer.add_image(noise_image(1), "a.png")
    for k in range(20):
        writer.save_ref(image, [f"ref {k}"], masks=[rect_mask()], author="ann")
    stop, saved, errors = threading.Event(), [0], []

    def keep_saving() -> None:
        try:
            while not stop.is_set():
                writer.save_ref(image, [f"live {saved[0]}", "and a second sentence"], masks=[rect_mask()],
                                author="ann")
                saved[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=keep_saving)
    thread.start()
    try:
        for run in range(3):
            before = saved[0]
            res = migrate(source, str(tmp_path / f"copy{run}.sqlite"))
            assert res["identical"] and saved[0] > before  # the studio saved while the copy was read
            assert res["copied"]["sentences"] == res["copied"]["refs"] * 2 - 20  # whole refs only
            _consistent(tmp_path / f"copy{run}.sqlite")
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert not errors


# --- never writes into its source; looks at a target before creating anything (#38) --------------


def _pg_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return sorted(r[0] for r in conn.execute("SELECT tablename FROM pg_catalog.pg_tables "
                                                 "WHERE schemaname = current_schema()"))


def test_a_source_that_is_no_studio_store_is_refused_and_left_alone(tmp_path: Path, pg_server) -> None:
    import sqlite3

    wrong = pg_server.new_database()  # a wrong name: an empty database
    with pytest.raises(StoreError, match="is not a studio store"):
        migrate(wrong, str(tmp_path / "copy.sqlite"))
    assert _pg_tables(wrong) == [] and not (tmp_path / "copy.sqlite").exists()
    other = tmp_path / "other_app.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    before = other.read_bytes()
    with pytest.raises(StoreError, match="is not a studio store"):
        migrate(str(other), pg_server.new_database())
    assert other.read_bytes() == before


def test_a_target_of_another_application_is_refused_before_anything_is_created(tmp_path: Path, pg_server) -> None:
    import sqlite3

    import psycopg

    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id SERIAL PRIMARY KEY, total NUMERIC)")
    with pytest.raises(StoreError, match=r"holds tables of another application \(invoices\).*nothing was created"):
        migrate(str(tmp_path / "team.sqlite"), url)
    assert _pg_tables(url) == ["invoices"]
    other = tmp_path / "ledger.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount REAL)")
    before = other.read_bytes()
    with pytest.raises(StoreError, match=r"holds tables of another application \(ledger\)"):
        migrate(str(tmp_path / "team.sqlite"), str(other))
    assert other.read_bytes() == before and not (tmp_path / "ledger_media").exists()


# --- rows a target cannot store (#38) -------------------------------------------------------------


def test_a_sentence_with_a_nul_is_named_and_nothing_is_copied(tmp_path: Path, pg_server,
                                                             capsys: pytest.CaptureFixture) -> None:
    import sqlite3

    store = _team_store(tmp_path / "team.sqlite")
    store.close()
    with sqlite3.connect(tmp_path / "team.sqlite") as db:  # saved by a studio that let it through
        db.execute("UPDATE sentences SET raw = ? WHERE ref_id = 1", ("the left\x00box",))
    url = pg_server.new_database()
    with pytest.raises(StoreError) as err:
        migrate(str(tmp_path / "team.sqlite"), url)
    text = str(err.value)
    assert "1 value of team.sqlite cannot be copied into PostgreSQL; nothing was copied" in text
    assert "ref 1, sentence 1: 'the left\\\\x00box' holds a NUL character" in text and "retype" in text
    assert _pg_tables(url) == []  # stopped before creating anything
    from app.dataset.cli import main

    assert main(["migrate", "--from", str(tmp_path / "team.sqlite"), "--to", url]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: 1 value of team.sqlite cannot be copied into PostgreSQL; nothing was copied:"
    assert lines[1].startswith("  ref 1, sentence 1: 'the left\\\\x00box' holds a NUL") and lines[2].startswith("what to do")
    res = migrate(str(tmp_path / "team.sqlite"), str(tmp_path / "copy.sqlite"))  # SQLite stores it as it is
    assert res["identical"]
    store = Store(tmp_path / "team.sqlite")
    store.save_ref(1, ["the left box"], masks=[rect_mask()], author="ann", ref_id=1,
                   expected_version=store.ref(1).version)
    store.close()
    assert migrate(str(tmp_path / "team.sqlite"), url)["identical"]


def test_migrate_only_orchestrates() -> None:
    """Its SQL lives in app/store/transfer.py (#41): app/dataset/migrate.py names no statement."""
    import re

    text = (ROOT / "app" / "dataset" / "migrate.py").read_text(encoding="utf-8")
    assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP)\b", text)


def test_an_unchecked_copy_is_finished_too(tmp_path: Path, pg_server) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    res = migrate(str(tmp_path / "team.sqlite"), url, check=False)
    assert "identical" not in res and res["copied"]["refs"] == 4
    pg = Store(url)
    assert not pg.read("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE tablename = 'deris_migration'")[0][0]
    pg.close()


def test_a_migration_into_sqlite_killed_before_its_marker_was_dropped_runs_again(tmp_path: Path) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    copy = tmp_path / "copy.sqlite"
    script = ("import os, signal, sys\nimport app.dataset.migrate as m\n"
              "m.finish = lambda store: os.kill(os.getpid(), signal.SIGKILL)\nm.migrate(sys.argv[1], sys.argv[2])\n")
    _killed(script, str(tmp_path / "team.sqlite"), str(copy))
    res = migrate(str(tmp_path / "team.sqlite"), str(copy))
    assert res["resumed"] and res["identical"] and res["copied"]["refs"] == 4
    again = Store(copy)
    assert again.read("SELECT COUNT(*) FROM sqlite_master WHERE name = 'deris_migration'")[0][0] == 0
    new = again.save_ref(1, ["after the move"], no_target=True, author="ann")
    assert new == 6  # ref 5 was deleted in the source: its id stays given
    again.close()
