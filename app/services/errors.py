"""Errors of the application layer: one line a user can act on (views show them as they are).

All are :class:`~app.errors.UserError` s (``except UserError`` catches them with the store's), and
none is a store error: a refusal or bad input is the services' word, not the store's. ``Refused``
and ``BadInput`` keep ``ValueError`` as a base for the callers that catch it."""

from __future__ import annotations

from ..errors import UserError


class Refused(UserError, ValueError):
    """The action is not allowed to this user on this ref (the permission table says why)."""


class NoModel(UserError):
    """No model is loaded (the reason is in the message): the services' refusal, not the store's."""


class BadInput(UserError, ValueError):
    """An image, an expression or a choice that cannot be used (the message says why)."""
