"""Verifying proposed negatives (``python -m app.curate negatives``): the queue, one at a time, and a
person's decision, checked against the one permission table (:mod:`app.services.permissions`,
action ``verify``) inside the store transaction that writes it.

*No target* ("refers to nothing here") saves the sentence as the person's no-target ref on the
image (status ``done``, awaiting review): the model's predicted no-target ref when there is one
(updated, versioned), else a new ref. *Refers* records the decision and leaves the ref to the
Annotate view, where the person runs the sentence and saves its targets; when it takes back a *no
target* decision, the no-target ref that decision saved goes back to ``draft`` (it no longer awaits
review as the person's answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..store import ConflictError, RefAction, Store, StoreError, decode_mask, next_status
from ..store import predictions
from ..store.negatives import (DECISIONS, Negative, negative, negative_in, negative_queue, ref_version, source_image,
                               write_decision)
from .permissions import Actor, require
from .refs import RefService

log = logging.getLogger(__name__)


@dataclass
class Shown:
    """The negative at a queue position (None: the queue is empty), the position and the queue's size."""

    negative: Negative | None
    pos: int
    total: int


class NegativeService:
    """The verification queue of proposed negatives over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.refs = RefService(store)

    def at(self, pos: int, show: str = "open") -> Shown:
        """The negative at ``pos`` of the queue (clamped to its end)."""
        pos = max(0, int(pos or 0))
        rows, total = negative_queue(self.store, pos, 1, show)
        if not rows and total:
            pos = total - 1
            rows, total = negative_queue(self.store, pos, 1, show)
        return Shown(rows[0] if rows else None, pos, total)

    def get(self, negative_id: int) -> Negative:
        return negative(self.store, negative_id)

    def picture(self, neg: Negative) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """The negative's image (None: pixels not available) and, where the model found a target, the
        masks of its referred candidates (best first)."""
        rgb = self.store.load_image(neg.image_id)
        if rgb is None or not neg.found_target:
            return rgb, []
        pred = predictions.of_pair(self.store, neg.image_id, neg.sentence, neg.model)
        return rgb, [decode_mask(c["rle"]) for c in pred.referred()] if pred is not None else []

    def source_image(self, neg: Negative) -> int | None:
        """The image the sentence was written for (None: unknown)."""
        return source_image(self.store, neg)

    def ref_version(self, neg: Negative) -> int | None:
        """The version of the negative's ref now (None: it has none)."""
        return ref_version(self.store, neg.ref_id)

    def image_name(self, neg: Negative) -> str:
        return self.store.image(neg.image_id).file_name

    def decide(self, actor: Actor, negative_id: int, decision: str, seen: str | None = None,
               seen_version: int | None = None) -> Negative:
        """Record ``actor``'s decision (``no_target`` or ``refers``) on a negative; returns it as stored.

        ``seen``: the decision the person saw on screen (``""``: none); ``seen_version``: the version of
        the negative's ref then. When someone else decided, or changed that ref (in Annotate, say),
        meanwhile, the decision is refused with :class:`ConflictError` (nothing is written)."""
        try:
            self._decide(actor, negative_id, decision, seen, seen_version)
        except UserError as exc:  # a conflict, an unknown negative or decision, a refusal: nothing was written
            log.info("negative %s: %s's decision %r not written (%s): %s", negative_id, actor.name, decision,
                     type(exc).__name__, exc)
            raise
        log.info("negative %s decided %r by %s", negative_id, decision, actor.name)
        return negative(self.store, negative_id)

    def _decide(self, actor: Actor, negative_id: int, decision: str, seen: str | None, seen_version: int | None) -> None:
        """:meth:`decide`'s checks and writes, in one store transaction."""
        if decision not in DECISIONS:
            raise StoreError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
        with self.store.transaction() as db:
            neg = negative_in(db, negative_id)
            if neg is None:
                raise StoreError(f"no proposed negative with id {negative_id}")
            if seen is not None and neg.decision != seen:
                raise ConflictError(f"negative {neg.id} was decided meanwhile by {neg.decided_by or 'someone'} "
                                    f"({DECISIONS.get(neg.decision, 'undecided')}); look at it again")
            ref = self.store.ref_in(db, neg.ref_id) if neg.ref_id is not None else None
            if ref is not None and seen_version is not None and ref.version != seen_version:
                raise ConflictError(f"ref {ref.id} of negative {neg.id} was changed meanwhile"
                                    f"{' by ' + ref.editor if ref.editor else ''}; look at it again")
            require(actor, "verify", ref)
            ref_id = ref.id if ref is not None else None
            if decision == "no_target":
                split = ref.split if ref is not None else (self.store.image(neg.image_id).split or "train")
                sentences = ref.sentences if ref is not None else [neg.sentence]
                ref_id = self.refs.save(actor, neg.image_id, sentences, no_target=True, split=split, status=next_status(
                                            ref.status if ref is not None else None, RefAction.SUBMIT, actor.name),
                                        ref_id=ref_id, expected_version=ref.version if ref is not None else None, db=db,
                                        detail={"negative": neg.id, "decision": "no_target"}).ref_id
            elif neg.decision == "no_target" and ref is not None and ref.no_target:  # "refers" takes that answer back
                self.refs.move(actor, ref.id, RefAction.TAKE_BACK, db=db, expected_version=ref.version, event="edit",
                               detail={"negative": neg.id, "decision": "refers"})
            write_decision(db, neg.id, decision, actor.name, ref_id)
