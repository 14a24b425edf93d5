"""What keeps every open page current without a reload: a timer that asks cheap questions (the
model's version, a few counts) and a notice line; and the page script that tells people the
studio restarted. Handlers are plain functions of ``(services, inputs...)``; :mod:`app.ui` wires
the timer's other outputs (the Review queue counter, the Dataset counters, the to-fix list)."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from ..model_info import model_line
from ..services import Services

TICK_S = 5.0  # how often an open page asks; each tick is a few indexed counts, no image


@dataclass
class LiveUI:
    timer: gr.Timer
    notice: gr.HTML
    seen_model: gr.State  # the model version this page last showed


def layout() -> LiveUI:
    notice = gr.HTML("", elem_id="studio-notice")
    return LiveUI(gr.Timer(TICK_S), notice, gr.State(None))


def model_tick(svc: Services, seen: int | None):
    """The model line, and a notice when another session switched the model since this page looked
    (``seen``: the version this page showed; None on its first tick). Outputs: line, notice, seen."""
    holder = svc.model
    line = model_line(holder.description, holder.predictor, holder.note)
    if seen is None or seen == holder.version:
        return (line if seen is not None else gr.update(), gr.update(), holder.version)
    text = holder.notice()
    return line, f"<div class='studio-notice' id='model-notice'>{html.escape(text)}</div>" if text else "", holder.version
