"""The annotation store: one SQLite file, nothing of Gradio.

Tables: ``images`` (content hash, file name, size, where the pixels are), ``categories``,
``instances`` (exact masks as compressed COCO RLE, bbox, area, crowd flag), ``refs``
(split, no-target flag, annotator, review status, times), ``sentences`` (one or more per
ref) and ``ref_instances`` (the target set, ordered). The database runs in WAL mode with
foreign keys on; every write is one transaction, so a crash (even SIGKILL) leaves either the
whole save or none of it.

Uploaded images are copied into a media folder next to the database, named by their
SHA-256, so a saved ref never depends on a temporary upload path.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

SPLITS = ("train", "val", "testA", "testB")
STATUSES = ("draft", "done", "reviewed", "rejected")
DEFAULT_CATEGORY = "object"

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT UNIQUE,
    file_name TEXT NOT NULL,
    path TEXT,
    width INTEGER NOT NULL CHECK (width > 0),
    height INTEGER NOT NULL CHECK (height > 0),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS categories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    supercategory TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    category_id INTEGER NOT NULL REFERENCES categories(id),
    rle TEXT NOT NULL,
    bbox TEXT NOT NULL,
    area INTEGER NOT NULL CHECK (area > 0),
    iscrowd INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'manual',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    split TEXT NOT NULL DEFAULT 'train',
    no_target INTEGER NOT NULL DEFAULT 0,
    annotator TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'draft',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY,
    ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    raw TEXT NOT NULL,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ref_instances (
    ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (ref_id, instance_id)
);
CREATE INDEX IF NOT EXISTS idx_instances_image ON instances(image_id);
CREATE INDEX IF NOT EXISTS idx_refs_image ON refs(image_id);
CREATE INDEX IF NOT EXISTS idx_sentences_ref ON sentences(ref_id);
"""


class StoreError(ValueError):
    """A save or lookup that cannot be done, with the reason."""


def encode_mask(mask: np.ndarray) -> dict:
    """Exact compressed COCO RLE (``counts`` as text) of a binary HxW mask."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8) > 0, dtype=np.uint8)
    rle = mask_utils.encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@dataclass
class ImageRecord:
    id: int
    sha256: str | None
    file_name: str
    path: str | None
    width: int
    height: int


@dataclass
class InstanceRecord:
    id: int
    image_id: int
    category_id: int
    rle: dict
    bbox: list[float]
    area: int
    iscrowd: bool
    source: str

    @property
    def mask(self) -> np.ndarray:
        return decode_mask(self.rle)


@dataclass
class RefRecord:
    id: int
    image_id: int
    sentences: list[str]
    instance_ids: list[int]
    no_target: bool
    split: str
    annotator: str
    status: str
    created_at: float
    updated_at: float
    sentence_ids: list[int] = field(default_factory=list)


@dataclass
class Snapshot:
    """Everything in a store, as plain data (what export/import functions work on)."""

    images: list[ImageRecord]
    categories: dict[int, str]
    instances: list[InstanceRecord]
    refs: list[RefRecord]


class Store:
    """A thread-safe handle on one annotation database."""

    def __init__(self, path: str | Path, media_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.media_dir = Path(media_dir) if media_dir else self.path.with_name(self.path.stem + "_media")
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable annotation database: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- images and categories ------------------------------------------------------------

    def add_image(self, rgb: np.ndarray, file_name: str | None = None) -> int:
        """Store an RGB uint8 image (copied into the media folder); the same pixels give the same id."""
        rgb = np.ascontiguousarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise StoreError(f"expected an RGB uint8 image, got {rgb.dtype} {rgb.shape}")
        digest = hashlib.sha256(np.array(rgb.shape, np.int64).tobytes() + rgb.tobytes()).hexdigest()
        found = self._query("SELECT id FROM images WHERE sha256 = ?", (digest,))
        if found:
            return int(found[0][0])
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self.media_dir / f"{digest[:32]}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise StoreError(f"could not write the image to {self.media_dir}")
            tmp.replace(path)
        name = file_name or f"{digest[:16]}.png"
        h, w = rgb.shape[:2]
        with self._tx() as db:
            cur = db.execute("INSERT INTO images (sha256, file_name, path, width, height, created_at) VALUES (?,?,?,?,?,?)",
                             (digest, name, str(path), w, h, time.time()))
            return int(cur.lastrowid)

    def add_image_record(self, file_name: str, width: int, height: int, path: str | None = None,
                         image_id: int | None = None, sha256: str | None = None) -> int:
        """Register an image by reference (imports): no pixels are copied."""
        with self._tx() as db:
            if image_id is not None and db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
                image_id = None  # taken: let SQLite pick
            cur = db.execute("INSERT INTO images (id, sha256, file_name, path, width, height, created_at) VALUES (?,?,?,?,?,?,?)",
                             (image_id, sha256, file_name, path, int(width), int(height), time.time()))
            return int(cur.lastrowid)

    def image(self, image_id: int) -> ImageRecord:
        rows = self._query("SELECT id, sha256, file_name, path, width, height FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise StoreError(f"no image with id {image_id}")
        return ImageRecord(*rows[0])

    def load_image(self, image_id: int) -> np.ndarray | None:
        """The pixels of a stored image, or None when only its record is known."""
        rec = self.image(image_id)
        if not rec.path or not Path(rec.path).is_file():
            return None
        bgr = cv2.imread(rec.path, cv2.IMREAD_COLOR)
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def category_id(self, name: str = DEFAULT_CATEGORY, supercategory: str = "", category_id: int | None = None) -> int:
        name = (name or DEFAULT_CATEGORY).strip()
        rows = self._query("SELECT id FROM categories WHERE name = ?", (name,))
        if rows:
            return int(rows[0][0])
        with self._tx() as db:
            if category_id is not None and db.execute("SELECT 1 FROM categories WHERE id = ?", (category_id,)).fetchone():
                category_id = None
            cur = db.execute("INSERT INTO categories (id, name, supercategory) VALUES (?,?,?)", (category_id, name, supercategory))
            return int(cur.lastrowid)

    # --- instances ------------------------------------------------------------------------

    def _insert_instance(self, db: sqlite3.Connection, image_id: int, mask: np.ndarray | None, category_id: int,
                         source: str, rle: dict | None = None, iscrowd: bool = False, instance_id: int | None = None) -> int:
        img = db.execute("SELECT width, height FROM images WHERE id = ?", (image_id,)).fetchone()
        if img is None:
            raise StoreError(f"no image with id {image_id}")
        if rle is None:
            mask = np.asarray(mask).astype(bool)
            if mask.shape != (img[1], img[0]):
                raise StoreError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {img[0]}x{img[1]}")
            rle = encode_mask(mask)
        else:
            mask = decode_mask(rle)
            if mask.shape != (img[1], img[0]):
                raise StoreError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {img[0]}x{img[1]}")
        area = int(mask.sum())
        if area == 0:
            raise StoreError("an instance mask is empty: draw it, or mark the expression as no-target")
        if instance_id is not None and db.execute("SELECT 1 FROM instances WHERE id = ?", (instance_id,)).fetchone():
            instance_id = None
        now = time.time()
        cur = db.execute(
            "INSERT INTO instances (id, image_id, category_id, rle, bbox, area, iscrowd, source, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (instance_id, image_id, category_id, json.dumps(rle), json.dumps(mask_bbox(mask)), area, int(iscrowd), source, now, now),
        )
        return int(cur.lastrowid)

    def add_instance(self, image_id: int, mask: np.ndarray | None = None, category: str = DEFAULT_CATEGORY,
                     source: str = "manual", rle: dict | None = None, iscrowd: bool = False,
                     instance_id: int | None = None, category_id: int | None = None) -> int:
        cat = category_id if category_id is not None else self.category_id(category)
        with self._tx() as db:
            return self._insert_instance(db, image_id, mask, cat, source, rle, iscrowd, instance_id)

    def instances(self, image_id: int | None = None) -> list[InstanceRecord]:
        sql = "SELECT id, image_id, category_id, rle, bbox, area, iscrowd, source FROM instances"
        rows = self._query(sql + (" WHERE image_id = ? ORDER BY id" if image_id is not None else " ORDER BY id"),
                           (image_id,) if image_id is not None else ())
        return [InstanceRecord(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], bool(r[6]), r[7]) for r in rows]

    # --- refs -----------------------------------------------------------------------------

    def save_ref(self, image_id: int, sentences: Sequence[str], *, masks: Sequence[np.ndarray] = (),
                 instance_ids: Sequence[int] = (), no_target: bool = False, split: str = "train",
                 annotator: str = "", status: str = "done", category: str = DEFAULT_CATEGORY,
                 ref_id: int | None = None) -> int:
        """Create (or replace, with ``ref_id``) a ref in one transaction.

        Targets are existing ``instance_ids`` and/or new ``masks`` (stored as new instances).
        A no-target ref must have no targets, and a targeted ref at least one.
        """
        sents = [s.strip() for s in sentences if s and s.strip()]
        if not sents:
            raise StoreError("a ref needs at least one non-empty sentence")
        if split not in SPLITS:
            raise StoreError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        if no_target and (masks or instance_ids):
            raise StoreError("a no-target ref cannot have target instances")
        if not no_target and not masks and not instance_ids:
            raise StoreError("select or draw at least one target instance, or mark the expression as no-target")
        cat = self.category_id(category)
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise StoreError(f"no image with id {image_id}")
            ids = list(instance_ids)
            for iid in ids:
                row = db.execute("SELECT image_id FROM instances WHERE id = ?", (iid,)).fetchone()
                if row is None or row[0] != image_id:
                    raise StoreError(f"instance {iid} does not belong to image {image_id}")
            existing = {row[1]: row[0] for row in db.execute("SELECT id, rle FROM instances WHERE image_id = ?", (image_id,))}
            for m in masks:
                rle = json.dumps(encode_mask(m))
                # the same pixels already stored for this image: reuse that instance
                ids.append(existing[rle] if rle in existing else self._insert_instance(db, image_id, m, cat, "annotator"))
            if ref_id is None:
                cur = db.execute(
                    "INSERT INTO refs (image_id, split, no_target, annotator, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (image_id, split, int(no_target), annotator, status, now, now))
                ref_id = int(cur.lastrowid)
            else:
                cur = db.execute("UPDATE refs SET split=?, no_target=?, annotator=?, status=?, updated_at=? WHERE id=?",
                                 (split, int(no_target), annotator, status, now, ref_id))
                if cur.rowcount == 0:
                    raise StoreError(f"no ref with id {ref_id}")
                db.execute("DELETE FROM sentences WHERE ref_id = ?", (ref_id,))
                db.execute("DELETE FROM ref_instances WHERE ref_id = ?", (ref_id,))
            for pos, s in enumerate(sents):
                db.execute("INSERT INTO sentences (ref_id, raw, position) VALUES (?,?,?)", (ref_id, s, pos))
            for pos, iid in enumerate(dict.fromkeys(ids)):
                db.execute("INSERT INTO ref_instances (ref_id, instance_id, position) VALUES (?,?,?)", (ref_id, iid, pos))
        return ref_id

    def insert_ref(self, ref_id: int | None, image_id: int, sentences: list[tuple[int | None, str]], instance_ids: list[int],
                   no_target: bool, split: str, annotator: str = "", status: str = "done") -> int:
        """Low-level insert for imports (keeps the source ids when they are free)."""
        now = time.time()
        with self._tx() as db:
            if ref_id is not None and db.execute("SELECT 1 FROM refs WHERE id = ?", (ref_id,)).fetchone():
                ref_id = None
            cur = db.execute("INSERT INTO refs (id, image_id, split, no_target, annotator, status, created_at, updated_at) "
                             "VALUES (?,?,?,?,?,?,?,?)", (ref_id, image_id, split, int(no_target), annotator, status, now, now))
            rid = int(cur.lastrowid)
            for pos, (sid, raw) in enumerate(sentences):
                if sid is not None and db.execute("SELECT 1 FROM sentences WHERE id = ?", (sid,)).fetchone():
                    sid = None
                db.execute("INSERT INTO sentences (id, ref_id, raw, position) VALUES (?,?,?,?)", (sid, rid, raw, pos))
            for pos, iid in enumerate(instance_ids):
                db.execute("INSERT INTO ref_instances (ref_id, instance_id, position) VALUES (?,?,?)", (rid, iid, pos))
        return rid

    def ref(self, ref_id: int) -> RefRecord:
        refs = self.refs(ref_ids=[ref_id])
        if not refs:
            raise StoreError(f"no ref with id {ref_id}")
        return refs[0]

    def refs(self, image_id: int | None = None, ref_ids: Sequence[int] | None = None) -> list[RefRecord]:
        sql = "SELECT id, image_id, split, no_target, annotator, status, created_at, updated_at FROM refs"
        args: list = []
        if image_id is not None:
            sql += " WHERE image_id = ?"
            args.append(image_id)
        elif ref_ids is not None:
            if not ref_ids:
                return []
            sql += f" WHERE id IN ({','.join('?' * len(ref_ids))})"
            args.extend(ref_ids)
        sql += " ORDER BY id"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            out = []
            for r in rows:
                sents = self._db.execute("SELECT id, raw FROM sentences WHERE ref_id = ? ORDER BY position", (r[0],)).fetchall()
                inst = self._db.execute("SELECT instance_id FROM ref_instances WHERE ref_id = ? ORDER BY position", (r[0],)).fetchall()
                out.append(RefRecord(r[0], r[1], [s[1] for s in sents], [i[0] for i in inst], bool(r[3]), r[2], r[4], r[5],
                                     r[6], r[7], [s[0] for s in sents]))
        return out

    def delete_ref(self, ref_id: int) -> None:
        """Delete a ref; instances drawn only for it are deleted too."""
        with self._tx() as db:
            inst = [r[0] for r in db.execute("SELECT instance_id FROM ref_instances WHERE ref_id = ?", (ref_id,))]
            if db.execute("DELETE FROM refs WHERE id = ?", (ref_id,)).rowcount == 0:
                raise StoreError(f"no ref with id {ref_id}")
            for iid in inst:
                used = db.execute("SELECT 1 FROM ref_instances WHERE instance_id = ?", (iid,)).fetchone()
                src = db.execute("SELECT source FROM instances WHERE id = ?", (iid,)).fetchone()
                if not used and src and src[0] == "annotator":
                    db.execute("DELETE FROM instances WHERE id = ?", (iid,))

    def set_status(self, ref_id: int, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}")
        with self._tx() as db:
            if db.execute("UPDATE refs SET status=?, updated_at=? WHERE id=?", (status, time.time(), ref_id)).rowcount == 0:
                raise StoreError(f"no ref with id {ref_id}")

    # --- summaries ------------------------------------------------------------------------

    def stats(self) -> dict:
        q = lambda sql: self._query(sql)[0][0]  # noqa: E731
        by_split = dict(self._query("SELECT split, COUNT(*) FROM refs GROUP BY split"))
        by_status = dict(self._query("SELECT status, COUNT(*) FROM refs GROUP BY status"))
        return {
            "images": q("SELECT COUNT(*) FROM images"),
            "instances": q("SELECT COUNT(*) FROM instances"),
            "refs": q("SELECT COUNT(*) FROM refs"),
            "sentences": q("SELECT COUNT(*) FROM sentences"),
            "no_target_refs": q("SELECT COUNT(*) FROM refs WHERE no_target = 1"),
            "multi_target_refs": q("SELECT COUNT(*) FROM (SELECT ref_id FROM ref_instances GROUP BY ref_id HAVING COUNT(*) > 1)"),
            "images_with_refs": q("SELECT COUNT(DISTINCT image_id) FROM refs"),
            "by_split": by_split,
            "by_status": by_status,
        }

    def integrity_check(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])

    def snapshot(self) -> Snapshot:
        """A consistent copy of everything (read in one transaction)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                images = [ImageRecord(*r) for r in self._db.execute(
                    "SELECT id, sha256, file_name, path, width, height FROM images ORDER BY id")]
                cats = {r[0]: r[1] for r in self._db.execute("SELECT id, name FROM categories ORDER BY id")}
                instances = self.instances()
                refs = self.refs()
            finally:
                self._db.execute("COMMIT")
        return Snapshot(images, cats, instances, refs)
