"""Store errors, and OS/SQLite failures turned into messages a user can act on.

Messages never contain server paths: they are shown to remote users.
"""

from __future__ import annotations

import errno
import sqlite3

from ..errors import UserError


class StoreError(UserError, ValueError):
    """A save or lookup that cannot be done, with the reason (a :class:`~app.errors.UserError`)."""


class ConflictError(StoreError):
    """Someone else changed (or deleted) the ref since it was opened."""


class DatabaseBusy(StoreError):
    """The writers' lock was held by someone else longer than the store waits
    (:class:`~app.store.timeouts.DbTimeouts`): nothing was saved, and the person's edit must be kept
    so they can save again; the message names the holder when the database can say it."""


class CommitUnknown(StoreError):
    """The connection broke after COMMIT was sent and before its answer came: the change may or may
    not be stored. Callers that wrote a save key look it up (:meth:`Store.saved_by_key`) to tell."""


class OutcomeUnknown(StoreError):
    """After :class:`CommitUnknown`, the server could not be reached to look the save up: whether it
    was stored is not known (the person is told to reopen and check, never "not saved")."""


def os_error_message(exc: BaseException) -> str:
    """What a failed write means for the user; nothing committed is lost when this is raised."""
    text = str(exc).lower()
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "disk is full" in text or "database or disk is full" in text:
        return "the disk that holds the database is full: nothing was saved. Free some space and save again"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text:
        return "the database is read-only (file permissions or a read-only disk): nothing was saved"
    if "locked" in text or "busy" in text:
        return "the database is busy (another writer held it too long): nothing was saved, try again"
    if "disk i/o error" in text or isinstance(exc, OSError):
        return "a disk error stopped the save: nothing was saved. Check the disk and try again"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"the database refused the change ({type(exc).__name__}): nothing was saved"
    return f"the save failed ({type(exc).__name__}): nothing was saved"
