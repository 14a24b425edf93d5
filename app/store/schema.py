"""The database schema, its version (``PRAGMA user_version``) and the migrations between versions.

Version 1 is the first release's schema (``user_version`` 0). Version 2 adds:
- ``images.original_name`` (the name as given) and a confined, safe ``file_name``; ``images.split``;
- ref and sentence ids that are never reused (``AUTOINCREMENT``) and a ``refs.version`` for
  optimistic concurrency ("changed by someone else meanwhile");
- ``events``: the history of every ref (who, when, what);
- ``imports``: fingerprints of imported datasets, so the same files are not imported twice;
- ``predictions``: what the model proposed for a pre-annotated ref (model, thresholds, every kept
  candidate's score and mask), so it can be re-thresholded without the model; the row outlives a
  deleted ref, so a resumed run does not predict a pair people threw away; ``qa``: per-ref
  agreement between the model and the people who made the ref;
- indexes for paginated lists at 100 000 refs.

Version 3 adds ``refs.editor``: who wrote the ref's current content (sentences, targets, no-target
flag), so that nobody accepts what they wrote themselves (see :mod:`app.services.permissions`);
the migration finds it in each ref's history.

Version 4 (the learning loop) adds:
- ``predictions.uncertainty`` (how unsure the model was of its verdict, 0..1; NULL where not
  computed) and ``predictions.origin`` (``preannotate`` or ``negatives``: which job proposed it);
- ``models``: the models a team fine-tuned from its refs (name, weights, parent, data snapshot,
  metrics before and after, who ran it, when);
- ``negatives``: proposed non-referent sentences (a sentence written for another image) with the
  model's verdict and the person's decision;
- ``locks``: named locks that outlive a transaction (one fine-tune per store at a time).

Version 5 (teams under faults) adds:
- ``save_keys``: the key of each save attempt, written in the save's own transaction, so that a
  save whose COMMIT answer was lost can be looked up ("saved, ref N" or "nothing was saved") and
  a retry with the same key does not save twice;
- ``sign_in_failures``: the wrong-password counters and lock-outs of :mod:`app.auth`, shared by
  every server of a team.

Version 6 (Review's before / after) adds ``rejected_versions``: at each rejection, a copy of the ref's
content as it was rejected (sentences, no-target flag, every target's instance id and exact mask), so
that the reviewer of the fix sees what changed even after the fix removed the old drawn instances; the
migration makes the copies the history allows (:func:`app.store.versions.backfill`).

Before a migration the database is copied next to itself (``<name>.v<old>.bak``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .names import safe_file_name
from .versions import backfill

SCHEMA_VERSION = 6

TABLES = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT UNIQUE,
    file_name TEXT NOT NULL,
    original_name TEXT NOT NULL DEFAULT '',
    path TEXT,
    split TEXT NOT NULL DEFAULT '',
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    split TEXT NOT NULL DEFAULT 'train',
    no_target INTEGER NOT NULL DEFAULT 0,
    annotator TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'draft',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    editor TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ref_id INTEGER NOT NULL,
    at REAL NOT NULL,
    user TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS rejected_versions (
    event_id INTEGER PRIMARY KEY,
    ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    at REAL NOT NULL,
    sentences TEXT NOT NULL,
    no_target INTEGER NOT NULL DEFAULT 0,
    targets TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    ref_id INTEGER UNIQUE REFERENCES refs(id) ON DELETE SET NULL,
    image_id INTEGER NOT NULL,
    sentence TEXT NOT NULL,
    model TEXT NOT NULL,
    score_threshold REAL NOT NULL,
    mask_threshold REAL NOT NULL,
    existence REAL NOT NULL,
    candidates TEXT NOT NULL,
    created_at REAL NOT NULL,
    uncertainty REAL,
    origin TEXT NOT NULL DEFAULT 'preannotate'
);
CREATE TABLE IF NOT EXISTS qa (
    ref_id INTEGER PRIMARY KEY REFERENCES refs(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    iou REAL NOT NULL,
    no_target_agree INTEGER NOT NULL,
    model_no_target INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    weights TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '',
    parent TEXT NOT NULL DEFAULT '',
    snapshot TEXT NOT NULL DEFAULT '{}',
    metrics_before TEXT NOT NULL DEFAULT '{}',
    metrics_after TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS negatives (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    sentence TEXT NOT NULL,
    source_ref_id INTEGER REFERENCES refs(id) ON DELETE SET NULL,
    model TEXT NOT NULL,
    existence REAL NOT NULL,
    found_target INTEGER NOT NULL,
    top_score REAL NOT NULL,
    ref_id INTEGER REFERENCES refs(id) ON DELETE SET NULL,
    decision TEXT NOT NULL DEFAULT '',
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at REAL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS save_keys (
    key TEXT PRIMARY KEY,
    ref_id INTEGER,
    version INTEGER,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sign_in_failures (
    name TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    locks INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0,
    last REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS imports (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    at REAL NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
"""

INDEXES = """
CREATE INDEX IF NOT EXISTS idx_instances_image ON instances(image_id);
CREATE INDEX IF NOT EXISTS idx_refs_image ON refs(image_id);
CREATE INDEX IF NOT EXISTS idx_refs_status ON refs(status, updated_at);
CREATE INDEX IF NOT EXISTS idx_refs_annotator ON refs(annotator);
CREATE INDEX IF NOT EXISTS idx_sentences_ref ON sentences(ref_id);
CREATE INDEX IF NOT EXISTS idx_ref_instances_instance ON ref_instances(instance_id);
CREATE INDEX IF NOT EXISTS idx_events_ref ON events(ref_id);
CREATE INDEX IF NOT EXISTS idx_rejected_versions_ref ON rejected_versions(ref_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_predictions_pair ON predictions(image_id, sentence, model);
CREATE INDEX IF NOT EXISTS idx_qa_iou ON qa(iou);
CREATE INDEX IF NOT EXISTS idx_predictions_uncertainty ON predictions(uncertainty);
CREATE UNIQUE INDEX IF NOT EXISTS idx_negatives_pair ON negatives(image_id, sentence);
CREATE INDEX IF NOT EXISTS idx_negatives_queue ON negatives(decision, found_target);
CREATE INDEX IF NOT EXISTS idx_save_keys_at ON save_keys(at);
"""


def _run(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the current transaction (``executescript`` would commit it)."""
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Safe names, never-reused ids, ref versions, events and import fingerprints."""
    if "original_name" not in _columns(db, "images"):
        db.execute("ALTER TABLE images ADD COLUMN original_name TEXT NOT NULL DEFAULT ''")
    if "split" not in _columns(db, "images"):
        db.execute("ALTER TABLE images ADD COLUMN split TEXT NOT NULL DEFAULT ''")
    db.create_function("deris_safe_name", 1, safe_file_name, deterministic=True)
    db.execute("UPDATE images SET original_name = file_name WHERE original_name = ''")
    db.execute("UPDATE images SET file_name = deris_safe_name(file_name)")
    # Rebuild refs and sentences with AUTOINCREMENT (SQLite cannot add it to an existing table).
    db.execute("""CREATE TABLE refs_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        split TEXT NOT NULL DEFAULT 'train', no_target INTEGER NOT NULL DEFAULT 0,
        annotator TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'draft',
        created_at REAL NOT NULL, updated_at REAL NOT NULL, version INTEGER NOT NULL DEFAULT 1)""")
    db.execute("INSERT INTO refs_v2 (id, image_id, split, no_target, annotator, status, created_at, updated_at) "
               "SELECT id, image_id, split, no_target, annotator, status, created_at, updated_at FROM refs")
    db.execute("DROP TABLE refs")
    db.execute("ALTER TABLE refs_v2 RENAME TO refs")
    db.execute("""CREATE TABLE sentences_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
        raw TEXT NOT NULL, position INTEGER NOT NULL)""")
    db.execute("INSERT INTO sentences_v2 (id, ref_id, raw, position) SELECT id, ref_id, raw, position FROM sentences")
    db.execute("DROP TABLE sentences")
    db.execute("ALTER TABLE sentences_v2 RENAME TO sentences")
    # Version 1 left the drawn instance of an edited ref behind; drop such orphans.
    db.execute("DELETE FROM instances WHERE source = 'annotator' AND id NOT IN (SELECT instance_id FROM ref_instances)")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """``refs.editor`` from the history: the user of the last event that changed the content
    (a create, an import, a prediction, or an edit whose sentences, targets or flag differ from
    the version before); the author when the history says nothing."""
    if "editor" not in _columns(db, "refs"):
        db.execute("ALTER TABLE refs ADD COLUMN editor TEXT NOT NULL DEFAULT ''")
    editors: dict[int, str] = {}
    content: dict[int, tuple] = {}
    for ref_id, user, action, detail in db.execute(
            "SELECT ref_id, user, action, detail FROM events WHERE action IN ('create', 'edit', 'import', 'predict') "
            "ORDER BY id"):
        try:
            d = json.loads(detail or "{}")
        except ValueError:
            d = {}
        if not isinstance(d, dict):  # hand-edited or foreign history: nothing to learn from it
            d = {}
        now = (d.get("sentences"), d.get("targets"), d.get("no_target"))
        if action != "edit" or content.get(ref_id) != now:
            editors[ref_id] = user or ""
        content[ref_id] = now
    db.execute("UPDATE refs SET editor = annotator")
    db.executemany("UPDATE refs SET editor = ? WHERE id = ?", [(u, r) for r, u in editors.items()])


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    """Uncertainty and origin of predictions; the new tables come from ``TABLES``."""
    cols = _columns(db, "predictions")
    if "uncertainty" not in cols:
        db.execute("ALTER TABLE predictions ADD COLUMN uncertainty REAL")
    if "origin" not in cols:
        db.execute("ALTER TABLE predictions ADD COLUMN origin TEXT NOT NULL DEFAULT 'preannotate'")


def _migrate_4_to_5(db: sqlite3.Connection) -> None:
    """Nothing to change: the new tables (save keys, sign-in failures) come from ``TABLES``."""


def _migrate_5_to_6(db: sqlite3.Connection) -> None:
    """The rejected versions the history allows (the table comes from ``TABLES``, made here first)."""
    _run(db, TABLES)
    backfill(db)


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4, 4: _migrate_4_to_5, 5: _migrate_5_to_6}  # from version -> function that brings it to version + 1


def current_version(db: sqlite3.Connection) -> int:
    """The schema version of an open database (0 for an empty file)."""
    v = int(db.execute("PRAGMA user_version").fetchone()[0])
    if v == 0 and _has_table(db, "refs"):
        return 1  # the first release did not set user_version
    return v


def ensure_schema(db: sqlite3.Connection, path: Path) -> int:
    """Create or migrate ``db`` to :data:`SCHEMA_VERSION`; returns the version it had before.

    ``db`` must be in autocommit mode. Each migration runs in one transaction with foreign keys
    off (the documented way to rebuild SQLite tables), after a backup copy of the file.
    """
    version = before = current_version(db)
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"it was made by a newer DeRIS Studio (schema {version}, this one knows {SCHEMA_VERSION})")
    if version == 0:
        db.execute("BEGIN IMMEDIATE")
        try:
            if current_version(db) == 0:  # another process may have created it meanwhile
                _run(db, TABLES + INDEXES)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return 0
    if version < SCHEMA_VERSION and str(path) != ":memory:":
        backup = path.with_name(f"{path.name}.v{version}.bak")
        if not backup.exists():
            with sqlite3.connect(str(backup)) as dst:
                db.backup(dst)
            dst.close()
    while version < SCHEMA_VERSION:
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("BEGIN IMMEDIATE")
        try:
            if current_version(db) == version:  # not migrated by another process meanwhile
                MIGRATIONS[version](db)
                # new tables at once; indexes at the last step (they may name columns a later step adds)
                _run(db, TABLES + (INDEXES if version + 1 == SCHEMA_VERSION else ""))
                problems = db.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise sqlite3.DatabaseError(f"migration {version}->{version + 1} broke {len(problems)} references")
                db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA foreign_keys=ON")
        version = current_version(db)
    return before
