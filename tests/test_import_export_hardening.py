"""Imports and exports that strangers and teammates cannot break: file names that are not UTF-8
or hold control characters, re-importing the folder that holds the studio's own files, lone
surrogates in datasets, many exports at once, a SIGKILLed export, thumbnails of another database."""

from __future__ import annotations

import json
import os
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

from app.collection import import_images, thumbnail_file
from app.export import clean_stale_exports, export_zip, new_export_path, read_zip
from app.imports import ImportRefused, import_grefcoco
from app.store import Store, StoreError

ROOT = Path(__file__).resolve().parents[1]


def _png(value: int, side: int = 16) -> bytes:
    img = np.zeros((side, side, 3), np.uint8)
    img[..., 0] = value
    img[: side // 2, :, 1] = 255 - value
    return cv2.imencode(".png", img)[1].tobytes()


NAMES = [b"a.png", b"b\xff\xfe.png", b"c\x01ctl.png", b"d\nnewline.png", "e_\u00e9.png".encode(), b"f\xc3(.png",
         b"g\x7f.png", b"z.png"]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pics"
    raw = os.fsencode(folder)
    os.makedirs(os.path.join(raw, b"sub\xff"))
    for k, name in enumerate(NAMES):
        with open(os.path.join(raw, name), "wb") as fh:
            fh.write(_png(20 * k + 10))
    with open(os.path.join(raw, b"broken\xff.png"), "wb") as fh:
        fh.write(b"not an image")
    with open(os.path.join(raw, b"sub\xff", b"deep\xfe.jpg"), "wb") as fh:
        fh.write(_png(250))
    return folder


def test_names_that_are_not_utf8_or_hold_control_characters_are_imported(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    store = Store(tmp_path / "s.sqlite")
    res = import_images(store, folder, progress=False)
    assert res.added == len(NAMES) + 1 and res.known == 0
    assert len(res.skipped) == 1 and res.skipped[0][0] == "broken\\xff.png"
    json.dumps(res.summary(), ensure_ascii=False).encode("utf-8")  # printable, storable
    names = {im.original_name for im in store.snapshot().images}
    assert {"b\\xff\\xfe.png", "c\\x01ctl.png", "d\\x0anewline.png", "e_\u00e9.png", "sub\\xff/deep\\xfe.jpg"} <= names
    for im in store.snapshot().images:
        assert store.load_image(im.id) is not None
        im.original_name.encode("utf-8")
    again = import_images(store, folder, progress=False)
    assert again.added == 0 and again.known == len(NAMES) + 1
    # the CLI: no traceback, the bad file listed, the rest imported
    r = subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(folder), "--db", str(tmp_path / "c.sqlite")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["added"] == len(NAMES) + 1


def test_reimporting_the_folder_that_holds_the_studio_never_grows_it(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    for k in range(3):
        (folder / f"p{k}.png").write_bytes(_png(40 * k + 5, side=40))
    store = Store(folder / "studio.sqlite")  # the database (and its media folder) inside the imported folder
    first = import_images(store, folder, max_side=32, progress=False)  # too big: copied into the media folder
    assert first.added == 3
    for im in store.snapshot().images:
        assert thumbnail_file(store, im.id, side=8) is not None
    exports = folder / "studio_exports"
    exports.mkdir()
    (exports / "x.png").write_bytes(_png(99))
    assert any((folder / "studio_media").rglob("*.png")) and any((folder / "studio_media" / "thumbs").iterdir())
    for _ in range(3):
        again = import_images(store, folder, max_side=32, progress=False)
        assert again.added == 0 and not again.skipped
        assert store.stats()["images"] == 3
    for own in (folder / "studio_media", folder / "studio_media" / "thumbs", exports):
        with pytest.raises(StoreError, match="the studio's own media or export folder"):
            import_images(store, own, progress=False)
    assert store.stats()["images"] == 3


def _dataset() -> tuple[dict, list]:
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 3, "iscrowd": 0,
                             "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]]}],
            "categories": [{"id": 3, "name": "cup"}]}
    grefs = [{"ref_id": 1, "image_id": 1, "ann_id": [5], "category_id": [3], "split": "train", "no_target": False,
              "sentences": [{"raw": "the cup", "sent": "the cup", "tokens": ["the", "cup"], "sent_id": 1}]}]
    return coco, grefs


@pytest.mark.parametrize("where", ["file_name", "category", "sentence", "annotator", "key", "sent"])
def test_lone_surrogates_in_a_dataset_are_a_one_line_refusal(tmp_path: Path, where: str) -> None:
    coco, grefs = _dataset()
    bad = "x\ud800y"
    if where == "file_name":
        coco["images"][0]["file_name"] = f"a{bad}.png"
    elif where == "category":
        coco["categories"][0]["name"] = bad
    elif where == "sentence":
        grefs[0]["sentences"][0]["raw"] = bad
    elif where == "annotator":
        grefs[0]["annotator"] = bad
    elif where == "key":
        grefs[0][bad] = 1
    else:
        grefs[0]["sentences"][0]["sent"] = "\udfff"
    root = tmp_path / "ds"
    (root / "grefcoco").mkdir(parents=True)
    (root / "grefcoco" / "instances.json").write_text(json.dumps(coco))  # json escapes the surrogate as \ud800
    (root / "grefcoco" / "grefs(unc).json").write_text(json.dumps(grefs))
    store = Store(tmp_path / "d.sqlite")
    with pytest.raises(ImportRefused, match="not valid Unicode") as err:
        import_grefcoco(store, root)
    assert "\n" not in str(err.value) and store.stats()["refs"] == 0 and store.stats()["images"] == 0
    str(err.value).encode("utf-8")  # printable
    if where == "file_name":  # the CLI: one error line, exit 2
        r = subprocess.run([sys.executable, "-m", "app.dataset", "import-grefcoco", str(root), "--db",
                            str(tmp_path / "e.sqlite")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "not valid Unicode" in r.stderr and "Traceback" not in r.stderr


def _work(tmp_path: Path, images: int = 6) -> Store:
    store = Store(tmp_path / "w.sqlite")
    rng = np.random.default_rng(0)
    for k in range(images):
        img = store.add_image(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), file_name=f"w{k}.png")
        m = np.zeros((48, 48), bool)
        m[k:k + 20, 5:30] = True
        store.save_ref(img, [f"thing {k}"], masks=[m], annotator="ann")
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
    live_other = folder / f".a.zip.1.abcd.tmp"  # pid 1 is alive (and not ours)
    mine = folder / f".b.zip.{os.getpid()}.efgh.tmp"
    of_dead = folder / f".c.zip.{dead.pid}.ijkl.tmp"
    old_unknown = folder / ".d.zip.q1w2.tmp"
    fresh_unknown = folder / ".e.zip.r3t4.tmp"
    for p in (live_other, mine, of_dead, old_unknown, fresh_unknown):
        p.write_bytes(b"half")
    os.utime(old_unknown, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_exports(folder) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (live_other, mine, fresh_unknown))
    os.utime(mine, (time.time() - 7200, time.time() - 7200))  # nobody touched it for two hours: abandoned
    assert clean_stale_exports(folder) == 1 and not mine.exists()


SLOW_EXPORT = """
import sys, time, zipfile
from app.export import export_zip
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


def test_a_new_database_at_the_same_path_never_shows_old_thumbnails(tmp_path: Path) -> None:
    db = tmp_path / "studio.sqlite"
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((40, 40, 3), np.uint8)
    blue[..., 2] = 255
    s1 = Store(db)
    i1 = s1.add_image(red)
    legacy = s1.media_dir / "thumbs" / f"{i1}_160.jpg"  # named by image id only, by the previous version
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"someone else's picture")
    t1 = thumbnail_file(s1, i1)
    assert cv2.imread(str(t1))[..., 2].mean() > 200  # red (BGR)
    assert not legacy.exists()
    s1.close()
    for p in tmp_path.glob("studio.sqlite*"):
        p.unlink()
    s2 = Store(db)  # a new database, same path, same media folder
    i2 = s2.add_image(blue)
    assert i2 == i1
    t2 = thumbnail_file(s2, i2)
    assert t2 != t1 and cv2.imread(str(t2))[..., 0].mean() > 200  # blue
    # an imported file replaced in place gets a new thumbnail too
    folder = tmp_path / "pics"
    folder.mkdir()
    cv2.imwrite(str(folder / "x.png"), cv2.cvtColor(red, cv2.COLOR_RGB2BGR))
    s3 = Store(tmp_path / "third.sqlite")
    import_images(s3, folder, progress=False)
    first = thumbnail_file(s3, 1)
    cv2.imwrite(str(folder / "x.png"), cv2.cvtColor(blue, cv2.COLOR_RGB2BGR))
    os.utime(folder / "x.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert thumbnail_file(s3, 1) != first
