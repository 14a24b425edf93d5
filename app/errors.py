"""The studio's error roots: :class:`StudioError` for every error the app raises on purpose, and
:class:`UserError` for those a person caused and can act on (a refusal, bad input, a database that
is busy): views show their message as it is, command lines print it as one ``error:`` line. Any
other exception is a bug or the machine, and is logged with its traceback.

The store's errors (:class:`app.store.StoreError`) and the services' (:mod:`app.services.errors`)
are user errors; ``StoreError`` keeps ``ValueError`` as a base so older ``except ValueError`` still work.
"""

from __future__ import annotations


class StudioError(Exception):
    """An error the studio raises on purpose."""


class UserError(StudioError):
    """A refusal or bad input, with a one-line message meant for the person (never a server path)."""
