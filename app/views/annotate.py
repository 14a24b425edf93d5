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

import time
import uuid

import gradio as gr

from ..services import REASONS, SPLITS, BadInput, ImageFilter, Refused, RefStatus, Services, StoreError
from ..services.queue import THUMBS_PER_PAGE, image_filter
from ..viewkit.session import Session
from ..zerogpu import gpu  # spaces.GPU(duration=...) on ZeroGPU, a no-op elsewhere
from . import display
from .display import history_html
from .annotate_layout import AnnotateUI
from .canvas import CanvasError, apply_canvas, keep_on_error, part_warnings
from .shell import Shell, bind, from_browser, ref_id, render, render_fields, request_user


def image_refs(svc: Services, sess: Session) -> list[list]:
    """The rows of the open image's ref list."""
    return display.ref_rows(svc.refs.of_image(sess.image_id), with_image=False)


# --- the per-ref boxes (paraphrases, split, status, the open ref's history) follow the ref -------------
# Every handler that changes the ref being worked on (another image, Alt+N, a ref opened, an upload, a
# save, a new expression after a save) also sets these four boxes: cleared for a new ref, reloaded for
# a saved one. Otherwise what was typed for one ref would be saved with the next one.

KEEP_REF_FIELDS = (gr.update(), gr.update(), gr.update(), gr.update())


def new_ref_fields(svc: Services, sess: Session) -> tuple:
    """The boxes of a ref not saved yet on the open image: no paraphrases, the split the image was
    imported into (train without one, and for an upload), status done, no history."""
    split = svc.workspace.image_split(sess.image_id) if sess.image_id is not None else ""
    return ("", split if split in SPLITS else "train", RefStatus.DONE.value, "")


def saved_ref_fields(svc: Services, rid: int) -> tuple:
    """The boxes of saved ref ``rid`` as stored: its other sentences, split, status and history."""
    rec = svc.refs.ref(rid)
    status = rec.status if rec.status != RefStatus.PREDICTED else RefStatus.DONE.value
    return ("\n".join(rec.sentences[1:]), rec.split, status, history_html(svc.refs.history(rid)))


def queue_html(svc: Services, sess: Session, flt: ImageFilter) -> str:
    index, total = svc.queue.position(flt, sess.image_id)
    return display.queue_html(index, total, svc.workspace.image_name(sess.image_id))


EMPTY_EXPRESSION_HINT = "Type an expression first (what to segment), then press Enter."


def segment(svc: Services, path: str | None, text: str, st: float, mt: float, sess: Session,
            request: gr.Request = None):
    """Run the expression on the upload (``path``) or the open image; an empty one from the page changes
    nothing and says what to do (an API caller gets the error). Outputs: the session outputs,
    then the per-ref boxes (:func:`new_ref_fields` when this run leaves the saved ref that was open, a
    new expression after a save; kept otherwise)."""
    if not path and not (text or "").strip() and from_browser(request):  # an empty Enter: ignored, with a hint
        gr.Info(EMPTY_EXPRESSION_HINT)
        return gr.skip()  # every output as it was: the picture, the verdict, the boxes
    before, ref_before = sess, sess.ref_id
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
    return (*render(sess), *(new_ref_fields(svc, sess) if left else KEEP_REF_FIELDS))


def speculate(svc: Services, text: str, st: float, mt: float, sess: Session, request: gr.Request = None) -> None:
    """The page's signal that the expression box's text has been still for a moment: the server predicts
    it on the open image in the background, so that Enter finds the answer (:mod:`app.services.speculate`).
    No outputs: nothing on the page changes, and nothing is said if it cannot run (Enter will)."""
    svc.workspace.speculate(sess, text, st, mt, getattr(request, "session_hash", None))


def rethreshold(svc: Services, st: float, mt: float, sess: Session):
    sess.rethreshold(st, mt)
    return render(sess)


def select_candidates(svc: Services, wanted: list[int] | None, sess: Session):
    if sess.prediction is not None:
        sess.toggle_candidates([int(k) for k in (wanted or [])])
    return render(sess)


def canvas_edit(svc: Services, value: dict | None, sess: Session):
    """The canvas's ``edit`` event: the browser has drawn the change already; the session takes the
    new target set (for the verdict, the candidate list and the parts line)."""
    apply_canvas(value, sess)
    return render_fields(sess)


def open_image(svc: Services, image_id: int | None, sess: Session, keep: bool, text: str, st: float, mt: float,
               flt: ImageFilter, request: gr.Request | None = None):
    """Show a collection image (features computed once); with *keep*, run the kept expression on it.
    Outputs: upload box, the session outputs, queue position, the image's refs, expression, message,
    the per-ref boxes (cleared: a new image starts a new ref)."""
    if image_id is None:
        gr.Info("No more images in this direction" + (" that match the filter." if flt != ImageFilter() else "."))
        return (gr.update(), *render(sess), queue_html(svc, sess, flt), image_refs(svc, sess), gr.update(), gr.update(),
                *KEEP_REF_FIELDS)
    svc.workspace.left_image(getattr(request, "session_hash", None))  # its run while typing is not wanted
    new = svc.workspace.open_image(image_id)
    svc.sessions.track(getattr(request, "session_hash", None), new)
    expr = text if keep else ""
    if keep and (text or "").strip():
        svc.workspace.predict(new, text, st, mt)
    prefetch_next(svc, image_id, flt, request)
    return (None, *render(new), queue_html(svc, new, flt), image_refs(svc, new), expr, "", *new_ref_fields(svc, new))


# --- prefetch hook (app.services.prefetch): the next image's features while this one is worked on ---

def prefetch_next(svc: Services, image_id: int, flt: ImageFilter, request: gr.Request | None) -> None:
    """After an image opened: prepare the one PgDn / D opens next under ``flt``."""
    svc.prefetch.schedule(getattr(request, "session_hash", None), flt, image_id)


def prefetch_refiltered(svc: Services, sess: Session, flt: ImageFilter, request: gr.Request | None) -> None:
    """The filter or the order changed: the prefetch under the old one is cancelled, the new next image asked for."""
    svc.prefetch.cancel(getattr(request, "session_hash", None))
    if sess.image_id is not None:
        prefetch_next(svc, sess.image_id, flt, request)


def step_image(svc: Services, delta: int, without_refs: bool, sess: Session, keep: bool, text: str, st: float,
               mt: float, name: str, split: str, status: str, annotator: str, order: str = "", request: gr.Request = None):
    """The previous / next (``delta``) image of the filtered queue, or the next one without refs."""
    flt = image_filter(name, split, status, annotator, order)
    target = svc.queue.neighbour(flt, sess.image_id, delta, without_refs=without_refs)
    return open_image(svc, target, sess, keep, text, st, mt, flt, request)


def jump_thumb(svc: Services, page_no, sess: Session, keep: bool, text: str, st: float, mt: float, name: str,
               split: str, status: str, annotator: str, order: str, evt: gr.SelectData, request: gr.Request = None):
    flt = image_filter(name, split, status, annotator, order)
    caption = (evt.value or {}).get("caption") if isinstance(evt.value, dict) else None
    try:  # the caption starts with the image id (robust to thumbnails that could not be made)
        target = int(str(caption).split(" ·")[0])
    except ValueError:
        target = svc.queue.nth(flt, int(page_no or 0) * THUMBS_PER_PAGE + int(evt.index))
    return open_image(svc, target, sess, keep, text, st, mt, flt, request)


def thumbs(svc: Services, page_no, name: str, split: str, status: str, annotator: str, order: str = ""):
    """One page of thumbnails of the filtered queue and the page number shown."""
    page = svc.queue.thumbnails(image_filter(name, split, status, annotator, order), page_no)
    return page.items, page.page


def thumbs_turn(svc: Services, delta: int, page_no, name: str, split: str, status: str, annotator: str,
                order: str = ""):
    return thumbs(svc, max(0, int(page_no or 0) + delta), name, split, status, annotator, order)


def refilter(svc: Services, sess: Session, name: str, split: str, status: str, annotator: str, order: str = "",
             request: gr.Request = None):
    """A filter changed: the first page of thumbnails and the open image's place in the new queue."""
    flt = image_filter(name, split, status, annotator, order)
    prefetch_refiltered(svc, sess, flt, request)
    items, page_no = thumbs(svc, 0, name, split, status, annotator, order)
    return items, page_no, queue_html(svc, sess, flt)


def open_ref(svc: Services, rid, sess: Session, request: gr.Request = None):
    """Reopen a saved ref in this view (from any tab). Outputs: :func:`open_ref_outputs`."""
    svc.workspace.left_image(getattr(request, "session_hash", None))
    opened = svc.workspace.reopen(ref_id(rid), sess, svc.refs.last_decision)
    new = opened.session
    svc.sessions.track(getattr(request, "session_hash", None), new)
    typed = gr.update()  # the box names who is working now, not the ref's author
    return (None, opened.sentences[0], "\n".join(opened.sentences[1:]), opened.split, opened.status, typed,
            *render(new), queue_html(svc, new, ImageFilter()), image_refs(svc, new), display.reopened_note(opened),
            history_html(svc.refs.history(new.ref_id)))


def open_sentence(svc: Services, handoff: dict | None, sess: Session, st: float, mt: float,
                  request: gr.Request = None):
    """A sentence to annotate on a collection image, run at once (the verification view's *It does
    refer*): the model's predicted ref of it is opened for editing when there is one, so saving
    updates that ref. ``handoff``: ``{"image_id", "sentence", "ref_id"}``. Outputs: :func:`open_ref_outputs`."""
    if not handoff:
        raise gr.Error("Nothing to open.")
    text = handoff["sentence"]
    rid = handoff.get("ref_id")
    svc.workspace.left_image(getattr(request, "session_hash", None))
    if rid is not None and svc.refs.exists(int(rid)):
        opened = svc.workspace.reopen(int(rid), sess, svc.refs.last_decision)
        new, split, status, note = opened.session, opened.split, opened.status, display.reopened_note(opened)
        history = history_html(svc.refs.history(new.ref_id))
    else:
        new = svc.workspace.open_image(int(handoff["image_id"]))
        split, status, note, history = (svc.workspace.image_split(new.image_id) or "train"), RefStatus.DONE.value, "", ""
    svc.sessions.track(getattr(request, "session_hash", None), new)
    warning = svc.workspace.predict(new, text, st, mt)
    if warning:
        gr.Warning(warning)
    note = (note + " " if note else "") + "Mark what the sentence refers to (click the objects), then save."
    return (None, text, "", split, status, gr.update(), *render(new), queue_html(svc, new, ImageFilter()),
            image_refs(svc, new), note, history)


def open_ref_outputs(ui: AnnotateUI, shell: Shell) -> list:
    """Where :func:`open_ref` shows the ref (the app shell wires the Dataset tab's *Open* to it)."""
    return [ui.image_in, ui.expression, ui.extra, ui.split, ui.status, shell.who, *shell.session_outputs,
            ui.queue_pos, ui.image_refs, ui.save_msg, ui.ref_history]


def to_fix_rows(svc: Services, who: str):
    """The "rejected: fix these first" list of an annotator (hidden when empty)."""
    if not who:
        return gr.update(visible=False, value=[])
    rows = [[r.id, r.sentences, REASONS.get(d.reason or "", d.reason or "") if d else "", d.comment if d else "",
             d.reviewer if d else ""] for r, d in svc.refs.to_fix(who)]
    return gr.update(visible=bool(rows), value=rows)


def open_image_ref(svc: Services, sess: Session, evt: gr.SelectData, request: gr.Request = None):
    if sess.image_id is None or evt is None or evt.index is None:
        raise gr.Error("Open an image of the collection first.")
    rows = svc.refs.of_image(sess.image_id)
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not 0 <= int(row) < len(rows):
        raise gr.Error("That row is gone: the list changed meanwhile.")
    return open_ref(svc, rows[int(row)].id, sess, request)


def save(svc: Services, typed: str, split_v: str, status_v: str, more: str, text: str, sess: Session,
         request: gr.Request = None, canvas: dict | None = None):
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
        saved = svc.refs.save(actor, svc.workspace.keep_image(sess), sentences, masks=[t.mask for t in sess.targets],
                              no_target=sess.no_target, split=split_v, status=status_v, ref_id=sess.ref_id,
                              expected_version=sess.ref_version,
                              save_key=sess.save_key(actor.name, sentences, split_v, status_v))
    except (StoreError, Refused, BadInput) as exc:  # a conflict, a refusal, bad input: nothing saved
        kept = " Your version is still on screen." if "meanwhile" in str(exc) else ""
        raise gr.Error(f"Not saved: {exc}{kept}") from None
    sess.save_nonce = uuid.uuid4().hex  # the next save is a new attempt
    sess.ref_id, sess.ref_version, sess.expression, sess.editing = saved.ref_id, saved.version, text, False
    kind = "no-target" if sess.no_target else f"{len(sess.targets)} instance(s)"
    for line in part_warnings([t.mask for t in sess.targets], [n for n, _ in display.target_numbers(sess)]):
        gr.Warning(f"Saved, but {line}.")
    extra, split, status, history = saved_ref_fields(svc, saved.ref_id)  # the boxes show the ref as stored
    return (f"{'Saved' if saved.created else 'Updated'} ref {saved.ref_id} ({kind}) at {time.strftime('%H:%M:%S')}.",
            image_refs(svc, sess), sess, history, to_fix_rows(svc, actor.name), extra, split, status)


def next_expression(svc: Services, sess: Session):
    """Alt+N: a new ref on the same image. Outputs: expression, the save message (emptied: the last "Saved
    ref N" belongs to the ref just left), the session outputs, the per-ref boxes (cleared)."""
    sess.start_new_ref()
    return ("", "", *render(sess), *new_ref_fields(svc, sess))


def upload(svc: Services, path: str | None, sess: Session, request: gr.Request = None):
    """A picture put in the upload box opens as a new ref (the same picture again keeps its features).
    Outputs: the session outputs, queue position, the image's refs, the per-ref boxes (cleared)."""
    if not path:
        return (*render(sess), display.queue_html(None, svc.queue.size()), image_refs(svc, sess), *KEEP_REF_FIELDS)
    svc.workspace.left_image(getattr(request, "session_hash", None))
    opened = svc.workspace.open_upload(path, sess)
    if opened.warning:
        gr.Warning(opened.warning)
    new = opened.session
    new.start_new_ref()
    svc.sessions.track(getattr(request, "session_hash", None), new)
    return (*render(new), display.queue_html(None, svc.queue.size()), image_refs(svc, new), *new_ref_fields(svc, new))


def fix_rows(svc: Services, typed: str, request: gr.Request = None):
    try:
        who = svc.actor(request_user(request), typed).name
    except (StoreError, Refused):
        return gr.update(visible=False, value=[])
    return to_fix_rows(svc, who)


def open_to_fix(svc: Services, typed: str, sess: Session, evt: gr.SelectData, request: gr.Request = None):
    rows = svc.refs.to_fix(svc.actor(request_user(request), typed).name)
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not 0 <= int(row) < len(rows):
        raise gr.Error("That row is gone: the list changed meanwhile.")
    return open_ref(svc, rows[int(row)][0].id, sess, request)


def first_view(svc: Services):
    """An empty collection (a demo, a first start): the upload box opens by itself."""
    return gr.update(open=svc.queue.size() == 0)


def wire(svc: Services, ui: AnnotateUI, shell: Shell) -> None:
    """Attach the handlers to the tab's widgets (and the shell's session outputs)."""
    common = shell.session_outputs
    keep = keep_on_error(len(common))  # a failure never blanks the canvas
    seg_inputs = [ui.image_in, ui.expression, ui.score_thr, ui.mask_thr, shell.sess_state]
    seg_outputs = [*common, *ui.ref_fields]
    seg_guard = lambda h: gpu(keep_on_error(len(seg_outputs))(h))  # noqa: E731
    ui.run_btn.click(bind(segment, svc, wrap=seg_guard), seg_inputs, seg_outputs, api_name="segment")
    ui.expression.submit(bind(segment, svc, wrap=seg_guard), seg_inputs, seg_outputs, api_name=False)
    # the page clicks the hidden button once the typed text has been still (app.ui SHORTCUTS_JS)
    ui.speculate.click(bind(speculate, svc), [ui.expression, ui.score_thr, ui.mask_thr, shell.sess_state], None,
                       api_name=False, show_progress="hidden", trigger_mode="always_last")
    thr = [ui.score_thr, ui.mask_thr, shell.sess_state]
    ui.score_thr.release(bind(rethreshold, svc, wrap=keep), thr, common, api_name="rethreshold")
    ui.mask_thr.release(bind(rethreshold, svc, wrap=keep), thr, common, api_name=False)
    ui.candidates.input(bind(select_candidates, svc, wrap=keep), [ui.candidates, shell.sess_state], common,
                        api_name="select_candidates")
    ui.result.edit(bind(canvas_edit, svc, wrap=keep_on_error(4)), [ui.result, shell.sess_state],
                   [ui.verdict, ui.candidates, ui.parts, shell.sess_state], api_name="canvas_edit",
                   show_progress="hidden", trigger_mode="always_last")
    next_outputs = [ui.expression, ui.save_msg, *common, *ui.ref_fields]
    ui.next_expr_btn.click(bind(next_expression, svc, wrap=keep_on_error(len(next_outputs))), [shell.sess_state],
                           next_outputs, api_name="next_expression")
    ui.image_in.upload(bind(upload, svc, wrap=gpu), [ui.image_in, shell.sess_state],
                       [*common, ui.queue_pos, ui.image_refs, *ui.ref_fields], api_name=False)
    nav_inputs = [shell.sess_state, ui.keep_expr, ui.expression, ui.score_thr, ui.mask_thr, *ui.filters]
    nav_outputs = [ui.image_in, *common, ui.queue_pos, ui.image_refs, ui.expression, ui.save_msg, *ui.ref_fields]
    nav_guard = lambda h: gpu(keep_on_error(len(nav_outputs))(h))  # noqa: E731
    for button, delta, without, name in ((ui.prev_img, -1, False, "previous_image"), (ui.next_img, 1, False, "next_image"),
                                         (ui.next_empty, 1, True, "next_image_without_refs")):
        button.click(bind(step_image, svc, delta, without, wrap=nav_guard), nav_inputs, nav_outputs, api_name=name)
    ui.thumbs.select(bind(jump_thumb, svc, wrap=nav_guard), [ui.thumb_page, *nav_inputs], nav_outputs, api_name=False)
    pages = [ui.thumb_page, *ui.filters]
    ui.thumb_prev.click(bind(thumbs_turn, svc, -1), pages, [ui.thumbs, ui.thumb_page], api_name=False)
    ui.thumb_next.click(bind(thumbs_turn, svc, 1), pages, [ui.thumbs, ui.thumb_page], api_name=False)
    refiltered = [ui.thumbs, ui.thumb_page, ui.queue_pos]
    for f in (ui.f_split, ui.f_status, ui.f_order):
        f.input(bind(refilter, svc), [shell.sess_state, *ui.filters], refiltered, api_name=False)
    for f in (ui.f_name, ui.f_annotator):
        f.submit(bind(refilter, svc), [shell.sess_state, *ui.filters], refiltered, api_name=False)
    reopened = open_ref_outputs(ui, shell)
    ui.image_refs.select(bind(open_image_ref, svc, wrap=gpu), [shell.sess_state], reopened, api_name=False)
    ui.save_btn.click(bind(save, svc), [shell.who, ui.split, ui.status, ui.extra, ui.expression, shell.sess_state,
                                        ui.result],
                      [ui.save_msg, ui.image_refs, shell.sess_state, ui.ref_history, ui.to_fix, ui.extra, ui.split,
                       ui.status], api_name="save").success(  # the thumbnails show the image's new state
        bind(thumbs, svc), pages, [ui.thumbs, ui.thumb_page], api_name=False, show_progress="hidden")
    ui.to_fix.select(bind(open_to_fix, svc, wrap=gpu), [shell.who, shell.sess_state], reopened, api_name=False)
    shell.who.submit(bind(fix_rows, svc), [shell.who], [ui.to_fix], api_name=False)
    shell.load_events.append((bind(fix_rows, svc), [shell.who], [ui.to_fix]))
    shell.load_events.append((bind(refilter, svc), [shell.sess_state, *ui.filters], refiltered))
    shell.load_events.append((bind(first_view, svc), [], [ui.upload_box]))
