"""The Gradio annotation studio: thin wiring of the views in :mod:`app.views` over a
:class:`~deris_core.predictor.Predictor` (through :class:`ModelHolder`) and the
:class:`~app.store.Store`.

Tabs: *Annotate* (the collection as a queue, expression, click-to-pick, candidates, this image's
refs), *Correct* (brush/eraser on one target, add/delete, no-target, undo/redo), *Dataset*
(progress, saved refs a page at a time, reopen/delete, export). The model is shared by all
sessions; each browser session has its own :class:`~app.session.Session` in ``gr.State``.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from deris_core.predictor import Predictor

from .auth import Users
from .model_info import model_line
from .session import Session, SessionRegistry
from .store import Store
from .views import annotate, annotate_layout, correct, dataset, model_panel, review
from .views.context import Studio
from .views.correct import read_editor_mask

__all__ = ["CSS", "SHORTCUTS_JS", "ModelHolder", "build_app", "export_folder", "read_editor_mask", "thumbnail_folder"]

SHORTCUTS_JS = """
() => {
  // only buttons of the tab on screen: a hidden tab's buttons are never pressed by a key
  const click = (id) => { const el = document.querySelector(`#${id}`); if (el && el.offsetParent !== null) el.click(); };
  const focusExpression = () => setTimeout(() => document.querySelector('#expression textarea, #expression input')?.focus(), 80);
  const nav = (id) => { click(id); focusExpression(); };
  document.addEventListener('keydown', (e) => {
    const typing = ['INPUT', 'TEXTAREA'].includes(document.activeElement?.tagName);
    const mod = e.ctrlKey || e.metaKey;
    const reviewing = document.querySelector('#review-accept')?.offsetParent != null;
    if (reviewing && !typing && !mod && !e.altKey) {
      if (e.key === 'y' || e.key === 'Y') { e.preventDefault(); click('review-accept'); return; }
      if (e.key === 'r' || e.key === 'R') { e.preventDefault(); click('review-reject'); return; }
      if (e.key === 'ArrowRight') { e.preventDefault(); click('review-next'); return; }
      if (e.key === 'ArrowLeft') { e.preventDefault(); click('review-prev'); return; }
    }
    if (mod && e.key === 'Enter') { e.preventDefault(); click('save-btn'); return; }
    if (e.key === 'PageDown' && !mod) { e.preventDefault(); nav(e.shiftKey ? 'next-empty' : 'next-img'); return; }
    if (e.key === 'PageUp' && !mod) { e.preventDefault(); nav('prev-img'); return; }
    if (e.key === 'Escape' && typing) { document.activeElement.blur(); return; }
    if (!typing && !mod && !e.altKey) {
      if (e.key === 'd') { e.preventDefault(); nav('next-img'); return; }
      if (e.key === 'D') { e.preventDefault(); nav('next-empty'); return; }
      if (e.key === 'a' || e.key === 'A') { e.preventDefault(); nav('prev-img'); return; }
    }
    if (mod && !e.shiftKey && e.key.toLowerCase() === 'z' && !typing) { e.preventDefault(); click('undo-btn'); return; }
    if (mod && (e.key.toLowerCase() === 'y' || (e.shiftKey && e.key.toLowerCase() === 'z')) && !typing) {
      e.preventDefault(); click('redo-btn'); return; }
    // e.code, not e.key: on a Mac, Alt changes the character (Alt+N gives a dead key)
    if (e.altKey && e.code === 'KeyN') { e.preventDefault(); click('next-btn'); focusExpression(); return; }
    if (e.altKey && /^Digit[1-9]$/.test(e.code)) {
      e.preventDefault();
      const boxes = document.querySelectorAll('#candidates input[type=checkbox]');
      const box = boxes[parseInt(e.code.slice(5)) - 1]; if (box && box.offsetParent !== null) box.click(); }
  });
}
"""

CSS = """
.verdict-nt {background:#b91c1c;color:#fff;padding:10px 14px;border-radius:8px;font-size:1.3em;font-weight:700}
.verdict-t {background:#15803d;color:#fff;padding:10px 14px;border-radius:8px;font-size:1.3em;font-weight:700}
.verdict-none {background:#e5e7eb;color:#111;padding:10px 14px;border-radius:8px}
.model-note {font-size:0.9em;opacity:0.85}
.queue-bar {align-items:center}
.queue-pos {font-size:1.05em;padding:6px 2px}
#result img {cursor:crosshair}
.prow {margin:4px 0}
.pbar {display:inline-block;width:220px;height:12px;background:#e5e7eb;border-radius:6px;vertical-align:middle;margin:0 8px}
.pbar div {height:12px;background:#15803d;border-radius:6px}
.pnum {font-variant-numeric:tabular-nums}
.chip {display:inline-block;padding:1px 8px;border-radius:10px;background:#e5e7eb;color:#111;margin-right:4px;font-size:0.9em}
.chip-done {background:#bbf7d0}.chip-reviewed {background:#86efac}.chip-rejected {background:#fecaca}.chip-draft {background:#fef3c7}
.ptable {border-collapse:collapse;margin-top:6px;font-size:0.9em}
.ptable td, .ptable th {padding:2px 10px;border-bottom:1px solid #e5e7eb;text-align:right}
.ptable td:first-child, .ptable th:first-child {text-align:left}
.history {padding-left:1.1em;font-size:0.9em}
.history .when {opacity:0.7;font-variant-numeric:tabular-nums}
.review-sentences {font-size:1.15em}
"""


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
        """Load other weights for everyone (only what the operator allowed at launch reaches this),
        in the precision the studio runs (``launch.py --dtype``)."""
        from deris_core.weights import load_predictor

        dtype = self.predictor.precision.requested if self.predictor is not None else None
        with self._lock:
            predictor = load_predictor(weights or None, device=device, dtype=dtype)
            self.predictor = predictor
            self.description = getattr(predictor, "description", str(weights))
            self.note = ""
            self.version += 1
        return self.description


def thumbnail_folder(store: Store) -> Path:
    """Where cached thumbnails live (pass it to ``launch(allowed_paths=...)``; the full images stay private)."""
    return store.media_dir / "thumbs"


def export_folder(store: Store) -> Path:
    """Where the app writes exports: next to the database (pass it to ``launch(allowed_paths=...)``)."""
    return store.path.with_name(store.path.stem + "_exports")


def build_app(model: ModelHolder, store: Store, *, max_image_side: int = 4096, device: str = "auto",
              switchable: dict[str, str] | None = None, export_dir: Path | None = None,
              sessions: SessionRegistry | None = None, users: "Users | None" = None) -> gr.Blocks:
    """The studio. ``switchable`` maps the labels of weights the operator allows visitors to load to
    their specs (None: the *Model* panel is not shown); exports are written to ``export_dir``
    (default: next to the database) and old or half-written ones are removed. With ``users``
    (``--auth``), the signed-in user is the author of every save and review decision."""
    from .export import clean_stale_exports

    studio = Studio(model, store, sessions if sessions is not None else SessionRegistry(),
                    export_dir or export_folder(store), max_image_side, device, switchable, users)
    clean_stale_exports(studio.export_dir)
    with gr.Blocks(title="DeRIS Studio", delete_cache=(900, 3600)) as demo:
        c = SimpleNamespace(sess_state=gr.State(Session()), load_events=[])
        with gr.Row():
            gr.Markdown("## DeRIS Studio", elem_id="title")
            c.model_md = gr.Markdown(model_line(model.description, model.predictor, model.note))
        with gr.Tabs():
            with gr.Tab("Annotate", elem_id="tab-annotate"):
                vars(c).update(vars(annotate_layout.layout(studio)))
                vars(c).update(vars(annotate_layout.save_layout(signed_in=users is not None)))
            with gr.Tab("Correct", elem_id="tab-correct"):
                vars(c).update(vars(correct.layout()))
            with gr.Tab("Review", elem_id="tab-review") as c.review_tab:
                vars(c).update(vars(review.layout()))
            with gr.Tab("Dataset", elem_id="tab-dataset") as c.dataset_tab:
                vars(c).update(vars(dataset.layout()))
        vars(c).update(vars(model_panel.layout(switchable)))
        annotate.wire(studio, c)
        correct.wire(studio, c)
        review.wire(studio, c)
        dataset.wire(studio, c)
        model_panel.wire(studio, c)
        if users is not None:
            def signed_in(request: gr.Request):
                user = users.get(getattr(request, "username", None))
                if user is None:
                    return "Not signed in."
                return f"Signed in as **{html.escape(user.name)}** ({', '.join(sorted(user.roles))})"

            demo.load(signed_in, None, [c.signed_in], api_name=False)
        for fn, inputs, outputs in c.load_events:
            demo.load(fn, inputs, outputs, api_name=False)

        def client_left(request: gr.Request):
            if studio.sessions.release(getattr(request, "session_hash", None)):
                print(f"a client left: its session was freed ({len(studio.sessions)} live)", flush=True)

        demo.unload(client_left)
    return demo
