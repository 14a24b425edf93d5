"""Folder imports and thumbnails (app/dataset/collection.py): idempotent, unreadable files listed, names that
are not UTF-8, the studio's own folders never imported, thumbnails never another database's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.dataset.collection import import_images, thumbnail_file
from app.store import Store, StoreError
from tests.builders import picture_folder


def test_folder_import_is_idempotent_and_lists_unreadable_files(db_at, tmp_path: Path) -> None:
    store, folder = picture_folder(tmp_path, db=db_at("c.sqlite"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    cv2.imwrite(str(folder / "copy_of_0.png"), np.full((24, 30, 3), 0, np.uint8))  # same pixels as img_0
    first = import_images(store, folder, split="val", progress=False)
    assert first.added == 6 and first.known == 1 and [n for n, _ in first.skipped] == ["broken.jpg"]
    again = import_images(store, folder, progress=False)
    assert again.added == 0 and again.known == 7 and len(again.skipped) == 1
    cv2.imwrite(str(folder / "new.png"), np.full((50, 30, 3), 200, np.uint8))
    assert import_images(store, folder, progress=False).added == 1
    assert store.stats()["images"] == 7
    im = store.image(1)
    assert im.split == "val" and store.load_image(1).shape == (im.height, im.width, 3)
    assert thumbnail_file(store, 1).is_file() and thumbnail_file(store, 1) == thumbnail_file(store, 1)
    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "huge.png"), np.zeros((300, 100, 3), np.uint8))
    import_images(store, big, max_side=150, progress=False)
    (rec,) = [store.image(i) for i in range(1, 9) if store.image(i).original_name == "huge.png"]
    assert (rec.height, rec.width) == (150, 50)  # scaled down and copied: a file of the store, or its bytes
    assert store.image_bytes(rec.id) is not None if store.location.is_postgres else "_media" in rec.path


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


def test_names_that_are_not_utf8_or_hold_control_characters_are_imported(db_at, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    store = Store(db_at("s.sqlite"))
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
