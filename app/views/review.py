"""The review view: refs awaiting review (status ``done``), oldest first, one at a time, with the
image, every sentence, the targets (numbered, outlined) or the no-target flag, and the ref's
history. Y accepts (→ ``reviewed``), R rejects with a reason and a comment (→ ``rejected``),
the arrows move on (outside text boxes)."""

from __future__ import annotations

import html
import time
from types import SimpleNamespace

import gradio as gr

from .. import overlay
from ..store import SPLITS, StoreError
from ..store.review import REASONS, review, review_queue
from .context import Studio


def layout() -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c.rv_info = gr.HTML("<div id='review-info' class='queue-pos'>Open this tab to load the review queue.</div>")
            c.rv_picture = gr.Image(label="Targets of the ref under review", interactive=False, elem_id="review-picture",
                                    height=520, format="jpeg", show_label=False)
        with gr.Column(scale=2):
            with gr.Row():
                c.rv_prev = gr.Button("◀ Previous (←)", size="sm", elem_id="review-prev")
                c.rv_next = gr.Button("Next (→) ▶", size="sm", elem_id="review-next")
            c.rv_sentences = gr.HTML("", elem_id="review-sentences")
            c.rv_accept = gr.Button("Accept (Y)", variant="primary", elem_id="review-accept")
            c.rv_reason = gr.Dropdown([(v, k) for k, v in REASONS.items()], value=None, label="Reason for a rejection",
                                      elem_id="review-reason")
            c.rv_comment = gr.Textbox(label="Comment for the annotator", lines=2, elem_id="review-comment")
            c.rv_reject = gr.Button("Reject with this reason and comment (R)", variant="stop", elem_id="review-reject")
            c.rv_msg = gr.Markdown("", elem_id="review-msg")
            with gr.Accordion("Filter the queue", open=False):
                c.rv_annotator = gr.Textbox(label="Annotator", elem_id="review-annotator")
                c.rv_split = gr.Dropdown(["", *SPLITS], value="", label="Split", elem_id="review-split")
                c.rv_image = gr.Number(label="Image id", value=None, precision=0, elem_id="review-image")
                c.rv_disagree = gr.Checkbox(label="Where the model disagrees most first (after python -m app.curate qa)",
                                            value=False, elem_id="review-disagree")
            with gr.Accordion("History of this ref", open=True):
                c.rv_history = gr.HTML("", elem_id="review-history")
            c.rv_pos = gr.State(0)
            c.rv_ref = gr.State(None)  # (ref id, version) shown
    return c


def history_html(studio: Studio, ref_id: int | None) -> str:
    if ref_id is None:
        return ""
    items = []
    for e in studio.store.events(ref_id):
        d = e.detail
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.at))
        who = html.escape(e.user or "(anonymous)")
        if e.action == "review":
            what = "accepted" if d.get("decision") == "accept" else \
                f"rejected: {html.escape(REASONS.get(d.get('reason') or '', d.get('reason') or ''))}"
            if d.get("comment"):
                what += f" — “{html.escape(d['comment'])}”"
        elif e.action == "status":
            what = f"status {html.escape(str(d.get('from')))} → {html.escape(str(d.get('to')))}"
        elif e.action in ("create", "edit"):
            n = "no target" if d.get("no_target") else f"{len(d.get('targets', []))} target(s)"
            what = f"{e.action}d: “{html.escape(' | '.join(d.get('sentences', [])))}”, {n}, {html.escape(str(d.get('status')))}"
        else:
            what = html.escape(e.action)
        items.append(f"<li><span class='when'>{when}</span> <b>{who}</b> {what}</li>")
    return f"<ul class='history' id='history-list'>{''.join(items)}</ul>" if items else "<i>No history recorded.</i>"


def wire(studio: Studio, c: SimpleNamespace) -> None:
    store = studio.store

    def show(pos: int, annotator: str, split: str, image_id, by_disagreement: bool = False):
        """The ref at ``pos`` of the filtered queue (clamped), drawn with its targets."""
        flt = dict(annotator=(annotator or "").strip() or None, split=split or None,
                   image_id=int(image_id) if image_id not in (None, "") else None, by_disagreement=bool(by_disagreement))
        pos = max(0, int(pos or 0))
        rows, total = review_queue(store, pos, 1, **flt)
        if not rows and total:
            pos = total - 1
            rows, total = review_queue(store, pos, 1, **flt)
        if not rows:
            return ("<div id='review-info' class='queue-pos'>Nothing awaits review.</div>", None, "", "", 0, None)
        row = rows[0]
        rec = store.ref(row.id)
        rgb = store.load_image(rec.image_id)
        masks = {i.id: i.mask for i in store.instances(rec.image_id)}
        pic = None
        if rgb is not None:
            ms = [masks[i] for i in rec.instance_ids]
            pic = overlay.render(rgb, ms, [str(n + 1) for n in range(len(ms))], list(range(len(ms))), rec.no_target)
        info = (f"<div id='review-info' class='queue-pos'>Ref <b>{rec.id}</b> &middot; <b>{pos + 1} / {total}</b> awaiting "
                f"review &middot; by <b>{html.escape(rec.annotator or '(anonymous)')}</b> &middot; image {rec.image_id} "
                f"{html.escape(row.file_name)} &middot; split {html.escape(rec.split)}</div>")
        verdict = ("<div class='verdict-nt'>NO TARGET</div>" if rec.no_target else
                   f"<div class='verdict-t'>{len(rec.instance_ids)} target instance{'s' if len(rec.instance_ids) != 1 else ''}</div>")
        sents = "".join(f"<li>{html.escape(s)}</li>" for s in rec.sentences)
        return (info, pic, f"{verdict}<ol class='review-sentences'>{sents}</ol>", history_html(studio, rec.id), pos,
                (rec.id, rec.version))

    def move(delta: int):
        def go(pos, annotator, split, image_id, by_disagreement):
            return show(int(pos or 0) + delta, annotator, split, image_id, by_disagreement)
        return go

    def decide(decision: str):
        def go(shown, reason, comment, who_typed, pos, annotator, split, image_id, by_disagreement, request: gr.Request):
            if not shown:
                raise gr.Error("Nothing to review.")
            reviewer = studio.require_reviewer(request, who_typed)
            author = store.ref(shown[0]).annotator if shown else ""
            if author and author == reviewer:
                raise gr.Error("You cannot review your own ref: another reviewer decides on it.")
            try:
                review(store, shown[0], decision, reviewer, reason if decision == "reject" else None,
                       comment if decision == "reject" else "", expected_version=shown[1])
            except StoreError as exc:
                raise gr.Error(str(exc)) from None
            msg = f"Ref {shown[0]} {'accepted' if decision == 'accept' else 'rejected'} by {reviewer}."
            # the decided ref leaves the queue: the same position now shows the next one
            return (msg, None, "", *show(pos, annotator, split, image_id, by_disagreement))
        return go

    flt = [c.rv_annotator, c.rv_split, c.rv_image, c.rv_disagree]
    shown_outputs = [c.rv_info, c.rv_picture, c.rv_sentences, c.rv_history, c.rv_pos, c.rv_ref]
    c.review_tab.select(show, [c.rv_pos, *flt], shown_outputs, api_name=False)
    c.rv_prev.click(move(-1), [c.rv_pos, *flt], shown_outputs, api_name="review_previous")
    c.rv_next.click(move(1), [c.rv_pos, *flt], shown_outputs, api_name="review_next")
    for f in (c.rv_annotator, c.rv_image):
        f.submit(move(-10**9), [c.rv_pos, *flt], shown_outputs, api_name=False)
    for f in (c.rv_split, c.rv_disagree):
        f.input(move(-10**9), [c.rv_pos, *flt], shown_outputs, api_name=False)
    decision_inputs = [c.rv_ref, c.rv_reason, c.rv_comment, c.annotator, c.rv_pos, *flt]
    decision_outputs = [c.rv_msg, c.rv_reason, c.rv_comment, *shown_outputs]
    c.rv_accept.click(decide("accept"), decision_inputs, decision_outputs, api_name="review_accept")
    c.rv_reject.click(decide("reject"), decision_inputs, decision_outputs, api_name="review_reject")
    c.review_show = show
