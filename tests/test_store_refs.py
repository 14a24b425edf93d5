"""Refs in the store under a shared server (app/store/refs.py, store.py): ref identity and versions, no orphans,
threads and processes saving at once, limits, and OS errors (full or read-only disk)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app.store import ConflictError, Store, StoreError
from tests.builders import noise_image, rect_mask

ROOT = Path(__file__).resolve().parents[1]


def test_a_stale_edit_cannot_overwrite_another_annotators_ref(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    img_a, img_b = s.add_image(noise_image(0)), s.add_image(noise_image(1))
    rid = s.save_ref(img_a, ["the box"], masks=[rect_mask()], author="ann")
    # two annotators opened version 1; the first saves, the second is refused
    s.save_ref(img_a, ["the left box"], masks=[rect_mask()], ref_id=rid, expected_version=1, author="ann")
    with pytest.raises(ConflictError, match="changed by someone else"):
        s.save_ref(img_a, ["the right box"], masks=[rect_mask()], ref_id=rid, expected_version=1, author="bob")
    assert s.ref(rid).sentences == ["the left box"] and s.ref(rid).author == "ann"
    # an id held by a stale session cannot touch a ref of another image
    with pytest.raises(StoreError, match="belongs to image"):
        s.save_ref(img_b, ["hijack"], no_target=True, ref_id=rid, expected_version=2)
    with pytest.raises(StoreError, match="expected_version"):
        s.save_ref(img_a, ["no version"], no_target=True, ref_id=rid)
    # deleted meanwhile: refused, and the id is never given to a new ref
    s.delete_ref(rid)
    with pytest.raises(ConflictError, match="deleted meanwhile"):
        s.save_ref(img_a, ["late edit"], no_target=True, ref_id=rid, expected_version=2)
    assert s.save_ref(img_a, ["new"], no_target=True) > rid
    assert [e.action for e in s.events(rid)] == ["create", "edit", "delete"]


def test_editing_a_ref_leaves_no_orphaned_instance(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    img = s.add_image(noise_image())
    rid = s.save_ref(img, ["the box"], masks=[rect_mask()])
    s.save_ref(img, ["the box"], masks=[rect_mask((12, 14, 20, 30))], ref_id=rid, expected_version=1)
    assert [i.area for i in s.instances(img)] == [8 * 16]
    s.save_ref(img, ["nothing"], no_target=True, ref_id=rid, expected_version=2)
    assert s.instances(img) == []


def test_save_limits_name_the_problem(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    img = s.add_image(noise_image())
    with pytest.raises(StoreError, match="target 2 of 2 is empty"):
        s.save_ref(img, ["two"], masks=[rect_mask(), np.zeros((24, 32), bool)])
    iid = s.add_instance(img, rect_mask())
    with pytest.raises(StoreError, match=f"instance {iid} is listed twice"):
        s.save_ref(img, ["dup"], instance_ids=[iid, iid])
    with pytest.raises(StoreError, match="limit is 500"):
        s.save_ref(img, ["x" * 501], no_target=True)
    with pytest.raises(StoreError, match="limit is 20"):
        s.save_ref(img, [f"sentence {i}" for i in range(21)], no_target=True)
    # the same mask twice (two candidates with the same pixels) becomes one instance
    rid = s.save_ref(img, ["same twice"], masks=[rect_mask(), rect_mask()])
    assert s.ref(rid).instance_ids == [iid]


def test_threads_saving_at_once_lose_nothing(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    acked: list[int] = []
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for k in range(15):
                # several threads save the first ref on the same new picture and the same new category
                img = s.add_image(noise_image(k % 3))
                acked.append(s.save_ref(img, [f"t{t} k{k}"], masks=[rect_mask()], category=f"cat{k % 2}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(acked) == 90 and sorted(r.id for r in s.refs()) == sorted(acked)
    assert s.stats()["images"] == 3


WRITER = r"""
import sys, numpy as np
from app.store import Store
db, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = Store(db)
for k in range(n):
    img = s.add_image(np.random.default_rng(k % 4).integers(0, 255, (24, 32, 3), dtype=np.uint8), file_name="same.png")
    m = np.zeros((24, 32), bool); m[2:10, 3:12] = True
    rid = s.save_ref(img, [f"{who} {k}"], masks=[m], author=who, category="shared")
    print(rid, flush=True)
"""


def test_processes_saving_at_once_lose_nothing(db_at, tmp_path: Path) -> None:
    db = db_at("shared.sqlite")
    Store(db).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"p{i}", "25"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    acked = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        acked += [int(x) for x in out.split()]
    s = Store(db)
    assert len(acked) == 100 and sorted(r.id for r in s.refs()) == sorted(acked)
    assert s.stats()["images"] == 4 and s.integrity_check() == "ok"


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not permitted'}); "
                    "the disk-full path is covered by the unit test of the messages")


def test_a_full_disk_is_a_clear_message_and_keeps_every_committed_ref(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "2m")
    try:
        s = Store(mnt / "a.sqlite")
        img = s.add_image(noise_image())
        saved = [s.save_ref(img, [f"ref {k}"], masks=[rect_mask()]) for k in range(5)]
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:  # take every free block (unbuffered: close never flushes)
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        with pytest.raises(StoreError, match="disk that holds the database is full: nothing was saved") as err:
            for k in range(200):  # the WAL grows until a page cannot be written
                saved.append(s.save_ref(img, ["long " * 90 + str(k)], masks=[rect_mask()]))
        assert str(mnt) not in str(err.value)
        with pytest.raises(StoreError, match="full"):  # new pixels cannot be written either
            s.add_image(noise_image(7, 200, 200))
        filler.unlink()
        s.close()
        s = Store(mnt / "a.sqlite")
        assert sorted(r.id for r in s.refs()) == sorted(saved) and s.integrity_check() == "ok"
        s.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        ro = Store(mnt / "a.sqlite")
        with pytest.raises(StoreError, match="read-only"):
            ro.save_ref(img, ["not possible"], no_target=True)
        assert len(ro.refs()) == len(saved)
        ro.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_os_error_messages_name_no_path() -> None:
    import errno
    import sqlite3

    from app.store import os_error_message

    assert "full" in os_error_message(OSError(errno.ENOSPC, "No space left", "/srv/secret/db"))
    assert "read-only" in os_error_message(sqlite3.OperationalError("attempt to write a readonly database"))
    assert "busy" in os_error_message(sqlite3.OperationalError("database is locked"))
    assert "/srv" not in os_error_message(OSError(errno.EIO, "I/O error", "/srv/secret/db"))


def test_refs_page_is_paginated_and_filtered(db_at, tmp_path: Path) -> None:
    s = Store(db_at("a.sqlite"))
    img = s.add_image(noise_image())
    ids = [s.save_ref(img, [f"ref {k}", "alt"], no_target=True, author="ann" if k % 2 else "bob",
                      split="val" if k < 3 else "train") for k in range(7)]
    rows, total = s.refs_page(0, 3)
    assert total == 7 and [r.id for r in rows] == ids[::-1][:3] and rows[0].sentences == "ref 6 | alt"
    rows, total = s.refs_page(3, 3, annotator="ann")
    assert total == 3 and rows == []
    rows, total = s.refs_page(0, 10, split="val", newest_first=False)
    assert total == 3 and [r.id for r in rows] == ids[:3]
    assert json.dumps([r.__dict__ for r in rows])  # plain data


def test_a_drawn_mask_shared_by_a_deleted_ref_leaves_nothing_behind(db_at, tmp_path) -> None:
    """Issue 27: editing a ref whose drawn mask another (since deleted) ref shared, in every order,
    with model-made and re-thresholded refs in the mix: once every ref is gone, no drawn or model
    instance is left."""
    import numpy as np

    from app.curate.preannotate import PairResult, apply_threshold, write_results
    from app.store import Store, encode_mask

    s = Store(db_at("o.sqlite"))
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    m1, m2 = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    m1[2:8, 2:8] = True
    m2[10:18, 10:18] = True
    for first_deleted in (True, False):
        a = s.save_ref(img, ["a"], masks=[m1], author="x")
        b = s.save_ref(img, ["b"], masks=[m1], author="y")  # the same pixels: one shared instance
        assert s.ref(a).instance_ids == s.ref(b).instance_ids
        gone, kept = (a, b) if first_deleted else (b, a)
        s.delete_ref(gone)
        rec = s.ref(kept)
        s.save_ref(img, rec.sentences, masks=[m2], ref_id=kept, expected_version=rec.version)
        rec = s.ref(kept)
        s.save_ref(img, rec.sentences, masks=[m1, m2], ref_id=kept, expected_version=rec.version)
        s.delete_ref(kept)
        assert s.instances(img) == []
    write_results(s, [PairResult(img, t, 0.9, 0.5, 0.5, [(0, 0.9, encode_mask(m1)), (1, 0.6, encode_mask(m2))])
                      for t in ("p", "q")], "k")
    person = s.save_ref(img, ["r"], masks=[m1], author="x")
    apply_threshold(s, "k", 0.1)  # both predicted refs now point at shared instances
    for r in s.refs():
        if r.id != person:
            s.delete_ref(r.id)
    rec = s.ref(person)
    s.save_ref(img, rec.sentences, masks=[m2], ref_id=person, expected_version=rec.version)
    s.delete_ref(person)
    assert s.instances(img) == []


def test_refs_by_ids_takes_any_number_of_ids(db_at) -> None:
    """Fine-tuning reads every reviewed ref by id: more ids than a query takes parameters (PostgreSQL's
    65 535) are read in parts, in id order, duplicates once."""
    s = Store(db_at("many.sqlite"))
    image = s.add_image(noise_image(1), "a.png")
    made = [s.save_ref(image, [f"ref {k}"], no_target=True, author="ann") for k in range(3)]
    wanted = list(range(70_000, 0, -1)) + made
    assert [r.id for r in s.refs(ref_ids=wanted)] == made
    assert [r.sentences for r in s.refs(ref_ids=[made[2], made[0]])] == [["ref 0"], ["ref 2"]]


@pytest.mark.parametrize("text", ["the cat\x00 on the left", "the \x07dog", "a\x7fbox", "the \x9bcar"])
def test_both_backends_refuse_a_control_character_with_the_same_message(db_at, text: str) -> None:
    """PostgreSQL cannot store NUL; the studio refuses it (and the other invisible controls) on
    both backends in one place, so a store made on SQLite can always be migrated."""
    s = Store(db_at("a.sqlite"))
    img = s.add_image(noise_image())
    with pytest.raises(StoreError, match=r"control character U\+00[0-9A-F]{2}.*cannot be stored") as err:
        s.save_ref(img, ["the cat", text], no_target=True)
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match="annotator name contains the control character"):
        s.save_ref(img, ["the cat"], no_target=True, author="ann\x00")
    assert s.refs() == []
    assert s.ref(s.save_ref(img, ["the\tcat\non the\r\nleft"], no_target=True)).sentences == ["the cat on the left"]
