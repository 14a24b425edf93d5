"""The model panel: exists only when the operator allowed weights at launch (``--allow-weights``)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..model_info import model_line, score_threshold
from .context import Studio


def layout(switchable: dict[str, str] | None) -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Accordion("Model", open=False, visible=bool(switchable)):
        c.weights_in = gr.Dropdown(list(switchable or {}), label="Weights the operator allows to load (for everyone)",
                                   elem_id="weights-choice")
        c.load_btn = gr.Button("Load weights", elem_id="load-weights-btn")
    return c


def wire(studio: Studio, c: SimpleNamespace) -> None:
    if not studio.switchable:
        return
    allowed = studio.switchable

    def load_weights(label: str | None):
        if label not in allowed:
            raise gr.Error("Pick one of the weights the operator allowed.")
        try:
            desc = studio.model.load(allowed[label], studio.device)
        except Exception as exc:  # noqa: BLE001 - any loading problem is reported, the old model stays
            print(f"loading {allowed[label]!r} failed: {exc}", flush=True)
            raise gr.Error(f"Could not load {label} ({type(exc).__name__}). The previous model stays active; "
                           "the server log has the details.") from None
        return model_line(desc, studio.model.predictor), gr.update(value=score_threshold(studio.model.predictor))

    c.load_btn.click(load_weights, [c.weights_in], [c.model_md, c.score_thr], api_name="load_weights")
