"""The SQL that differs between SQLite and PostgreSQL, in one place.

The store's statements are written once, in the portable subset (``?`` placeholders, ``INSERT …
ON CONFLICT``, quoted ``"user"``, aliased sub-queries, ``CASE`` instead of boolean sums); what
cannot be is asked of the store's dialect: joined sentences, substring search, case-insensitive
``LIKE``, the last id a table ever gave, and how errors read. :mod:`app.store.pg` turns the
portable statements into PostgreSQL's (placeholders, ``RETURNING id`` for ``lastrowid``, ids
given explicitly moving the sequence on).
"""

from __future__ import annotations

import sqlite3

from .errors import StoreError, os_error_message


class SqliteDialect:
    """SQLite (the default backend): one file, ``BEGIN IMMEDIATE`` serialises writers."""

    name = "sqlite"
    like = "LIKE"  # case-insensitive for ASCII in SQLite
    read_begin = "BEGIN"
    db_errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError, OSError)

    @staticmethod
    def joined_sentences(ref: str) -> str:
        """A ref's sentences in order, joined by `` | `` (a scalar sub-query on ``ref``, a column)."""
        return (f"(SELECT group_concat(raw, ' | ') FROM (SELECT raw FROM sentences WHERE ref_id = {ref} "
                "ORDER BY position))")

    @staticmethod
    def instr(haystack: str, needle: str) -> str:
        """1-based position of ``needle`` in ``haystack`` (0: absent)."""
        return f"instr({haystack}, {needle})"

    @staticmethod
    def last_id(db, table: str) -> int | None:
        """The largest id ``table`` (an AUTOINCREMENT one) ever gave, even to rows deleted since."""
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def message(exc: BaseException) -> str:
        return os_error_message(exc)


class PostgresDialect(SqliteDialect):
    """PostgreSQL: several servers on one database; writers serialised by one advisory lock."""

    name = "postgresql"
    like = "ILIKE"  # as SQLite's LIKE: the file-name filter ignores case
    read_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self) -> None:
        import psycopg

        self.db_errors = (psycopg.Error, OSError)

    @staticmethod
    def joined_sentences(ref: str) -> str:
        return f"(SELECT string_agg(raw, ' | ' ORDER BY position) FROM sentences WHERE ref_id = {ref})"

    @staticmethod
    def instr(haystack: str, needle: str) -> str:
        return f"strpos({haystack}, {needle})"

    @staticmethod
    def last_id(db, table: str) -> int | None:
        row = db.execute(f"SELECT last_value, is_called FROM {table}_id_seq").fetchone()
        return int(row[0]) if row and row[1] else None

    @staticmethod
    def message(exc: BaseException) -> str:
        return pg_error_message(exc)


def pg_error_message(exc: BaseException) -> str:
    """What a failed PostgreSQL write means for the user (one line; never the URL or its password)."""
    import psycopg
    from psycopg import errors as e

    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, (e.DiskFull, e.OutOfMemory)) or "no space left" in str(exc).lower():
        return "the disk of the database server is full: nothing was saved. Free some space there and save again"
    if isinstance(exc, (e.ReadOnlySqlTransaction, e.InsufficientPrivilege)):
        return "the database is read-only for this account (privileges, or a standby server): nothing was saved"
    if isinstance(exc, (e.LockNotAvailable, e.QueryCanceled, e.DeadlockDetected, e.SerializationFailure)):
        return "the database is busy (another writer held it too long): nothing was saved, try again"
    if isinstance(exc, (e.AdminShutdown, e.CrashShutdown, e.CannotConnectNow)) or \
            isinstance(exc, psycopg.OperationalError) and "connection" in str(exc).lower():
        return "the connection to the database server was lost: nothing was saved, try again"
    if isinstance(exc, OSError):
        return os_error_message(exc)
    if isinstance(exc, psycopg.Error):
        return f"the database refused the change ({type(exc).__name__}): nothing was saved"
    return f"the save failed ({type(exc).__name__}): nothing was saved"
