"""Decide only what is on screen: the item a view shows is named by a short key (its id and version)
that the page holds beside it (a hidden textbox); each decision sends the key the page showed when
the key was pressed, and a decision whose key is not the one the server last showed is refused.

With that, a held key, a double tap or a second click while the first is on its way cannot decide
an item the person never saw (the shortcut script of :mod:`app.ui` also ignores repeats and keys
pressed while a decision is in flight).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import gradio as gr

from ..services.errors import Refused


def screen_key(shown: Sequence | None) -> str:
    """The key of what a view shows (``(id, version)`` or ``[id, decision, version]``); empty for nothing."""
    if not shown:
        return ""
    return ":".join("" if v is None else str(v) for v in shown)


def key_of(shown) -> str | dict:
    """The key box's value for what a record shows: :func:`screen_key`, or ``gr.skip()`` where what is
    shown is left as it is (a live timer's record that changes only a counter)."""
    if isinstance(shown, dict) and shown == {"__type__": "update"}:
        return gr.skip()
    return screen_key(shown)


def key_box(elem_id: str) -> gr.Textbox:
    """The hidden textbox that holds the key of the item on screen (the shortcut script reads it too)."""
    return gr.Textbox("", visible="hidden", elem_id=elem_id, show_label=False, container=False, interactive=False)


def require_on_screen(shown: Sequence | None, on_screen: str | None, what: str = "ref") -> None:
    """Refuse a decision sent for another item than the one the server showed last (``on_screen`` None
    or empty: a caller that names none, such as an API client, decides what it was shown last; the
    page always names one)."""
    if not on_screen or on_screen == screen_key(shown):
        return
    now = f"; {what} {shown[0]} is shown now" if shown else ""
    raise Refused(f"this {what} is no longer on screen ({what} {str(on_screen).split(':')[0] or '?'} was sent{now}): "
                  "nothing was decided, look at the one shown and decide again")


def keyed(fn: Callable) -> Callable:
    """``fn`` (a handler whose outputs are a tuple ending with what it shows) with the page's key of it
    appended, for the :func:`key_box` output; the signature stays ``fn``'s (Gradio injects by
    annotation). The views' records carry the key as a field instead (:func:`key_of`)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        return (*out, screen_key(out[-1]))
    return run
