"""The store on both backends (SQLite and PostgreSQL): saves, edits, deletes, stats, and durability under SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.store import Store, StoreError, decode_mask, encode_mask
from tests.builders import noise_image, rect_mask

ROOT = Path(__file__).resolve().parents[1]


def test_store_schema_and_pragmas(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.sqlite")
    assert s.read("PRAGMA journal_mode")[0][0] == "wal"
    assert s.read("PRAGMA foreign_keys")[0][0] == 1
    assert s.integrity_check() == "ok"


def test_save_edit_reopen_delete(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    img = noise_image()
    iid = s.add_image(img)
    assert s.add_image(img.copy()) == iid  # content-addressed
    np.testing.assert_array_equal(s.load_image(iid), img)
    m1, m2 = rect_mask(), rect_mask(box=(12, 14, 20, 30))
    rid = s.save_ref(iid, ["the two boxes", "both squares"], masks=[m1, m2], split="val", author="ann", status="draft")
    rec = s.ref(rid)
    assert rec.sentences == ["the two boxes", "both squares"] and rec.split == "val" and not rec.no_target
    insts = {i.id: i for i in s.instances(iid)}
    np.testing.assert_array_equal(insts[rec.instance_ids[0]].mask, m1)
    np.testing.assert_array_equal(insts[rec.instance_ids[1]].mask, m2)
    assert insts[rec.instance_ids[0]].bbox == [3.0, 2.0, 9.0, 8.0] and insts[rec.instance_ids[0]].area == 72
    # The same mask on another ref reuses the instance.
    rid2 = s.save_ref(iid, ["the left box"], masks=[m1])
    assert s.ref(rid2).instance_ids == [rec.instance_ids[0]]
    # Edit in place.
    s.save_ref(iid, ["nothing here"], no_target=True, ref_id=rid, expected_version=1, status="reviewed")
    rec = s.ref(rid)
    assert rec.no_target and rec.instance_ids == [] and rec.status == "reviewed" and rec.updated_at >= rec.created_at
    st = s.stats()
    assert st["refs"] == 2 and st["no_target_refs"] == 1 and st["by_status"] == {"reviewed": 1, "done": 1}
    s.delete_ref(rid)
    with pytest.raises(StoreError, match="no ref"):
        s.ref(rid)
    assert s.stats()["refs"] == 1


def test_store_refuses_bad_saves(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    iid = s.add_image(noise_image())
    with pytest.raises(StoreError, match="sentence"):
        s.save_ref(iid, ["   "], masks=[rect_mask()])
    with pytest.raises(StoreError, match="no-target"):
        s.save_ref(iid, ["x"], masks=[rect_mask()], no_target=True)
    with pytest.raises(StoreError, match="at least one target"):
        s.save_ref(iid, ["x"])
    with pytest.raises(StoreError, match="empty"):
        s.save_ref(iid, ["x"], masks=[np.zeros((24, 32), bool)])
    with pytest.raises(StoreError, match="mask is"):
        s.save_ref(iid, ["x"], masks=[np.ones((5, 5), bool)])
    with pytest.raises(StoreError, match="split"):
        s.save_ref(iid, ["x"], masks=[rect_mask()], split="dev")
    with pytest.raises(StoreError, match="no image"):
        s.save_ref(999, ["x"], masks=[rect_mask()])
    assert s.stats()["refs"] == 0 and s.stats()["instances"] == 0  # failed saves leave nothing behind


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable annotation database"):
        Store(bad)


def test_rle_roundtrip() -> None:
    m = np.random.default_rng(1).random((17, 23)) > 0.5
    np.testing.assert_array_equal(decode_mask(encode_mask(m)), m)


_CHILD = r"""
import sys, numpy as np
from app.store import Store
s = Store(sys.argv[1])
iid = s.add_image(np.full((16, 16, 3), 7, np.uint8))
m = np.zeros((16, 16), bool)
i = 0
while True:
    i += 1
    m[:] = False
    m[i % 16, :] = True
    rid = s.save_ref(iid, [f"row {i}", f"line {i}"], masks=[m], author="child")
    print(rid, flush=True)
"""


def test_sigkill_during_saves_keeps_committed_refs(db_at, backend: str) -> None:
    db = db_at("crash.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(db)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    committed: list[int] = []
    deadline = time.time() + 60
    while len(committed) < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        if line.strip():
            committed.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(committed) >= 40
    if backend == "sqlite":
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    s = Store(db)
    assert s.integrity_check() == "ok"
    refs = {r.id: r for r in s.refs()}
    for rid in committed:  # every ref reported as saved is there, complete
        r = refs[rid]
        assert r.sentences == [f"row {rid}", f"line {rid}"] or len(r.sentences) == 2
        assert len(r.instance_ids) == 1
    for r in refs.values():  # and nothing half-written
        assert len(r.sentences) == 2 and len(r.instance_ids) == 1
