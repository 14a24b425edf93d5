"""The verification view of proposed hard negatives (``python -m app.curate negatives``): one image,
one sentence written for another image, and the model's verdict; the person decides by key.

Y: "refers to nothing here" (saved at once as the person's no-target ref), N: "it does" (recorded;
the app shell then opens the sentence, run, in the Annotate view to mark what it refers to),
← / →: previous / next (outside text boxes; see ``app.ui.SHORTCUTS_JS``). The queue shows the ones
where the model found a target first. Who decides is the permission table's (action ``verify``);
handlers are module-level functions of ``(services, inputs...)``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from types import SimpleNamespace

import gradio as gr
import numpy as np

from ..viewkit import overlay
from ..services import DECISIONS, Negative, Services
from .on_screen import key_box, key_of, require_on_screen
from .records import Outputs, nested
from .shell import Shell, request_user

SHOW_CHOICES = [("to decide", "open"), ("decided", "decided"), ("all", "all")]


@dataclass
class VerifyUI:
    tab: gr.Tab
    info: gr.HTML
    picture: gr.Image
    sentence: gr.HTML
    yes_btn: gr.Button
    no_btn: gr.Button
    prev_btn: gr.Button
    next_btn: gr.Button
    msg: gr.Markdown
    show: gr.Dropdown
    pos: gr.State
    shown: gr.State  # [id, decision, version of its ref or None] of the negative on screen
    handoff: gr.State  # what N hands to the Annotate view: {"image_id", "sentence", "ref_id"}
    on_screen: gr.Textbox  # the page's key of the negative on screen, sent with each decision


@dataclass(frozen=True)
class NegativeShown:
    """What the view shows of the negative at ``pos`` (``shown``: ``[id, decision, version of its ref]``,
    None for an empty queue); ``on_screen`` is the page's key of it, derived, never passed."""
    info: str
    picture: np.ndarray | None
    sentence: str
    pos: int
    shown: list | None
    on_screen: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_screen", key_of(self.shown))


@dataclass(frozen=True)
class NegativeDecided:
    """Y's answer: the message and the next negative shown."""
    msg: str
    shown: NegativeShown = nested(NegativeShown)


@dataclass(frozen=True)
class NegativeRefers:
    """N's answer: the message, the hand-off for the Annotate view and the next negative shown."""
    msg: str
    handoff: dict
    shown: NegativeShown = nested(NegativeShown)


def layout(tab: gr.Tab) -> VerifyUI:
    """Lay the tab out inside ``tab`` (the shell's ``gr.Tab``, whose selection loads the queue)."""
    c = SimpleNamespace(tab=tab)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c.info = gr.HTML("<div id='verify-info' class='queue-pos'>Open this tab to load the proposed negatives.</div>")
            c.picture = gr.Image(interactive=False, elem_id="verify-picture", buttons=["download", "fullscreen"], height=520, format="jpeg", show_label=False)
        with gr.Column(scale=2):
            c.sentence = gr.HTML("", elem_id="verify-sentence")
            with gr.Row():
                c.yes_btn = gr.Button("Refers to nothing here (Y)", variant="primary", elem_id="verify-yes")
                c.no_btn = gr.Button("It does refer (N)", variant="secondary", elem_id="verify-no")
            with gr.Row():
                c.prev_btn = gr.Button("◀ Previous (←)", size="sm", elem_id="verify-prev")
                c.next_btn = gr.Button("Next (→) ▶", size="sm", elem_id="verify-next")
            c.msg = gr.Markdown("", elem_id="verify-msg")
            c.show = gr.Dropdown(SHOW_CHOICES, value="open", label="Show", elem_id="verify-show")
            gr.Markdown("Each sentence was written for another image and passed the training rule for a non-referent "
                        "sentence. **Y** saves it as a no-target ref under your name; **N** opens it in *Annotate*, "
                        "run, to mark what it refers to.", elem_classes="model-note")
            c.pos = gr.State(0)
            c.shown = gr.State(None)
            c.handoff = gr.State(None)
            c.on_screen = key_box("verify-shown")
    return VerifyUI(**vars(c))


def _picture(svc: Services, neg: Negative) -> np.ndarray | None:
    """The image; where the model found a target, its referred candidates outlined and numbered."""
    rgb, masks = svc.negatives.picture(neg)
    if rgb is None:
        return None
    return overlay.render(rgb, masks, [str(k + 1) for k in range(len(masks))], list(range(len(masks))))


def _verdict(neg: Negative) -> str:
    if neg.found_target:
        return (f"<div class='verdict-warn' id='verify-model'>The model finds a target here (score {neg.top_score:.2f}, "
                f"outlined): is it wrong, or does the sentence fit this image too?</div>")
    return (f"<div class='verdict-none' id='verify-model'>The model says no target (best score {neg.top_score:.2f}, "
            f"existence {neg.existence:.2f})</div>")


def show(svc: Services, pos, which: str = "open") -> NegativeShown:
    """The negative at ``pos`` of the queue."""
    at = svc.negatives.at(pos, which or "open")
    neg = at.negative
    if neg is None:
        empty = {"open": "Nothing to decide: every proposed negative has a decision "
                         "(propose more with <code>python -m app.curate negatives</code>).",
                 "decided": "No decision yet.", "all": "No proposed negatives: run <code>python -m app.curate "
                                                       "negatives --db DB</code>."}[which or "open"]
        return NegativeShown(f"<div id='verify-info' class='queue-pos'>{empty}</div>", None, "", 0, None)
    name = svc.negatives.image_name(neg)
    source = svc.negatives.source_image(neg)
    written = f" &middot; written for image {source}" if source is not None else ""
    decided = (f" &middot; decided: <b>{html.escape(DECISIONS[neg.decision])}</b> by {html.escape(neg.decided_by)}"
               if neg.decision else "")
    label = {"open": "to decide", "decided": "decided", "all": "proposed"}[which or "open"]
    info = (f"<div id='verify-info' class='queue-pos'>Negative <b>{neg.id}</b> &middot; <b>{at.pos + 1} / {at.total}</b> "
            f"{label} &middot; image {neg.image_id} {html.escape(name)}{written}{decided}</div>")
    sentence = (f"<div class='verify-sentence'>“{html.escape(neg.sentence)}”</div>{_verdict(neg)}")
    return NegativeShown(info, _picture(svc, neg), sentence, at.pos,
                         [neg.id, neg.decision, svc.negatives.ref_version(neg)])


def move(svc: Services, delta: int, pos, which: str) -> NegativeShown:
    return show(svc, int(pos or 0) + delta, which)


def _decide(svc: Services, decision: str, shown, who_typed, pos, which, request,
            on_screen: str | None = None) -> tuple[Negative, str, NegativeShown]:
    if not shown:
        raise gr.Error("Nothing to decide.")
    require_on_screen(shown, on_screen, "negative")
    actor = svc.actor(request_user(request), who_typed)
    seen_version = shown[2] if len(shown) > 2 and shown[2] is not None else None
    neg = svc.negatives.decide(actor, int(shown[0]), decision, seen=str(shown[1]),
                               seen_version=int(seen_version) if seen_version is not None else None)
    # with "to decide", the decided one leaves the queue: the same position shows the next one
    nxt = int(pos or 0) if (which or "open") == "open" else int(pos or 0) + 1
    what = "no target" if decision == "no_target" else "refers"
    msg = f"Negative {neg.id}: **{what}**, by {actor.name}" + (f" (ref {neg.ref_id})." if decision == "no_target" else ".")
    return neg, msg, show(svc, nxt, which)


def refers_to_nothing(svc: Services, shown, who_typed, pos, which, on_screen: str | None = None,
                      request: gr.Request = None) -> NegativeDecided:
    """Y: the sentence refers to nothing on this image.
    ``on_screen``: the page's key of the negative it showed (:mod:`app.views.on_screen`)."""
    _, msg, shown_out = _decide(svc, "no_target", shown, who_typed, pos, which, request, on_screen)
    return NegativeDecided(msg, shown_out)


def refers(svc: Services, shown, who_typed, pos, which, on_screen: str | None = None,
           request: gr.Request = None) -> NegativeRefers:
    """N: it does refer to something here; the hand-off is for the Annotate view."""
    neg, msg, shown_out = _decide(svc, "refers", shown, who_typed, pos, which, request, on_screen)
    handoff = {"image_id": neg.image_id, "sentence": neg.sentence, "ref_id": neg.ref_id}
    return NegativeRefers(msg + " Mark what it refers to in *Annotate* and save.", handoff, shown_out)


def clear_message() -> str:
    """The message line after skipping: empty (it spoke of the sentence left behind)."""
    return ""


def wire(svc: Services, ui: VerifyUI, shell: Shell) -> None:
    """Attach the handlers; the app shell chains N's hand-off to the Annotate view (:func:`refers`,
    whose outputs are :func:`refers_outputs`)."""
    shown = Outputs.of(NegativeShown, ui)
    ui.tab.select(shown.bind(show, svc), [ui.pos, ui.show], shown.outputs, api_name=False)
    ui.show.input(shown.bind(move, svc, -10**9), [ui.pos, ui.show], shown.outputs, api_name=False).then(
        clear_message, None, [ui.msg], api_name=False)
    # skipping to another sentence: the last decision's message no longer describes what is shown
    ui.prev_btn.click(shown.bind(move, svc, -1), [ui.pos, ui.show], shown.outputs, api_name="negative_previous").then(
        clear_message, None, [ui.msg], api_name=False)
    ui.next_btn.click(shown.bind(move, svc, 1), [ui.pos, ui.show], shown.outputs, api_name="negative_next").then(
        clear_message, None, [ui.msg], api_name=False)
    decided = Outputs.of(NegativeDecided, ui)
    ui.yes_btn.click(decided.bind(refers_to_nothing, svc, status="msg"), decision_inputs(ui, shell), decided.outputs,
                     api_name="negative_no_target")


def decision_inputs(ui: VerifyUI, shell: Shell) -> list:
    """The inputs of Y and N: what is shown, who decides, where in which queue, the page's key."""
    return [ui.shown, shell.who, ui.pos, ui.show, ui.on_screen]


def refers_outputs(ui: VerifyUI) -> Outputs:
    """N's outputs (:func:`refers`), wired by :mod:`app.ui` with the hand-off to the Annotate view."""
    return Outputs.of(NegativeRefers, ui)
