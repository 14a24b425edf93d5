"""The annotate view: the collection as a queue, the expression, the picture with click-to-pick,
the candidates, this image's saved refs, and saving.

Handlers are module-level functions of ``(services, inputs...)``: tests call them without a
server. :func:`wire` attaches them to the widgets of :class:`~.annotate_layout.AnnotateUI`.

Keys (see ``app.ui.SHORTCUTS_JS``): A / D previous / next image and Shift+D the next image
without refs (outside text boxes), Enter runs the expression, Ctrl+Enter saves. While the annotator
types, the page asks the server to run the text once it has been still a moment (:func:`speculate`):
Enter then finds the answer computed. The picture is the
canvas of :mod:`.canvas`: picking, painting, outlining and undo happen in the browser, with its own
keys; the server learns the target set from the canvas's value (:func:`canvas_edit`, :func:`save`).
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..services import (REASONS, SPLITS, BadInput, ImageFilter, OutcomeUnknown, Refused, RefStatus, Services,
                        StoreError)
from ..services.queue import THUMBS_PER_PAGE, image_filter
from ..viewkit.session import Session
from ..zerogpu import gpu  # spaces.GPU(duration=...) on ZeroGPU, a no-op elsewhere
from . import display
from .display import history_html
from .annotate_layout import AnnotateUI
from .canvas import (CanvasError, apply_canvas, keep_on_error, prepare_picture, prepare_typed, session_part_warnings,
                     typed_answer, upcoming_picture)
from .records import Outputs, nested
from .shell import CanvasFields, Rendered, Shell, bind, from_browser, ref_id, render, render_fields, request_user


def image_refs(svc: Services, sess: Session) -> list[list]:
    """The rows of the open image's ref list."""
    return display.ref_rows(svc.refs.of_image(sess.image_id), with_image=False)


# --- the per-ref boxes (paraphrases, split, status, the open ref's history) follow the ref -------------
# Every handler that changes the ref being worked on (another image, Alt+N, a ref opened, an upload, a
# save, a new expression after a save or on a reopened ref) also sets these four boxes: cleared for a new
# ref, reloaded for a saved one. Otherwise what was typed for one ref would be saved with the next one.

@dataclass(frozen=True)
class RefFields:
    """The per-ref boxes: more sentences, split, status, the open ref's history (``gr.update()``: kept)."""
    extra: Any
    split: Any
    status: Any
    ref_history: Any


KEEP_REF_FIELDS = RefFields(gr.update(), gr.update(), gr.update(), gr.update())


def new_ref_fields(svc: Services, sess: Session) -> RefFields:
    """The boxes of a ref not saved yet on the open image: no paraphrases, the split the image was
    imported into (train without one, and for an upload), status done, no history."""
    split = svc.workspace.image_split(sess.image_id) if sess.image_id is not None else ""
    return RefFields("", split if split in SPLITS else "train", RefStatus.DONE.value, "")


def saved_ref_fields(svc: Services, rid: int) -> RefFields:
    """The boxes of saved ref ``rid`` as stored: its other sentences, split, status and history."""
    rec = svc.refs.ref(rid)
    status = rec.status if rec.status != RefStatus.PREDICTED else RefStatus.DONE.value
    return RefFields("\n".join(rec.sentences[1:]), rec.split, status, history_html(svc.refs.history(rid)))


# --- what the handlers return (app.views.records: each field is shown by the widget of its name) ------

@dataclass(frozen=True)
class Segmented:
    """A run of the expression: the session, the per-ref boxes, and the message line (emptied when the
    run leaves the ref the message was about; kept otherwise)."""
    rendered: Rendered = nested(Rendered)
    fields: RefFields = nested(RefFields)
    save_msg: Any


@dataclass(frozen=True)
class ImageOpened:
    """Another collection image (PgDn / D, a thumbnail): the upload box emptied, the session, the queue
    line, the image's refs, the expression, the message, the per-ref boxes."""
    image_in: Any
    rendered: Rendered = nested(Rendered)
    queue_pos: Any
    image_refs: Any
    expression: Any
    save_msg: Any
    fields: RefFields = nested(RefFields)


@dataclass(frozen=True)
class RefOpened:
    """A saved ref (or a sentence to annotate) opened in the view (:func:`open_ref_outputs`)."""
    image_in: Any
    expression: Any
    extra: Any
    split: Any
    status: Any
    who: Any
    rendered: Rendered = nested(Rendered)
    queue_pos: Any
    image_refs: Any
    save_msg: Any
    ref_history: Any


@dataclass(frozen=True)
class Saved:
    """A save's answer (the API's first outputs as they always were): the message, the image's refs, the
    session, then the saved ref's boxes as stored and the to-fix list."""
    save_msg: str
    image_refs: list
    sess: Session
    ref_history: str
    to_fix: Any
    extra: str
    split: str
    status: str


@dataclass(frozen=True)
class NextExpression:
    """Alt+N: the expression and the message emptied, the session, the per-ref boxes cleared."""
    expression: str
    save_msg: str
    rendered: Rendered = nested(Rendered)
    fields: RefFields = nested(RefFields)


@dataclass(frozen=True)
class Uploaded:
    """A picture put in the upload box: the session, the queue line, the image's refs, the per-ref boxes."""
    rendered: Rendered = nested(Rendered)
    queue_pos: Any
    image_refs: Any
    fields: RefFields = nested(RefFields)


@dataclass(frozen=True)
class Thumbs:
    """One page of thumbnails and the page number shown."""
    thumbs: list
    thumb_page: int


@dataclass(frozen=True)
class Refiltered:
    """A filter changed: the first page of thumbnails and the open image's place in the new queue."""
    thumbs: list
    thumb_page: int
    queue_pos: str


def queue_html(svc: Services, sess: Session, flt: ImageFilter) -> str:
    index, total = svc.queue.position(flt, sess.image_id)
    return display.queue_html(index, total, svc.workspace.image_name(sess.image_id))


EMPTY_EXPRESSION_HINT = "Type an expression first (what to segment), then press Enter."


def segment(svc: Services, path: str | None, text: str, st: float, mt: float, sess: Session,
            request: gr.Request = None) -> Segmented:
    """Run the expression (:func:`run_expression`, the candidate gallery included: the API's ``/segment``)."""
    return run_expression(svc, path, text, st, mt, sess, request)


def segment_typed(svc: Services, path: str | None, text: str, st: float, mt: float, sess: Session,
                  request: gr.Request = None) -> Segmented:
    """Enter in the expression box: :func:`run_expression` without the candidate gallery, which
    :func:`show_gallery` shows right after. The picture comes first: the 20 thumbnails cost the server and
    the page 50-150 ms on a 1024x768 photo that the annotator would otherwise wait for."""
    return run_expression(svc, path, text, st, mt, sess, request, gallery=False)


def show_gallery(svc: Services, sess: Session) -> Any:
    """The candidate gallery of the session (chained after :func:`segment_typed`)."""
    return display.candidate_gallery(sess) if isinstance(sess, Session) else gr.skip()


def run_expression(svc: Services, path: str | None, text: str, st: float, mt: float, sess: Session,
                   request: gr.Request | None = None, gallery: bool = True) -> Segmented:
    """Run the expression on the upload (``path``) or the open image; an empty one from the page changes
    nothing and says what to do (an API caller gets the error). The per-ref boxes are
    :func:`new_ref_fields` when this run leaves the saved ref that was open (a new expression after a
    save, or on a reopened ref: see :meth:`Session.apply_prediction`), kept otherwise; the message line is
    emptied when the run leaves a ref (its "Saved ref N" was about that one) and says so when it leaves a
    reopened ref unchanged."""
    if not path and not (text or "").strip() and from_browser(request):  # an empty Enter: ignored, with a hint
        gr.Info(EMPTY_EXPRESSION_HINT)
        return gr.skip()  # every output as it was: the picture, the verdict, the boxes
    before, ref_before, editing_before = sess, sess.ref_id, sess.editing
    if path:
        opened = svc.workspace.open_upload(path, sess)
        sess = opened.session
        if opened.warning:
            gr.Warning(opened.warning)
    elif sess.image is None:
        raise gr.Error("Give an image first: open one of the collection, or upload, paste or pick an example.")
    else:
        svc.workspace.ensure_features(sess)  # the model changed meanwhile
    client = getattr(request, "session_hash", None)
    svc.sessions.track(client, sess)
    warning = svc.workspace.predict(sess, text, st, mt, client=client)  # the run made while typing, if any
    if warning:
        gr.Warning(warning)
    left = sess is not before or (ref_before is not None and sess.ref_id is None)
    if not left:
        msg: Any = gr.update()
    elif editing_before and sess is before:  # a new sentence on a reopened ref: a new ref, the old one as saved
        msg = f"New ref (ref {ref_before} is unchanged)."
    else:
        msg = ""
    return Segmented(render(sess, gallery), new_ref_fields(svc, sess) if left else KEEP_REF_FIELDS, msg)


def speculate(svc: Services, text: str, st: float, mt: float, sess: Session, keep: bool = False,
              request: gr.Request = None) -> None:
    """The page's signal that the expression box's text has been still for a moment: the server predicts
    it on the open image in the background, so that Enter finds the answer (:mod:`app.services.speculate`);
    with *keep*, the run on the prefetched next image follows the new text too.
    No outputs: nothing on the page changes, and nothing is said if it cannot run (Enter will)."""
    client = getattr(request, "session_hash", None)
    svc.workspace.speculate(sess, text, st, mt, client)
    svc.prefetch.follow(client, kept_expression(keep, text, st, mt))


def rethreshold(svc: Services, st: float, mt: float, sess: Session) -> Rendered:
    sess.rethreshold(st, mt)
    return render(sess)


def select_candidates(svc: Services, wanted: list[int] | None, sess: Session) -> Rendered:
    if sess.prediction is not None:
        sess.toggle_candidates([int(k) for k in (wanted or [])])
    return render(sess)


def canvas_edit(svc: Services, value: dict | None, sess: Session) -> CanvasFields:
    """The canvas's ``edit`` event: the browser has drawn the change already; the session takes the
    new target set (for the verdict, the candidate list and the parts line)."""
    apply_canvas(value, sess)
    return render_fields(sess)


def open_image(svc: Services, image_id: int | None, sess: Session, keep: bool, text: str, st: float, mt: float,
               flt: ImageFilter, request: gr.Request | None = None) -> ImageOpened:
    """Show a collection image (features computed once); with *keep*, run the kept expression on it.
    The message is emptied and the per-ref boxes cleared: a new image starts a new ref."""
    if image_id is None:
        gr.Info("No more images in this direction" + (" that match the filter." if flt != ImageFilter() else "."))
        return ImageOpened(gr.update(), render(sess), queue_html(svc, sess, flt), image_refs(svc, sess), gr.update(),
                           gr.update(), KEEP_REF_FIELDS)
    svc.workspace.left_image(getattr(request, "session_hash", None))  # its run while typing is not wanted
    new = svc.workspace.open_image(image_id)
    svc.sessions.track(getattr(request, "session_hash", None), new)
    expr = text if keep else ""
    if keep and (text or "").strip():
        svc.workspace.predict(new, text, st, mt)
    prefetch_next(svc, image_id, flt, request, kept_expression(keep, text, st, mt))
    return ImageOpened(None, render(new), queue_html(svc, new, flt), image_refs(svc, new), expr, "",
                       new_ref_fields(svc, new))


# --- prefetch hook (app.services.prefetch): the next image's features while this one is worked on ---

def kept_expression(keep: bool, text: str | None, st: float, mt: float) -> tuple[str, float, float] | None:
    """What the next image will run when it opens (*keep*: the box's text and thresholds), else None."""
    return (text, st, mt) if keep and (text or "").strip() else None


def prefetch_next(svc: Services, image_id: int, flt: ImageFilter, request: gr.Request | None,
                  expression: tuple[str, float, float] | None = None) -> None:
    """After an image opened: prepare the one PgDn / D opens next under ``flt`` (its features, its
    picture, and the kept ``expression``'s run on it)."""
    svc.prefetch.schedule(getattr(request, "session_hash", None), flt, image_id, expression)


def upcoming_for(svc: Services, ticket: str) -> dict | None:
    """The canvas's server call (``make_canvas(upcoming=...)``): the picture PgDn will open for the page
    whose session carries ``ticket``, once the prefetch has prepared it, else None."""
    return upcoming_picture(svc.prefetch.upcoming(svc.sessions.client_of(ticket)))


def typed_for(svc: Services, ticket: str) -> dict | None:
    """The canvas's server call (``make_canvas(typed=...)``): the latest answer of the expression run
    while the annotator of the page whose session carries ``ticket`` typed, else None."""
    return typed_answer(svc.sessions.client_of(ticket))


def prefetch_refiltered(svc: Services, sess: Session, flt: ImageFilter, request: gr.Request | None) -> None:
    """The filter or the order changed: the prefetch under the old one is cancelled, the new next image asked for."""
    svc.prefetch.cancel(getattr(request, "session_hash", None))
    if sess.image_id is not None:
        prefetch_next(svc, sess.image_id, flt, request)


def step_image(svc: Services, delta: int, without_refs: bool, sess: Session, keep: bool, text: str, st: float,
               mt: float, name: str, split: str, status: str, annotator: str, order: str = "",
               request: gr.Request = None) -> ImageOpened:
    """The previous / next (``delta``) image of the filtered queue, or the next one without refs."""
    flt = image_filter(name, split, status, annotator, order)
    target = svc.queue.neighbour(flt, sess.image_id, delta, without_refs=without_refs)
    return open_image(svc, target, sess, keep, text, st, mt, flt, request)


def jump_thumb(svc: Services, page_no, sess: Session, keep: bool, text: str, st: float, mt: float, name: str,
               split: str, status: str, annotator: str, order: str, evt: gr.SelectData,
               request: gr.Request = None) -> ImageOpened:
    flt = image_filter(name, split, status, annotator, order)
    caption = (evt.value or {}).get("caption") if isinstance(evt.value, dict) else None
    try:  # the caption starts with the image id (robust to thumbnails that could not be made)
        target = int(str(caption).split(" ·")[0])
    except ValueError:
        target = svc.queue.nth(flt, int(page_no or 0) * THUMBS_PER_PAGE + int(evt.index))
    return open_image(svc, target, sess, keep, text, st, mt, flt, request)


def thumbs(svc: Services, page_no, name: str, split: str, status: str, annotator: str, order: str = "") -> Thumbs:
    """One page of thumbnails of the filtered queue and the page number shown."""
    page = svc.queue.thumbnails(image_filter(name, split, status, annotator, order), page_no)
    return Thumbs(page.items, page.page)


def thumbs_turn(svc: Services, delta: int, page_no, name: str, split: str, status: str, annotator: str,
                order: str = "") -> Thumbs:
    return thumbs(svc, max(0, int(page_no or 0) + delta), name, split, status, annotator, order)


def refilter(svc: Services, sess: Session, name: str, split: str, status: str, annotator: str, order: str = "",
             request: gr.Request = None) -> Refiltered:
    """A filter changed: the first page of thumbnails and the open image's place in the new queue."""
    flt = image_filter(name, split, status, annotator, order)
    prefetch_refiltered(svc, sess, flt, request)
    page = thumbs(svc, 0, name, split, status, annotator, order)
    return Refiltered(page.thumbs, page.thumb_page, queue_html(svc, sess, flt))


def open_ref(svc: Services, rid, sess: Session, request: gr.Request = None) -> RefOpened:
    """Reopen a saved ref in this view (from any tab): its sentences, boxes and history."""
    svc.workspace.left_image(getattr(request, "session_hash", None))
    opened = svc.workspace.reopen(ref_id(rid), sess, svc.refs.last_decision)
    new = opened.session
    svc.sessions.track(getattr(request, "session_hash", None), new)
    typed = gr.update()  # the box names who is working now, not the ref's author
    return RefOpened(None, opened.sentences[0], "\n".join(opened.sentences[1:]), opened.split, opened.status, typed,
                     render(new), queue_html(svc, new, ImageFilter()), image_refs(svc, new),
                     display.reopened_note(opened), history_html(svc.refs.history(new.ref_id)))


def open_sentence(svc: Services, handoff: dict | None, sess: Session, st: float, mt: float,
                  request: gr.Request = None) -> RefOpened:
    """A sentence to annotate on a collection image, run at once (the verification view's *It does
    refer*): the model's predicted ref of it is opened for editing when there is one, so saving
    updates that ref. ``handoff``: ``{"image_id", "sentence", "ref_id"}``. The per-ref boxes are that
    ref's, or a new ref's (no paraphrases, the image's split, done, no history)."""
    if not handoff:
        raise gr.Error("Nothing to open.")
    text = handoff["sentence"]
    rid = handoff.get("ref_id")
    svc.workspace.left_image(getattr(request, "session_hash", None))
    opened = None
    if rid is not None and svc.refs.exists(int(rid)):
        opened = svc.workspace.reopen(int(rid), sess, svc.refs.last_decision)
        new = opened.session
    else:
        new = svc.workspace.open_image(int(handoff["image_id"]))
    svc.sessions.track(getattr(request, "session_hash", None), new)
    warning = svc.workspace.predict(new, text, st, mt)
    if warning:
        gr.Warning(warning)
    if opened is not None and new.ref_id == opened.ref_id:  # still that ref (its own sentence): its boxes
        note = display.reopened_note(opened) + " "
        fields = RefFields("\n".join(opened.sentences[1:]), opened.split, opened.status,
                           history_html(svc.refs.history(new.ref_id)))
    else:  # a new ref on the image
        note, fields = "", new_ref_fields(svc, new)
    note += "Mark what the sentence refers to (click the objects), then save."
    return RefOpened(None, text, fields.extra, fields.split, fields.status, gr.update(), render(new),
                     queue_html(svc, new, ImageFilter()), image_refs(svc, new), note, fields.ref_history)


def rendered_outputs(ui: AnnotateUI, shell: Shell, record: type = Rendered) -> Outputs:
    """The outputs of a record of this view: its fields' widgets by name, the session on the shell's state."""
    return Outputs.of(record, ui, shell, sess=shell.sess_state)


def open_ref_outputs(ui: AnnotateUI, shell: Shell) -> Outputs:
    """Where :func:`open_ref` and :func:`open_sentence` show the ref (the app shell wires the Dataset tab's
    *Open* and the Negatives tab's N to them)."""
    return rendered_outputs(ui, shell, RefOpened)


def to_fix_rows(svc: Services, who: str):
    """The "rejected: fix these first" list of an annotator (hidden when empty)."""
    if not who:
        return gr.update(visible=False, value=[])
    rows = [[r.id, r.sentences, REASONS.get(d.reason or "", d.reason or "") if d else "", d.comment if d else "",
             d.reviewer if d else ""] for r, d in svc.refs.to_fix(who)]
    return gr.update(visible=bool(rows), value=rows)


def open_image_ref(svc: Services, sess: Session, evt: gr.SelectData, request: gr.Request = None) -> RefOpened:
    if sess.image_id is None or evt is None or evt.index is None:
        raise gr.Error("Open an image of the collection first.")
    rows = svc.refs.of_image(sess.image_id)
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not 0 <= int(row) < len(rows):
        raise gr.Error("That row is gone: the list changed meanwhile.")
    return open_ref(svc, rows[int(row)].id, sess, request)


def save(svc: Services, typed: str, split_v: str, status_v: str, more: str, text: str, sess: Session,
         request: gr.Request = None, canvas: dict | None = None) -> Saved:
    """Save the target set as a new ref, or update the ref being edited (versioned), as the user who
    works now; what they may not do is refused by the permission table (nothing is written).
    ``canvas``: the canvas's value, whose edited target set is what is saved, pixel for pixel. A
    target whose parts look accidental is saved with a warning (:func:`.canvas.part_warnings`)."""
    try:
        apply_canvas(canvas, sess)
    except CanvasError as exc:
        raise gr.Error(f"Not saved: {exc}") from None
    text = " ".join((text or "").split()) or sess.expression  # a reworded sentence is saved as typed
    if sess.image is None or not text or sess.prediction is None and sess.ref_id is None:
        raise gr.Error("Nothing to save: segment an image with an expression first.")
    actor = svc.actor(request_user(request), typed)
    sentences = [text] + [s for s in (more or "").splitlines() if s.strip()]
    try:
        # an update that rewords the ref's sentence (typed over without running the model) says so
        old = svc.refs.ref(sess.ref_id).sentences[0] if sess.ref_id is not None else text
        reworded = (old, text) if old != text else None
        saved = svc.refs.save(actor, svc.workspace.keep_image(sess), sentences, masks=[t.mask for t in sess.targets],
                              no_target=sess.no_target, split=split_v, status=status_v, ref_id=sess.ref_id,
                              expected_version=sess.ref_version,
                              save_key=sess.save_key(actor.name, sentences, split_v, status_v))
    except (StoreError, Refused, BadInput) as exc:  # a conflict, a refusal, bad input: nothing saved
        kept = " Your version is still on screen." if "meanwhile" in str(exc) else ""
        said = "" if isinstance(exc, OutcomeUnknown) else "Not saved: "  # it may have been: the message says so
        raise gr.Error(f"{said}{exc}{kept}") from None
    sess.save_nonce = uuid.uuid4().hex  # the next save is a new attempt
    sess.ref_id, sess.ref_version, sess.expression, sess.editing = saved.ref_id, saved.version, text, False
    sess.fixing = False
    kind = "no-target" if sess.no_target else f"{len(sess.targets)} instance(s)"
    for line in session_part_warnings(sess, [n for n, _ in display.target_numbers(sess)]):
        gr.Warning(f"Saved, but {line}.")
    stored = saved_ref_fields(svc, saved.ref_id)  # the boxes show the ref as stored
    msg = f"{'Saved' if saved.created else 'Updated'} ref {saved.ref_id} ({kind}) at {time.strftime('%H:%M:%S')}."
    if reworded is not None:
        msg += f" Ref {saved.ref_id}'s sentence changed: '{reworded[0]}' → '{reworded[1]}'."
    return Saved(msg, image_refs(svc, sess), sess, stored.ref_history, to_fix_rows(svc, actor.name), stored.extra,
                 stored.split, stored.status)


def next_expression(svc: Services, sess: Session) -> NextExpression:
    """Alt+N: a new ref on the same image: the expression and the message emptied (the last "Saved ref N"
    belongs to the ref just left), the per-ref boxes cleared."""
    sess.start_new_ref()
    return NextExpression("", "", render(sess), new_ref_fields(svc, sess))


def upload(svc: Services, path: str | None, sess: Session, request: gr.Request = None) -> Uploaded:
    """A picture put in the upload box opens as a new ref (the same picture again keeps its features), the
    per-ref boxes cleared; an emptied box changes nothing."""
    if not path:
        return Uploaded(render(sess), display.queue_html(None, svc.queue.size()), image_refs(svc, sess),
                        KEEP_REF_FIELDS)
    svc.workspace.left_image(getattr(request, "session_hash", None))
    opened = svc.workspace.open_upload(path, sess)
    if opened.warning:
        gr.Warning(opened.warning)
    new = opened.session
    new.start_new_ref()
    svc.sessions.track(getattr(request, "session_hash", None), new)
    return Uploaded(render(new), display.queue_html(None, svc.queue.size()), image_refs(svc, new),
                    new_ref_fields(svc, new))


def fix_rows(svc: Services, typed: str, request: gr.Request = None):
    try:
        who = svc.actor(request_user(request), typed).name
    except (StoreError, Refused):
        return gr.update(visible=False, value=[])
    return to_fix_rows(svc, who)


def open_to_fix(svc: Services, typed: str, sess: Session, evt: gr.SelectData, request: gr.Request = None) -> RefOpened:
    rows = svc.refs.to_fix(svc.actor(request_user(request), typed).name)
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not 0 <= int(row) < len(rows):
        raise gr.Error("That row is gone: the list changed meanwhile.")
    return open_ref(svc, rows[int(row)][0].id, sess, request)


def first_view(svc: Services):
    """An empty collection (a demo, a first start): the upload box opens by itself."""
    return gr.update(open=svc.queue.size() == 0)


def wire(svc: Services, ui: AnnotateUI, shell: Shell) -> None:
    """Attach the handlers to the tab's widgets (and the shell's session state)."""
    outs = functools.partial(rendered_outputs, ui, shell)
    common = outs(Rendered)
    keep = keep_on_error(len(common.outputs))  # a failure never blanks the canvas
    seg_inputs = [ui.image_in, ui.expression, ui.score_thr, ui.mask_thr, shell.sess_state]
    seg = outs(Segmented)
    seg_guard = lambda h: gpu(keep_on_error(len(seg.outputs))(h))  # noqa: E731
    ui.run_btn.click(seg.bind(segment, svc, wrap=seg_guard), seg_inputs, seg.outputs, api_name="segment")
    ui.expression.submit(seg.bind(segment_typed, svc, wrap=seg_guard), seg_inputs, seg.outputs, api_name=False).then(
        bind(show_gallery, svc), [shell.sess_state], [ui.gallery], api_name=False, show_progress="hidden")
    # the page clicks the hidden button once the typed text has been still (app.ui SHORTCUTS_JS)
    svc.prefetch.on_ready(prepare_picture)  # the next image's picture is encoded with its features
    svc.speculation.on_result(prepare_typed)  # the typed expression's masks are encoded with its answer
    ui.speculate.click(bind(speculate, svc), [ui.expression, ui.score_thr, ui.mask_thr, shell.sess_state,
                                              ui.keep_expr], None,
                       api_name=False, show_progress="hidden", trigger_mode="always_last")
    thr = [ui.score_thr, ui.mask_thr, shell.sess_state]
    ui.score_thr.release(common.bind(rethreshold, svc, wrap=keep), thr, common.outputs, api_name="rethreshold")
    ui.mask_thr.release(common.bind(rethreshold, svc, wrap=keep), thr, common.outputs, api_name=False)
    ui.candidates.input(common.bind(select_candidates, svc, wrap=keep), [ui.candidates, shell.sess_state],
                        common.outputs, api_name="select_candidates")
    edited = outs(CanvasFields)
    ui.result.edit(edited.bind(canvas_edit, svc, wrap=keep_on_error(len(edited.outputs))), [ui.result, shell.sess_state],
                   edited.outputs, api_name="canvas_edit", show_progress="hidden", trigger_mode="always_last")
    nxt = outs(NextExpression)
    ui.next_expr_btn.click(nxt.bind(next_expression, svc, wrap=keep_on_error(len(nxt.outputs))), [shell.sess_state],
                           nxt.outputs, api_name="next_expression")
    uploaded = outs(Uploaded)
    ui.image_in.upload(uploaded.bind(upload, svc, wrap=gpu), [ui.image_in, shell.sess_state], uploaded.outputs,
                       api_name=False)
    nav_inputs = [shell.sess_state, ui.keep_expr, ui.expression, ui.score_thr, ui.mask_thr, *ui.filters]
    nav = outs(ImageOpened)
    nav_guard = lambda h: gpu(keep_on_error(len(nav.outputs))(h))  # noqa: E731
    for button, delta, without, name in ((ui.prev_img, -1, False, "previous_image"), (ui.next_img, 1, False, "next_image"),
                                         (ui.next_empty, 1, True, "next_image_without_refs")):
        button.click(nav.bind(step_image, svc, delta, without, wrap=nav_guard), nav_inputs, nav.outputs, api_name=name,
                     show_progress="hidden")
    ui.thumbs.select(nav.bind(jump_thumb, svc, wrap=nav_guard), [ui.thumb_page, *nav_inputs], nav.outputs,
                     api_name=False)
    pages, page = [ui.thumb_page, *ui.filters], Outputs.of(Thumbs, ui)
    ui.thumb_prev.click(page.bind(thumbs_turn, svc, -1), pages, page.outputs, api_name=False)
    ui.thumb_next.click(page.bind(thumbs_turn, svc, 1), pages, page.outputs, api_name=False)
    refiltered = refiltered_outputs(ui)
    for f in (ui.f_split, ui.f_status, ui.f_order):
        f.input(refiltered.bind(refilter, svc), [shell.sess_state, *ui.filters], refiltered.outputs, api_name=False)
    for f in (ui.f_name, ui.f_annotator):
        f.submit(refiltered.bind(refilter, svc), [shell.sess_state, *ui.filters], refiltered.outputs, api_name=False)
    reopened = open_ref_outputs(ui, shell)
    ui.image_refs.select(reopened.bind(open_image_ref, svc, wrap=gpu), [shell.sess_state], reopened.outputs,
                         api_name=False)
    saved = outs(Saved)
    ui.save_btn.click(saved.bind(save, svc), [shell.who, ui.split, ui.status, ui.extra, ui.expression, shell.sess_state,
                                              ui.result],
                      saved.outputs, api_name="save").success(  # the thumbnails show the image's new state
        page.bind(thumbs, svc), pages, page.outputs, api_name=False, show_progress="hidden")
    ui.to_fix.select(reopened.bind(open_to_fix, svc, wrap=gpu), [shell.who, shell.sess_state], reopened.outputs,
                     api_name=False)
    shell.who.submit(bind(fix_rows, svc), [shell.who], [ui.to_fix], api_name=False)
    shell.load_events.append((bind(fix_rows, svc), [shell.who], [ui.to_fix]))
    shell.load_events.append((refiltered.bind(refilter, svc), [shell.sess_state, *ui.filters], refiltered.outputs))
    shell.load_events.append((bind(first_view, svc), [], [ui.upload_box]))


def refiltered_outputs(ui: AnnotateUI) -> Outputs:
    """Where :func:`refilter` shows the thumbnails and the queue line (the app shell wires the Add images
    panel's import to it too)."""
    return Outputs.of(Refiltered, ui)
