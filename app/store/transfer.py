"""The SQL of a whole-store copy (``app.dataset migrate``, orchestrated by :mod:`app.dataset.migrate`).

- :class:`ReadOnlySnapshot` reads a store read-only (SQLite ``mode=ro``; PostgreSQL a ``READ ONLY`` session)
  and in one transaction (PostgreSQL ``REPEATABLE READ``), so every table is read at one moment even
  while a studio saves to it; a database that is no studio store is refused before anything is read.
- :func:`target_problem` looks at a target without creating anything in it: a file or database that
  holds tables of another application is refused.
- :func:`write_copy` writes the rows into the target in one transaction together with the marker
  table :data:`MARKER` (which source is being copied); :func:`finish` drops the marker once the copy
  is checked. A target that still has the marker of the same source is an unfinished migration:
  :func:`write_copy` clears it and copies again, in the same transaction.
- :func:`write_media_file` writes an image file of a SQLite target by atomic rename, and keeps an
  existing file only when its size and hash are the expected ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import StoreError, os_error_message
from .location import DbLocation, redact
from .schema import SCHEMA_VERSION, TABLES, current_version

log = logging.getLogger(__name__)

MARKER = "deris_migration"  # in a target only while a migration into it is unfinished
NOT_COPIED = ("locks", "sign_in_failures")  # held by processes working on the source; a lock-out belongs to its database
PG_ONLY_TABLES = ("deris_schema", "media")


def table_columns(ddl: str = TABLES) -> dict[str, list[str]]:
    """``{table: [column, ...]}`` of the schema's ``CREATE TABLE`` statements, in their order (parents first)."""
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", ddl, re.DOTALL):
        cols = []
        for line in body.strip().splitlines():
            word = line.strip().split(" ", 1)[0]
            if word and word.upper() not in ("PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT"):
                cols.append(word)
        out[name] = cols
    return out


def copied_tables() -> dict[str, list[str]]:
    """The tables a migration copies (every studio table but :data:`NOT_COPIED`), parents first."""
    return {t: c for t, c in table_columns().items() if t not in NOT_COPIED}


AUTOINCREMENT = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \(\s*id INTEGER PRIMARY KEY AUTOINCREMENT", TABLES))
STUDIO_TABLES = frozenset(table_columns()) | set(PG_ONLY_TABLES) | {MARKER}


def source_identity(loc: DbLocation) -> str:
    """Names one store across runs (recorded in a target's marker): the absolute file path, or the URL
    without its password."""
    return str(loc.path.resolve()) if loc.path is not None else redact(loc.url or "")


def _quoted(cols: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in cols)


class ReadOnlySnapshot:
    """One read-only, consistent view of a studio store: every read until :meth:`close` sees the moment
    of the first one. Refuses (StoreError) a missing file, a database that is no studio store, and a
    store of another schema version, before reading anything."""

    def __init__(self, loc: DbLocation) -> None:
        self.loc = loc
        if loc.is_postgres:
            self._open_postgres()
        else:
            self._open_sqlite()

    def _open_sqlite(self) -> None:
        path = self.loc.path
        if not path.is_file():
            raise StoreError(f"database not found: {self.loc.shown}")
        try:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=30)
            version = current_version(self._db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.loc.shown} is not a studio store ({exc}): check the file name") from None
        self._check_version(version)
        self._db.execute("BEGIN")  # WAL: the first read fixes the snapshot of the whole transaction

    def _open_postgres(self) -> None:
        import psycopg

        from .pg import PgConnection, pg_version

        self._db = PgConnection(self.loc)
        try:
            self._db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            version = pg_version(self._db)
        except psycopg.Error as exc:
            self._db.close()
            raise StoreError(f"cannot read {self.loc.shown}: {exc}".splitlines()[0]) from None
        try:
            self._check_version(version)
        except StoreError:
            self._db.close()
            raise
        self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _check_version(self, version: int) -> None:
        if version == 0:
            what = "no deris_schema table" if self.loc.is_postgres else "no studio tables"
            raise StoreError(f"{self.loc.shown} is not a studio store ({what}): check the name; nothing was read or "
                             "written")
        if version != SCHEMA_VERSION:
            how = ("open it once with this studio (that upgrades it), then migrate" if version < SCHEMA_VERSION
                   else "it was made by a newer DeRIS Studio: upgrade this one")
            raise StoreError(f"{self.loc.shown} has schema {version}, this studio copies schema {SCHEMA_VERSION}: {how}")

    def _q(self, sql: str, args: Sequence = ()) -> list[tuple]:
        from .dialect import PostgresDialect, SqliteDialect

        dialect = PostgresDialect() if self.loc.is_postgres else SqliteDialect()
        try:
            return [tuple(r) for r in self._db.execute(sql, args).fetchall()]
        except dialect.db_errors + (sqlite3.DatabaseError,) as exc:
            raise StoreError(f"reading {self.loc.shown} failed: "
                             + dialect.message(exc).replace("nothing was saved", "nothing was copied")) from None

    def rows(self, table: str, cols: Sequence[str]) -> list[tuple]:
        """Every row of ``table`` (these columns, in this order), ordered by the first column."""
        return self._q(f"SELECT {_quoted(cols)} FROM {table} ORDER BY 1")

    def last_id(self, table: str) -> int:
        """The largest id ``table`` ever gave (0: unknown; the rows' largest id then stands for it)."""
        if self.loc.is_postgres:
            rows = self._q(f"SELECT last_value, is_called FROM {table}_id_seq")
            return int(rows[0][0]) if rows and rows[0][1] else 0
        if table not in AUTOINCREMENT:
            return 0
        rows = self._q("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        return int(rows[0][0]) if rows else 0

    def image_bytes(self, image_id: int, path: str | None) -> bytes | None:
        """An image's file bytes: PostgreSQL's ``media`` row (in this snapshot), a SQLite store's file."""
        if self.loc.is_postgres:
            rows = self._q("SELECT data FROM media WHERE image_id = ?", (image_id,))
            return bytes(rows[0][0]) if rows else None
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def close(self) -> None:
        try:
            self._db.execute("ROLLBACK")  # a read-only transaction: nothing to keep
        except Exception as exc:  # noqa: BLE001 - sqlite3's or psycopg's error, or a broken socket: closing anyway
            log.debug("ending the read transaction of %s: %s", self.loc.shown, exc, exc_info=True)
        self._db.close()

    def __enter__(self) -> ReadOnlySnapshot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def target_problem(loc: DbLocation) -> str | None:
    """Why ``loc`` cannot receive a copy (None: it may), found without creating anything in it: a file
    that is no SQLite database, or tables of another application."""
    if loc.is_postgres:
        from .pg import PgConnection

        conn = PgConnection(loc)
        try:
            names = {r[0] for r in conn.execute("SELECT tablename FROM pg_catalog.pg_tables "
                                                "WHERE schemaname = current_schema()").fetchall()}
        finally:
            conn.close()
    else:
        if not loc.path.exists() or loc.path.is_file() and loc.path.stat().st_size == 0:
            return None
        if not loc.path.is_file():
            return f"the target {loc.shown} is not a file"
        try:
            db = sqlite3.connect(f"{loc.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            return f"the target {loc.shown} is not a SQLite database ({exc})"
        names = {n for n in names if not n.startswith("sqlite_")}
    foreign = sorted(names - STUDIO_TABLES)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        return (f"the target {loc.shown} holds tables of another application ({shown}): migrate into a new "
                "database or file")
    return None


def unfinished_source(store) -> str | None:
    """The source whose migration into ``store`` has not finished (its marker), or None."""
    if store.location.is_postgres:
        found = store.read("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE tablename = ? "
                           "AND schemaname = current_schema()", (MARKER,))[0][0]
    else:
        found = store.read("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (MARKER,))[0][0]
    if not found:
        return None
    rows = store.read(f"SELECT source FROM {MARKER}")
    return str(rows[0][0]) if rows else ""


def row_counts(store, tables: Iterable[str]) -> dict[str, int]:
    """``{table: rows}`` of ``store``."""
    return {t: int(store.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}


def write_copy(store, source: str, rows: dict[str, list[tuple]], tops: dict[str, int],
               media: Callable[[int], bytes | None] | None = None, clear: bool = False) -> None:
    """The source's ``rows`` (``{table: rows}`` in :func:`copied_tables` order and columns) into ``store``
    in one transaction, with the marker naming ``source``; ``tops``: the largest id each table ever gave
    (the target's ids continue after it); ``media``: the image bytes (PostgreSQL targets); ``clear``: the
    target holds an unfinished copy of the same source, deleted first. A failure leaves the target as it was."""
    tables = copied_tables()
    pg = store.location.is_postgres
    with store.transaction() as db:
        if clear:
            for table in reversed(list(tables)):
                db.execute(f"DELETE FROM {table}")
        db.execute(f"CREATE TABLE IF NOT EXISTS {MARKER} (source TEXT NOT NULL, started_at TEXT NOT NULL)")
        db.execute(f"DELETE FROM {MARKER}")
        db.execute(f"INSERT INTO {MARKER} (source, started_at) VALUES (?, ?)",
                   (source, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())))
        for table, cols in tables.items():
            db.executemany(f"INSERT INTO {table} ({_quoted(cols)}) VALUES ({','.join('?' * len(cols))})", rows[table])
            if table == "images" and pg and media is not None:
                for r in rows[table]:
                    data = media(r[0])
                    if data is not None:
                        store.write_media(db, r[0], data)
        for table, top in tops.items():  # the ids each table ever gave move with the data
            if not top:
                continue
            if pg:
                db.execute(f"SELECT setval('{table}_id_seq', ?)", (top,))
            elif table in AUTOINCREMENT:
                if db.execute("SELECT 1 FROM sqlite_sequence WHERE name = ?", (table,)).fetchone():
                    db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (top, table))
                else:
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, top))
    log.info("copied %s rows from %s into %s", sum(len(r) for r in rows.values()), source, store.location.shown)


def finish(store) -> None:
    """The copy is checked: drop the marker (the target is an ordinary store from now on)."""
    with store.transaction() as db:
        db.execute(f"DROP TABLE IF EXISTS {MARKER}")


def media_count(store) -> int:
    """How many images of ``store`` have their bytes stored (PostgreSQL) or a file path (SQLite)."""
    if store.location.is_postgres:
        return int(store.read("SELECT COUNT(*) FROM media")[0][0])
    return int(store.read("SELECT COUNT(*) FROM images WHERE path IS NOT NULL AND path != ''")[0][0])


def write_media_file(folder: Path, name: str, data: bytes) -> Path:
    """``data`` as ``folder/name``: a file already there is kept only when its size and SHA-256 match
    (a file cut by a killed run is written again); written under a temporary name in the same folder,
    then renamed, so no reader ever sees a part of it."""
    path = folder / name
    try:
        if path.is_file() and path.stat().st_size == len(data) and \
                hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest():
            return path
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StoreError(f"cannot write the image file {name}: {os_error_message(exc)}") from None
    return path


def _what(table: str, cols: Sequence[str], row: tuple, col: str) -> str:
    """A row named for a person: the ref and sentence ids where the row belongs to a ref."""
    get = dict(zip(cols, row)).get
    if table == "sentences":
        return f"ref {get('ref_id')}, sentence {get('id')}"
    if table == "refs":
        return f"ref {get('id')}, {col}"
    owner = f" (ref {get('ref_id')})" if get("ref_id") is not None else ""
    key = f"id {get('id')}" if "id" in cols else f"ref {get('ref_id')}"
    return f"{table} {key}{owner}, {col}"


def pg_unstorable(rows: dict[str, list[tuple]]) -> list[str]:
    """Each value PostgreSQL cannot store (a NUL character in text), named by row: what is wrong."""
    out: list[str] = []
    for table, cols in copied_tables().items():
        for row in rows.get(table, ()):
            for col, value in zip(cols, row):
                if isinstance(value, str) and "\x00" in value:
                    shown = value.replace("\x00", "\\x00")
                    shown = shown if len(shown) <= 60 else shown[:57] + "..."
                    out.append(f"{_what(table, cols, row, col)}: {shown!r} holds a NUL character (\\x00), which "
                               "PostgreSQL cannot store in text")
    return out


def rows_digest(cols: Sequence[str], rows: Iterable[tuple], skip: Sequence[str] = ("path",)) -> str:
    """A hash of ``rows`` (any order) that is the same for the same values read from either backend;
    ``skip``: columns that legitimately differ between a store and its copy (where the files are)."""
    keep = [i for i, c in enumerate(cols) if c not in skip]

    def norm(v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v).hex()
        return v

    lines = sorted(repr(tuple(norm(r[i]) for i in keep)) for r in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogatepass")).hexdigest()
