"""The Gradio annotation studio: the shell that lays the views of :mod:`app.views` out in tabs and
wires them over the application layer (:class:`~app.services.Services`: the shared model, the
store, the live sessions, refs and their permission table).

Tabs: *Annotate* (the collection as a queue, expression, click-to-pick, candidates, this image's
refs, and the canvas where the picture is: pick, brush, eraser, polygon, no-target, undo/redo),
*Review* (the
queue of refs awaiting review, accept / reject with a reason), *Negatives* (proposed hard
negatives, one sentence at a time: Y no target, N it refers), *Dataset* (progress, saved refs a
page at a time, reopen/delete, export). Each view owns its widgets (a layout dataclass) and its
handlers; the few links between views are made here. Each browser session has its own
:class:`~app.viewkit.session.Session` in ``gr.State``.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import logging
import uuid
from pathlib import Path

import gradio as gr

from .auth import Users
from .services import ModelHolder, RefinerHolder, Services
from .store import Store
from .views import add_images, annotate, annotate_layout, dataset_tab, jobs, live, model_panel, prompts, review, verify
from .viewkit.model_info import model_line
from .viewkit.session import SessionRegistry
from .views.shell import bind, shell_layout
from .zerogpu import gpu

__all__ = ["CSS", "SHORTCUTS_JS", "build_app"]

log = logging.getLogger(__name__)

SHORTCUTS_JS = """
() => {
  // only buttons of the tab on screen: a hidden tab's buttons are never pressed by a key
  const click = (id) => { const el = document.querySelector(`#${id}`); if (el && el.offsetParent !== null) el.click(); };
  const focusExpression = () => setTimeout(() => document.querySelector('#expression textarea, #expression input')?.focus(), 80);
  // PgDn / PgUp (anywhere) put the focus in the expression box for the next sentence; the letter keys
  // (outside text boxes) leave it outside, so that D, D, D goes on and never types into the box
  const nav = (id, focus = true) => { click(id); if (focus) focusExpression(); };
  const inExpression = (el) => !!el?.closest?.('#expression');
  // the ? overlay: the view's keys (app/views/annotate_layout.py ANNOTATE_KEYS) and the canvas's tools
  const overlay = () => {
    const el = document.querySelector('#keys-overlay');
    if (el && el.parentElement !== document.body) document.body.appendChild(el);  // above every panel
    return el;
  };
  const keysOpen = () => { const el = document.querySelector('#keys-overlay'); return !!el && !el.hidden; };
  const showKeys = (open) => {
    const el = overlay(); if (!el) return;
    if (open) {
      const tips = (document.querySelector('#canvas .dc-help')?.title || '').split(' · ').filter((t) => t.trim());
      const list = el.querySelector('.keys-canvas'); list.replaceChildren();
      for (const t of tips) { const li = document.createElement('li'); li.textContent = t; list.appendChild(li); }
    }
    el.hidden = !open;
  };
  document.addEventListener('click', (e) => {
    // the model line, shortened to one line on a phone (two on a wider screen): a tap shows it whole
    const line = e.target.closest?.('#model-line');
    if (line) { line.classList.toggle('open'); return; }
    if (e.target.closest?.('#canvas .dc-help')) { e.preventDefault(); showKeys(!keysOpen()); return; }
    if (keysOpen() && (e.target.closest?.('.keys-close') || !e.target.closest?.('.keys-card'))) showKeys(false);
  });
  // Enter in an empty expression box: nothing is sent (the picture and every panel stay), a hint says why
  const hint = (text) => {
    const box = document.querySelector('#expression'); if (!box) return;
    let el = document.querySelector('#expression-hint');
    if (!el) { el = document.createElement('div'); el.id = 'expression-hint'; el.className = 'expression-hint'; el.setAttribute('role', 'status'); box.appendChild(el); }
    el.textContent = text; el.hidden = false;
    clearTimeout(el.timer); el.timer = setTimeout(() => { el.hidden = true; }, 4000);
  };
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey || e.isComposing) return;
    if (!inExpression(e.target) || (e.target.value || '').trim()) return;
    e.preventDefault(); e.stopImmediatePropagation();
    hint('Type an expression first (what to segment), then press Enter.');
  }, true);
  // The expression run while typing (app/services/speculate.py): once the box's text has been still for
  // SPECULATE_PAUSE_MS, the hidden #speculate-btn asks the server to predict it on the open image in the
  // background (no outputs, no progress); Enter with that text then finds the answer. Enter itself (or an
  // emptied box) drops a pending request: Enter runs the text anyway.
  const SPECULATE_PAUSE_MS = 350;
  let speculateTimer = 0;
  document.addEventListener('input', (e) => {
    if (!inExpression(e.target)) return;
    clearTimeout(speculateTimer);
    if (!(e.target.value || '').trim()) return;
    speculateTimer = setTimeout(() => {
      document.querySelector('#speculate-btn')?.click();
      // the canvas then loads the answer's masks ahead of Enter (app/views/static/canvas.js, watchTyped)
      [...document.querySelectorAll('#canvas, #canvas *')].find((el) => el.__canvas)?.__canvas.api.watchTyped();
    }, SPECULATE_PAUSE_MS);
  }, true);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && inExpression(e.target)) clearTimeout(speculateTimer);
  }, true);
  // Decisions by key act on what the person saw, once: a key held down (e.repeat) or pressed while the
  // last decision is in flight (its answer has not changed what is on screen, and no error came back)
  // is ignored, and so is a key pressed within SETTLE_MS of a new item appearing (a double tap).
  // Each decision sends the key of the item shown (#review-shown / #verify-shown); the server refuses
  // any other (app/views/on_screen.py).
  const SETTLE_MS = 250, MAX_WAIT_MS = 10000, DOUBLE_TAP_MS = 400;
  const marker = (id) => { const el = document.querySelector(`#${id} textarea, #${id} input`); return el ? el.value : null; };
  const errors = () => document.querySelectorAll('.toast-body.error').length;
  const pending = {};
  const VIEW_BUTTON = { 'review-shown': '#review-next', 'verify-shown': '#verify-next' };
  // When the item on screen last changed, seen by a MutationObserver (it runs right after the page
  // changes, so a busy page cannot make a key look early or late): the item's key (#review-shown /
  // #verify-shown) changed. Re-renders of the same item (a live refresh, the before/after line, the
  // canvas's status) leave the key as it is, so they do not hold a key back.
  const shownAt = {}, shownKey = {};
  new MutationObserver(() => {
    const now = performance.now();
    for (const id of ['review-shown', 'verify-shown']) {
      const k = marker(id);
      if (k !== null && k !== shownKey[id]) { shownKey[id] = k; shownAt[id] = now; }
    }
  }).observe(document.documentElement, { subtree: true, childList: true, characterData: true, attributes: true });
  // the thumbnails: each one's whole caption as its title (a narrow one cuts the file name) and its state
  // (the caption's second part: no refs, rejected, to do, done) as data-state, which colours the caption
  let badging = false;
  const badgeThumbs = () => {
    badging = false;
    for (const item of document.querySelectorAll('#thumbs .thumbnail-item')) {
      const caption = (item.querySelector('.caption-label')?.textContent || item.querySelector('img')?.alt || '').trim();
      if (!caption || item.title === caption) continue;
      item.title = caption;
      item.dataset.state = (caption.split(' · ')[1] || '').replace(/ /g, '-');
    }
  };
  new MutationObserver(() => { if (!badging) { badging = true; requestAnimationFrame(badgeThumbs); } })
    .observe(document.documentElement, { subtree: true, childList: true });
  // the message itself, not Gradio's 'processing | 0.1s' over it (that changed the text at once, so a second
  // Ctrl+Enter 80 ms later counted as after the answer and saved again: CI)
  const saveText = () => (document.querySelector('#save-msg [data-testid="markdown"]')
    ?? document.querySelector('#save-msg'))?.innerText ?? '';
  const track = () => {  // a decision's answer has come when what it changes changed (or an error showed)
    for (const id of ['review-shown', 'verify-shown']) {
      // a view left (another tab): its decision is no longer in flight for keys (they do not reach it),
      // so the first key after coming back acts
      if (document.querySelector(VIEW_BUTTON[id])?.offsetParent == null) pending[id] = null;
      if (pending[id] && (marker(id) !== pending[id].key || errors() !== pending[id].errors)) pending[id] = null;
    }
    if (pending.save && (saveText() !== pending.save.key || errors() !== pending.save.errors)) pending.save = null;
  };
  setInterval(track, 40);
  const inFlight = (p, now) => p && now - p.at < MAX_WAIT_MS;
  const decide = (e, id, button) => {
    e.preventDefault();
    if (e.repeat) return;
    track();
    const now = performance.now(), key = marker(id);
    if (!key || inFlight(pending[id], now)) return;
    if (shownAt[id] !== undefined && now - shownAt[id] < SETTLE_MS) return;
    pending[id] = { key, at: now, errors: errors() };
    click(button);
  };
  let lastSave = -Infinity;
  const save = (e) => {  // Ctrl+Enter in Annotate: once per press, not again until the save has answered,
    // and a second tap right after the first (a double tap) is the same save even when its answer was quick
    e.preventDefault();
    if (e.repeat) return;
    track();
    const now = performance.now();
    if (inFlight(pending.save, now) || now - lastSave < DOUBLE_TAP_MS) return;
    lastSave = now;
    pending.save = { key: saveText(), at: now, errors: errors() };
    click('save-btn');
  };
  document.addEventListener('keydown', (e) => {
    const typing = !!document.activeElement?.matches?.('input, textarea, select') || !!document.activeElement?.isContentEditable;
    if (keysOpen()) {  // the overlay: Esc or ? closes it, other keys act as usual
      if (e.key === 'Escape' || (e.key === '?' && !typing)) { e.preventDefault(); showKeys(false); return; }
    }
    const annotating = document.querySelector('#expression')?.offsetParent != null;
    if (annotating && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
      if (e.key === '?') { e.preventDefault(); showKeys(true); return; }
      if (e.key === '/') { e.preventDefault(); focusExpression(); return; }
    }
    const mod = e.ctrlKey || e.metaKey;
    const reviewing = document.querySelector('#review-next')?.offsetParent != null;  // annotators: no Accept
    const verifying = document.querySelector('#verify-yes')?.offsetParent != null;
    if (verifying && !typing && !mod && !e.altKey) {
      if (e.key === 'y' || e.key === 'Y') { decide(e, 'verify-shown', 'verify-yes'); return; }
      if (e.key === 'n' || e.key === 'N') { decide(e, 'verify-shown', 'verify-no'); return; }
      if (e.key === 'ArrowRight') { e.preventDefault(); click('verify-next'); return; }
      if (e.key === 'ArrowLeft') { e.preventDefault(); click('verify-prev'); return; }
    }
    if (reviewing && !typing && !mod && !e.altKey) {
      if (e.key === 'y' || e.key === 'Y') { decide(e, 'review-shown', 'review-accept'); return; }
      if (e.key === 'r' || e.key === 'R') {
        // Reject waits for a reason: R before one is chosen opens the list of reasons (never silently nothing);
        // a held R's repeats do neither (the reason list of the next ref stays shut, its filter box empty)
        if (e.repeat) { e.preventDefault(); return; }
        if (document.querySelector('#review-reject')?.disabled) {
          e.preventDefault();
          const reason = document.querySelector('#review-reason input');
          if (reason) { reason.focus(); reason.click(); }
          return;
        }
        decide(e, 'review-shown', 'review-reject'); return;
      }
      if (e.key === 'ArrowRight') { e.preventDefault(); click('review-next'); return; }
      if (e.key === 'ArrowLeft') { e.preventDefault(); click('review-prev'); return; }
    }
    if (mod && e.key === 'Enter') { save(e); return; }
    if (e.key === 'PageDown' && !mod) { e.preventDefault(); nav(e.shiftKey ? 'next-empty' : 'next-img'); return; }
    if (e.key === 'PageUp' && !mod) { e.preventDefault(); nav('prev-img'); return; }
    if (e.key === 'Escape' && typing) { document.activeElement.blur(); return; }
    if (!typing && !mod && !e.altKey) {
      if (e.key === 'd') { e.preventDefault(); nav('next-img', false); return; }
      if (e.key === 'D') { e.preventDefault(); nav('next-empty', false); return; }
      if (e.key === 'a' || e.key === 'A') { e.preventDefault(); nav('prev-img', false); return; }
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
.verdict-warn {background:#fde68a;color:#111;padding:10px 14px;border-radius:8px;font-size:1.1em;font-weight:600}
.model-note {font-size:0.9em;opacity:0.85}
.queue-bar {align-items:center}
.queue-pos {font-size:1.05em;padding:6px 2px}
.canvas-parts {font-size:0.9em;opacity:0.8;min-height:1.2em}
.canvas-parts.warn {color:#92400e;opacity:1;font-weight:600}
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
/* Review: a fixed ref's before / after line (no room when empty), sentences new or removed since the rejection */
#review-changes:not(:has(.review-changes)) {display:none !important}
.review-changes {background:#fef3c7;color:#111;padding:5px 10px;border-radius:6px;font-size:0.92em}
.sent-new {font-size:0.75em;background:#bbf7d0;color:#14532d;border-radius:8px;padding:0 6px;margin-left:4px}
.sent-removed {font-size:0.9em;opacity:0.75;padding-left:4px}
.history .when {opacity:0.7;font-variant-numeric:tabular-nums}
.review-sentences {font-size:1.15em}
#to-fix td {cursor:pointer}
:is(#to-fix, #image-refs) th, :is(#to-fix, #image-refs) th * {white-space:nowrap}
#to-fix td:focus, #to-fix td.focus, #to-fix td.editing {outline:none; box-shadow:none}
/* the read-only tables: a clicked cell opens its row, it is not edited, so no edit ring, handle or menu */
:is(#to-fix, #image-refs, #refs-table) .body-cell.cell-selected,
:is(#to-fix, #image-refs, #refs-table) .body-cell.cell-selected * {box-shadow:none !important; outline:none !important}
:is(#to-fix, #image-refs, #refs-table) :is(.cell-menu-button, .selection-button) {display:none !important}
:is(#to-fix, #image-refs) tr:hover td {background:var(--table-row-focus, #fff7ed)}
.verdict-domain {background:#fff7ed;color:#7c2d12;border:1px solid #fdba74;padding:6px 12px;border-radius:8px;margin-top:6px}
.studio-notice {background:#dbeafe;color:#111;padding:6px 12px;border-radius:6px}
.verify-sentence {font-size:1.6em;font-weight:600;padding:10px 4px 14px}
.keys-hint {font-size:0.85em;opacity:0.75;padding:0 2px}
/* empty notice and the restart watcher take no room, not even a gap (the picture moves up; the restart banner is fixed) */
#studio-notice:not(:has(.studio-notice)) {display:none !important}
#restart-watch {position:absolute !important;height:0 !important;min-height:0 !important;padding:0 !important;margin:0 !important;
  overflow:hidden !important;border:0 !important;pointer-events:none}
.expression-hint {font-size:0.9em;color:#92400e;padding:2px 4px}
.keys-overlay {position:fixed;inset:0;z-index:1000;background:rgba(0,0,0,0.45);display:flex;align-items:center;justify-content:center}
.keys-overlay[hidden] {display:none}
.keys-card {background:var(--background-fill-primary, #fff);color:var(--body-text-color, #111);max-width:760px;max-height:85vh;overflow:auto;padding:16px 22px;border-radius:10px;position:relative}
.keys-card table {border-collapse:collapse}
.keys-card td {padding:3px 10px;vertical-align:top}
.keys-card ul {columns:2;padding-left:1.2em;margin:4px 0}
.keys-close {position:absolute;top:6px;right:10px;font-size:1.4em;background:none;border:none;cursor:pointer}
#canvas .dc-help {cursor:pointer}
/* the header: one compact line (title, model line, who is working), the Annotator label beside its box */
#studio-header {align-items:center;flex-wrap:nowrap;gap:12px}
#title {flex:0 0 auto !important;min-width:0 !important;width:auto !important}
#title h2 {margin:0;white-space:nowrap}
#model-line {flex:1 1 0 !important;min-width:0 !important}
#model-line .model-note {display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:2;overflow:hidden;cursor:pointer}
#model-line.open .model-note {display:block}
#annotator {padding:4px 10px !important}
#annotator label {display:flex;align-items:center;gap:8px}
#annotator label > [data-testid=block-info] {margin:0;white-space:nowrap}
#annotator label > .input-container {flex:1;min-width:0}
#signed-in {flex:0 1 auto !important;width:auto !important;max-width:40%;min-width:0 !important;font-size:0.9em}
/* Annotate at a laptop's 1440x900: the queue bar on one line (the file name shortened, whole in its
   title), tighter rows, so the whole picture and the save box are above the fold */
#tab-annotate .column {gap:8px}
.queue-bar {flex-wrap:nowrap}
.queue-bar > button {flex:0 0 auto !important;min-width:0 !important;width:auto !important}
#queue-pos-box {flex:1 1 0 !important;min-width:0 !important}
#queue-pos-box .html-container, #keys-hint-box .html-container {padding:2px 4px}
#add-images {padding:6px 12px !important}
.queue-pos {white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
/* the thumbnails: as many columns as fit (never cut on the right), each with its status */
#thumbs .grid-container {grid-template-columns:repeat(auto-fill, minmax(96px, 1fr)) !important}
#thumbs .grid-wrap {padding-top:30px}
#thumbs .caption-label {color:#111;left:3px;right:3px;bottom:3px;max-width:none;font-size:11px;padding:1px 4px;
  text-align:left}
#thumbs .thumbnail-item[data-state=no-refs] .caption-label {background:#e5e7eb}
#thumbs .thumbnail-item[data-state=to-do] .caption-label {background:#fef3c7}
#thumbs .thumbnail-item[data-state=done] .caption-label {background:#bbf7d0}
#thumbs .thumbnail-item[data-state=rejected] .caption-label {background:#fecaca}
/* the page's margins: Gradio's 16px 32px, 6px 8px on a phone (the page's .main sits outside the scope
   Gradio gives rules in @media, so the width decides through clamp: below 640px the middle term is negative) */
.main.app {padding:clamp(6px, (100vw - 640px) * 100, 16px) clamp(8px, (100vw - 640px) * 100, 32px) !important}
@media (max-width: 640px) {
  /* a phone: the header takes two short lines; the picture starts in the first screen */
  .column {--layout-gap:8px}
  #studio-header {flex-wrap:wrap;gap:2px 8px}
  #title h2 {font-size:1.15em}
  #model-line {order:3;flex:1 0 100% !important}
  #model-line .model-note {display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:0.8em;cursor:pointer}
  #model-line.open .model-note {white-space:normal}
  #studio-header > .form {flex:1 1 0 !important;min-width:0 !important}
  #annotator {flex:1 1 auto !important;padding:2px 6px !important}
  #annotator textarea {padding:4px 6px;height:30px !important}
  #signed-in {flex:1 1 0 !important;max-width:none;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
  #add-images > .label-wrap {padding:2px 0}
  #keys-hint-box {display:none !important}
  .queue-bar {flex-wrap:wrap}
  #queue-pos-box {flex:1 0 100% !important}
  .queue-bar > button {flex:1 1 0 !important;font-size:0.8em}
  #expression-row > .form {flex:1 0 100% !important}
  #expression-row > button {flex:1 1 0 !important;min-width:0 !important;padding:6px 8px;font-size:0.9em}
}
"""


def build_app(model: ModelHolder, store: Store, *, max_image_side: int = 4096, device: str = "auto",
              switchable: dict[str, str] | None = None, export_dir: Path | None = None,
              sessions: SessionRegistry | None = None, users: "Users | None" = None,
              import_roots: list[Path] | None = None, refiner: "RefinerHolder | None" = None) -> gr.Blocks:
    """The studio. ``switchable`` maps the labels of weights the operator allows visitors to load to
    their specs (None: the *Model* panel is not shown); exports are written to ``export_dir``
    (default: next to the database) and old or half-written ones are removed. With ``users``
    (``--auth``), the signed-in user is the author of every save and review decision."""
    from .viewkit.cache_files import install as safe_picture_cache
    from .dataset.export import clean_stale_exports

    safe_picture_cache()  # Gradio's cached pictures are written once, atomically (many sessions read them)

    svc = Services(model, store, sessions if sessions is not None else SessionRegistry(), export_dir, max_image_side,
                   device, switchable, users, [Path(r) for r in import_roots or []], refiner)
    clean_stale_exports(svc.export_dir)
    with gr.Blocks(title="DeRIS Studio", delete_cache=(900, 3600)) as demo:
        shell = shell_layout(model_line(model.description, model.predictor, model.note), signed_in=users is not None)
        live_ui = live.layout(uuid.uuid4().hex)
        add_ui = add_images.layout(svc.import_roots)
        with gr.Tabs() as tabs:
            with gr.Tab("Annotate", id="annotate", elem_id="tab-annotate"):
                annotate_ui = annotate_layout.layout(model.predictor, refine=functools.partial(prompts.refine_on_canvas, svc),
                                                    upcoming=functools.partial(annotate.upcoming_for, svc),
                                                    typed=functools.partial(annotate.typed_for, svc))
            with gr.Tab("Review", elem_id="tab-review") as review_tab:
                review_ui = review.layout(review_tab)
            with gr.Tab("Negatives", elem_id="tab-verify") as verify_tab:
                verify_ui = verify.layout(verify_tab)
            with gr.Tab("Dataset", elem_id="tab-dataset") as dataset_tab_widget:
                dataset_ui = dataset_tab.layout(dataset_tab_widget)
            with gr.Tab("Jobs", elem_id="tab-jobs") as jobs_tab:
                jobs_ui = jobs.layout(jobs_tab)
        panel_ui = model_panel.layout(switchable)
        annotate.wire(svc, annotate_ui, shell)
        review.wire(svc, review_ui, shell)
        verify.wire(svc, verify_ui, shell)
        dataset_tab.wire(svc, dataset_ui, shell)
        for imported in add_images.wire(svc, add_ui, shell):
            # images added: the Annotate view's queue line and thumbnails count them at once (the line said
            # "0 in the queue" after the first day's upload)
            refiltered = annotate.refiltered_outputs(annotate_ui)
            imported.success(refiltered.bind(annotate.refilter, svc), [shell.sess_state, *annotate_ui.filters],
                             refiltered.outputs, api_name=False, show_progress="hidden")
        jobs.wire(svc, jobs_ui, shell)
        # links between views, through the same handlers and services
        opened = annotate.open_ref_outputs(annotate_ui, shell)
        dataset_ui.open_btn.click(opened.bind(annotate.open_ref, svc, wrap=gpu), [dataset_ui.ref_id, shell.sess_state],
                                  opened.outputs, api_name="open_ref")
        # the verification view's N: recorded there, then the sentence opens, run, in the Annotate tab
        refers = verify.refers_outputs(verify_ui)
        verify_ui.no_btn.click(refers.bind(verify.refers, svc, soft=False), verify.decision_inputs(verify_ui, shell),
                               refers.outputs, api_name="negative_refers").success(
            lambda: gr.Tabs(selected="annotate"), None, tabs, api_name=False).then(
            opened.bind(annotate.open_sentence, svc, wrap=gpu),
            [verify_ui.handoff, shell.sess_state, annotate_ui.score_thr, annotate_ui.mask_thr],
            opened.outputs, api_name=False)
        if switchable:
            loaded = model_panel.loaded_outputs(panel_ui, shell, annotate_ui.score_thr)
            panel_ui.load_btn.click(loaded.bind(model_panel.load_weights, svc), [panel_ui.weights_in, shell.who],
                                    loaded.outputs, api_name="load_weights")
        # a team that sees changes live: every page asks cheap questions of what its tab shows
        tick = dict(api_name=False, show_progress="hidden", concurrency_limit=4)
        tabs.select(live.tab_selected, None, [live_ui.tab], api_name=False, show_progress="hidden")
        model_tick = live.model_outputs(live_ui, shell.model_md)
        live_ui.timer.tick(model_tick.bind(live.model_tick, svc), [live_ui.seen_model], model_tick.outputs, **tick)
        fix_tick = live.fix_outputs(live_ui, annotate_ui.to_fix)
        live_ui.timer.tick(fix_tick.bind(live.fix_tick, svc, annotate.fix_rows), [shell.who, live_ui.fix_seen, live_ui.tab],
                           fix_tick.outputs, **tick)
        review_tick = review.live_outputs(review_ui)
        live_ui.timer.tick(review_tick.bind(review.live, svc),
                           [review_ui.rv_pos, review_ui.rv_ref, *review_ui.filters, live_ui.tab], review_tick.outputs, **tick)
        jobs_tick = jobs.live_outputs(jobs_ui)
        live_ui.timer.tick(jobs_tick.bind(jobs.live, svc), [live_ui.tab], jobs_tick.outputs, **tick)
        live_ui.timer.tick(bind(dataset_tab.live_counters, svc), [live_ui.tab, dataset_ui.progress],
                           [dataset_ui.progress], **tick)
        if users is not None:
            def signed_in(request: gr.Request):
                user = users.get(getattr(request, "username", None))
                if user is None:
                    return "Not signed in."
                return f"Signed in as **{html.escape(user.name)}** ({', '.join(sorted(user.roles))})"

            demo.load(signed_in, None, [shell.signed_in], api_name=False)
        for fn, inputs, outputs in shell.load_events:
            demo.load(fn, inputs, outputs, api_name=False)

        def client_left(request: gr.Request):
            svc.prefetch.cancel(getattr(request, "session_hash", None))  # its next image is not wanted
            svc.workspace.left_image(getattr(request, "session_hash", None))  # nor its typed expression
            if svc.sessions.release(getattr(request, "session_hash", None)):
                log.info("a client left: its session was freed (%d live)", len(svc.sessions))

        demo.unload(client_left)
        # what the background work did (tests, benchmarks): callable by a client, not in the API page
        gr.api(functools.partial(background_stats, svc), api_name="background_stats", api_visibility="undocumented")
    without_share_buttons(demo)
    return demo


def background_stats(svc: Services) -> dict:
    """The counts of the background work: the next image's prefetch and the expression run while typing."""
    return {"prefetch": dataclasses.asdict(svc.prefetch.stats), "speculation": svc.speculation.counts()}


def without_share_buttons(demo: gr.Blocks) -> None:
    """No picture of the studio offers Gradio's *Share* (to Hugging Face discussions): a team's images
    are theirs. Download and full screen stay."""
    for block in demo.blocks.values():
        buttons = getattr(block, "buttons", None)
        if isinstance(block, (gr.Image, gr.Gallery, gr.ImageEditor)) and buttons and "share" in buttons:
            block.buttons = [b for b in buttons if b != "share"]
