"""The Gradio annotation studio. It only talks to a :class:`~deris_core.predictor.Predictor`
(through :class:`ModelHolder`) and to the :class:`~app.store.Store`.

Tabs: *Segment* (image, expression, per-candidate masks with scores, no-target verdict,
threshold sliders that re-render from cached logits), *Correct* (brush/eraser on one
target instance, add/delete instances, no-target, undo/redo), *Dataset* (browse, reopen,
delete saved refs, progress, export). The model is shared by all sessions; each browser
session has its own :class:`~app.session.Session` in ``gr.State``.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from deris_core.predictor import Predictor
from deris_core.preprocess import ImageError, load_image
from deris_core.tokenizer import TokenizerError
from deris_core.visualize import color, overlay

from .dataset import export_zip
from .model_info import example_images, model_line, score_threshold
from .session import Session, Target
from .store import SPLITS, STATUSES, Store, StoreError
from .zerogpu import gpu  # spaces.GPU(duration=...) on ZeroGPU, a no-op elsewhere


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "assets" / "examples"

SHORTCUTS_JS = """
() => {
  const click = (id) => { const el = document.querySelector(`#${id}`); if (el) el.click(); };
  document.addEventListener('keydown', (e) => {
    const typing = ['INPUT', 'TEXTAREA'].includes(document.activeElement?.tagName);
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') { e.preventDefault(); click('save-btn'); return; }
    if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === 'z' && !typing) { e.preventDefault(); click('undo-btn'); return; }
    if ((e.ctrlKey || e.metaKey) && (e.key.toLowerCase() === 'y' || (e.shiftKey && e.key.toLowerCase() === 'z')) && !typing) {
      e.preventDefault(); click('redo-btn'); return; }
    if (e.altKey && e.key.toLowerCase() === 'n') { e.preventDefault(); click('next-btn');
      setTimeout(() => document.querySelector('#expression textarea')?.focus(), 50); return; }
    if (e.altKey && /^[1-9]$/.test(e.key)) {
      e.preventDefault();
      const boxes = document.querySelectorAll('#candidates input[type=checkbox]');
      const box = boxes[parseInt(e.key) - 1]; if (box) box.click(); }
  });
}
"""

CSS = """
.verdict-nt {background:#b91c1c;color:#fff;padding:10px 14px;border-radius:8px;font-size:1.3em;font-weight:700}
.verdict-t {background:#15803d;color:#fff;padding:10px 14px;border-radius:8px;font-size:1.3em;font-weight:700}
.verdict-none {background:#e5e7eb;color:#111;padding:10px 14px;border-radius:8px}
.model-note {font-size:0.9em;opacity:0.85}
"""


def _pass_file_through(payload):
    """Pre-processing for the image input: hand over the uploaded file untouched.

    Gradio's own pre-processing opens the file with PIL and fails with a generic error on
    corrupt or exotic images; :func:`deris_core.preprocess.load_image` decodes it instead and
    names the problem. (Set on the instance: a ``gr.Image`` subclass would make Gradio write a
    generated ``.pyi`` stub into the source tree.)
    """
    return None if payload is None else str(payload.path)


class ModelHolder:
    """The shared predictor and a description of where its weights came from."""

    def __init__(self, predictor: Predictor | None, description: str, note: str = "") -> None:
        self.predictor = predictor
        self.description = description
        self.note = note
        self.version = 0  # bumped on every load: cached image features of older models are stale
        self._lock = threading.Lock()

    def get(self) -> Predictor:
        if self.predictor is None:
            raise gr.Error(f"No model is loaded: {self.note or self.description}")
        return self.predictor

    def load(self, weights: str, device: str = "auto") -> str:
        from deris_core.weights import load_predictor

        with self._lock:
            predictor = load_predictor(weights or None, device=device)
            self.predictor = predictor
            self.description = getattr(predictor, "description", str(weights))
            self.note = ""
            self.version += 1
        return self.description


# --- rendering ----------------------------------------------------------------------------


def _fit(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, bool]:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, False
    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), True


def _thumb(rgb: np.ndarray, side: int = 256) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _file_key(path: str, version: int) -> str:
    """Identity of an uploaded image: its bytes (Gradio may hand the same picture under new paths)."""
    try:
        digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        digest = path
    return f"{version}:{digest}"


def _verdict(sess: Session) -> str:
    if sess.image is None:
        return "<div class='verdict-none'>Give an image and an expression.</div>"
    p = sess.prediction
    ex = f" &middot; existence probability {p.existence:.2f}" if p is not None else ""
    if sess.no_target:
        return f"<div class='verdict-nt' id='verdict'>NO TARGET &mdash; the expression refers to nothing{ex}</div>"
    if not sess.targets:
        return f"<div class='verdict-none' id='verdict'>No instance selected yet{ex}</div>"
    n = len(sess.targets)
    return f"<div class='verdict-t' id='verdict'>{n} target instance{'s' if n > 1 else ''}{ex}</div>"


def _candidate_choices(sess: Session) -> list[tuple[str, int]]:
    p = sess.prediction
    if p is None:
        return []
    out = []
    for rank, k in enumerate(p.order):
        mark = " ✓" if p.scores[k] > p.score_threshold else ""
        out.append((f"{rank + 1}. query {k} · score {p.scores[k]:.3f}{mark}", int(k)))
    return out


def _gallery(sess: Session) -> list[tuple[np.ndarray, str]]:
    p = sess.prediction
    if p is None or sess.image is None:
        return []
    base = _thumb(sess.image)
    items = []
    for rank, k in enumerate(p.order):
        m = cv2.resize(p.mask(k), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_NEAREST)
        items.append((overlay(base, [m], [color(rank)]), f"{rank + 1}. query {k} · {p.scores[k]:.3f}"))
    return items


def _overlay(sess: Session) -> np.ndarray | None:
    if sess.image is None:
        return None
    masks = [t.mask for t in sess.targets]
    return overlay(sess.image, masks, [color(i) for i in range(len(masks))])


def _target_choices(sess: Session) -> list[tuple[str, int]]:
    out = []
    for i, t in enumerate(sess.targets):
        src = f"query {t.candidate}" if t.candidate is not None else "drawn"
        out.append((f"instance {i + 1} ({src}{', edited' if t.edited else ''}, {int(t.mask.sum())} px)", i))
    return out


def render(sess: Session) -> tuple:
    """Outputs shared by most handlers: overlay, verdict, candidates, gallery, target picker, state."""
    choices = _candidate_choices(sess)
    targets = _target_choices(sess)
    sel = sess.selected if 0 <= sess.selected < len(targets) else (0 if targets else None)
    return (
        _overlay(sess),
        _verdict(sess),
        gr.update(choices=choices, value=sess.selected_candidates()),
        _gallery(sess),
        gr.update(choices=targets, value=sel),
        sess,
    )


# --- the app ------------------------------------------------------------------------------


def build_app(model: ModelHolder, store: Store, *, max_image_side: int = 4096, device: str = "auto") -> gr.Blocks:
    with gr.Blocks(title="DeRIS Studio") as demo:
        sess_state = gr.State(Session())
        gr.Markdown("# DeRIS Studio\nLanguage-driven segmentation masks: every candidate with its score, an explicit "
                    "*no target* verdict, mask correction and gRefCOCO export.")
        model_md = gr.Markdown(model_line(model.description, model.predictor, model.note))
        with gr.Tabs():
            with gr.Tab("Segment"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image_in = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"],
                                            elem_id="image-input", height=360)
                        image_in.preprocess = _pass_file_through
                        expression = gr.Textbox(label="Expression (Enter runs)", placeholder="e.g. the two red circles",
                                                lines=1, max_lines=1, elem_id="expression")
                        with gr.Row():
                            run_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn")
                            next_btn = gr.Button("Next expression (Alt+N)", elem_id="next-btn")
                        score_thr = gr.Slider(0.0, 1.0, value=score_threshold(model.predictor), step=0.01,
                                              label="Score threshold", elem_id="score-thr")  # the model's own
                        mask_thr = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label="Mask threshold", elem_id="mask-thr")
                        examples = example_images(model.predictor)  # photos for official weights, shapes for bundled
                        if examples:
                            gr.Examples([[str(p)] for p in examples], inputs=[image_in], label="Examples")
                    with gr.Column(scale=1):
                        verdict = gr.HTML(_verdict(Session()), elem_id="verdict-box")
                        result = gr.Image(label="Target set", interactive=False, elem_id="result", height=360)
                        candidates = gr.CheckboxGroup(label="Candidates (best first; tick to add to the target set, Alt+1..9)",
                                                      choices=[], elem_id="candidates")
                        gallery = gr.Gallery(label="Candidate masks", columns=5, height=220, elem_id="gallery")
            with gr.Tab("Correct"):
                with gr.Row():
                    with gr.Column(scale=2):
                        editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="Paint the selected instance",
                                                brush=gr.Brush(colors=["#ff2020"], color_mode="fixed", default_size=12),
                                                eraser=gr.Eraser(default_size=12), layers=False, transforms=(),
                                                sources=(), elem_id="editor", height=480)
                    with gr.Column(scale=1):
                        target_pick = gr.Dropdown(label="Instance", choices=[], elem_id="target-pick", interactive=True)
                        with gr.Row():
                            edit_btn = gr.Button("Load into editor", elem_id="edit-btn")
                            apply_btn = gr.Button("Apply edit", variant="primary", elem_id="apply-btn")
                        with gr.Row():
                            new_btn = gr.Button("New instance", elem_id="new-btn")
                            del_btn = gr.Button("Delete instance", elem_id="delete-btn")
                        nt_btn = gr.Button("Mark as no target / undo mark", elem_id="nt-btn")
                        with gr.Row():
                            undo_btn = gr.Button("Undo (Ctrl+Z)", elem_id="undo-btn")
                            redo_btn = gr.Button("Redo (Ctrl+Y)", elem_id="redo-btn")
            with gr.Tab("Dataset"):
                progress = gr.JSON(label="Progress", value=store.stats(), elem_id="progress")
                refs_table = gr.Dataframe(headers=["ref", "image", "sentences", "targets", "no target", "split", "status",
                                                   "annotator", "updated"], interactive=False, elem_id="refs-table")
                with gr.Row():
                    ref_id = gr.Number(label="Ref id", precision=0, elem_id="ref-id")
                    open_btn = gr.Button("Open", elem_id="open-btn")
                    delete_btn = gr.Button("Delete", variant="stop", elem_id="delete-ref-btn")
                    refresh_btn = gr.Button("Refresh", elem_id="refresh-btn")
                with gr.Row():
                    export_btn = gr.Button("Export gRefCOCO zip", variant="primary", elem_id="export-btn")
                    export_file = gr.File(label="Export", elem_id="export-file")
        with gr.Row():
            annotator = gr.Textbox(label="Annotator", value="", scale=1, elem_id="annotator")
            split = gr.Dropdown(list(SPLITS), value="train", label="Split", scale=1, elem_id="split")
            status = gr.Dropdown(list(STATUSES), value="done", label="Review status", scale=1, elem_id="status")
            extra = gr.Textbox(label="More sentences for the same targets (one per line)", lines=1, scale=2, elem_id="extra")
            save_btn = gr.Button("Save (Ctrl+Enter)", variant="primary", scale=1, elem_id="save-btn")
        save_msg = gr.Markdown("", elem_id="save-msg")
        with gr.Accordion("Model", open=False):
            weights_in = gr.Textbox(label="Weights: a published name (deris-l-grefcoco …), a checkpoint path, or 'bundled'")
            load_btn = gr.Button("Load weights")

        common = [result, verdict, candidates, gallery, target_pick, sess_state]

        # --- handlers ---------------------------------------------------------------------

        def _ensure_image(path: str | None, sess: Session) -> Session:
            if not path:
                raise gr.Error("Give an image first (upload, paste, webcam or an example).")
            key = _file_key(path, model.version)
            if sess.image is not None and sess.file_name == key and sess.image_state is not None:
                return sess
            try:
                rgb = load_image(path)
            except ImageError as exc:
                raise gr.Error(f"Cannot use this image: {str(exc).replace(str(path), Path(path).name)}") from None
            rgb, resized = _fit(rgb, max_image_side)
            if resized:
                gr.Warning(f"The image was scaled down to {rgb.shape[1]}x{rgb.shape[0]} (--max-image-side {max_image_side}).")
            state = model.get().set_image(rgb)
            new = Session(image=rgb, image_state=state, file_name=key)
            return new

        @gpu
        def segment(path: str | None, text: str, st: float, mt: float, sess: Session):
            sess = _ensure_image(path, sess)
            text = (text or "").strip()
            if not text:
                raise gr.Error("Type an expression first.")
            try:
                pred = model.get().predict(text, image=sess.image_state, score_threshold=st, mask_threshold=mt)
            except TokenizerError as exc:
                raise gr.Error(f"Cannot use this expression: {exc}") from None
            if pred.truncated:
                gr.Warning(f"The expression is long: only its first {model.get().cfg.max_token - 2} tokens were used.")
            sess.expression, sess.prediction, sess.ref_id = text, pred, None
            sess.reset_targets()
            sess.targets = [Target(pred.mask(k).astype(bool), candidate=k) for k in pred.referred]
            sess.no_target = pred.no_target
            return render(sess)

        def rethreshold(st: float, mt: float, sess: Session):
            if sess.prediction is None:
                return render(sess)
            sess.change()
            pred = sess.prediction.with_thresholds(st, mt)
            sess.prediction = pred
            kept = [t for t in sess.targets if t.candidate is None or t.edited]
            taken = {t.candidate for t in kept}
            sess.targets = kept + [Target(pred.mask(k).astype(bool), candidate=k) for k in pred.referred if k not in taken]
            sess.no_target = not sess.targets and pred.no_target
            return render(sess)

        def select_candidates(wanted: list[int] | None, sess: Session):
            if sess.prediction is None:
                return render(sess)
            sess.toggle_candidates([int(k) for k in (wanted or [])])
            return render(sess)

        def _editor_value(sess: Session, index: int | None):
            if sess.image is None:
                raise gr.Error("Segment an image first.")
            h, w = sess.image.shape[:2]
            layer = np.zeros((h, w, 4), np.uint8)
            if index is not None and 0 <= index < len(sess.targets):
                m = sess.targets[index].mask
                layer[m] = (255, 32, 32, 255)
            bg = np.dstack([sess.image, np.full((h, w), 255, np.uint8)])
            return {"background": bg, "layers": [layer], "composite": None}

        def edit_open(index: int | None, sess: Session):
            sess.selected = int(index) if index is not None else -1
            return _editor_value(sess, sess.selected), sess

        def new_instance(sess: Session):
            sess.selected = -1
            return _editor_value(sess, None), sess

        def edit_apply(value: dict | None, index: int | None, sess: Session):
            if sess.image is None:
                raise gr.Error("Segment an image first.")
            if not value or not value.get("layers"):
                raise gr.Error("Nothing to apply: paint on the editor first.")
            mask = read_editor_mask(value, sess.image.shape[:2])
            if not mask.any():
                raise gr.Error("The painted mask is empty; use Delete instance to remove an instance.")
            sess.change()
            if sess.selected is not None and 0 <= sess.selected < len(sess.targets):
                t = sess.targets[sess.selected]
                sess.targets[sess.selected] = Target(mask, t.candidate, edited=True)
            else:
                sess.targets.append(Target(mask, None, edited=True))
                sess.selected = len(sess.targets) - 1
            sess.no_target = False
            return render(sess)

        def delete_instance(index: int | None, sess: Session):
            if index is None or not (0 <= int(index) < len(sess.targets)):
                raise gr.Error("Pick an instance to delete.")
            sess.change()
            del sess.targets[int(index)]
            sess.selected = 0
            return render(sess)

        def toggle_no_target(sess: Session):
            if sess.image is None:
                raise gr.Error("Segment an image first.")
            sess.change()
            sess.no_target = not sess.no_target
            if sess.no_target:
                sess.targets = []
            return render(sess)

        def undo(sess: Session):
            if not sess.undo():
                gr.Info("Nothing to undo.")
            return render(sess)

        def redo(sess: Session):
            if not sess.redo():
                gr.Info("Nothing to redo.")
            return render(sess)

        def save(who: str, split_v: str, status_v: str, more: str, sess: Session):
            if sess.image is None or not sess.expression:
                raise gr.Error("Nothing to save: segment an image with an expression first.")
            sentences = [sess.expression] + [s for s in (more or "").splitlines() if s.strip()]
            try:
                if sess.image_id is None:
                    sess.image_id = store.add_image(sess.image)
                rid = store.save_ref(sess.image_id, sentences, masks=[t.mask for t in sess.targets], no_target=sess.no_target,
                                     split=split_v, annotator=(who or "").strip(), status=status_v, ref_id=sess.ref_id)
            except StoreError as exc:
                raise gr.Error(f"Not saved: {exc}") from None
            sess.ref_id = rid
            kind = "no-target" if sess.no_target else f"{len(sess.targets)} instance(s)"
            return f"Saved ref {rid} ({kind}) at {time.strftime('%H:%M:%S')}.", store.stats(), _refs_rows(), sess

        def next_expression(sess: Session):
            sess.expression, sess.prediction, sess.ref_id = "", None, None
            sess.reset_targets()
            return ("", *render(sess))

        def _refs_rows() -> list[list]:
            rows = []
            for r in store.refs():
                rows.append([r.id, r.image_id, " | ".join(r.sentences), len(r.instance_ids), "yes" if r.no_target else "",
                             r.split, r.status, r.annotator, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated_at))])
            return rows

        def refresh():
            return store.stats(), _refs_rows()

        @gpu
        def open_ref(rid: float | None, sess: Session):
            if rid is None:
                raise gr.Error("Type a ref id.")
            try:
                rec = store.ref(int(rid))
            except StoreError as exc:
                raise gr.Error(str(exc)) from None
            rgb = store.load_image(rec.image_id)
            if rgb is None:
                raise gr.Error(f"The pixels of image {rec.image_id} are not available (imported by reference).")
            state = model.get().set_image(rgb)
            masks = {i.id: i.mask for i in store.instances(rec.image_id)}
            shown = Path(tempfile.mkdtemp(prefix="deris_ref_")) / f"ref_{rec.id}.png"
            cv2.imwrite(str(shown), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            new = Session(image=rgb, image_state=state, image_id=rec.image_id, file_name=_file_key(str(shown), model.version),
                          expression=rec.sentences[0], ref_id=rec.id, no_target=rec.no_target,
                          targets=[Target(masks[i], None) for i in rec.instance_ids])
            return (str(shown), rec.sentences[0], "\n".join(rec.sentences[1:]), rec.split, rec.status, rec.annotator,
                    *render(new))

        def delete_ref(rid: float | None):
            if rid is None:
                raise gr.Error("Type a ref id.")
            try:
                store.delete_ref(int(rid))
            except StoreError as exc:
                raise gr.Error(str(exc)) from None
            return f"Deleted ref {int(rid)}.", store.stats(), _refs_rows()

        def export():
            out = Path(tempfile.mkdtemp(prefix="deris_export_")) / "deris_dataset.zip"
            try:
                summary = export_zip(store, out)
            except StoreError as exc:
                raise gr.Error(str(exc)) from None
            gr.Info(f"Exported {summary['refs']} refs, {summary['annotations']} instances, {summary['images']} images.")
            return str(out)

        def load_weights(w: str):
            try:
                desc = model.load(w.strip(), device)
            except Exception as exc:  # noqa: BLE001 - any loading problem is reported, the old model stays
                raise gr.Error(f"Could not load {w!r}: {exc}. The previous model stays active.") from None
            return model_line(desc, model.predictor), gr.update(value=score_threshold(model.predictor))

        # --- wiring -----------------------------------------------------------------------
        seg_inputs = [image_in, expression, score_thr, mask_thr, sess_state]
        run_btn.click(segment, seg_inputs, common, api_name="segment")
        expression.submit(segment, seg_inputs, common, api_name=False)
        score_thr.release(rethreshold, [score_thr, mask_thr, sess_state], common, api_name="rethreshold")
        mask_thr.release(rethreshold, [score_thr, mask_thr, sess_state], common, api_name=False)
        candidates.input(select_candidates, [candidates, sess_state], common, api_name="select_candidates")
        next_btn.click(next_expression, [sess_state], [expression, *common], api_name="next_expression")
        edit_btn.click(edit_open, [target_pick, sess_state], [editor, sess_state], api_name="edit_open")
        new_btn.click(new_instance, [sess_state], [editor, sess_state], api_name="new_instance")
        apply_btn.click(edit_apply, [editor, target_pick, sess_state], common, api_name="edit_apply")
        del_btn.click(delete_instance, [target_pick, sess_state], common, api_name="delete_instance")
        nt_btn.click(toggle_no_target, [sess_state], common, api_name="toggle_no_target")
        undo_btn.click(undo, [sess_state], common, api_name="undo")
        redo_btn.click(redo, [sess_state], common, api_name="redo")
        save_btn.click(save, [annotator, split, status, extra, sess_state], [save_msg, progress, refs_table, sess_state],
                       api_name="save")
        refresh_btn.click(refresh, None, [progress, refs_table], api_name="refresh")
        open_btn.click(open_ref, [ref_id, sess_state], [image_in, expression, extra, split, status, annotator, *common],
                       api_name="open_ref")
        delete_btn.click(delete_ref, [ref_id], [save_msg, progress, refs_table], api_name="delete_ref")
        export_btn.click(export, None, [export_file], api_name="export")
        load_btn.click(load_weights, [weights_in], [model_md, score_thr], api_name="load_weights")
        demo.load(refresh, None, [progress, refs_table], api_name=False)
    return demo


def read_editor_mask(value: dict, size: tuple[int, int]) -> np.ndarray:
    """The painted mask of an ImageEditor value at the image's full resolution.

    The first layer's alpha channel is the mask. If the editor returned it at another size
    (Gradio has had canvas-resize bugs), it is brought back with nearest-neighbour resizing.
    """
    layer = np.asarray(value["layers"][0])
    alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else (layer.max(-1) if layer.ndim == 3 else layer)
    mask = (alpha > 127).astype(np.uint8)
    h, w = size
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return mask.astype(bool)
