"""What every view shares: the model, the store, the live sessions and the app's settings,
plus the outputs most handlers end with (picture, verdict, candidates, gallery, targets)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from ..session import Session, SessionRegistry
from ..store import Store
from . import display

if TYPE_CHECKING:
    from ..ui import ModelHolder


@dataclass
class Studio:
    model: "ModelHolder"
    store: Store
    sessions: SessionRegistry
    export_dir: Path
    max_image_side: int = 4096
    device: str = "auto"
    switchable: dict[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def track(self, request: gr.Request | None, sess: Session) -> Session:
        return self.sessions.track(getattr(request, "session_hash", None), sess)


def render(sess: Session) -> tuple:
    """Outputs shared by most handlers: picture, verdict, candidates, gallery, target picker, state."""
    targets = display.target_choices(sess)
    sel = sess.selected if 0 <= sess.selected < len(targets) else (0 if targets else None)
    return (
        display.picture(sess),
        display.verdict_html(sess),
        gr.update(choices=display.candidate_choices(sess), value=sess.selected_candidates()),
        display.candidate_gallery(sess),
        gr.update(choices=targets, value=sel),
        sess,
    )
