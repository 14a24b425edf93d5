"""Where a store lives: a SQLite file (a path) or a PostgreSQL database (a ``postgresql://`` URL).

``--db`` of every command and ``launch.py`` goes through :func:`parse_db`: a value with a URL
scheme is never taken for a path (``postgresql:`` would otherwise become a folder), and what is
shown of a URL (:attr:`DbLocation.shown`) never contains its password.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..settings import environ
from .errors import StoreError

PG_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
ENV_URL = "DERIS_DB_URL"
DB_HELP = f"a SQLite file, or a PostgreSQL URL postgresql://user@host:5432/name (default: ${ENV_URL})"


@dataclass(frozen=True)
class DbLocation:
    """A parsed ``--db``: ``kind`` is ``sqlite`` (``path`` set) or ``postgresql`` (``url`` set)."""

    kind: str
    path: Path | None = None
    url: str | None = field(default=None, repr=False)  # may hold a password: never in a repr

    def __repr__(self) -> str:
        return f"DbLocation({self.kind!r}, {self.shown!r})"

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgresql"

    @property
    def shown(self) -> str:
        """What logs and messages may show: the file name, or the URL without its password."""
        return self.path.name if self.path is not None else redact(self.url or "")

    @property
    def key(self) -> str:
        """A file-name-safe name of the database (for local caches): ``host_port_dbname``."""
        if self.path is not None:
            return self.path.stem
        u = urlsplit(self.url or "")
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{u.hostname or 'local'}_{u.port or 5432}_{u.path.lstrip('/') or 'db'}")


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
# what a mistyped URL looks like: a PostgreSQL scheme word followed by ':' or '/' (``postgresql//``,
# ``postgres:/``, ``postgresql:user@``), a '://' anywhere, or credentials (``user:password@host``)
_PG_WORD = re.compile(r"^(postgres(ql)?)[:/\\]", re.IGNORECASE)
_CREDENTIALS = re.compile(r"^[^/\\]*:[^@]*@[^/\\]+")


def looks_like_url(text: str) -> bool:
    """Whether ``text`` was meant as a database URL (then it is never taken for a file path)."""
    return bool(_SCHEME.match(text) or _PG_WORD.match(text) or "://" in text or _CREDENTIALS.match(text))


def mask_password(text: str) -> str:
    """Any text that may hold a URL's password, with it masked: a parsed URL as :func:`redact`
    does; otherwise everything between the leading scheme-like word and the last ``@``."""
    if _SCHEME.match(text):
        return redact(text)
    if "@" not in text:
        return _QUERY_PASSWORD.sub(r"\1***", text)
    word = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*", text)
    return f"{word.group(0) if word else ''}...***@{_QUERY_PASSWORD.sub(chr(92) + '1***', text.rsplit('@', 1)[1])}"


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``: the one of the user part (up to the last ``@``,
    so an unencoded ``@`` or ``/`` in it is covered too) and a ``password=`` parameter. A value that is
    no ``scheme://`` URL (a typo such as ``postgresql:/u:pw@h/db``) shows its scheme only."""
    m = _SCHEME.match(url)
    if m is None:
        return mask_password(url)
    head, rest = url[: m.end()], url[m.end():]
    if "@" in rest:
        userinfo, host = rest.rsplit("@", 1)
        if ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return head + _QUERY_PASSWORD.sub(r"\1***", rest)


def parse_db(spec: str | os.PathLike | DbLocation | None, env: dict | None = None) -> DbLocation:
    """A ``--db`` value as a location; None falls back to ``$DERIS_DB_URL``. StoreError for a URL of
    another scheme or a PostgreSQL URL without a database name (never naming the password)."""
    if isinstance(spec, DbLocation):
        return spec
    if spec is None or str(spec) == "":
        spec = (environ() if env is None else env).get(ENV_URL) or None
        if spec is None:
            raise StoreError(f"no database given (--db PATH or --db postgresql://..., or {ENV_URL})")
    if isinstance(spec, os.PathLike):
        return DbLocation("sqlite", Path(spec))
    text = str(spec).strip()
    m = _SCHEME.match(text)
    if m is None:
        if looks_like_url(text):  # a typo must never become a SQLite file (the password a folder name)
            raise StoreError(f"{mask_password(text)!r} looks like a database URL but does not parse as one: "
                             "write postgresql://user:password@host:5432/name")
        return DbLocation("sqlite", Path(text))
    scheme = m.group(1).lower()
    if scheme == "sqlite":  # sqlite:///abs/path or sqlite://relative
        return DbLocation("sqlite", Path(unquote(text[len("sqlite://"):])))
    if scheme not in PG_SCHEMES:
        raise StoreError(f"unsupported database URL scheme {scheme!r}: give a SQLite file path or a postgresql:// URL")
    try:
        u = urlsplit(text)
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise StoreError(f"{redact(text)!r} is not a valid PostgreSQL URL "
                         "(postgresql://user@host:5432/name)") from None
    if not u.path.strip("/"):
        raise StoreError(f"{redact(text)} names no database: write postgresql://user@host:5432/name")
    return DbLocation("postgresql", url=text)
