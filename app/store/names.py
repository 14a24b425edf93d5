"""File names that came from outside (uploads, datasets) made safe to store and export.

A stored ``file_name`` is a single path component of letters, digits, ``.``, ``_`` and
``-`` that never starts with a dot; the name as given is kept as ``original_name``.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str | None, fallback: str = "image.png") -> str:
    """One safe path component derived from ``name`` (its last component, ASCII-folded)."""
    raw = str(name or "").replace("\\", "/").split("/")[-1]
    raw = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    safe = _UNSAFE.sub("_", raw).strip("._-")
    if not safe:
        return fallback
    if len(safe) > MAX_NAME:
        stem, dot, ext = safe.rpartition(".")
        ext = ext if dot and len(ext) <= 8 else ""
        safe = safe[: MAX_NAME - len(ext) - 1].rstrip("._-") + ("." + ext if ext else "")
    return safe


def display_name(name: str) -> str:
    """A name from the file system or a dataset as storable, printable text: bytes that were not UTF-8
    (Python's lone surrogates) and control characters become ``\\xNN`` escapes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if _escapable(name) \
            else name.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in name)


def _escapable(name: str) -> bool:
    try:
        name.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def control_character(text: str) -> str | None:
    """The first control character of ``text`` as ``U+XXXX`` (None when it has none; tab, newline and
    carriage return are whitespace, not refused). PostgreSQL cannot store NUL in text at all and the
    others are invisible in every view, so the studio takes them on neither backend."""
    for c in text:
        if c not in "\t\n\r" and unicodedata.category(c) == "Cc":
            return f"U+{ord(c):04X}" + (" (NUL)" if c == "\0" else "")
    return None


def not_utf8(name: str) -> bool:
    """True for a name that cannot be stored as UTF-8 text as it is (a lone surrogate)."""
    try:
        name.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def relative_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be read as a path inside a dataset's image folder (None if it can)."""
    if not isinstance(name, str) or not name.strip():
        return "file_name must be a non-empty string"
    if not_utf8(name):
        return f"file_name {display_name(name)[:200]!r} is not valid Unicode (a lone surrogate)"
    if "\x00" in name or any(ord(c) < 32 for c in name):
        return "file_name contains control characters"
    if "\\" in name:
        return "file_name contains a backslash"
    p = PurePosixPath(name)
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "file_name is an absolute path"
    if ".." in p.parts:
        return "file_name leaves the image folder ('..')"
    if len(name) > 1024:
        return "file_name is longer than 1024 characters"
    return None


def unique_names(names: dict[int, str]) -> dict[int, str]:
    """Make safe names unique (case-insensitively): a clash gets ``-<id>`` before the extension."""
    out: dict[int, str] = {}
    taken: set[str] = set()
    for key in sorted(names):
        name = safe_file_name(names[key])
        if name.lower() in taken:
            stem, dot, ext = name.rpartition(".")
            base, ext = (stem, "." + ext) if dot and stem else (name, "")
            name = f"{base}-{key}{ext}"
            n = 2
            while name.lower() in taken:
                name, n = f"{base}-{key}-{n}{ext}", n + 1
        taken.add(name.lower())
        out[key] = name
    return out
