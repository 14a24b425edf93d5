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

from ..store import (CommitUnknown, ConflictError, Event, RefAction, RefFilter, RefRecord, RefRow, RefStatus, Store,
                     StoreError, next_status, save_action)
from ..store.provenance import content_authors
from ..store.review import Decision, decision_change, last_decision, review_queue, to_fix
from .errors import Refused
from .permissions import Actor, personal, require, wrote_content
from .review import Rejection, last_rejection

log = logging.getLogger(__name__)


@dataclass
class ReviewItem:
    """A place in the review queue: its list row and full ref (None: the queue is empty), position, size."""

    row: RefRow | None
    ref: RefRecord | None
    pos: int
    total: int


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
             split: str = "train", status: str = RefStatus.DONE, ref_id: int | None = None,
             expected_version: int | None = None, author: str | None = None, db=None, source: str = "annotator",
             action: str | None = None, detail: dict | None = None, save_key: str | None = None) -> Saved:
        """Create or update a ref as ``actor``; refused (nothing written) when the table says no.

        The author of record is kept for a person's ref and becomes ``actor`` (or ``author``, for
        batch tools) for a ref without one. Saving with status ``reviewed`` is an acceptance and
        is recorded as one; it is refused when the saved content is the actor's own. ``db``: an
        open :meth:`Store.transaction` (batch jobs), else one is opened here.

        ``save_key`` names this save attempt (a client keeps it until it hears "saved"): it is written
        in the save's transaction, so a save whose COMMIT answer was lost is looked up and reported
        truthfully, and a retry with the same key returns the stored save instead of saving twice."""
        if db is None:
            key = save_key or self.store.new_save_key()
            try:
                with self.store.transaction() as tx:
                    return self.save(actor, image_id, sentences, masks=masks, rles=rles, instance_ids=instance_ids,
                                     no_target=no_target, split=split, status=status, ref_id=ref_id,
                                     expected_version=expected_version, author=author, db=tx, source=source,
                                     action=action, detail=detail, save_key=key)
            except CommitUnknown:
                found = self.store.saved_by_key(key)
                if found is None:
                    raise StoreError("the connection to the database server was lost before the save was stored: "
                                     "nothing was saved, try again") from None
                log.warning("the answer to COMMIT was lost; save key found: ref %s was saved", found[0])
                return Saved(int(found[0]), int(found[1]), ref_id is None)
        if save_key is not None and (done := self.store.save_key_in(db, save_key)) is not None:
            return Saved(int(done[0]), int(done[1]), ref_id is None)  # a retry of a save that was stored
        old = None
        if ref_id is not None:
            old = self.store.ref_in(db, ref_id)
            if old is None:
                raise ConflictError(f"ref {ref_id} was deleted meanwhile; save it as a new ref instead")
        act = save_action(status)
        status = next_status(old.status if old is not None else None, act, actor.name)
        deciding = act in (RefAction.ACCEPT, RefAction.REJECT) and (old is None or old.status != status)
        if deciding:
            require(actor, act.value, None)  # the role, before anything else
        if old is not None:
            require(actor, "edit", old)
            keep = old.author if personal(old.author) else (author or actor.name)
        else:
            require(actor, "create", None)
            keep = author if author is not None else actor.name
        written = self.store.write_ref(db, image_id, sentences, masks=masks, rles=rles, instance_ids=instance_ids,
                                       no_target=no_target, split=split, author=keep,
                                       status=(old.status if old is not None else next_status(None, RefAction.SUBMIT))
                                       if deciding else status,
                                       ref_id=ref_id, expected_version=expected_version, actor=actor.name,
                                       source=source, action=action, detail=detail)
        version = written.version
        if act is RefAction.ACCEPT and (deciding or written.content_changed):
            require(actor, act.value, self.store.ref_in(db, written.ref_id))  # refused: the whole save rolls back
            self._not_own_content(db, actor, self.store.ref_in(db, written.ref_id))
        if deciding:
            if act is RefAction.REJECT:
                require(actor, act.value, self.store.ref_in(db, written.ref_id))
            version = self.store.write_status(db, written.ref_id, status, actor.name, version, action="review" if
                                              act is RefAction.ACCEPT else "status",
                                              detail={"decision": "accept", "reason": None, "comment": "",
                                                      "via": "save"} if act is RefAction.ACCEPT else None)
        if save_key is not None:
            self.store.write_save_key(db, save_key, written.ref_id, version)
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
        _, detail = decision_change(decision, reason, comment)
        if db is None:
            with self.store.transaction() as tx:
                return self.review(actor, ref_id, decision, reason, comment, expected_version, db=tx)
        act = RefAction.ACCEPT if decision == "accept" else RefAction.REJECT
        return self.move(actor, ref_id, act, db=db, expected_version=expected_version, detail=detail, event="review")

    def move(self, actor: Actor, ref_id: int, action: RefAction, *, db, expected_version: int | None = None,
             detail: dict | None = None, event: str = "status") -> int:
        """Change only a ref's status, as :func:`~app.store.next_status` says ``action`` moves it, inside
        ``db``; the permission table decides (accept / reject, else an edit). Returns the new version
        (the old one when the action leaves the status as it is)."""
        old = self.store.ref_in(db, ref_id)
        if old is None:
            raise StoreError(f"no ref with id {ref_id}")
        require(actor, action.value if action in (RefAction.ACCEPT, RefAction.REJECT) else "edit", old)
        if action is RefAction.ACCEPT:
            self._not_own_content(db, actor, old)
        new = next_status(old.status, action, actor.name)
        if new == old.status and action not in (RefAction.ACCEPT, RefAction.REJECT):
            return old.version
        return self.store.write_status(db, ref_id, new, actor.name, expected_version, detail, action=event)

    def _not_own_content(self, db, actor: Actor, ref: RefRecord) -> None:
        """Refuse an acceptance by anyone who wrote the ref's content, wherever it was copied from."""
        why = wrote_content(actor, ref, content_authors(db, ref.id))
        if why is not None:
            raise Refused(why)

    def ref(self, ref_id: int) -> RefRecord:
        return self.store.ref(ref_id)

    def exists(self, ref_id: int) -> bool:
        return bool(self.store.refs(ref_ids=[int(ref_id)]))

    def of_image(self, image_id: int | None) -> list[RefRow]:
        """The refs of one image, oldest first (the Annotate view's list)."""
        if image_id is None:
            return []
        return self.store.refs_page(0, 200, RefFilter(image_id=int(image_id)), newest_first=False)[0]

    def review_at(self, pos: int, flt: RefFilter | None = None, by_disagreement: bool = False,
                  by_uncertainty: bool = False) -> ReviewItem:
        """The ref at ``pos`` of the review queue (``flt``: refs awaiting review), clamped to its end."""
        flt = flt if flt is not None else RefFilter((RefStatus.DONE,))
        pos = max(0, int(pos or 0))
        order = dict(flt=flt, by_disagreement=bool(by_disagreement), by_uncertainty=bool(by_uncertainty))
        rows, total = review_queue(self.store, pos, 1, **order)
        if not rows and total:
            pos = total - 1
            rows, total = review_queue(self.store, pos, 1, **order)
        if not rows:
            return ReviewItem(None, None, pos, total)
        return ReviewItem(rows[0], self.store.ref(rows[0].id), pos, total)

    def history(self, ref_id: int) -> list[Event]:
        return self.store.events(ref_id)

    def last_decision(self, ref_id: int) -> Decision | None:
        return last_decision(self.store, ref_id)

    def rejection(self, ref_id: int) -> Rejection | None:
        """The ref's last rejected version (sentences, masks, who rejected it why); None: never rejected."""
        return last_rejection(self.store, ref_id)

    def to_fix(self, annotator: str) -> list:
        """An annotator's rejected refs with the rejection (oldest first)."""
        return to_fix(self.store, annotator) if annotator else []
