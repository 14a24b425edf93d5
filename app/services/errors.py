"""Errors of the application layer: one line a user can act on (views show them as they are)."""

from __future__ import annotations

from ..store import StoreError


class Refused(StoreError):
    """The action is not allowed to this user on this ref (the permission table says why)."""


class NoModel(StoreError):
    """No model is loaded (the reason is in the message)."""


class BadInput(StoreError):
    """An image, an expression or a choice that cannot be used (the message says why)."""
