"""Refs as the studio changes them: save, delete, review and fix, each checked against the one
permission table (:mod:`app.services.permissions`) inside the store transaction that writes it.

Views, command lines and batch jobs call these; the store below checks the data (sentences,
targets, versions) and records every change as an event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..store import ConflictError, Event, RefRecord, Store, StoreError
from ..store.review import Decision, decision_change, last_decision, to_fix
from .permissions import Actor, personal, require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saved:
    ref_id: int
    version: int
    created: bool


class RefService:
    """The ref operations of the studio over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, actor: Actor, image_id: int, sentences: Sequence[str], *, masks: Sequence[np.ndarray] = (),
             rles: Sequence[dict] = (), instance_ids: Sequence[int] = (), no_target: bool = False,
             split: str = "train", status: str = "done", ref_id: int | None = None,
             expected_version: int | None = None, author: str | None = None, db=None, source: str = "annotator",
             action: str | None = None, detail: dict | None = None) -> Saved:
        """Create or update a ref as ``actor``; refused (nothing written) when the table says no.

        The author of record is kept for a person's ref and becomes ``actor`` (or ``author``, for
        batch tools) for a ref without one. Saving with status ``reviewed`` is an acceptance and
        is recorded as one; it is refused when the saved content is the actor's own. ``db``: an
        open :meth:`Store.transaction` (batch jobs), else one is opened here."""
        if db is None:
            with self.store.transaction() as tx:
                return self.save(actor, image_id, sentences, masks=masks, rles=rles, instance_ids=instance_ids,
                                 no_target=no_target, split=split, status=status, ref_id=ref_id,
                                 expected_version=expected_version, author=author, db=tx, source=source,
                                 action=action, detail=detail)
        old = None
        if ref_id is not None:
            old = self.store.ref_in(db, ref_id)
            if old is None:
                raise ConflictError(f"ref {ref_id} was deleted meanwhile; save it as a new ref instead")
        deciding = status in ("reviewed", "rejected") and (old is None or old.status != status)
        if deciding:
            require(actor, "accept" if status == "reviewed" else "reject", None)  # the role, before anything else
        if old is not None:
            require(actor, "edit", old)
            keep = old.annotator if personal(old.annotator) else (author or actor.name)
        else:
            require(actor, "create", None)
            keep = author if author is not None else actor.name
        written = self.store.write_ref(db, image_id, sentences, masks=masks, rles=rles, instance_ids=instance_ids,
                                       no_target=no_target, split=split, author=keep,
                                       status=(old.status if old is not None else "done") if deciding else status,
                                       ref_id=ref_id, expected_version=expected_version, actor=actor.name,
                                       source=source, action=action, detail=detail)
        version = written.version
        if status == "reviewed" and (deciding or written.content_changed):
            require(actor, "accept", self.store.ref_in(db, written.ref_id))  # refused: the whole save rolls back
        if deciding:
            if status == "rejected":
                require(actor, "reject", self.store.ref_in(db, written.ref_id))
            version = self.store.write_status(db, written.ref_id, status, actor.name, version, action="review" if
                                              status == "reviewed" else "status",
                                              detail={"decision": "accept", "reason": None, "comment": "",
                                                      "via": "save"} if status == "reviewed" else None)
        return Saved(written.ref_id, version, ref_id is None)

    def delete(self, actor: Actor, ref_id: int, expected_version: int | None = None) -> None:
        """Delete a ref (with its drawn instances) when the table allows it."""
        with self.store.transaction() as db:
            old = self.store.ref_in(db, ref_id)
            if old is None:
                raise StoreError(f"no ref with id {ref_id}")
            require(actor, "delete", old)
            self.store.write_delete(db, ref_id, old.version if expected_version is None else expected_version, actor.name)

    def review(self, actor: Actor, ref_id: int, decision: str, reason: str | None = None, comment: str = "",
               expected_version: int | None = None, db=None) -> int:
        """Accept or reject (with a reason) a ref; returns its new version (``db``: as in :meth:`save`)."""
        status, detail = decision_change(decision, reason, comment)
        if db is None:
            with self.store.transaction() as tx:
                return self.review(actor, ref_id, decision, reason, comment, expected_version, db=tx)
        old = self.store.ref_in(db, ref_id)
        if old is None:
            raise StoreError(f"no ref with id {ref_id}")
        require(actor, "accept" if decision == "accept" else "reject", old)
        return self.store.write_status(db, ref_id, status, actor.name, expected_version, detail, action="review")

    def ref(self, ref_id: int) -> RefRecord:
        return self.store.ref(ref_id)

    def history(self, ref_id: int) -> list[Event]:
        return self.store.events(ref_id)

    def last_decision(self, ref_id: int) -> Decision | None:
        return last_decision(self.store, ref_id)

    def to_fix(self, annotator: str) -> list:
        """An annotator's rejected refs with the rejection (oldest first)."""
        return to_fix(self.store, annotator) if annotator else []
