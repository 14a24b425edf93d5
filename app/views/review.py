"""The review view: refs awaiting review (status ``done``), oldest first, one at a time, with the
image on the read-only canvas (:mod:`.canvas`: zoom, pan, per-instance visibility), every sentence,
the targets (numbered, outlined) or the no-target flag, and the ref's history. Y accepts (→ ``reviewed``), R rejects with a reason and a comment (→ ``rejected``),
the arrows move on (outside text boxes). A ref fixed after a rejection also gets its rejected version:
the canvas switches between *before* (as rejected) and *after* (now) in the browser (B), and one line
says who rejected it why and what the fix changed (:func:`app.services.compare`). Who may decide is the permission table's
(:mod:`app.services.permissions`); handlers are module-level functions of ``(services, inputs...)``."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import gradio as gr

from ..services import (REASONS, SPLITS, BadInput, Changes, RefFilter, RefRecord, RefStatus, Refused, Rejection,
                        Services, StoreError, compare)
from ..viewkit.session import Session
from .canvas import canvas_value, make_canvas
from .display import history_html
from .on_screen import key_box, key_of, require_on_screen
from .records import Outputs, nested
from .shell import Shell, bind, id_box, request_user, whole_number


@dataclass
class ReviewUI:
    tab: gr.Tab
    rv_info: gr.HTML
    rv_changes: gr.HTML  # a fixed ref: who rejected it why, what changed (empty otherwise: takes no room)
    rv_picture: gr.HTML  # the read-only canvas
    rv_prev: gr.Button
    rv_next: gr.Button
    rv_sentences: gr.HTML
    rv_accept: gr.Button
    rv_reason: gr.Dropdown
    rv_comment: gr.Textbox
    rv_reject: gr.Button
    rv_msg: gr.Markdown
    rv_annotator: gr.Textbox
    rv_split: gr.Dropdown
    rv_image: gr.Textbox  # id_box: empty looks empty (every image)
    rv_disagree: gr.Checkbox
    rv_uncertain: gr.Checkbox
    rv_history: gr.HTML
    rv_pos: gr.State
    rv_ref: gr.State
    rv_shown: gr.Textbox  # the page's key of the ref on screen ("id:version"), sent with each decision

    @property
    def filters(self) -> list:
        return [self.rv_annotator, self.rv_split, self.rv_image, self.rv_disagree, self.rv_uncertain]


@dataclass(frozen=True)
class ReviewShown:
    """What the view shows of the ref at ``pos`` (``ref``: its ``(id, version)``, None for an empty
    queue); ``shown`` is the page's key of it (:mod:`app.views.on_screen`), derived, never passed."""
    info: str
    picture: dict | None  # the read-only canvas's value
    sentences: str
    history: str
    pos: int
    ref: tuple[int, int] | None
    changes: str = ""  # the before / after line of a fixed ref ("" otherwise)
    # the decision boxes belong to the ref shown: emptied whenever a ref is shown (← / →, a filter, after a
    # decision), so a reason or comment written for one ref never rejects another; Reject waits for a reason
    reason: str | None = None
    comment: str = ""
    reject: dict = field(default_factory=lambda: gr.update(interactive=False))
    shown: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shown", key_of(self.ref))

    @classmethod
    def counter(cls, info: str) -> "ReviewShown":
        """Only the counter line changes (the ref on screen, its reason and comment stay)."""
        skip = gr.skip
        return cls(info, skip(), skip(), skip(), skip(), skip(), skip(), skip(), skip(), skip())


@dataclass(frozen=True)
class LiveShown:
    """The live timer's answer: what is shown, and the message line, emptied when the timer shows a ref
    that had arrived in an empty queue (the last decision's message was about another ref)."""
    shown: ReviewShown = nested(ReviewShown)
    msg: Any = field(default_factory=gr.skip)


@dataclass(frozen=True)
class ReviewDecided:
    """A decision's answer: the message, and the next ref shown (its reason and comment empty)."""
    msg: str
    shown: ReviewShown = nested(ReviewShown)


@dataclass(frozen=True)
class DecisionPanel:
    """What the signed-in user sees of the decision panel (updates), and the note for non-reviewers."""
    accept: dict
    reason: dict
    comment: dict
    reject: dict
    msg: str


def layout(tab: gr.Tab) -> ReviewUI:
    """Lay the tab out inside ``tab`` (the shell's ``gr.Tab``, whose selection loads the queue)."""
    c = SimpleNamespace(tab=tab)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c.rv_info = gr.HTML("<div id='review-info' class='queue-pos'>Open this tab to load the review queue.</div>")
            c.rv_changes = gr.HTML("", elem_id="review-changes")
            c.rv_picture = make_canvas("review-picture", readonly=True, height=520)
        with gr.Column(scale=2):
            with gr.Row():
                c.rv_prev = gr.Button("◀ Previous (←)", size="sm", elem_id="review-prev")
                c.rv_next = gr.Button("Next (→) ▶", size="sm", elem_id="review-next")
            c.rv_sentences = gr.HTML("", elem_id="review-sentences")
            c.rv_accept = gr.Button("Accept (Y)", variant="primary", elem_id="review-accept")
            c.rv_reason = gr.Dropdown([(v, k) for k, v in REASONS.items()], value=None, label="Reason for a rejection",
                                      elem_id="review-reason")
            c.rv_comment = gr.Textbox(label="Comment for the annotator", lines=2, elem_id="review-comment")
            c.rv_reject = gr.Button("Reject with this reason and comment (R)", variant="stop", elem_id="review-reject",
                                    interactive=False)  # enabled once a reason is chosen (reason_chosen)
            c.rv_msg = gr.Markdown("", elem_id="review-msg")
            with gr.Accordion("Filter the queue", open=False):
                c.rv_annotator = gr.Textbox(label="Annotator", elem_id="review-annotator")
                c.rv_split = gr.Dropdown(["", *SPLITS], value="", label="Split", elem_id="review-split")
                c.rv_image = id_box("Image id", "review-image", "any image")
                c.rv_disagree = gr.Checkbox(label="Where the model disagrees most first (after python -m app.curate qa)",
                                            value=False, elem_id="review-disagree")
                c.rv_uncertain = gr.Checkbox(label="Most uncertain first (where the model's prediction was least sure)",
                                             value=False, elem_id="review-uncertain")
            with gr.Accordion("History of this ref", open=True):
                c.rv_history = gr.HTML("", elem_id="review-history")
            c.rv_pos = gr.State(0)
            c.rv_ref = gr.State(None)  # (ref id, version) shown
            c.rv_shown = key_box("review-shown")
    return ReviewUI(**vars(c))


def show(svc: Services, pos: int, annotator: str, split: str, image_id, by_disagreement: bool = False,
         by_uncertainty: bool = False) -> ReviewShown:
    """The ref at ``pos`` of the filtered queue (clamped), drawn with its targets; a fixed ref also with
    its rejected version (before / after) and what changed."""
    image_id = whole_number(image_id, "an image id")  # the filter's box: empty for every image
    flt = RefFilter.of(RefStatus.DONE, split, (annotator or "").strip() or None, image_id)
    item = svc.refs.review_at(pos, flt, by_disagreement, by_uncertainty)
    if item.ref is None:
        return ReviewShown("<div id='review-info' class='queue-pos'>Nothing awaits review.</div>", None, "", "", 0, None)
    row, rec, pos, total = item.row, item.ref, item.pos, item.total
    rgb, ms = svc.workspace.ref_picture(rec)
    rejected = svc.refs.rejection(rec.id)
    changes = compare(rejected, rec.sentences, ms, rec.no_target) if rejected is not None else None
    before = (list(rejected.masks), rejected.no_target) if rejected is not None and rejected.masks_kept else None
    pic = None
    if rgb is not None:
        pic = canvas_value(Session(), readonly=True, masks=ms, no_target=rec.no_target, image=rgb,
                           doc=f"ref:{rec.id}:{rec.version}", before=before)
    info = (f"<div id='review-info' class='queue-pos'>Ref <b>{rec.id}</b> &middot; <b>{pos + 1} / {total}</b> awaiting "
            f"review &middot; by <b>{html.escape(rec.author or '(anonymous)')}</b> &middot; image {rec.image_id} "
            f"{html.escape(row.file_name)} &middot; split {html.escape(rec.split)}</div>")
    return ReviewShown(info, pic, sentences_html(rec, changes), history_html(svc.refs.history(rec.id)), pos,
                       (rec.id, rec.version), changes_html(rejected, changes))


def sentences_html(rec: RefRecord, changes: Changes | None = None) -> str:
    """The verdict and every sentence; after a fix, sentences new since the rejection are marked and the
    ones dropped are listed, struck through."""
    verdict = ("<div class='verdict-nt'>NO TARGET</div>" if rec.no_target else
               f"<div class='verdict-t'>{len(rec.instance_ids)} target instance{'s' if len(rec.instance_ids) != 1 else ''}</div>")
    added = set(changes.sentences_added) if changes is not None else set()
    new = " <span class='sent-new'>new</span>"
    sents = "".join(f"<li>{html.escape(s)}{new if s in added else ''}</li>" for s in rec.sentences)
    gone = ""
    if changes is not None and changes.sentences_removed:
        gone = ("<div class='sent-removed'>removed since the rejection: "
                + " · ".join(f"<s>{html.escape(s)}</s>" for s in changes.sentences_removed) + "</div>")
    return f"{verdict}<ol class='review-sentences'>{sents}</ol>{gone}"


def changes_html(rejected: Rejection | None, changes: Changes | None) -> str:
    """One line for a fixed ref: who rejected it why, and what changed since (empty for a ref never
    rejected); the full comment is its tooltip. The switch itself is on the canvas (B, before / after)."""
    if rejected is None or changes is None:
        return ""
    why = f" ({html.escape(rejected.reason_label)})" if rejected.reason_label else ""
    comment = f" title='{html.escape(rejected.comment, quote=True)}'" if rejected.comment else ""
    return (f"<div class='review-changes'{comment}><b>Fixed after a rejection</b> by "
            f"{html.escape(rejected.reviewer or '(anonymous)')}{why}: "
            f"<span id='review-diff'>{html.escape(changes.summary())}</span></div>")


def live(svc: Services, pos, shown, annotator: str, split: str, image_id, by_disagreement: bool = False,
         by_uncertainty: bool = False, tab: str = ""):
    """The timer's look at the queue (only while the Review tab is on screen): with nothing shown and
    refs arrived, the first one is shown (at 1 / N, never at the end); with a ref shown, only the
    counter line changes (the ref, the reason and comment being typed stay). Outputs: :func:`show`'s."""
    if tab != "Review":
        return gr.skip()
    try:
        image_id = whole_number(image_id, "an image id")
    except gr.Error:  # being typed: the filter's submit says what is wrong, the timer stays quiet
        return gr.skip()
    if not shown:
        out = show(svc, 0, annotator, split, image_id, by_disagreement, by_uncertainty)
        return LiveShown(out, "") if out.ref is not None else gr.skip()
    flt = RefFilter.of(RefStatus.DONE, split, (annotator or "").strip() or None, image_id)
    item = svc.refs.review_at(int(pos or 0), flt, by_disagreement, by_uncertainty)
    if item.ref is not None and item.ref.id == shown[0]:
        info = show(svc, pos, annotator, split, image_id, by_disagreement, by_uncertainty).info
    else:  # the shown ref was decided or moved meanwhile: say so, keep it on screen
        info = (f"<div id='review-info' class='queue-pos'>Ref <b>{shown[0]}</b> &middot; the queue changed: "
                f"<b>{item.total}</b> awaiting review (→ for the next)</div>")
    return LiveShown(ReviewShown.counter(info))


def move(svc: Services, delta: int, pos, annotator: str, split: str, image_id, by_disagreement: bool,
         by_uncertainty: bool = False) -> ReviewShown:
    return show(svc, int(pos or 0) + delta, annotator, split, image_id, by_disagreement, by_uncertainty)


def step(svc: Services, delta: int, pos, shown, annotator: str, split: str, image_id, by_disagreement: bool,
         by_uncertainty: bool = False) -> ReviewShown:
    """← / →: from the ref shown; with nothing shown (an empty queue that filled since), the first."""
    if not shown:
        return show(svc, 0, annotator, split, image_id, by_disagreement, by_uncertainty)
    return move(svc, delta, pos, annotator, split, image_id, by_disagreement, by_uncertainty)


def reason_chosen(reason: str | None):
    """R is pressable only with a reason: the button's state after the reason box changes."""
    return gr.update(interactive=reason in REASONS)


def moved_on(svc: Services, typed: str = "", request: gr.Request = None) -> str:
    """The message line after ← / →: the last decision's message is about another ref, so it goes; an
    annotator keeps the note that deciding is for reviewers."""
    return for_user(svc, typed, request).msg


def for_user(svc: Services, typed: str = "", request: gr.Request = None) -> DecisionPanel:
    """What the signed-in user sees of the decision panel: Accept, the reason, the comment and Reject
    only for reviewers (an annotator reads the queue; the table would refuse their decisions)."""
    try:
        reviewer = svc.actor(request_user(request), typed).reviewer
    except (StoreError, Refused):
        reviewer = False
    note = "" if reviewer else "You can read the queue; deciding on refs is for reviewers."
    return DecisionPanel(*(gr.update(visible=reviewer) for _ in range(4)), note)


def decide(svc: Services, decision: str, shown, reason, comment, who_typed, pos, annotator, split, image_id,
           by_disagreement, by_uncertainty=False, on_screen: str | None = None,
           request: gr.Request = None) -> ReviewDecided:
    """Accept or reject the ref on screen (at the version shown); then show the next one.

    ``on_screen``: the page's key of the ref it showed (:mod:`app.views.on_screen`); a decision
    for any ref but the one this session was shown last is refused."""
    if not shown:
        raise gr.Error("Nothing to review.")
    require_on_screen(shown, on_screen)
    if decision == "reject" and reason not in REASONS:
        raise BadInput("Choose a reason for the rejection first: " + "; ".join(r.split(" (")[0] for r in REASONS.values()))
    actor = svc.actor(request_user(request), who_typed)
    if not actor.accounts and not actor.name:
        actor = type(actor)("reviewer", actor.roles)  # an unnamed reviewer of an open studio
    svc.refs.review(actor, shown[0], decision, reason if decision == "reject" else None,
                    comment if decision == "reject" else "", expected_version=shown[1])
    msg = f"Ref {shown[0]} {decision}ed by {actor.name}."  # accepted / rejected
    # the decided ref leaves the queue: the same position now shows the next one
    return ReviewDecided(msg, show(svc, pos, annotator, split, image_id, by_disagreement, by_uncertainty))


def wire(svc: Services, ui: ReviewUI, shell: Shell) -> None:
    shown = Outputs.of(ReviewShown, ui, prefix="rv_")
    queue_inputs = [ui.rv_pos, *ui.filters]
    ui.tab.select(shown.bind(show, svc), queue_inputs, shown.outputs, api_name=False)
    step_inputs = [ui.rv_pos, ui.rv_ref, *ui.filters]
    for button, delta, name in ((ui.rv_prev, -1, "review_previous"), (ui.rv_next, 1, "review_next")):
        # moving on empties the message line: "Ref 5 rejected by bob." stayed beside ref 5's fixed version
        button.click(shown.bind(step, svc, delta), step_inputs, shown.outputs, api_name=name).success(
            bind(moved_on, svc), [shell.who], [ui.rv_msg], api_name=False, show_progress="hidden")
    for f in (ui.rv_annotator, ui.rv_image):
        f.submit(shown.bind(move, svc, -10**9), queue_inputs, shown.outputs, api_name=False)
    for f in (ui.rv_split, ui.rv_disagree, ui.rv_uncertain):
        f.input(shown.bind(move, svc, -10**9), queue_inputs, shown.outputs, api_name=False)
    decision_inputs = [ui.rv_ref, ui.rv_reason, ui.rv_comment, shell.who, ui.rv_pos, *ui.filters, ui.rv_shown]
    decided = Outputs.of(ReviewDecided, ui, prefix="rv_")
    # a refusal goes to the message line; the ref stays on screen
    ui.rv_accept.click(decided.bind(decide, svc, "accept", status="msg"), decision_inputs, decided.outputs,
                       api_name="review_accept")
    ui.rv_reject.click(decided.bind(decide, svc, "reject", status="msg"), decision_inputs, decided.outputs,
                       api_name="review_reject")
    ui.rv_reason.change(reason_chosen, [ui.rv_reason], [ui.rv_reject], api_name=False, show_progress="hidden")
    panel = Outputs.of(DecisionPanel, ui, prefix="rv_")
    shell.load_events.append((panel.bind(for_user, svc), [shell.who], panel.outputs))


def live_outputs(ui: ReviewUI) -> Outputs:
    """What the live timer's :func:`live` shows (:mod:`app.ui` wires the timer)."""
    return Outputs.of(LiveShown, ui, prefix="rv_")
