"""What every view shares: the model, the store, the live sessions and the app's settings,
plus the outputs most handlers end with (picture, verdict, candidates, gallery, targets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from ..session import Session, SessionRegistry
from ..store import Store
from . import display

if TYPE_CHECKING:
    from ..auth import Users
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
    users: "Users | None" = None

    def track(self, request: gr.Request | None, sess: Session) -> Session:
        return self.sessions.track(getattr(request, "session_hash", None), sess)

    def who(self, request: gr.Request | None, typed: str | None = "") -> str:
        """The author of an action: the signed-in user with ``--auth``, else the name typed in the box."""
        if self.users is not None:
            name = getattr(request, "username", None)
            if not name or self.users.get(name) is None:
                raise gr.Error("Sign in first.")
            return name
        return " ".join((typed or "").split())

    def is_reviewer(self, request: gr.Request | None, typed: str | None = "") -> bool:
        """Without ``--auth`` everyone may review; with it, only the reviewer role."""
        if self.users is None:
            return True
        user = self.users.get(self.who(request, typed))
        return bool(user and user.reviewer)

    def authors_for_save(self, request: gr.Request | None, typed: str | None, ref_id: int | None) -> tuple[str, str]:
        """``(author to keep on the ref, user for its history)`` of a save; refuses what the user may not change.

        A model's or a consensus ref becomes the person's who saves it; a person's ref keeps its
        author, and with ``--auth`` only the author or a reviewer may change it; accepted
        (``reviewed``) refs are changed by reviewers only."""
        who = self.who(request, typed)
        if ref_id is None:
            return who, who
        try:
            rec = self.store.ref(ref_id)
        except Exception:  # noqa: BLE001 - deleted meanwhile: the save reports the conflict
            return who, who
        owner = rec.annotator
        if not owner or owner.startswith(("model:", "consensus")):
            return who, who
        if rec.status == "reviewed" and not self.is_reviewer(request, typed):
            raise gr.Error(f"Not saved: ref {ref_id} was accepted; only a reviewer can change it now.")
        if owner != who and self.users is not None and not self.is_reviewer(request, typed):
            raise gr.Error(f"Not saved: ref {ref_id} was made by {owner}; only {owner} or a reviewer can change it.")
        return owner, who

    def require_reviewer(self, request: gr.Request | None, typed: str | None = "") -> str:
        """The reviewer's name; refused for signed-in users without the reviewer role."""
        name = self.who(request, typed)
        if self.users is not None and not self.users.get(name).reviewer:
            raise gr.Error(f"{name} is not a reviewer: only reviewers accept or reject refs.")
        return name or "reviewer"


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
