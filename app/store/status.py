"""A ref's review status, what moves it, and the one function that says where it moves.

The values are the ones stored in ``refs.status`` since the first schema (no data migration).
Every state change of the studio (a person's save, a review decision, a verified negative, the
model's pre-annotation and re-thresholding, a ref reopened for editing) asks :func:`next_status`;
who may do it is the permission table's (:mod:`app.services.permissions`), not this module's.
This is the only module of ``app/`` that spells a status (``tests/test_layering.py`` checks).
"""

from __future__ import annotations

from enum import Enum

from .errors import StoreError


class RefStatus(str, Enum):
    """Where a ref stands (``str``: compares and stores as its value)."""

    DRAFT = "draft"  # being written, not yet handed in
    PREDICTED = "predicted"  # made by the model, to verify
    DONE = "done"  # handed in: awaits review
    REVIEWED = "reviewed"  # accepted by a reviewer
    REJECTED = "rejected"  # sent back to its author with a reason

    def __str__(self) -> str:
        return self.value


class RefAction(str, Enum):
    """What happens to a ref."""

    SAVE_DRAFT = "save_draft"  # a person keeps it as a draft
    SUBMIT = "submit"  # a person hands it in (saved as done, or a verified negative's no-target answer)
    PREDICT = "predict"  # the model proposes it (pre-annotation, re-thresholding)
    ACCEPT = "accept"  # a reviewer accepts it
    REJECT = "reject"  # a reviewer rejects it
    TAKE_BACK = "take_back"  # a no-target answer taken back ("it does refer" after "refers to nothing")
    REOPEN = "reopen"  # opened for editing: the status its next save proposes

    def __str__(self) -> str:
        return self.value


STATUSES: tuple[str, ...] = tuple(s.value for s in RefStatus)
OPEN = (RefStatus.DRAFT, RefStatus.PREDICTED)  # an image with such a ref still has work to do
DECIDED = (RefStatus.REVIEWED, RefStatus.REJECTED)  # set by a review decision
PEOPLE_MADE = (RefStatus.DONE, RefStatus.REVIEWED)  # handed in by a person (qa's default)
_SAVED_AS = {RefStatus.DRAFT: RefAction.SAVE_DRAFT, RefStatus.DONE: RefAction.SUBMIT, RefStatus.PREDICTED: RefAction.PREDICT,
             RefStatus.REVIEWED: RefAction.ACCEPT, RefStatus.REJECTED: RefAction.REJECT}


def image_state(refs: int, open_refs: int = 0, rejected: int = 0) -> str:
    """One word for an image of the queue (its thumbnail's badge), from how many refs it has, how many of
    them are still open (:data:`OPEN`: a draft, or the model's, to verify) and how many were rejected:
    ``no refs``; ``rejected`` (one was sent back: fix it first); ``to do`` (the queue filter's *to do*);
    else ``done`` (every ref handed in or accepted)."""
    if refs <= 0:
        return "no refs"
    if rejected > 0:
        return RefStatus.REJECTED.value
    if open_refs > 0:
        return "to do"
    return RefStatus.DONE.value


def ref_status(value: str | RefStatus) -> RefStatus:
    """The status named ``value``, or a StoreError listing the known ones."""
    try:
        return RefStatus(value)
    except ValueError:
        raise StoreError(f"unknown status {value!r}; expected one of {', '.join(STATUSES)}") from None


def save_action(status: str | RefStatus) -> RefAction:
    """The action of a save that asks for ``status`` (the Annotate view's status box, a batch tool)."""
    return _SAVED_AS[ref_status(status)]


def next_status(old: str | RefStatus | None, action: str | RefAction, actor: str = "") -> RefStatus:
    """The status a ref has after ``actor`` (a name, for the messages) does ``action`` to it (``old``:
    its status now, None for a new ref).

    Taking back an answer moves only a ref that awaits review (``done``) back to ``draft``; reopening
    proposes ``done`` for a rejected ref (the fix goes back to review) and for a predicted one (a
    person's verification hands it in); every other action sets its own status."""
    old_status = ref_status(old) if old is not None else None
    try:
        act = RefAction(action)
    except ValueError:
        raise StoreError(f"unknown ref action {action!r}; expected one of {', '.join(a.value for a in RefAction)}") from None
    if act is RefAction.TAKE_BACK:
        if old_status is None:
            raise StoreError(f"{actor or 'someone'} cannot take back a ref that does not exist")
        return RefStatus.DRAFT if old_status is RefStatus.DONE else old_status
    if act is RefAction.REOPEN:
        if old_status is None:
            raise StoreError("only a saved ref can be reopened")
        return RefStatus.DONE if old_status in (RefStatus.REJECTED, RefStatus.PREDICTED) else old_status
    return {RefAction.SAVE_DRAFT: RefStatus.DRAFT, RefAction.SUBMIT: RefStatus.DONE, RefAction.PREDICT: RefStatus.PREDICTED,
            RefAction.ACCEPT: RefStatus.REVIEWED, RefAction.REJECT: RefStatus.REJECTED}[act]
