"""The root of every error ``deris_core`` raises on purpose: :class:`DerisError`.

Each error of the core subclasses it and keeps the built-in base it always had (``ValueError`` for
bad input, ``FileNotFoundError`` for what cannot be fetched or found), so ``except ValueError`` in
callers still works, and ``except DerisError`` catches what the core refused with a one-line reason
(anything else is a bug or the machine: out of memory, a broken driver).
"""

from __future__ import annotations


class DerisError(Exception):
    """An input, a file or a setting the core cannot use; the message says which and why."""
