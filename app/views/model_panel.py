"""The model panel: exists only when the operator allowed weights at launch (``--allow-weights``).
Loading changes the shell's model line and the Annotate tab's threshold: :mod:`app.ui` wires it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from ..model_info import model_line, score_threshold
from ..services import Services
from ..services.model import FINE_TUNED

log = logging.getLogger(__name__)


@dataclass
class ModelPanelUI:
    weights_in: gr.Dropdown
    load_btn: gr.Button


def layout(switchable: dict[str, str] | None) -> ModelPanelUI:
    with gr.Accordion("Model", open=False, visible=bool(switchable)):
        weights_in = gr.Dropdown(list(switchable or {}), label="Weights the operator allows to load (for everyone)",
                                 elem_id="weights-choice")
        load_btn = gr.Button("Load weights", elem_id="load-weights-btn")
    return ModelPanelUI(weights_in, load_btn)


def load_weights(svc: Services, label: str | None):
    """Load one of the allowed weights for everyone. Outputs: the model line and the score threshold."""
    allowed = svc.switchable or {}
    if label not in allowed:
        raise gr.Error("Pick one of the weights the operator allowed.")
    try:
        desc = svc.model.load(allowed[label], svc.device, name=label if label.endswith(FINE_TUNED) else "")
    except Exception as exc:  # noqa: BLE001 - any loading problem is reported, the old model stays
        log.warning("loading %r failed: %s", allowed[label], exc, exc_info=True)
        raise gr.Error(f"Could not load {label} ({type(exc).__name__}). The previous model stays active; "
                       "the server log has the details.") from None
    return model_line(desc, svc.model.predictor), gr.update(value=score_threshold(svc.model.predictor))
