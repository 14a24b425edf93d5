"""The team's wrong-password counters (table ``sign_in_failures``), so that every studio server on one
database enforces one lock-out: a guesser behind a load balancer gets ``max_failures`` tries per lock
period, not that many per server. The rules are :class:`app.auth.LoginThrottle`'s; this mixin of
:class:`app.store.Store` only keeps its records (wall-clock times: servers share them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockRule:
    """When failures lock a key: ``max_failures`` in a row lock it for ``lock_s``, doubling per new lock up
    to ``max_lock_s``; a key quiet for ``forget_s`` starts again; at most ``max_keys`` are kept."""

    max_failures: int = 5
    lock_s: float = 30.0
    max_lock_s: float = 900.0
    forget_s: float = 3600.0
    max_keys: int = 10_000


class SignInMixin:
    """Sign-in failure records of :class:`~app.store.Store` (see the module docstring)."""

    def sign_in_locked_for(self, names: Sequence[str], now: float) -> float:
        """Seconds until every one of ``names`` (``user:…``, ``addr:…``) may try again (0: now)."""
        if not names:
            return 0.0
        rows = self._query(f"SELECT MAX(locked_until) FROM sign_in_failures WHERE name IN ({','.join('?' * len(names))})",
                           list(names))
        until = rows[0][0] if rows and rows[0][0] is not None else 0.0
        return max(0.0, float(until) - now)

    def sign_in_failed(self, names: Sequence[str], now: float, rule: LockRule) -> dict[str, float]:
        """Count one wrong password for each of ``names`` in one transaction; ``{name: seconds locked}``
        for the names this failure locked."""
        locked: dict[str, float] = {}
        with self._tx() as db:
            db.execute("DELETE FROM sign_in_failures WHERE last < ? AND locked_until <= ?", (now - rule.forget_s, now))
            over = int(db.execute("SELECT COUNT(*) FROM sign_in_failures").fetchone()[0]) - rule.max_keys + len(names)
            if over > 0:  # a flood of made-up names: the oldest unlocked records go
                db.execute("DELETE FROM sign_in_failures WHERE name IN (SELECT name FROM sign_in_failures "
                           "WHERE locked_until <= ? ORDER BY last LIMIT ?)", (now, over))
            for name in names:
                row = db.execute("SELECT failures, locks, last FROM sign_in_failures WHERE name = ?", (name,)).fetchone()
                failures, locks, last = (int(row[0]), int(row[1]), float(row[2])) if row else (0, 0, now)
                if locks and now - last > rule.forget_s:
                    locks = 0
                failures += 1
                until = 0.0
                if failures >= rule.max_failures:
                    locks, failures = locks + 1, 0
                    until = now + min(rule.max_lock_s, rule.lock_s * 2 ** (locks - 1))
                    locked[name] = until - now
                db.execute("INSERT INTO sign_in_failures (name, failures, locks, locked_until, last) VALUES (?,?,?,?,?) "
                           "ON CONFLICT(name) DO UPDATE SET failures = excluded.failures, locks = excluded.locks, "
                           "locked_until = CASE WHEN excluded.locked_until > 0 THEN excluded.locked_until "
                           "ELSE sign_in_failures.locked_until END, last = excluded.last",
                           (name, failures, locks, until, now))
        return locked

    def sign_in_succeeded(self, names: Sequence[str]) -> None:
        """A right password outside a lock: the records of ``names`` are cleared."""
        if names:
            with self._tx() as db:
                db.execute(f"DELETE FROM sign_in_failures WHERE name IN ({','.join('?' * len(names))})", list(names))
