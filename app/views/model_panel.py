"""The model panel: exists only when the operator allowed weights at launch (``--allow-weights``).
Loading changes the shell's model line and the Annotate tab's threshold: :mod:`app.ui` wires it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from ..viewkit.model_info import model_line, score_threshold
from ..services import Services
from ..services.errors import Refused
from ..services.model import FINE_TUNED
from ..services.permissions import require_studio
from .records import Outputs
from .shell import request_user

log = logging.getLogger(__name__)


@dataclass
class ModelPanelUI:
    weights_in: gr.Dropdown
    load_btn: gr.Button
    status: gr.Markdown


@dataclass(frozen=True)
class WeightsLoaded:
    """After *Load weights*: the shell's model line, the Annotate tab's score threshold (an update)
    and the panel's status line."""
    model_md: str
    score_thr: dict
    status: str


def layout(switchable: dict[str, str] | None) -> ModelPanelUI:
    with gr.Accordion("Model", open=False, visible=bool(switchable)):
        weights_in = gr.Dropdown(list(switchable or {}), label="Weights the operator allows to load (for everyone)",
                                 elem_id="weights-choice")
        load_btn = gr.Button("Load weights (reviewers and operators)", elem_id="load-weights-btn")
        status = gr.Markdown("", elem_id="model-status")
    return ModelPanelUI(weights_in, load_btn, status)


def load_weights(svc: Services, label: str | None, typed: str = "", request: gr.Request = None) -> WeightsLoaded:
    """Load one of the allowed weights for everyone (reviewers and operators only: the permission
    table's ``switch_model``). A refusal or a failed load is said in the status line, never as an error badge: the model line
    keeps naming the model still in use."""
    line = model_line(svc.model.description, svc.model.predictor, svc.model.note)

    def keep(status: str) -> WeightsLoaded:
        return WeightsLoaded(line, gr.update(), status)

    try:
        actor = svc.actor(request_user(request), typed)
        require_studio(actor, "switch_model")
    except Refused as exc:
        return keep(f"⚠ {exc}")
    allowed = svc.switchable or {}
    if label not in allowed:
        return keep("⚠ Pick one of the weights the operator allowed.")
    try:
        desc = svc.model.load(allowed[label], svc.device, name=label if label.endswith(FINE_TUNED) else "",
                              by=actor.name)
    except Exception as exc:  # noqa: BLE001 - any loading problem is reported, the old model stays
        log.warning("loading %r failed: %s", allowed[label], exc, exc_info=True)
        return keep(f"⚠ Could not load {label} ({type(exc).__name__}); still in use: {svc.model.description}. "
                    "The server log has the details.")
    return WeightsLoaded(model_line(desc, svc.model.predictor), gr.update(value=score_threshold(svc.model.predictor)),
                         f"Loaded {desc} for everyone.")


def loaded_outputs(ui: ModelPanelUI, shell, score_thr) -> Outputs:
    """Where :func:`load_weights` shows its record: the shell's model line, the Annotate tab's
    threshold ``score_thr`` and this panel's status (:mod:`app.ui` links the views)."""
    return Outputs.of(WeightsLoaded, ui, model_md=shell.model_md, score_thr=score_thr)
