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
    load_events: list[tuple[Callable, list, list]] = field(default_factory=list)


def shell_layout(model_line: str, signed_in: bool) -> Shell:
    """The header row: title, model line and who is working."""
    from ..viewkit.session import Session

    # one compact line (app.ui CSS): the title, the model line (one line on a phone, a tap shows it
    # whole) and who is working, the label beside the box
    with gr.Row(elem_id="studio-header", equal_height=False):
        gr.Markdown("## DeRIS Studio", elem_id="title")
        model_md = gr.Markdown(model_line, elem_id="model-line")
        who = gr.Textbox(label="Annotator", value="", scale=0, min_width=200, elem_id="annotator", visible=not signed_in,
                         placeholder="your name")
        signed = gr.Markdown("", elem_id="signed-in", visible=signed_in)
    return Shell(gr.State(Session()), who, signed, model_md)


def from_browser(request: gr.Request | None) -> bool:
    """Whether a request comes from the studio's page: Gradio's page marks its events
    ``x-gradio-user: app``; the Python and JS clients send ``api``, MCP ``mcp``."""
    headers = getattr(request, "headers", None)
    if request is None or headers is None:
        return False
    try:
        return headers.get("x-gradio-user") == "app"
    except AttributeError:
        return False


def bind(fn: Callable, *bound, wrap: Callable[[Callable], Callable] | None = None, soft: bool = True,
         status: tuple[int, int] | None = None) -> Callable:
    """``fn`` with its first arguments fixed, as a Gradio handler: the remaining parameters keep their
    names and annotations (Gradio injects ``gr.Request`` / ``gr.SelectData`` by annotation).

    The application layer's errors (:class:`~app.errors.UserError`: the store's and the services') and ``gr.Error``
    are expected: for an API caller they become ``gr.Error`` (the call fails with the message); on
    a page (``soft``, the default) the screen is kept as it was (no output changes, so no red *Error*
    badge covers a panel or blanks a picture) and the message is said in the view's status line
    (``status``: ``(index of that output, number of outputs)``) or, without one, as a warning toast.
    ``soft=False`` for a handler whose ``.success`` chain must not run after a refusal.
    ``wrap`` decorates the result (``app.zerogpu.gpu`` for handlers that run the network)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[len(bound):]
    hints = typing.get_type_hints(fn)
    own_request = next((p.name for p in params if hints.get(p.name) is gr.Request), None)
    if own_request is None and soft:  # ask Gradio for the request too, to tell a page from an API call
        params.append(inspect.Parameter("_bind_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                        annotation=gr.Request))
        hints = {**hints, "_bind_request": gr.Request}

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        request = kwargs.pop("_bind_request", None) if own_request is None else kwargs.get(own_request)
        if own_request is None and soft and request is None and len(args) == len(params):
            *args, request = args
        if own_request is not None and request is None:
            names = [p.name for p in params]
            request = args[names.index(own_request)] if names.index(own_request) < len(args) else None
        try:
            return fn(*bound, *args, **kwargs)
        except (UserError, gr.Error) as exc:
            message = exc.message if isinstance(exc, gr.Error) else str(exc)
            if not soft or not from_browser(request):
                raise gr.Error(message) from None
            if status is None:
                gr.Warning(message)
                return gr.skip()
            if status[1] == 1:  # one output: Gradio takes a returned tuple as its value
                return f"⚠ {message}"
            out = [gr.skip()] * status[1]
            out[status[0]] = f"⚠ {message}"
            return tuple(out)

    handler.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    handler.__annotations__ = {k: v for k, v in hints.items() if k in {p.name for p in params} or k == "return"}
    del handler.__wrapped__  # Gradio must see the bound signature, not fn's
    return wrap(handler) if wrap else handler


def id_box(label: str, elem_id: str, placeholder: str, **kw) -> gr.Textbox:
    """A box for an id (a ref, an image, a job) that looks empty when it is: Gradio's ``gr.Number``
    shows 0 for no value, and "0 is not a ref id" then answers a person who typed nothing. The
    handler reads it with :func:`whole_number` (or :func:`ref_id`)."""
    return gr.Textbox(label=label, value="", placeholder=placeholder, max_lines=1, lines=1, elem_id=elem_id, **kw)


def whole_number(value, what: str) -> int | None:
    """An id typed in an :func:`id_box` or sent through the API: ``None`` when the box is empty, the
    number when it is a whole number from 1 (in SQLite's range), else a clear error naming ``what``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise gr.Error(f"{str(value).strip()[:40]!r} is not {what} (a whole number from 1).") from None
    if not math.isfinite(number) or number != int(number) or not 0 < number < 2**63:
        shown = str(value).strip()[:40] if isinstance(value, str) else repr(value)
        raise gr.Error(f"{shown} is not {what} (a whole number from 1).")
    return int(number)


def ref_id(value) -> int:
    """A ref id typed or sent through the API: a whole number in SQLite's range, else a clear error
    (an empty box: "Type a ref id")."""
    number = whole_number(value, "a ref id")
    if number is None:
        raise gr.Error("Type a ref id (the number in the table's first column).")
    return number


def request_user(request: gr.Request | None) -> str | None:
    """The signed-in user name of a request (None without accounts)."""
    return getattr(request, "username", None)


@dataclass(frozen=True)
class Rendered:
    """What shows the session in the Annotate tab (most of its handlers end with it): the canvas's
    value, the verdict, the candidates, the gallery, the targets' parts line, and the session itself.
    Each field is shown by the Annotate layout's widget of that name (``sess``: the shell's state)."""

    result: dict  # the canvas's value
    verdict: str
    candidates: dict  # an update of the checkbox group: its choices and the ticked ones
    gallery: list
    parts: str
    sess: object  # the Session (gr.State)


@dataclass(frozen=True)
class CanvasFields:
    """What an edit on the canvas changes besides the picture (the browser has drawn it already)."""

    verdict: str
    candidates: dict
    parts: str
    sess: object


def render(sess, gallery: bool = True) -> Rendered:
    """The session as the Annotate tab shows it (:class:`Rendered`); ``gallery=False``: the candidate
    gallery is left as it is (an event that shows it after the picture, :func:`app.views.annotate.show_gallery`)."""
    from . import canvas, display

    return Rendered(
        canvas.canvas_value(sess),
        display.verdict_html(sess),
        gr.update(choices=display.candidate_choices(sess), value=sess.selected_candidates()),
        display.candidate_gallery(sess) if gallery else gr.skip(),
        canvas.parts_html(sess, [n for n, _ in display.target_numbers(sess)]),
        sess,
    )


def render_fields(sess) -> CanvasFields:
    """:class:`CanvasFields` of the session (after an edit on the canvas)."""
    from . import canvas, display

    return CanvasFields(display.verdict_html(sess),
                        gr.update(choices=display.candidate_choices(sess), value=sess.selected_candidates()),
                        canvas.parts_html(sess, [n for n, _ in display.target_numbers(sess)]), sess)
