"""Export / import in the gRefCOCO and COCO formats (app/dataset/export.py), checked with pycocotools and the spec; many
exports at once, a SIGKILLed export, and the clean-up of half-written ones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from app.dataset.export import clean_stale_exports, new_export_path
from app.dataset.cli import (export_zip, import_grefcoco, mask_to_polygons, polygons_to_mask, read_zip,
                         to_grefcoco, validate_grefcoco)
from app.store import Store, StoreError
from deris_core.data.refer import load_grefcoco
from tests.conftest import require_reference

ROOT = Path(__file__).resolve().parents[1]


def _store_with_work(tmp_path: Path) -> tuple[Store, dict[int, list[np.ndarray]]]:
    s = Store(tmp_path / "w.sqlite")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    iid = s.add_image(img, "photo.png")
    ring = np.zeros((40, 50), np.uint8)
    cv2.circle(ring, (25, 20), 12, 1, -1)
    cv2.circle(ring, (25, 20), 5, 0, -1)  # a hole: polygons cannot keep it, the exact RLE does
    speck = np.zeros((40, 50), np.uint8)
    speck[3, 45] = 1  # one pixel
    blob = np.zeros((40, 50), np.uint8)
    blob[30:38, 2:12] = 1
    blob[30, 14] = 1  # a detached pixel: two parts
    expected = {}
    r1 = s.save_ref(iid, ["the ring", "the donut"], masks=[ring.astype(bool)], split="train", author="a")
    r2 = s.save_ref(iid, ["the speck and the blob"], masks=[speck.astype(bool), blob.astype(bool)], split="testA")
    r3 = s.save_ref(iid, ["the purple elephant"], no_target=True, split="val")
    expected[r1], expected[r2], expected[r3] = [ring], [speck, blob], []
    return s, expected


def test_polygons_reproduce_simple_masks_exactly() -> None:
    m = np.zeros((30, 30), np.uint8)
    cv2.circle(m, (12, 14), 9, 1, -1)
    m[2:5, 20:29] = 1
    np.testing.assert_array_equal(polygons_to_mask(mask_to_polygons(m), 30, 30), m.astype(bool))
    # the spec's rasterisation example: corners 0..3 give a 3x3 block
    sq = np.zeros((5, 5), np.uint8)
    sq[0:3, 0:3] = 1
    assert mask_to_polygons(sq) == [[0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 0.0]] or \
        polygons_to_mask(mask_to_polygons(sq), 5, 5).sum() == 9


def test_export_loads_in_pycocotools_and_follows_the_spec(tmp_path: Path) -> None:
    store, expected = _store_with_work(tmp_path)
    summary = export_zip(store, tmp_path / "out.zip")
    assert summary["refs"] == 3 and summary["image_files"] == 1
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        names = set(zf.namelist())
        assert {"grefcoco/instances.json", "grefcoco/grefs(unc).json", "images/train2014/photo.png"} <= names
    coco, grefs = read_zip(tmp_path / "out.zip")
    assert validate_grefcoco(coco, grefs) == []
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    api = COCO(str(tmp_path / "instances.json"))
    anns = {a["id"]: a for a in coco["annotations"]}
    for a in coco["annotations"]:
        poly_mask = api.annToMask(api.loadAnns(a["id"])[0])  # pycocotools reads every annotation
        exact = mask_utils.decode({"size": a["rle"]["size"], "counts": a["rle"]["counts"].encode()})
        assert poly_mask.shape == exact.shape
        assert not (exact & ~poly_mask.astype(bool)).any()  # polygons never drop an annotated pixel
        holes = cv2.findContours(exact, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[1][0][:, 3].max() >= 0
        if not holes:  # and without holes they are exact; with holes, "rle" keeps the truth
            np.testing.assert_array_equal(poly_mask, exact)
        assert all(len(p) >= 6 for p in a["segmentation"])  # official loader: polygons with >= 3 points
    for r in grefs:
        masks = expected[r["ref_id"]]
        if not masks:
            assert r["ann_id"] == [-1] and r["category_id"] == [-1] and r["no_target"] is True
            continue
        assert r["no_target"] is False and len(r["ann_id"]) == len(masks)
        for aid, m in zip(r["ann_id"], masks):  # the exact masks come back bit for bit from "rle"
            rle = anns[aid]["rle"]
            np.testing.assert_array_equal(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}), m)
        for s in r["sentences"]:
            assert s["sent"] == s["sent"].lower() and s["tokens"] == s["sent"].split() and isinstance(s["sent_id"], int)


def test_export_is_atomic(tmp_path: Path, monkeypatch) -> None:
    store, _ = _store_with_work(tmp_path)
    out = tmp_path / "out.zip"
    export_zip(store, out)
    before = out.read_bytes()
    import app.dataset.cli as ds

    import errno

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ds.zipfile.ZipFile, "writestr", boom)
    with pytest.raises(StoreError, match="full: no zip was written"):
        export_zip(store, out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _reference_root(tmp_path: Path) -> Path:
    example = require_reference("grefcoco_example")
    root = tmp_path / "ref"
    (root / "grefcoco").mkdir(parents=True)
    for name in ("grefs(unc).json", "instances.json"):
        shutil.copy(example / name, root / "grefcoco" / name)
    return root


def _semantics(root: Path) -> dict:
    """What the official loader sees: per sentence, the merged target mask, split and no-target flag."""
    data = load_grefcoco(root)
    return {(s.ref_id, s.sent_id): (s.sentence, s.split, s.no_target, data.target_mask(s).tobytes()) for s in data.samples}


def test_reference_example_round_trip(db_at, tmp_path: Path) -> None:
    root = _reference_root(tmp_path)
    store = Store(db_at("r.sqlite"))
    res = import_grefcoco(store, root)
    assert res["refs"] == 5 and res["instances"] == 6 and not res["skipped"]
    export_zip(store, tmp_path / "again.zip")
    again = tmp_path / "again"
    with zipfile.ZipFile(tmp_path / "again.zip") as zf:
        zf.extractall(again)
    assert _semantics(again) == _semantics(root)  # same refs, sentences, splits, targets, pixels
    expected = np.load(require_reference("grefcoco_example", "expected_merged_masks.npz"))
    data = load_grefcoco(again)
    for s in data.samples:
        np.testing.assert_array_equal(data.target_mask(s), expected[f"ref_{s.ref_id}"])
    coco, grefs = read_zip(tmp_path / "again.zip")
    assert validate_grefcoco(coco, grefs) == []
    # import the export again: nothing changes
    store2 = Store(db_at("r2.sqlite"))
    import_grefcoco(store2, again)
    assert to_grefcoco(store2.snapshot())[1] == grefs


def test_validator_catches_spec_violations() -> None:
    coco = {"images": [{"id": 1, "file_name": "a", "height": 4, "width": 4}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2]]}],
            "categories": [{"id": 1, "name": "x"}]}
    good = {"ref_id": 0, "image_id": 1, "ann_id": [5], "category_id": [1], "split": "train", "no_target": False,
            "sentences": [{"tokens": ["a"], "raw": "a", "sent": "a", "sent_id": 0}]}
    assert validate_grefcoco(coco, [good]) == []
    for bad in ({**good, "ann_id": -1}, {**good, "ann_id": [-1], "category_id": [1]}, {**good, "ann_id": [-1, 5]},
                {**good, "split": "dev"}, {**good, "ann_id": [6]}):
        assert validate_grefcoco(coco, [bad]), bad
    single_rle = dict(coco, annotations=[dict(coco["annotations"][0], segmentation={"size": [4, 4], "counts": "0"})])
    assert validate_grefcoco(single_rle, [good])


def test_import_plain_coco_and_cli(db_at, tmp_path: Path) -> None:
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "a.png"), np.zeros((10, 12, 3), np.uint8))
    m = np.zeros((10, 12), np.uint8)
    m[2:6, 3:9] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    coco = {"images": [{"id": 7, "file_name": "a.png", "height": 10, "width": 12}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]], "bbox": [3, 2, 6, 4]},
                {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1,
                 "segmentation": {"size": [10, 12], "counts": rle["counts"].decode()}, "bbox": [3, 2, 6, 4]}],
            "categories": [{"id": 3, "name": "cup"}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    db = db_at("c.sqlite")
    run = lambda *a: subprocess.run([sys.executable, "-m", "app.dataset", *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    r = run("import-coco", str(tmp_path / "instances.json"), str(img_dir), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["instances"] == 2
    store = Store(db)
    insts = store.instances(7)
    assert [i.id for i in insts] == [1, 2] and insts[1].iscrowd
    np.testing.assert_array_equal(insts[0].mask, m.astype(bool))
    assert store.load_image(7) is not None  # pixels known through the image folder
    rid = store.save_ref(7, ["the cup"], instance_ids=[1])
    store.close()
    r = run("stats", "--db", str(db))
    assert r.returncode == 0 and json.loads(r.stdout)["refs"] == 1
    r = run("export", "--db", str(db), "--out", str(tmp_path / "e.zip"))
    assert r.returncode == 0, r.stderr
    coco2, grefs = read_zip(tmp_path / "e.zip")
    assert grefs[0]["ref_id"] == rid and grefs[0]["ann_id"] == [1] and grefs[0]["category_id"] == [3]
    r = run("export", "--db", str(db), "--out", str(tmp_path / "earlier"))  # no suffix: the zip gets one
    assert r.returncode == 0 and json.loads(r.stdout)["out"] == str(tmp_path / "earlier.zip")
    assert read_zip(tmp_path / "earlier.zip")[1][0]["ref_id"] == rid and not (tmp_path / "earlier").exists()
    r = run("import-grefcoco", str(tmp_path / "nowhere"), "--db", str(db))
    assert r.returncode == 2 and "official layout" in r.stderr and "Traceback" not in r.stderr
    r = run("stats", "--db", str(tmp_path / "missing.sqlite"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_stale_and_half_written_exports_are_cleaned(tmp_path: Path) -> None:
    import os
    import time

    from app.dataset.export import clean_stale_exports

    import subprocess
    import sys

    folder = tmp_path / "exports"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from app.dataset.export import _HOST_ID

    (folder / f".a.zip.{dead.pid}h{_HOST_ID}.x1y2.tmp").write_bytes(b"killed mid-way")  # its writer is gone
    old = folder / "old.zip"
    old.write_bytes(b"zip")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = folder / "fresh.zip"
    fresh.write_bytes(b"zip")
    assert clean_stale_exports(folder) == 2
    assert [p.name for p in folder.iterdir()] == ["fresh.zip"]


def _work(tmp_path: Path, images: int = 6) -> Store:
    store = Store(tmp_path / "w.sqlite")
    rng = np.random.default_rng(0)
    for k in range(images):
        img = store.add_image(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), file_name=f"w{k}.png")
        m = np.zeros((48, 48), bool)
        m[k:k + 20, 5:30] = True
        store.save_ref(img, [f"thing {k}"], masks=[m], author="ann")
    return store


def test_many_exports_at_once_all_succeed(tmp_path: Path) -> None:
    store = _work(tmp_path, images=3)
    folder = tmp_path / "exports"
    folder.mkdir()
    errors: list[BaseException] = []
    outs: list[Path] = []
    barrier = threading.Barrier(6)

    def press_export() -> None:  # what the Dataset view's Export button does
        try:
            barrier.wait()
            for _ in range(2):
                clean_stale_exports(folder)
                out = new_export_path(folder)
                export_zip(store, out)
                outs.append(out)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    same = tmp_path / "shared.zip"  # processes exporting to one path at the same time
    procs = [subprocess.Popen([sys.executable, "-m", "app.dataset", "export", "--db", str(store.path), "--out", str(same)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    threads = [threading.Thread(target=press_export) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]
    assert len(set(outs)) == 12  # every press its own file
    for out in outs:
        coco, grefs = read_zip(out)
        assert len(grefs) == 3
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(read_zip(same)[1]) == 3
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"] and not list(tmp_path.glob(".*.tmp"))


def test_cleanup_leaves_live_writers_alone_and_removes_dead_or_old_ones(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from app.dataset.export import _HOST_ID

    live_other = folder / f".a.zip.1h{_HOST_ID}.abcd.tmp"  # pid 1 is alive (and not ours)
    mine = folder / f".b.zip.{os.getpid()}h{_HOST_ID}.efgh.tmp"
    of_dead = folder / f".c.zip.{dead.pid}h{_HOST_ID}.ijkl.tmp"
    old_unknown = folder / ".d.zip.q1w2.tmp"
    fresh_unknown = folder / ".e.zip.r3t4.tmp"
    # a writer on another machine or in another container sharing the folder: its pid means nothing here
    elsewhere = folder / f".f.zip.{dead.pid}h0000beef.mnop.tmp"
    for p in (live_other, mine, of_dead, old_unknown, fresh_unknown, elsewhere):
        p.write_bytes(b"half")
    os.utime(old_unknown, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_exports(folder) == 2
    kept = (live_other, mine, fresh_unknown, elsewhere)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in kept)
    os.utime(elsewhere, (time.time() - 7200, time.time() - 7200))  # untouched for two hours: abandoned anywhere
    assert clean_stale_exports(folder) == 1 and not elsewhere.exists()
    os.utime(mine, (time.time() - 7200, time.time() - 7200))  # nobody touched it for two hours: abandoned
    assert clean_stale_exports(folder) == 1 and not mine.exists()


SLOW_EXPORT = """
import sys, time, zipfile
from app.dataset.export import export_zip
from app.store import Store, StoreError
orig = zipfile.ZipFile.writestr
def slow(self, *a, **k):
    orig(self, *a, **k)
    self.fp.flush()
    print("writing", flush=True)
    time.sleep(120)
zipfile.ZipFile.writestr = slow
export_zip(Store(sys.argv[1]), sys.argv[2])
"""


def test_a_sigkilled_export_leaves_a_temp_that_the_next_export_cleans(tmp_path: Path) -> None:
    store = _work(tmp_path, images=2)
    out = tmp_path / "out" / "dataset.zip"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(store.path), str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    temps = list(out.parent.glob(".dataset.zip.*.tmp"))
    assert len(temps) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temps[0].exists() and not out.exists()
    export_zip(store, out)
    assert not temps[0].exists() and len(read_zip(out)[1]) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset.zip"]
