"""How long the store waits on the database, and how its connections name themselves.

A person saving must get an answer within seconds, also while another process holds the writers'
lock (a stopped batch job, a hung server): :class:`DbTimeouts` bounds every wait, and
:func:`application_name` makes each PostgreSQL connection say who it is, so that the message of
a save that waited too long can name the holder (``pg_stat_activity.application_name``).

Environment variables (seconds; ``0`` switches a PostgreSQL timeout off):

- ``DERIS_DB_LOCK_WAIT`` (5): how long a save waits for the writers' lock (SQLite's busy timeout,
  PostgreSQL's ``lock_timeout``) before it is answered "the database is busy".
- ``DERIS_DB_BATCH_LOCK_WAIT`` (120): the same for batch commands (``app.dataset``, ``app.curate``),
  which have nobody waiting at a screen.
- ``DERIS_DB_STATEMENT_TIMEOUT`` (60): PostgreSQL ``statement_timeout`` of every statement.
- ``DERIS_DB_IDLE_TX_TIMEOUT`` (120): PostgreSQL ``idle_in_transaction_session_timeout``: the server
  ends a session of ours that sits in an open transaction this long (a stopped or hung process),
  which frees the lock it held for the rest of the team.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from ..settings import environ, get

log = logging.getLogger(__name__)

ENV = {"lock_wait_s": "DERIS_DB_LOCK_WAIT", "statement_s": "DERIS_DB_STATEMENT_TIMEOUT",
       "idle_in_transaction_s": "DERIS_DB_IDLE_TX_TIMEOUT"}
BATCH_ENV = "DERIS_DB_BATCH_LOCK_WAIT"


@dataclass(frozen=True)
class DbTimeouts:
    """Bounds of the store's waits, in seconds (0: no bound, PostgreSQL only)."""

    lock_wait_s: float = 5.0
    statement_s: float = 60.0
    idle_in_transaction_s: float = 120.0

    @staticmethod
    def _env(name: str, default: float, env: dict) -> float:
        raw = env.get(name, "")
        if not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            log.warning("%s=%r is not a number of seconds; using %s", name, raw, default)
            return default
        return value

    @classmethod
    def from_env(cls, env: dict | None = None, batch: bool = False) -> "DbTimeouts":
        """The defaults, overridden by the ``DERIS_DB_*`` variables; ``batch``: a command without a person
        waiting (a longer lock wait)."""
        env = environ() if env is None else env
        base = cls()
        values = {f: cls._env(var, getattr(base, f), env) for f, var in ENV.items()}
        if batch:
            values["lock_wait_s"] = cls._env(BATCH_ENV, 120.0, env)
        return cls(**values)


def role() -> str:
    """What this process is, from its command line: ``studio`` (launch.py), ``curate preannotate``,
    ``dataset migrate``, ... (``DERIS_ROLE`` overrides)."""
    if get("DERIS_ROLE"):
        return get("DERIS_ROLE")
    argv = sys.argv or [""]
    prog = Path(argv[0] or "python")
    if prog.stem == "__main__":
        name = prog.parent.name
        sub = next((a for a in argv[1:] if not a.startswith("-")), "")
        return f"{name} {sub}".strip()
    return "studio" if prog.stem == "launch" else prog.stem or "python"


def application_name() -> str:
    """``deris-studio <role> <host>:<pid>`` (PostgreSQL keeps 63 bytes of it)."""
    text = f"deris-studio {role()} {socket.gethostname()}:{os.getpid()}"
    return text.encode("ascii", "replace").decode()[:63]
