"""What the studio's shell owns and hands to every view: the session state, who is working (the
name box, or the signed-in line), the model line, and the events to run when a page loads; and
:func:`bind`, which attaches a module-level handler ``fn(services, inputs...)`` to an event.

A view's ``wire`` gets its own layout dataclass and this shell, never another view's widgets;
the few links between views (the Dataset tab's *Open* fills the Annotate tab) are made by
:mod:`app.ui`, through the same handlers and services.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from ..services import UserError


@dataclass
class Shell:
    sess_state: gr.State
    who: gr.Textbox  # the annotator's name (hidden with accounts)
    signed_in: gr.Markdown
    model_md: gr.Markdown
    session_outputs: list = field(default_factory=list)  # what shows the session (see render), set by app.ui
    load_events: list[tuple[Callable, list, list]] = field(default_factory=list)


def shell_layout(model_line: str, signed_in: bool) -> Shell:
    """The header row: title, model line and who is working."""
    from ..session import Session

    with gr.Row():
        gr.Markdown("## DeRIS Studio", elem_id="title")
        model_md = gr.Markdown(model_line)
        who = gr.Textbox(label="Annotator", value="", scale=0, min_width=200, elem_id="annotator", visible=not signed_in)
        signed = gr.Markdown("", elem_id="signed-in", visible=signed_in)
    return Shell(gr.State(Session()), who, signed, model_md)


def bind(fn: Callable, *bound, wrap: Callable[[Callable], Callable] | None = None) -> Callable:
    """``fn`` with its first arguments fixed, as a Gradio handler: the remaining parameters keep their
    names and annotations (Gradio injects ``gr.Request`` / ``gr.SelectData`` by annotation), and the
    application layer's errors (:class:`~app.errors.UserError`: the store's and the services') become ``gr.Error``.
    ``wrap`` decorates the result (``app.zerogpu.gpu`` for handlers that run the network)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[len(bound):]
    hints = typing.get_type_hints(fn)

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        try:
            return fn(*bound, *args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    handler.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    handler.__annotations__ = {k: v for k, v in hints.items() if k in {p.name for p in params} or k == "return"}
    del handler.__wrapped__  # Gradio must see the bound signature, not fn's
    return wrap(handler) if wrap else handler


def ref_id(value) -> int:
    """A ref id typed or sent through the API: a whole number in SQLite's range, else a clear error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error("Type a ref id.") from None
    if not math.isfinite(number) or number != int(number) or not 0 < number < 2**63:
        raise gr.Error(f"{value!r} is not a ref id (a whole number from 1).")
    return int(number)


def request_user(request: gr.Request | None) -> str | None:
    """The signed-in user name of a request (None without accounts)."""
    return getattr(request, "username", None)


def render(sess) -> tuple:
    """Values of the shell's session outputs (``Shell.session_outputs``): the canvas's value, verdict,
    candidates, gallery, the targets' parts line, state; what most handlers of the Annotate tab end with."""
    from . import canvas, display

    return (
        canvas.canvas_value(sess),
        display.verdict_html(sess),
        gr.update(choices=display.candidate_choices(sess), value=sess.selected_candidates()),
        display.candidate_gallery(sess),
        canvas.parts_html(sess, [n for n, _ in display.target_numbers(sess)]),
        sess,
    )


def render_fields(sess) -> tuple:
    """What an edit on the canvas changes besides the picture (the browser has drawn it already):
    verdict, candidates, the parts line, state."""
    from . import canvas, display

    return (display.verdict_html(sess),
            gr.update(choices=display.candidate_choices(sess), value=sess.selected_candidates()),
            canvas.parts_html(sess, [n for n, _ in display.target_numbers(sess)]), sess)
