"""Users of a shared studio: ``--auth user:password[:roles]`` (repeatable) or ``--auth-file FILE``.

Roles are ``annotator`` and ``reviewer`` (comma-separated; none given: both). An entry with
two or more ``:`` always ends with its roles (so a password may contain ``:`` only when the
roles follow it), and an unknown role is refused at start: a misspelt role never becomes part
of a password. An ``--auth-file`` may have a byte-order mark and CRLF line ends; a malformed
line is refused with its number. With users, the signed-in name (Gradio's
``request.username``) is recorded as the author of every save and every review decision, and
only reviewers may accept or reject. Passwords are compared in constant time and never printed;
error messages name the entry by its position only.

Wrong passwords are limited (:class:`LoginThrottle`): after ``max_failures`` wrong passwords in
a row for one account, or from one address, that account or address is locked for a while
(doubling on every new lock); while locked even the right password is refused, with HTTP 429
and a message saying how long to wait. Gradio passes only the user name and password to the
``auth=`` callable, so the client address comes from a small ASGI middleware
(:class:`ClientAddress`) that :func:`gradio_auth_kwargs` installs through ``app_kwargs``.
With :meth:`Users.share_with` a store the counters live in its database (table
``sign_in_failures``), so every server of a team enforces one lock-out.
"""

from __future__ import annotations

import contextvars
import difflib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError

ROLES = ("annotator", "reviewer", "operator")  # see app.services.permissions for what each may do
DEFAULT_ROLES = ("annotator", "reviewer")  # an entry that names no role
MAX_NAME = 64
log = logging.getLogger(__name__)


class AuthError(UserError, ValueError):
    """A malformed ``--auth`` entry or file (the message never contains a password)."""


@dataclass(frozen=True)
class User:
    name: str
    password: str = field(repr=False)
    roles: frozenset[str] = frozenset(DEFAULT_ROLES)

    @property
    def reviewer(self) -> bool:
        return "reviewer" in self.roles


def _roles(text: str, where: str) -> frozenset[str]:
    """The roles of an entry's last ``:`` field (AuthError naming no password part otherwise)."""
    parts = [r.strip() for r in text.split(",")]
    bad = [r for r in parts if r not in ROLES]
    if not bad:
        return frozenset(parts)
    hint = difflib.get_close_matches(bad[0].lower(), ROLES, n=1, cutoff=0.6)
    raise AuthError(f"{where}: unknown role in the last ':' field" + (f" (did you mean {hint[0]}?)" if hint else "")
                    + f"; roles are {', '.join(ROLES)} (a password containing ':' must be followed by its roles)")


def parse_entry(entry: str, where: str) -> User:
    """``user:password`` or ``user:password:role[,role]`` (a password with ``:`` needs the roles after it)."""
    entry = entry.replace("\ufeff", "").strip()
    name, sep, rest = entry.partition(":")
    name = name.strip()
    if not sep or not name or not rest:
        raise AuthError(f"{where} must be user:password or user:password:role")
    if name.lower().startswith(("consensus", "model")):
        raise AuthError(f"{where}: user names starting with 'consensus' or 'model' are kept for the studio's own "
                        "refs (agreement --merge, pre-annotation); choose another name")
    roles: frozenset[str] = frozenset(DEFAULT_ROLES)
    if ":" in rest:
        rest, _, tail = rest.rpartition(":")
        if not tail.strip():
            raise AuthError(f"{where} ends with ':' but names no role; roles are {', '.join(ROLES)}")
        roles = _roles(tail, where)
    if not rest:
        raise AuthError(f"{where} has an empty password")
    if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 or c.isspace() for c in name):
        raise AuthError(f"{where} has an unusable user name (at most {MAX_NAME} characters, no spaces or control characters)")
    if any(ord(c) < 32 and c != "\t" for c in rest):
        raise AuthError(f"{where} has a control character in the password")
    return User(name, rest, roles)


class Users:
    """The accounts of a studio; ``check`` is what Gradio's ``auth=`` calls."""

    def __init__(self, users: list[User], wheres: list[str] | None = None) -> None:
        self._by_name: dict[str, User] = {}
        self.throttle = LoginThrottle()
        self._check_lock = threading.Lock()
        for n, u in enumerate(users):
            if u.name in self._by_name:
                where = f" ({wheres[n]})" if wheres and n < len(wheres) else ""
                raise AuthError(f"user {u.name!r} is given twice{where}")
            self._by_name[u.name] = u

    @classmethod
    def parse(cls, entries: list[str] | None = None, file: str | Path | None = None) -> "Users | None":
        wheres = [f"--auth entry {i + 1}" for i in range(len(entries or []))]
        users = [parse_entry(e, w) for e, w in zip(entries or [], wheres)]
        if file:
            try:
                text = Path(file).read_bytes().decode("utf-8-sig")  # a byte-order mark is not part of the first name
            except OSError as exc:
                raise AuthError(f"cannot read the --auth-file: {type(exc).__name__}") from None
            except UnicodeDecodeError as exc:
                line = Path(file).read_bytes()[: exc.start].count(b"\n") + 1
                raise AuthError(f"--auth-file line {line} is not UTF-8 text") from None
            found = 0
            for n, line in enumerate(text.splitlines(), 1):  # \n, \r\n and \r line ends
                if line.strip() and not line.lstrip().startswith("#"):
                    wheres.append(f"--auth-file line {n}")
                    users.append(parse_entry(line, wheres[-1]))
                    found += 1
            if not found:
                raise AuthError("the --auth-file has no accounts (lines user:password[:roles]); "
                                "without accounts the studio would be open to anyone")
        return cls(users, wheres) if users else None

    def share_with(self, store) -> None:
        """Keep the wrong-password counters in ``store``'s database: every server on it shares one lock-out."""
        t = self.throttle
        self.throttle = LoginThrottle(t.max_failures, t.lock_s, t.max_lock_s, t.forget_s, t.max_keys, store=store)

    def check(self, username: str, password: str) -> bool:
        """Gradio's ``auth=`` hook: the password check, behind the wrong-password limit (HTTP 429 when locked)."""
        address = client_address()
        with self._check_lock:  # the lock test and the failure count are one step, whatever the concurrency
            return self._check(username, password, address)

    def _check(self, username: str, password: str, address: str) -> bool:
        wait = self.throttle.locked_for(username, address)
        if wait > 0:
            from fastapi import HTTPException

            log.warning("sign-in refused while locked: account %r, address %s", username[:MAX_NAME], address or "?")
            raise HTTPException(status_code=429, detail=f"too many wrong passwords for this account or from this "
                                                        f"address: try again in {int(wait) + 1} s")
        user = self._by_name.get(username)
        expected = user.password if user else "\0" * max(1, len(password or ""))
        ok = hmac.compare_digest(expected.encode(), (password or "").encode()) and user is not None
        if ok:
            self.throttle.succeeded(username, address)
        else:
            self.throttle.failed(username, address)
        return ok

    def get(self, name: str | None) -> User | None:
        return self._by_name.get(name or "")

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


@dataclass
class _Record:
    failures: int = 0
    locks: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Wrong-password limit per account and per address: ``max_failures`` in a row lock the key for
    ``lock_s`` seconds, doubling with every further lock up to ``max_lock_s``; a right password
    (outside a lock) clears the account's and the address's record. Keys quiet for ``forget_s``
    are forgotten, and at most ``max_keys`` are kept (a flood of made-up names cannot fill memory).

    With a ``store`` the records are kept in its database (:mod:`app.store.sign_in`, wall-clock
    times) and shared by every process on it; when the database cannot be reached the records of
    this process stand in (logged), so sign-in never fails for that reason alone."""

    def __init__(self, max_failures: int = 5, lock_s: float = 30.0, max_lock_s: float = 900.0,
                 forget_s: float = 3600.0, max_keys: int = 10_000, clock: Callable[[], float] | None = None,
                 store=None) -> None:
        self.max_failures, self.lock_s, self.max_lock_s = max_failures, lock_s, max_lock_s
        self.forget_s, self.max_keys, self.store = forget_s, max_keys, store
        self.clock = clock or (time.time if store is not None else time.monotonic)
        self._keys: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def _rule(self):
        from .store.sign_in import LockRule

        return LockRule(self.max_failures, self.lock_s, self.max_lock_s, self.forget_s, self.max_keys)

    def _shared(self, what: str, fn: Callable):
        """``fn()`` on the store; None (and a log line) when the database fails, so the local records answer."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - StoreError or a driver error: sign-in must still answer
            log.debug("sign-in counters: %s", what, exc_info=True)
            log.warning("the sign-in counters could not be %s in the database (%s); this server's own count is used",
                        what, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None

    @staticmethod
    def _names(username: str, address: str) -> list[str]:
        return [f"user:{(username or '')[:MAX_NAME]}"] + ([f"addr:{address}"] if address else [])

    def locked_for(self, username: str, address: str = "") -> float:
        """Seconds until this account and address may try again (0: now)."""
        now = self.clock()
        if self.store is not None:
            shared = self._shared("read", lambda: self.store.sign_in_locked_for(self._names(username, address), now))
            if shared is not None:
                return max(shared, self._local_locked_for(username, address, now))
        return self._local_locked_for(username, address, now)

    def _local_locked_for(self, username: str, address: str, now: float) -> float:
        with self._lock:
            return max([0.0] + [r.locked_until - now for k in self._names(username, address)
                                if (r := self._keys.get(k)) is not None])

    def failed(self, username: str, address: str = "") -> None:
        now = self.clock()
        if self.store is not None:
            locked = self._shared("written", lambda: self.store.sign_in_failed(self._names(username, address), now,
                                                                              self._rule()))
            if locked is not None:
                for k, s in locked.items():
                    log.warning("%d wrong passwords in a row for %s: locked for %.0f s (for every server of the team)",
                                self.max_failures, k, s)
                return
        with self._lock:
            self._prune(now)
            for k in self._names(username, address):
                r = self._keys.setdefault(k, _Record())
                if r.locks and now - r.last > self.forget_s:
                    r.locks = 0
                r.failures, r.last = r.failures + 1, now
                if r.failures >= self.max_failures:
                    r.locks += 1
                    r.failures = 0
                    r.locked_until = now + min(self.max_lock_s, self.lock_s * 2 ** (r.locks - 1))
                    log.warning("%d wrong passwords in a row for %s: locked for %.0f s", self.max_failures, k,
                                r.locked_until - now)

    def succeeded(self, username: str, address: str = "") -> None:
        if self.store is not None:
            self._shared("cleared", lambda: self.store.sign_in_succeeded(self._names(username, address)))
        with self._lock:
            for k in self._names(username, address):
                self._keys.pop(k, None)

    def _prune(self, now: float) -> None:
        if len(self._keys) < self.max_keys:
            return
        for k in [k for k, r in self._keys.items() if now - r.last > self.forget_s and r.locked_until <= now]:
            del self._keys[k]
        while len(self._keys) >= self.max_keys:  # still full: the oldest unlocked record goes
            free = [k for k, r in self._keys.items() if r.locked_until <= now]
            del self._keys[min(free or self._keys, key=lambda k: self._keys[k].last)]


_CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("deris_client_address", default="")


def client_address() -> str:
    """The address of the HTTP client whose request is being handled ('' outside a request)."""
    return _CLIENT.get()


class ClientAddress:
    """ASGI middleware: remembers each request's client address for :meth:`Users.check`
    (behind a local reverse proxy uvicorn already puts the forwarded address there)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        token = _CLIENT.set(str(client[0]) if client else "")
        try:
            await self.app(scope, receive, send)
        finally:
            _CLIENT.reset(token)


def gradio_auth_kwargs(users: Users | None) -> dict:
    """What ``Blocks.launch`` needs for sign-in with the wrong-password limit ({} without users)."""
    if users is None:
        return {}
    from starlette.middleware import Middleware

    t = users.throttle
    return {"auth": users.check, "app_kwargs": {"middleware": [Middleware(ClientAddress)]},
            "auth_message": f"After {t.max_failures} wrong passwords in a row an account (and the address they came "
                            f"from) is locked for {int(t.lock_s)} s, longer each time."}
