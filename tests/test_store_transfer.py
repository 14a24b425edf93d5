"""app/store/transfer.py: a source is read in a read-only snapshot (a write through it is refused by the
database itself), image files are written whole or not at all, and rows PostgreSQL cannot store are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.store import Store, StoreError
from app.store.location import parse_db
from app.store.transfer import (
    ReadOnlySnapshot,
    copied_tables,
    pg_unstorable,
    write_media_file,
)
from tests.builders import noise_image


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_snapshot_cannot_write(tmp_path: Path, pg_server, backend: str) -> None:
    where = pg_server.new_database() if backend == "postgresql" else str(tmp_path / "s.sqlite")
    Store(where).close()
    with ReadOnlySnapshot(parse_db(where)) as snap:
        assert snap.rows("refs", copied_tables()["refs"]) == []
        with pytest.raises(Exception, match="read-only|readonly"):
            snap._db.execute("INSERT INTO categories (name, supercategory) VALUES ('x', '')")


def test_a_snapshot_sees_one_moment(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_image(noise_image(1), "a.png")
    with ReadOnlySnapshot(parse_db(tmp_path / "s.sqlite")) as snap:
        assert len(snap.rows("images", ["id"])) == 1
        store.add_image(noise_image(2), "b.png")
        assert len(snap.rows("images", ["id"])) == 1
    store.close()


def test_an_image_file_is_kept_only_when_whole(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    (tmp_path / "m").mkdir()
    cut = tmp_path / "m" / "a.png"
    cut.write_bytes(data[:100])
    assert write_media_file(tmp_path / "m", "a.png", data).read_bytes() == data
    same_size = data[:-1] + b"\x00"
    cut.write_bytes(same_size)  # right size, wrong content
    assert write_media_file(tmp_path / "m", "a.png", data).read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["a.png"]  # no temporary file left


def test_values_postgres_cannot_store_are_named_by_ref_and_sentence() -> None:
    cols = copied_tables()
    rows = {t: [] for t in cols}
    rows["sentences"] = [(5, 2, "the left\x00box", 0), (6, 2, "fine", 1)]
    pred = dict.fromkeys(cols["predictions"], 0)
    pred.update(id=3, ref_id=2, sentence="a\x00b")
    rows["predictions"] = [tuple(pred[c] for c in cols["predictions"])]
    found = pg_unstorable(rows)
    assert found[0].startswith("ref 2, sentence 5: 'the left\\\\x00box' holds a NUL character")
    assert found[1].startswith("predictions id 3 (ref 2), sentence:") and len(found) == 2


def test_a_missing_source_is_said(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="database not found: nope.sqlite"):
        ReadOnlySnapshot(parse_db(tmp_path / "nope.sqlite"))
    assert not (tmp_path / "nope.sqlite").exists()
