"""The annotation store: one SQLite file (the default) or one PostgreSQL database; nothing of Gradio.

Tables: ``images`` (content hash, safe file name and the original one, where the pixels are),
``categories``, ``instances`` (exact masks as compressed COCO RLE), ``refs`` (split,
no-target flag, annotator, status, version, and the editor: who wrote the current content), ``sentences``, ``ref_instances`` (the ordered
target set), ``events`` (the history of every ref) and ``imports`` (dataset fingerprints).

Writes are safe under any number of threads and processes: every write is one ``BEGIN
IMMEDIATE`` transaction (SQLite's busy timeout, then a few retries), look-up-or-insert is
``INSERT … ON CONFLICT``, media files are written under unique temporary names and renamed.
Ref ids are never reused, and an edit names the version it started from: a ref changed or
deleted by someone else meanwhile is refused with :class:`ConflictError` instead of being
overwritten. A crash (even SIGKILL) leaves either the whole save or none of it.

On PostgreSQL (``Store("postgresql://user@host:5432/name")``, :mod:`app.store.pg`) the same
statements run through the dialect of :mod:`app.store.dialect`; every write transaction first
takes one advisory lock (``pg_advisory_xact_lock``), the counterpart of ``BEGIN IMMEDIATE``, so the
version checks and look-up-or-insert steps of every caller stay correct with several studio
servers and batch jobs on one database; ids come from sequences (never reused), and the image
bytes are kept in the database (``media``) so that every server can open every image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .dialect import PostgresDialect, SqliteDialect, pg_error_message
from .errors import CommitUnknown, DatabaseBusy, OutcomeUnknown, StoreError, os_error_message
from .location import DbLocation, parse_db
from .masks import decode_mask, encode_mask, mask_bbox
from .names import safe_file_name
from .records import ImageRecord, InstanceRecord, Snapshot
from .models import ModelsMixin
from .refs import DEFAULT_CATEGORY, MAX_NAME_CHARS, RefsMixin
from .schema import ensure_schema
from .sign_in import SignInMixin
from .timeouts import DbTimeouts

log = logging.getLogger(__name__)

SAVE_KEYS_KEPT_S = 7 * 24 * 3600.0  # how long the key of a save attempt is kept (a retry days later saves anew)
MAX_SAVE_KEY = 100

def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise StoreError("the image could not be encoded as PNG")
    return buf.tobytes()


def image_digest(rgb: np.ndarray) -> str:
    """Content hash of decoded pixels (shape included): the same picture gives the same image."""
    return hashlib.sha256(np.array(rgb.shape, np.int64).tobytes() + np.ascontiguousarray(rgb).tobytes()).hexdigest()


class Store(RefsMixin, ModelsMixin, SignInMixin):
    """A thread-safe handle on one annotation database (several processes, and on PostgreSQL several
    machines, may open the same one). ``path``: a SQLite file path, a ``postgresql://`` URL or a
    :class:`~app.store.location.DbLocation` (see :func:`~app.store.location.parse_db`)."""

    def __init__(self, path: str | Path | DbLocation, media_dir: str | Path | None = None,
                 busy_timeout: float | None = None, timeouts: DbTimeouts | None = None,
                 cache_root: str | Path | None = None) -> None:
        """``media_dir``: where a SQLite store keeps copied pixels (default: ``<db>_media`` beside the file)
        and a PostgreSQL store its local caches; for PostgreSQL without one, ``<cache_root>/<key>`` (the
        studio's command lines pass ``$DERIS_CACHE/studio``; default: the system's temporary folder).
        ``timeouts``: how long a write waits for another writer (SQLite's busy timeout, PostgreSQL's
        lock_timeout) and the statement limits; ``busy_timeout`` overrides the lock wait alone."""
        self.location = parse_db(path)
        self.cache_root = Path(cache_root) if cache_root else Path(tempfile.gettempdir()) / "deris_studio"
        self.timeouts = timeouts or DbTimeouts.from_env()
        if busy_timeout is not None:
            self.timeouts = DbTimeouts(busy_timeout, self.timeouts.statement_s, self.timeouts.idle_in_transaction_s)
        busy_timeout = self.timeouts.lock_wait_s
        self._lock = threading.RLock()  # the write connection
        self._rlock = threading.RLock()  # the read connection
        self.read_only = False
        if self.location.is_postgres:
            self._open_postgres(media_dir)
            return
        self.dialect = SqliteDialect()
        self.path = self.location.path
        self.media_dir = Path(media_dir) if media_dir else self.path.with_name(self.path.stem + "_media")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                           timeout=busy_timeout)
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                if not self.path.is_file() or os.access(self.path.parent, os.W_OK) and os.access(self.path, os.W_OK):
                    raise
                # a database on a read-only disk (or without write permission): open it for reading
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False,
                                           isolation_level=None, timeout=busy_timeout)
                self.read_only = True
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.migrated_from = 0 if self.read_only else ensure_schema(self._db, self.path)
            # reads get their own connection: a writer waiting for another process's lock never blocks them
            self._rdb = self._db if self.read_only else sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=busy_timeout)
            self._rdb.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path.name} is not a usable annotation database: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot open the database {self.path.name}: {os_error_message(exc)}") from None

    def _open_postgres(self, media_dir: str | Path | None) -> None:
        """Connect (a write and a read connection), create or upgrade the schema; the local folder holds
        only caches (thumbnails) and exports, made from the database."""
        from .pg import PgConnection, ensure_pg_schema

        try:
            import psycopg
        except ImportError:
            raise StoreError("a postgresql:// database needs psycopg 3: pip install 'psycopg[binary]'") from None
        self.dialect = PostgresDialect()
        local = Path(media_dir) if media_dir else self.cache_root / self.location.key
        self.media_dir = local
        self.path = local.with_name(local.name + ".pg")  # not a file: exports go next to it (<key>_exports)
        self._db = PgConnection(self.location, timeouts=self.timeouts)
        try:
            self.migrated_from = ensure_pg_schema(self._db)
            self._rdb = PgConnection(self.location, timeouts=self.timeouts)
        except psycopg.Error as exc:  # no privilege to create tables, a standby server, a full disk ...
            self._db.close()
            raise StoreError(f"cannot set up the studio's tables in {self.location.shown}: {pg_error_message(exc)}") from None
        except BaseException:
            self._db.close()
            raise

    @property
    def exports_dir(self) -> Path:
        """Where the app writes exports (local to this server)."""
        return self.path.with_name(self.path.stem + "_exports")

    def close(self) -> None:
        with self._lock, self._rlock:
            if self._rdb is not self._db:
                self._rdb.close()
            self._db.close()

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite/OS failures become a StoreError (nothing is half-written), and
        every refused write is logged at INFO with its reason."""
        try:
            with self._write_tx() as db:
                yield db
        except StoreError as exc:
            log.info("nothing written (%s): %s", type(exc).__name__, exc)
            raise

    @contextmanager
    def _write_tx(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_tx` without its log line."""
        if self.location.is_postgres:
            with self._pg_tx() as db:
                yield db
            return
        if self.read_only:
            raise StoreError(os_error_message(sqlite3.OperationalError("attempt to write a readonly database")))
        with self._lock:
            deadline = time.monotonic() + self.timeouts.lock_wait_s
            for attempt in range(4):  # the busy timeout waits; a few retries for SQLITE_BUSY it does not cover
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise StoreError(os_error_message(exc)) from None
                    if attempt == 3 or time.monotonic() >= deadline:
                        raise DatabaseBusy(self._busy_message("another process (a batch job, another studio server, "
                                                              "or a stopped one)")) from None
                    time.sleep(0.05 * (attempt + 1))
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, (sqlite3.OperationalError, OSError)):
                    raise StoreError(os_error_message(exc)) from None
                raise

    def _busy_message(self, holder: str) -> str:
        """The one line a person sees when the writers' lock stayed held longer than the store waits."""
        return (f"the database is busy: {holder} has held the writers' lock longer than this save waits "
                f"({self.timeouts.lock_wait_s:g} s): nothing was saved, your edit is still here; save again in a "
                "moment, or ask whoever runs that process to let it finish or stop it")

    @contextmanager
    def _pg_tx(self):
        """The PostgreSQL write transaction: BEGIN, the writers' advisory lock (waiting at most
        ``lock_wait_s``: :class:`DatabaseBusy` naming the holder), the caller's statements, COMMIT. A
        connection that broke before it began is opened again; a failure inside rolls back; a connection
        lost while COMMIT was on its way is :class:`CommitUnknown` (it may have been stored)."""
        import psycopg
        from psycopg import errors as pg_errors

        from .pg import WRITE_LOCK

        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN")
                if self.timeouts.lock_wait_s > 0:
                    db.execute(f"SET LOCAL lock_timeout = {max(1, int(self.timeouts.lock_wait_s * 1000))}")
                db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
            except psycopg.Error as exc:
                db.rollback_quietly()
                if isinstance(exc, pg_errors.LockNotAvailable):
                    raise DatabaseBusy(self._busy_message(self._pg_lock_holder())) from None
                raise StoreError(self.dialect.message(exc)) from None
            try:
                yield db
            except BaseException as exc:
                db.rollback_quietly()
                if isinstance(exc, pg_errors.LockNotAvailable):
                    raise DatabaseBusy(self._busy_message("another session")) from None
                if isinstance(exc, (psycopg.Error, OSError)):
                    raise StoreError(self.dialect.message(exc)) from None
                raise
            try:
                db.execute("COMMIT")
            except (psycopg.Error, OSError) as exc:
                lost = isinstance(exc, (psycopg.OperationalError, OSError)) and db.broken
                db.rollback_quietly()
                if lost:
                    raise CommitUnknown("the connection to the database server was lost while the save was being "
                                        "committed: it may or may not have been stored; reopen it to check before "
                                        "saving again") from None
                raise StoreError(self.dialect.message(exc)) from None

    def _pg_lock_holder(self) -> str:
        """Who holds the PostgreSQL writers' lock, asked on the read connection ('another writer' when unknown)."""
        from .pg import lock_holder

        try:
            with self._rlock:
                return lock_holder(self._rdb) or "another writer"
        except Exception:  # noqa: BLE001 - any driver error: the busy message must come out anyway
            log.debug("could not tell who holds the writers' lock", exc_info=True)
            return "another writer"

    # --- save keys: the outcome of a save whose COMMIT answer was lost ----------------------------

    @staticmethod
    def new_save_key() -> str:
        """A fresh key for one save attempt (a client keeps it until the save is known to be stored)."""
        import uuid

        return uuid.uuid4().hex

    def save_key_in(self, db, key: str) -> tuple[int | None, int | None] | None:
        """``(ref id, version)`` a save with ``key`` stored, as the caller's transaction sees it (None: no such save)."""
        row = db.execute("SELECT ref_id, version FROM save_keys WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def write_save_key(self, db, key: str, ref_id: int | None, version: int | None = None) -> None:
        """Record, in the save's own transaction, that the save ``key`` stored ``ref_id`` at ``version``
        (keys older than :data:`SAVE_KEYS_KEPT_S` are dropped on the way)."""
        if not isinstance(key, str) or not 8 <= len(key) <= MAX_SAVE_KEY:
            raise StoreError(f"a save key must be text of 8 to {MAX_SAVE_KEY} characters")
        now = time.time()
        db.execute("DELETE FROM save_keys WHERE at < ?", (now - SAVE_KEYS_KEPT_S,))
        db.execute("INSERT INTO save_keys (key, ref_id, version, at) VALUES (?,?,?,?)", (key, ref_id, version, now))

    def saved_by_key(self, key: str) -> tuple[int | None, int | None] | None:
        """After :class:`CommitUnknown`: ``(ref id, version)`` when the save with ``key`` was stored, None when
        it was not (the connection is opened again; :class:`OutcomeUnknown` when the server still cannot be reached)."""
        with self._lock:
            try:
                return self.save_key_in(self._db, key)
            except (StoreError, *self.dialect.db_errors) as exc:
                # the connection is opened again on the way: a refused reconnect is a StoreError of its own;
                # either way the reason in brackets must not say "nothing was saved" (it is not known)
                why = str(exc) if isinstance(exc, StoreError) else self.dialect.message(exc)
                why = why.split(": nothing was saved")[0]
                raise OutcomeUnknown("the connection to the database server was lost while saving, and it cannot be "
                                 f"reached to check whether the save was stored ({why}); "
                                 "reopen it to check before saving again") from None

    def transaction(self) -> "contextlib.AbstractContextManager[sqlite3.Connection]":
        """One write transaction for callers that write several things at once (batch jobs): pass the
        connection to the ``write_*`` operations (:meth:`write_ref`, :meth:`write_status`, ...), the same
        ones the single saves use, so a batch makes the same rows, checks and events."""
        return self._tx()

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        """A read on the read connection (sees every committed write, never waits for a writer)."""
        with self._rlock:
            if not self.location.is_postgres:
                return self._rdb.execute(sql, args).fetchall()
            try:
                return self._rdb.execute(sql, args).fetchall()
            except self.dialect.db_errors as exc:
                raise StoreError(self.dialect.message(exc).replace("nothing was saved", "nothing was read")) from None

    def read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        """A read-only SQL query on the read connection (for the reports of batch tools and benches)."""
        return self._query(sql, args)

    @staticmethod
    def _event(db: sqlite3.Connection, ref_id: int, actor: str, action: str, detail: dict | None = None) -> int:
        """Append an event to the ref's history; returns its id."""
        cur = db.execute('INSERT INTO events (ref_id, at, "user", action, detail) VALUES (?,?,?,?,?)',
                         (ref_id, time.time(), actor or "", action, json.dumps(detail or {})))
        return int(cur.lastrowid)

    # --- images and categories ----------------------------------------------------------------

    def _write_media(self, rgb: np.ndarray, digest: str) -> Path:
        """The image as a PNG in the media folder, named by its hash (unique temp name, then rename)."""
        path = self.media_dir / f"{digest[:32]}.png"
        if path.exists():
            return path
        try:
            self.media_dir.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise StoreError("the image could not be encoded as PNG")
            fd, tmp = tempfile.mkstemp(prefix=f".{digest[:16]}.", suffix=".tmp", dir=self.media_dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(buf.tobytes())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(os_error_message(exc)) from None
        return path

    def add_image(self, rgb: np.ndarray, file_name: str | None = None, split: str = "",
                  path: str | Path | None = None) -> int:
        """Store an RGB uint8 image; the same pixels give the same id.

        The pixels are copied into the media folder unless ``path`` names a file the store may
        read them from (imports of a folder the operator gave).
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise StoreError(f"expected an RGB uint8 image, got {rgb.dtype} {rgb.shape}")
        digest = image_digest(rgb)
        found = self._query("SELECT id FROM images WHERE sha256 = ?", (digest,))
        if found:
            return int(found[0][0])
        data = None
        if self.location.is_postgres:  # the bytes go into the database: the file as it is, else a PNG
            data = self._file_bytes(path) if path else None
            data = data if data is not None else _png(rgb)
            where = str(path) if path else None
        else:
            where = str(path) if path else str(self._write_media(rgb, digest))
        name = safe_file_name(file_name, f"{digest[:16]}.png")
        h, w = rgb.shape[:2]
        with self._tx() as db:
            cur = db.execute("INSERT INTO images (sha256, file_name, original_name, path, split, width, height, created_at) "
                             "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sha256) DO NOTHING",
                             (digest, name, str(file_name or ""), where, split, w, h, time.time()))
            if data is not None and cur.lastrowid is not None:
                self.write_media(db, int(cur.lastrowid), data)
            return int(db.execute("SELECT id FROM images WHERE sha256 = ?", (digest,)).fetchone()[0])

    @staticmethod
    def _file_bytes(path: str | Path) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def write_media(self, db, image_id: int, data: bytes) -> None:
        """The encoded bytes of an image into the database (PostgreSQL), inside a caller's transaction."""
        db.execute("INSERT INTO media (image_id, digest, data) VALUES (?,?,?) ON CONFLICT(image_id) DO NOTHING",
                   (image_id, hashlib.sha256(data).hexdigest(), data))

    def image_bytes(self, image_id: int) -> bytes | None:
        """The stored image's encoded file bytes (PNG, JPEG ...), or None when only its record is known."""
        if self.location.is_postgres:
            rows = self._query("SELECT data FROM media WHERE image_id = ?", (image_id,))
            return bytes(rows[0][0]) if rows else None
        rec = self.image(image_id)
        return self._file_bytes(rec.path) if rec.path else None

    def media_digest(self, image_id: int) -> str | None:
        """SHA-256 of the image's stored bytes (PostgreSQL; None elsewhere or without bytes)."""
        if not self.location.is_postgres:
            return None
        rows = self._query("SELECT digest FROM media WHERE image_id = ?", (image_id,))
        return rows[0][0] if rows else None

    def image(self, image_id: int) -> ImageRecord:
        rows = self._query("SELECT id, sha256, file_name, path, width, height, original_name, split FROM images "
                           "WHERE id = ?", (image_id,))
        if not rows:
            raise StoreError(f"no image with id {image_id}")
        return ImageRecord(*rows[0])

    def load_image(self, image_id: int) -> np.ndarray | None:
        """The pixels of a stored image, or None when only its record is known."""
        from deris_core.preprocess import ImageError, load_image

        rec = self.image(image_id)
        if self.location.is_postgres:
            source = self.image_bytes(image_id)
            if source is None:
                return None
        else:
            if not rec.path or not Path(rec.path).is_file():
                return None
            source = rec.path
        try:  # the same decoding as at import (colour modes, EXIF rotation, size guards)
            rgb = load_image(source)
        except ImageError:
            return None
        return rgb if rgb.shape[:2] == (rec.height, rec.width) else None

    def image_names(self) -> list[tuple[int, str, str]]:
        """``(id, safe file name, original name)`` of every image (to find images by name)."""
        return [(int(i), n, o) for i, n, o in self._query("SELECT id, file_name, original_name FROM images ORDER BY id")]

    def has_image(self, image_id: int) -> bool:
        return bool(self._query("SELECT 1 FROM images WHERE id = ?", (int(image_id),)))

    def image_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM images")[0][0])

    def image_paths(self) -> set[str]:
        """Every file path images were imported from (by reference)."""
        return {r[0] for r in self._query("SELECT path FROM images WHERE path IS NOT NULL")}

    @staticmethod
    def image_split_in(db, image_id: int) -> str:
        """The split an image was imported into (``""``: none), as a caller's transaction sees it."""
        row = db.execute("SELECT split FROM images WHERE id = ?", (int(image_id),)).fetchone()
        return (row[0] if row else "") or ""

    def categories(self) -> dict[int, str]:
        """Category names by id."""
        return {int(i): n for i, n in self._query("SELECT id, name FROM categories ORDER BY id")}

    def event_count(self, action: str) -> int:
        """How many history events of one kind (``review``, ``edit`` ...) there are."""
        return int(self._query("SELECT COUNT(*) FROM events WHERE action = ?", (action,))[0][0])

    def category_id(self, name: str = DEFAULT_CATEGORY, supercategory: str = "") -> int:
        name = " ".join(str(name or DEFAULT_CATEGORY).split())[:MAX_NAME_CHARS] or DEFAULT_CATEGORY
        rows = self._query("SELECT id FROM categories WHERE name = ?", (name,))
        if rows:
            return int(rows[0][0])
        with self._tx() as db:
            db.execute("INSERT INTO categories (name, supercategory) VALUES (?,?) ON CONFLICT(name) DO NOTHING",
                       (name, str(supercategory or "")[:MAX_NAME_CHARS]))
            return int(db.execute("SELECT id FROM categories WHERE name = ?", (name,)).fetchone()[0])

    # --- instances ----------------------------------------------------------------------------

    @staticmethod
    def _insert_instance(db: sqlite3.Connection, image_id: int, mask: np.ndarray | None, category_id: int, source: str,
                         iscrowd: bool = False, instance_id: int | None = None, label: str = "the instance",
                         rle: dict | None = None) -> int:
        """Insert one instance from a mask, or from an exact compressed RLE (``rle``: no decoding)."""
        img = db.execute("SELECT width, height FROM images WHERE id = ?", (image_id,)).fetchone()
        if img is None:
            raise StoreError(f"no image with id {image_id}")
        if rle is not None:
            if list(rle["size"]) != [img[1], img[0]]:
                raise StoreError(f"{label} mask is {rle['size'][1]}x{rle['size'][0]} but the image is {img[0]}x{img[1]}")
            coco = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            area = int(mask_utils.area(coco))
            bbox = [float(v) for v in mask_utils.toBbox(coco)]
        else:
            mask = np.asarray(mask).astype(bool)
            if mask.shape != (img[1], img[0]):
                raise StoreError(f"{label} mask is {mask.shape[1]}x{mask.shape[0]} but the image is {img[0]}x{img[1]}")
            area = int(mask.sum())
            rle = encode_mask(mask) if area else None
            bbox = mask_bbox(mask) if area else []
        if area == 0:
            raise StoreError(f"{label} is empty: draw it, delete it, or mark the expression as no-target")
        if instance_id is not None and db.execute("SELECT 1 FROM instances WHERE id = ?", (instance_id,)).fetchone():
            instance_id = None
        now = time.time()
        cur = db.execute(
            "INSERT INTO instances (id, image_id, category_id, rle, bbox, area, iscrowd, source, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (instance_id, image_id, category_id, json.dumps(rle), json.dumps(bbox), area, int(iscrowd), source, now, now))
        return int(cur.lastrowid)

    insert_instance = _insert_instance  # public: inside a caller's :meth:`transaction`

    def write_image_record(self, db: sqlite3.Connection, file_name: str, width: int, height: int, path: str | None = None,
                           sha256: str | None = None, split: str = "", image_id: int | None = None) -> int:
        """An image known by its record (imports by reference, benches), inside a caller's transaction."""
        cur = db.execute("INSERT INTO images (id, sha256, file_name, original_name, path, split, width, height, created_at) "
                         "VALUES (?,?,?,?,?,?,?,?,?)", (image_id, sha256, safe_file_name(file_name), str(file_name or ""),
                                                         path, split, width, height, time.time()))
        return int(cur.lastrowid)

    def add_instance(self, image_id: int, mask: np.ndarray | None = None, category: str = DEFAULT_CATEGORY,
                     source: str = "manual", rle: dict | None = None, iscrowd: bool = False) -> int:
        cat = self.category_id(category)
        if mask is None:
            if rle is None:
                raise StoreError("an instance needs a mask or an RLE")
            mask = decode_mask(rle)
        with self._tx() as db:
            return self._insert_instance(db, image_id, mask, cat, source, iscrowd)

    def instances(self, image_id: int | None = None) -> list[InstanceRecord]:
        sql = "SELECT id, image_id, category_id, rle, bbox, area, iscrowd, source FROM instances"
        rows = self._query(sql + (" WHERE image_id = ? ORDER BY id" if image_id is not None else " ORDER BY id"),
                           (image_id,) if image_id is not None else ())
        return [InstanceRecord(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], bool(r[6]), r[7]) for r in rows]

    def instance(self, instance_id: int) -> InstanceRecord:
        rows = self._query("SELECT id, image_id, category_id, rle, bbox, area, iscrowd, source FROM instances WHERE id = ?",
                           (int(instance_id),))
        if not rows:
            raise StoreError(f"no instance with id {instance_id}")
        r = rows[0]
        return InstanceRecord(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], bool(r[6]), r[7])

    @staticmethod
    def instance_on_image_in(db, instance_id: int, image_id: int) -> bool:
        """Whether the instance exists and belongs to the image, as a caller's transaction sees it."""
        return db.execute("SELECT 1 FROM instances WHERE id = ? AND image_id = ?",
                          (int(instance_id), int(image_id))).fetchone() is not None

    @staticmethod
    def _drop_orphans(db: sqlite3.Connection, instance_ids: Sequence[int]) -> None:
        """Delete drawn or model-made instances that no ref targets any more (imported ones stay pickable)."""
        for iid in set(instance_ids):
            if db.execute("SELECT 1 FROM ref_instances WHERE instance_id = ? LIMIT 1", (iid,)).fetchone() is None:
                db.execute("DELETE FROM instances WHERE id = ? AND source IN ('annotator', 'model')", (iid,))

    # --- summaries ----------------------------------------------------------------------------

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
            "multi_target_refs": q("SELECT COUNT(*) FROM (SELECT ref_id FROM ref_instances GROUP BY ref_id "
                                   "HAVING COUNT(*) > 1) AS multi"),
            "images_with_refs": q("SELECT COUNT(DISTINCT image_id) FROM refs"),
            "by_split": by_split,
            "by_status": by_status,
        }

    def integrity_check(self) -> str:
        if self.location.is_postgres:  # the server checks its pages itself; the references must hold
            return "ok" if self._query("SELECT COUNT(*) FROM ref_instances ri LEFT JOIN instances i "
                                       "ON i.id = ri.instance_id WHERE i.id IS NULL")[0][0] == 0 else "broken references"
        return str(self._query("PRAGMA integrity_check")[0][0])

    def schema_version(self) -> int:
        if self.location.is_postgres:
            from .pg import pg_version

            with self._rlock:
                return pg_version(self._rdb)
        return int(self._query("PRAGMA user_version")[0][0])

    def snapshot(self) -> Snapshot:
        """A consistent copy of everything (read in one transaction)."""
        with self._rlock:
            self._rdb.execute(self.dialect.read_begin)
            try:
                images = [ImageRecord(*r) for r in self._rdb.execute(
                    "SELECT id, sha256, file_name, path, width, height, original_name, split FROM images ORDER BY id")]
                cats = {r[0]: r[1] for r in self._rdb.execute("SELECT id, name FROM categories ORDER BY id")}
                instances = self.instances()
                refs = self.refs()
            finally:
                self._rdb.execute("COMMIT")
        return Snapshot(images, cats, instances, refs)

    # --- imports ------------------------------------------------------------------------------

    def imported(self, fingerprint: str) -> dict | None:
        """The earlier import of a dataset with this fingerprint, if any."""
        rows = self._query("SELECT id, kind, source, at, summary FROM imports WHERE fingerprint = ?", (fingerprint,))
        if not rows:
            return None
        r = rows[0]
        return {"id": r[0], "kind": r[1], "source": r[2], "at": r[3], "summary": json.loads(r[4])}

    @contextmanager
    def import_transaction(self, fingerprint: str, kind: str, source: str) -> Iterator[sqlite3.Connection]:
        """One transaction for a whole dataset import, refused when the same data was imported before."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM imports WHERE fingerprint = ?", (fingerprint,)).fetchone():
                raise StoreError(f"this {kind} dataset was already imported into this database; nothing was changed")
            yield db
            db.execute("INSERT INTO imports (fingerprint, kind, source, at) VALUES (?,?,?,?)",
                       (fingerprint, kind, source, time.time()))
