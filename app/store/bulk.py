"""Writing a validated dataset import in one transaction (see :mod:`app.dataset.imports` for the checks)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pycocotools import mask as mask_utils

from .dialect import SqliteDialect
from .names import safe_file_name
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class PlannedImage:
    src_id: int
    original_name: str
    path: str | None  # confined to the image folder; None when the file is absent
    width: int
    height: int


@dataclass
class PlannedAnnotation:
    src_id: int
    image_src: int
    category_src: int
    category: str
    supercategory: str
    rle: dict  # pycocotools RLE (bytes counts), validated
    iscrowd: bool


@dataclass
class PlannedRef:
    src_id: int
    image_src: int
    sentences: list[tuple[int | None, str]]
    targets: list[int]  # source annotation ids
    no_target: bool
    split: str
    annotator: str
    status: str


@dataclass
class ImportPlan:
    images: list[PlannedImage]
    annotations: list[PlannedAnnotation]
    refs: list[PlannedRef]


def _free(db, table: str, wanted: int, dialect=None) -> int | None:
    """Keep a source id when it is free in ``table`` (round trips keep their ids), else let SQLite pick.

    For refs and sentences, whose ids are never reused, a source id is kept only above every id
    ever given (a deleted ref's id never comes back, not even through an import)."""
    if db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (wanted,)).fetchone():
        return None
    if table in ("refs", "sentences"):
        seq = (dialect or SqliteDialect()).last_id(db, table)
        if seq is not None and wanted <= seq:
            return None
    return wanted


def write_plan(store: Store, plan: ImportPlan, fingerprint: str, kind: str, source: str) -> dict:
    """Write everything in one transaction; refused (nothing written) when this data was imported before."""
    now = time.time()
    with store.import_transaction(fingerprint, kind, source) as db:
        img_map: dict[int, int] = {}
        for im in plan.images:
            cur = db.execute("INSERT INTO images (id, sha256, file_name, original_name, path, width, height, created_at) "
                             "VALUES (?,?,?,?,?,?,?,?)", (_free(db, "images", im.src_id), None, safe_file_name(im.original_name),
                                                          im.original_name, im.path, im.width, im.height, now))
            img_map[im.src_id] = int(cur.lastrowid)
            if store.location.is_postgres and im.path:  # every server must reach the pixels
                data = store._file_bytes(im.path)
                if data is not None:
                    store.write_media(db, img_map[im.src_id], data)
        cat_ids: dict[str, int] = {}
        for a in plan.annotations:
            if a.category not in cat_ids:
                db.execute("INSERT INTO categories (id, name, supercategory) VALUES (?,?,?) ON CONFLICT(name) DO NOTHING",
                           (_free(db, "categories", a.category_src), a.category, a.supercategory))
                cat_ids[a.category] = int(db.execute("SELECT id FROM categories WHERE name = ?", (a.category,)).fetchone()[0])
        ann_map: dict[int, int] = {}
        for a in plan.annotations:
            mask = mask_utils.decode(a.rle).astype(bool)
            ann_map[a.src_id] = Store._insert_instance(db, img_map[a.image_src], mask, cat_ids[a.category], "import",
                                                       a.iscrowd, _free(db, "instances", a.src_id))
        for r in plan.refs:
            cur = db.execute("INSERT INTO refs (id, image_id, split, no_target, annotator, status, created_at, updated_at, "
                             "editor) VALUES (?,?,?,?,?,?,?,?,?)", (_free(db, "refs", r.src_id, store.dialect), img_map[r.image_src], r.split,
                                                                    int(r.no_target), r.annotator, r.status, now, now,
                                                                    r.annotator))
            rid = int(cur.lastrowid)
            seen: set[str] = set()
            for pos, (sid, raw) in enumerate(s for s in r.sentences if s[1].strip()):
                raw = " ".join(raw.split())
                if raw in seen:
                    continue
                seen.add(raw)
                db.execute("INSERT INTO sentences (id, ref_id, raw, position) VALUES (?,?,?,?)",
                           (_free(db, "sentences", sid, store.dialect) if sid is not None else None, rid, raw, pos))
            db.executemany("INSERT INTO ref_instances (ref_id, instance_id, position) VALUES (?,?,?)",
                           [(rid, ann_map[a], pos) for pos, a in enumerate(r.targets)])
            Store._event(db, rid, r.annotator, "import", {"source": source, "source_ref_id": r.src_id})
    log.info("imported %s (%s): %d images, %d instances, %d refs", source, kind, len(plan.images), len(plan.annotations),
             len(plan.refs))
    return {"images": len(plan.images), "instances": len(plan.annotations), "refs": len(plan.refs), "skipped": []}
