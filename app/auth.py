"""Users of a shared studio: ``--auth user:password[:roles]`` (repeatable) or ``--auth-file FILE``.

Roles are ``annotator`` and ``reviewer`` (comma-separated; none given: both). With users, the
signed-in name (Gradio's ``request.username``) is recorded as the author of every save and
every review decision, and only reviewers may accept or reject. Passwords are compared in
constant time and never printed; error messages name the entry by its position only.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("annotator", "reviewer")


class AuthError(ValueError):
    """A malformed ``--auth`` entry or file (the message never contains a password)."""


@dataclass(frozen=True)
class User:
    name: str
    password: str = field(repr=False)
    roles: frozenset[str] = frozenset(ROLES)

    @property
    def reviewer(self) -> bool:
        return "reviewer" in self.roles


def parse_entry(entry: str, where: str) -> User:
    """``user:password`` or ``user:password:role[,role]`` (a password may contain ``:``)."""
    name, sep, rest = entry.strip().partition(":")
    if not sep or not name.strip() or not rest:
        raise AuthError(f"{where} must be user:password or user:password:role")
    roles: frozenset[str] = frozenset(ROLES)
    head, sep2, tail = rest.rpartition(":")
    if sep2 and tail and all(r.strip() in ROLES for r in tail.split(",")):
        rest, roles = head, frozenset(r.strip() for r in tail.split(","))
    if not rest:
        raise AuthError(f"{where} has an empty password")
    if len(name.strip()) > 64 or any(ord(c) < 32 for c in name):
        raise AuthError(f"{where} has an unusable user name")
    return User(name.strip(), rest, roles)


class Users:
    """The accounts of a studio; ``check`` is what Gradio's ``auth=`` calls."""

    def __init__(self, users: list[User]) -> None:
        self._by_name: dict[str, User] = {}
        for u in users:
            if u.name in self._by_name:
                raise AuthError(f"user {u.name!r} is given twice")
            self._by_name[u.name] = u

    @classmethod
    def parse(cls, entries: list[str] | None = None, file: str | Path | None = None) -> "Users | None":
        users = [parse_entry(e, f"--auth entry {i + 1}") for i, e in enumerate(entries or [])]
        if file:
            try:
                lines = Path(file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise AuthError(f"cannot read the --auth-file: {type(exc).__name__}") from None
            for n, line in enumerate(lines, 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    users.append(parse_entry(line, f"--auth-file line {n}"))
        return cls(users) if users else None

    def check(self, username: str, password: str) -> bool:
        user = self._by_name.get(username)
        expected = user.password if user else "\0" * max(1, len(password))
        ok = hmac.compare_digest(expected.encode(), (password or "").encode())
        return bool(user) and ok

    def get(self, name: str | None) -> User | None:
        return self._by_name.get(name or "")

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
