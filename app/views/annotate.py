"""The annotate view: the collection as a queue, the expression, the picture with click-to-pick,
the candidates, this image's saved refs, and saving.

Keys (see ``app.ui.SHORTCUTS_JS``): A / D previous / next image and Shift+D the next image
without refs (outside text boxes), Enter runs the expression, a click on the picture adds or
removes the object under it, Ctrl+Enter saves.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from deris_core.preprocess import ImageError, load_image
from deris_core.tokenizer import TokenizerError

from ..collection import thumbnail_file
from ..overlay import view_scale
from ..picking import hit
from ..session import Session, Target
from ..store import ConflictError, StoreError, image_digest
from ..store.collection import ImageFilter, image_page, neighbour, nth, position
from ..store.review import REASONS, last_decision, to_fix
from ..zerogpu import gpu  # spaces.GPU(duration=...) on ZeroGPU, a no-op elsewhere
from . import display
from .annotate_layout import THUMBS_PER_PAGE
from .context import Studio, render
from .review import history_html




def wire(studio: Studio, c: SimpleNamespace) -> None:
    model, store = studio.model, studio.store
    common = [c.result, c.verdict, c.candidates, c.gallery, c.target_pick, c.sess_state]

    def _flt(name: str, split: str, status: str, annotator: str) -> ImageFilter:
        return ImageFilter(name or "", split or "", status or "", annotator or "")

    def _image_refs(sess: Session) -> list[list]:
        if sess.image_id is None:
            return []
        rows, _ = store.refs_page(0, 200, image_id=sess.image_id, newest_first=False)
        return display.ref_rows(rows, with_image=False)

    def _queue(sess: Session, flt: ImageFilter) -> str:
        if sess.image_id is None:
            return display.queue_html(None, position(store, flt, 0)[1])
        index, total = position(store, flt, sess.image_id)
        return display.queue_html(index, total, store.image(sess.image_id).file_name)

    def _session_for(rgb, image_id: int | None, key: str, digest: str | None = None) -> Session:
        state = model.get().set_image(rgb)
        return Session(image=rgb, image_state=state, image_id=image_id, file_name=key, digest=digest or image_digest(rgb))

    def _predict(sess: Session, text: str, st: float, mt: float) -> None:
        text = " ".join((text or "").split())
        if not text:
            raise gr.Error("Type an expression first.")
        try:
            pred = model.get().predict(text, image=sess.image_state, score_threshold=st, mask_threshold=mt)
        except TokenizerError as exc:
            raise gr.Error(f"Cannot use this expression: {exc}") from None
        if pred.truncated:
            gr.Warning(f"The expression is long: only its first {model.get().cfg.max_token - 2} tokens were used.")
        sess.apply_prediction(pred)
        sess.expression = text

    def _from_upload(path: str, sess: Session) -> Session:
        key = display.file_key(path, model.version)
        if sess.image is not None and sess.file_name == key and sess.image_state is not None:
            return sess
        try:
            rgb = load_image(path)
        except ImageError as exc:
            raise gr.Error(f"Cannot use this image: {str(exc).replace(str(path), Path(path).name)}") from None
        rgb, resized = display.fit(rgb, studio.max_image_side)
        digest = image_digest(rgb)
        if sess.image_state is not None and sess.digest == digest and (sess.file_name or "").split(":")[0] == str(model.version):
            sess.file_name = key  # the same pixels under another file: keep the cached features
            return sess
        if resized:
            gr.Warning(f"The image was scaled down to {rgb.shape[1]}x{rgb.shape[0]} "
                       f"(--max-image-side {studio.max_image_side}).")
        return _session_for(rgb, None, key, digest)

    @gpu
    def segment(path: str | None, text: str, st: float, mt: float, sess: Session, request: gr.Request):
        if path:
            sess = _from_upload(path, sess)
        elif sess.image is None:
            raise gr.Error("Give an image first: open one of the collection, or upload, paste or pick an example.")
        elif sess.image_state is None or (sess.file_name or "").split(":")[0] != str(model.version):
            sess.image_state = model.get().set_image(sess.image)  # the model changed meanwhile
            sess.file_name = f"{model.version}:{sess.digest}"
        studio.track(request, sess)
        _predict(sess, text, st, mt)
        return render(sess)

    def rethreshold(st: float, mt: float, sess: Session):
        sess.rethreshold(st, mt)
        return render(sess)

    def select_candidates(wanted: list[int] | None, sess: Session):
        if sess.prediction is not None:
            sess.toggle_candidates([int(k) for k in (wanted or [])])
        return render(sess)

    def pick(sess: Session, evt: gr.SelectData):
        if sess.image is None or evt is None or evt.index is None:
            return render(sess)
        k = view_scale(sess.image.shape)
        x, y = int(evt.index[0]) // k, int(evt.index[1]) // k
        action = hit(sess.prediction, [t.mask for t in sess.targets], x, y)
        if action.action == "remove":
            sess.change()
            del sess.targets[action.target]
        elif action.action == "add":
            sess.toggle_candidates(sess.selected_candidates() + [action.candidate])
        else:
            gr.Info("No candidate covers that point: draw it in the Correct tab.")
        return render(sess)

    def open_image(image_id: int | None, sess: Session, keep: bool, text: str, st: float, mt: float,
                   flt: ImageFilter, request: gr.Request | None):
        """Show a collection image (features computed once); with *keep*, run the kept expression on it."""
        if image_id is None:
            gr.Info("No more images in this direction" + (" that match the filter." if flt != ImageFilter() else "."))
            return (gr.update(), *render(sess), _queue(sess, flt), _image_refs(sess), gr.update(), gr.update())
        rgb = store.load_image(image_id)
        if rgb is None:
            raise gr.Error(f"The pixels of image {image_id} are not available (imported by reference, file missing).")
        if max(rgb.shape[:2]) > studio.max_image_side:
            raise gr.Error(f"Image {image_id} is larger than --max-image-side {studio.max_image_side}.")
        new = _session_for(rgb, image_id, f"{model.version}:store:{image_id}")
        studio.track(request, new)
        expr = text if keep else ""
        if keep and (text or "").strip():
            _predict(new, text, st, mt)
        return (None, *render(new), _queue(new, flt), _image_refs(new), expr, "")

    nav_inputs = [c.sess_state, c.keep_expr, c.expression, c.score_thr, c.mask_thr, c.f_name, c.f_split, c.f_status,
                  c.f_annotator]
    nav_outputs = [c.image_in, *common, c.queue_pos, c.image_refs, c.expression, c.save_msg]

    def step(delta: int, without_refs: bool = False):
        @gpu
        def go_image(sess, keep, text, st, mt, name, split, status, annotator, request: gr.Request):
            flt = _flt(name, split, status, annotator)
            target = neighbour(store, flt, sess.image_id, delta, without_refs=without_refs, wrap=without_refs)
            return open_image(target, sess, keep, text, st, mt, flt, request)
        return go_image

    @gpu
    def jump_thumb(page_no, sess, keep, text, st, mt, name, split, status, annotator, evt: gr.SelectData,
                   request: gr.Request):
        flt = _flt(name, split, status, annotator)
        caption = (evt.value or {}).get("caption") if isinstance(evt.value, dict) else None
        try:  # the caption starts with the image id (robust to thumbnails that could not be made)
            target = int(str(caption).split(" ·")[0])
        except ValueError:
            target = nth(store, flt, int(page_no or 0) * THUMBS_PER_PAGE + int(evt.index))
        return open_image(target, sess, keep, text, st, mt, flt, request)

    def thumbs(page_no, name, split, status, annotator, sess: Session | None = None):
        flt = _flt(name, split, status, annotator)
        page_no = max(0, int(page_no or 0))
        rows, total = image_page(store, flt, page_no * THUMBS_PER_PAGE, THUMBS_PER_PAGE)
        if not rows and page_no > 0:
            page_no = max(0, (total - 1) // THUMBS_PER_PAGE)
            rows, total = image_page(store, flt, page_no * THUMBS_PER_PAGE, THUMBS_PER_PAGE)
        items = []
        for r in rows:
            f = thumbnail_file(store, r.id)
            if f is not None:
                items.append((str(f), f"{r.id} · {r.file_name} · {r.refs} ref{'s' if r.refs != 1 else ''}"))
        return items, page_no

    def thumbs_turn(delta: int):
        def go(page_no, name, split, status, annotator):
            return thumbs(max(0, int(page_no or 0) + delta), name, split, status, annotator)
        return go

    def refilter(sess: Session, name, split, status, annotator):
        items, page_no = thumbs(0, name, split, status, annotator)
        return items, page_no, _queue(sess, _flt(name, split, status, annotator))

    @gpu
    def open_ref(rid: int, sess: Session, request: gr.Request | None):
        """Reopen a saved ref in this view: its image (features once), sentences, targets and version."""
        try:
            rec = store.ref(int(rid))
        except StoreError as exc:
            raise gr.Error(str(exc)) from None
        if sess.image_id == rec.image_id and sess.image_state is not None and \
                (sess.file_name or "").split(":")[0] == str(model.version):
            rgb, state = sess.image, sess.image_state
        else:
            rgb = store.load_image(rec.image_id)
            if rgb is None:
                raise gr.Error(f"The pixels of image {rec.image_id} are not available (imported by reference).")
            state = model.get().set_image(rgb)
        masks = {i.id: i.mask for i in store.instances(rec.image_id)}
        new = Session(image=rgb, image_state=state, image_id=rec.image_id, file_name=f"{model.version}:store:{rec.image_id}",
                      digest=image_digest(rgb), expression=rec.sentences[0], ref_id=rec.id, ref_version=rec.version,
                      editing=True,
                      no_target=rec.no_target, targets=[Target(masks[i], None) for i in rec.instance_ids])
        studio.track(request, new)
        note = f"Editing ref {rec.id}: saving updates it; Alt+N starts a new ref."
        if rec.status == "rejected":
            d = last_decision(store, rec.id)
            if d is not None:
                note = (f"**Rejected by {d.reviewer}**: {REASONS.get(d.reason or '', d.reason or '')}"
                        f"{' — “' + d.comment + '”' if d.comment else ''}. Fix it and save: it goes back to *done*.")
        typed = gr.update()  # the box names who is working now, not the ref's author
        return (None, rec.sentences[0], "\n".join(rec.sentences[1:]), rec.split,
                "done" if rec.status in ("rejected", "predicted") else rec.status, typed,
                *render(new), _queue(new, ImageFilter()), _image_refs(new), note, history_html(studio, rec.id))

    open_ref_by_id = open_ref
    c.open_ref_by_id = open_ref
    c.open_ref_outputs = [c.image_in, c.expression, c.extra, c.split, c.status, c.annotator, *common, c.queue_pos,
                          c.image_refs, c.save_msg, c.ref_history]

    def _to_fix(who: str):
        """The "rejected: fix these first" list of an annotator (hidden when empty)."""
        if not who:
            return gr.update(visible=False, value=[])
        rows = [[r.id, r.sentences, REASONS.get(d.reason or "", d.reason or "") if d else "", d.comment if d else "",
                 d.reviewer if d else ""] for r, d in to_fix(store, who)]
        return gr.update(visible=bool(rows), value=rows)

    @gpu
    def open_image_ref(sess: Session, evt: gr.SelectData, request: gr.Request):
        if sess.image_id is None or evt is None or evt.index is None:
            raise gr.Error("Open an image of the collection first.")
        rows, _ = store.refs_page(0, 200, image_id=sess.image_id, newest_first=False)
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not 0 <= int(row) < len(rows):
            raise gr.Error("That row is gone: the list changed meanwhile.")
        return open_ref_by_id(rows[int(row)].id, sess, request)

    def save(typed: str, split_v: str, status_v: str, more: str, text: str, sess: Session, request: gr.Request):
        text = " ".join((text or "").split()) or sess.expression  # a reworded sentence is saved as typed
        if sess.image is None or not text or sess.prediction is None and sess.ref_id is None:
            raise gr.Error("Nothing to save: segment an image with an expression first.")
        if status_v in ("reviewed", "rejected"):
            studio.require_reviewer(request, typed)
        author, who = studio.authors_for_save(request, typed, sess.ref_id)
        sentences = [text] + [s for s in (more or "").splitlines() if s.strip()]
        try:
            if sess.image_id is None:
                sess.image_id = store.add_image(sess.image)
            rid = store.save_ref(sess.image_id, sentences, masks=[t.mask for t in sess.targets], no_target=sess.no_target,
                                 split=split_v, annotator=author, status=status_v, ref_id=sess.ref_id,
                                 expected_version=sess.ref_version, user=who)
        except ConflictError as exc:
            raise gr.Error(f"Not saved: {exc}. Your version is still on screen.") from None
        except StoreError as exc:
            raise gr.Error(f"Not saved: {exc}") from None
        updated = sess.ref_id is not None
        sess.ref_id, sess.ref_version, sess.expression, sess.editing = rid, (sess.ref_version or 0) + 1, text, False
        kind = "no-target" if sess.no_target else f"{len(sess.targets)} instance(s)"
        return (f"{'Updated' if updated else 'Saved'} ref {rid} ({kind}) at {time.strftime('%H:%M:%S')}.", _image_refs(sess), sess,
                history_html(studio, rid), _to_fix(who))

    def next_expression(sess: Session):
        sess.expression, sess.prediction, sess.ref_id, sess.ref_version, sess.editing = "", None, None, None, False
        sess.reset_targets()
        return ("", *render(sess))

    @gpu
    def upload(path: str | None, sess: Session, request: gr.Request):
        if not path:
            return (*render(sess), display.queue_html(None, position(store, ImageFilter(), 0)[1]), _image_refs(sess))
        new = _from_upload(path, sess)
        studio.track(request, new)
        return (*render(new), display.queue_html(None, position(store, ImageFilter(), 0)[1]), _image_refs(new))

    seg_inputs = [c.image_in, c.expression, c.score_thr, c.mask_thr, c.sess_state]
    c.run_btn.click(segment, seg_inputs, common, api_name="segment")
    c.expression.submit(segment, seg_inputs, common, api_name=False)
    c.score_thr.release(rethreshold, [c.score_thr, c.mask_thr, c.sess_state], common, api_name="rethreshold")
    c.mask_thr.release(rethreshold, [c.score_thr, c.mask_thr, c.sess_state], common, api_name=False)
    c.candidates.input(select_candidates, [c.candidates, c.sess_state], common, api_name="select_candidates")
    c.result.select(pick, [c.sess_state], common, api_name=False)
    c.next_expr_btn.click(next_expression, [c.sess_state], [c.expression, *common], api_name="next_expression")
    c.image_in.upload(upload, [c.image_in, c.sess_state], [*common, c.queue_pos, c.image_refs], api_name=False)
    c.prev_img.click(step(-1), nav_inputs, nav_outputs, api_name="previous_image")
    c.next_img.click(step(1), nav_inputs, nav_outputs, api_name="next_image")
    c.next_empty.click(step(1, without_refs=True), nav_inputs, nav_outputs, api_name="next_image_without_refs")
    c.thumbs.select(jump_thumb, [c.thumb_page, *nav_inputs], nav_outputs, api_name=False)
    filters = [c.f_name, c.f_split, c.f_status, c.f_annotator]
    c.thumb_prev.click(thumbs_turn(-1), [c.thumb_page, *filters], [c.thumbs, c.thumb_page], api_name=False)
    c.thumb_next.click(thumbs_turn(1), [c.thumb_page, *filters], [c.thumbs, c.thumb_page], api_name=False)
    for f in (c.f_split, c.f_status):
        f.input(refilter, [c.sess_state, *filters], [c.thumbs, c.thumb_page, c.queue_pos], api_name=False)
    for f in (c.f_name, c.f_annotator):
        f.submit(refilter, [c.sess_state, *filters], [c.thumbs, c.thumb_page, c.queue_pos], api_name=False)
    c.image_refs.select(open_image_ref, [c.sess_state], c.open_ref_outputs, api_name=False)
    c.save_btn.click(save, [c.annotator, c.split, c.status, c.extra, c.expression, c.sess_state],
                     [c.save_msg, c.image_refs, c.sess_state, c.ref_history, c.to_fix], api_name="save")

    def fix_rows(typed: str, request: gr.Request):
        try:
            who = studio.who(request, typed)
        except gr.Error:
            return gr.update(visible=False, value=[])
        return _to_fix(who)

    def open_to_fix(typed: str, sess: Session, evt: gr.SelectData, request: gr.Request):
        rows = to_fix(store, studio.who(request, typed))
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not 0 <= int(row) < len(rows):
            raise gr.Error("That row is gone: the list changed meanwhile.")
        return open_ref_by_id(rows[int(row)][0].id, sess, request)

    c.to_fix.select(open_to_fix, [c.annotator, c.sess_state], c.open_ref_outputs, api_name=False)
    c.annotator.submit(fix_rows, [c.annotator], [c.to_fix], api_name=False)
    c.load_events.append((fix_rows, [c.annotator], [c.to_fix]))
    c.load_events.append((refilter, [c.sess_state, *filters], [c.thumbs, c.thumb_page, c.queue_pos]))

    def first_view():
        """An empty collection (a demo, a first start): the upload box opens by itself."""
        return gr.update(open=position(store, ImageFilter(), 0)[1] == 0)

    c.load_events.append((first_view, None, [c.upload_box]))
