"""What keeps every open page current without a reload: a timer that asks cheap questions (the
model's version, a few counts) and a notice line; and the page script that tells people the
studio restarted. Handlers are plain functions of ``(services, inputs...)``; :mod:`app.ui` wires
the timer's other outputs (the Review queue counter, the Dataset counters, the to-fix list)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ..viewkit.model_info import model_line
from ..services import Services
from .records import Outputs

RESTART_WATCH_JS = """
if (!window.__studioWatch) {
  window.__studioWatch = true;
  const mine = element.querySelector('[data-start]')?.dataset.start || '';
  const say = (text) => {
    let b = document.getElementById('restart-banner');
    if (!b) {
      b = document.createElement('div'); b.id = 'restart-banner'; b.setAttribute('role', 'alert');
      b.style.cssText = 'position:fixed;top:0;left:0;right:0;z-index:10000;background:#b91c1c;color:#fff;' +
        'padding:10px 16px;font-weight:600;text-align:center;cursor:pointer';
      b.onclick = () => location.reload(); document.body.prepend(b);
    }
    b.textContent = text;
  };
  const base = location.href.split(/[?#]/)[0].replace(/[^/]*$/, '');
  let misses = 0;
  setInterval(async () => {
    try {
      const r = await fetch(base + 'config', {cache: 'no-store', credentials: 'same-origin'});
      if (r.status === 401 || r.status === 403) { say('The studio restarted — reload the page (click here) and sign in again.'); return; }
      if (!r.ok) throw new Error(String(r.status));
      const text = await r.text();
      misses = 0;
      if (mine && !text.includes(mine)) say('The studio restarted — reload the page (click here). Saved work is kept.');
    } catch (e) {
      if (++misses >= 2) say('The studio cannot be reached (restarting?) — reload the page when it is back (click here).');
    }
  }, 4000);
}
"""

TICK_S = 5.0  # how often an open page asks; each tick is a few indexed counts, no image


@dataclass
class LiveUI:
    timer: gr.Timer
    notice: gr.HTML
    watch: gr.HTML  # carries this server start's id; its script says when the studio restarted
    seen_model: gr.State  # the model version this page last showed
    tab: gr.State  # the label of the tab on screen: a tick asks only what that tab shows
    fix_seen: gr.State  # the to-fix rows this page shows (a tick sends them only when they changed)


@dataclass(frozen=True)
class FixTick:
    """The Annotate tab's to-fix list (``gr.skip()`` when unchanged) and what the page now shows of it."""
    to_fix: Any
    fix_seen: str | None


@dataclass(frozen=True)
class ModelTick:
    """The shell's model line, the notice line and the model version this page now shows."""
    model_md: str | dict
    notice: str | dict
    seen_model: int


def layout(start_id: str) -> LiveUI:
    """``start_id``: new at every start of the server (a page of an older start is told to reload)."""
    notice = gr.HTML("", elem_id="studio-notice")
    watch = gr.HTML(f"<span data-start='{html.escape(start_id, quote=True)}'></span>", elem_id="restart-watch",
                    js_on_load=RESTART_WATCH_JS, container=False, padding=False)
    return LiveUI(gr.Timer(TICK_S), notice, watch, gr.State(None), gr.State("Annotate"), gr.State(None))


def tab_selected(evt: gr.SelectData) -> str:
    """The label of the tab just selected (kept in :attr:`LiveUI.tab`)."""
    return str(evt.value)


def fix_tick(svc: Services, fix_rows: Callable, typed: str, seen, tab: str = "", request: gr.Request = None) -> FixTick:
    """The annotator's "rejected: fix these first" list, refreshed while the Annotate tab is on
    screen and sent only when it changed (so a rejection reaches her without a reload, and her
    image and place in the queue stay). ``fix_rows``: the Annotate view's handler of that list (bound
    by :mod:`app.ui`, which links views)."""
    if tab != "Annotate":
        return FixTick(gr.skip(), seen)
    rows = fix_rows(svc, typed, request)
    key = repr(rows.get("value") if isinstance(rows, dict) else rows)
    return FixTick(gr.skip(), seen) if key == seen else FixTick(rows, key)


def model_tick(svc: Services, seen: int | None) -> ModelTick:
    """The model line, and a notice when another session switched the model since this page looked
    (``seen``: the version this page showed; None on its first tick)."""
    holder = svc.model
    line = model_line(holder.description, holder.predictor, holder.note)
    if seen is None or seen == holder.version:
        return ModelTick(line if seen is not None else gr.update(), gr.update(), holder.version)
    text = holder.notice()
    notice = f"<div class='studio-notice' id='model-notice'>{html.escape(text)}</div>" if text else ""
    return ModelTick(line, notice, holder.version)


def fix_outputs(ui: LiveUI, to_fix) -> Outputs:
    """Where :func:`fix_tick` shows its record (``to_fix``: the Annotate tab's list)."""
    return Outputs.of(FixTick, ui, to_fix=to_fix)


def model_outputs(ui: LiveUI, model_md) -> Outputs:
    """Where :func:`model_tick` shows its record (``model_md``: the shell's model line)."""
    return Outputs.of(ModelTick, ui, model_md=model_md)
