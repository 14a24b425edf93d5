"""Review: the queue of refs awaiting review, accept/reject decisions with a reason and a comment,
what an annotator has to fix, and per-person statistics. Decisions are ``review`` events in the
ref's history (who, when, decision, reason, comment); the ref's status follows them.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, field

from .errors import StoreError
from .filters import RefFilter
from .predictions import REVIEW_JOINS
from .records import RefRow
from .status import RefAction, RefStatus, next_status
from .store import Store

REASONS = {
    "wrong_mask": "wrong mask (the outline is off)",
    "missing_referent": "missing referent (not every object the sentence refers to is masked)",
    "wrong_referent": "wrong referent (a masked object is not what the sentence means)",
    "ambiguous": "sentence ambiguous (it could mean several different sets)",
    "ungroundable": "sentence ungroundable (it cannot be checked in this image)",
}


@dataclass
class Decision:
    ref_id: int
    reviewer: str
    at: float
    decision: str  # "accept" or "reject"
    reason: str | None
    comment: str


def decision_change(decision: str, reason: str | None = None, comment: str = "") -> tuple[str, dict]:
    """``(new status, event detail)`` of a review decision, checked (a rejection needs a reason)."""
    if decision not in ("accept", "reject"):
        raise StoreError(f"unknown decision {decision!r}; expected accept or reject")
    comment = " ".join((comment or "").split())
    if len(comment) > 1000:
        raise StoreError("a review comment is limited to 1000 characters")
    if decision == "reject" and reason not in REASONS:
        raise StoreError("a rejection needs a reason: " + ", ".join(REASONS))
    status = next_status(None, RefAction.ACCEPT if decision == "accept" else RefAction.REJECT).value
    return status, {"decision": decision, "reason": reason if decision == "reject" else None, "comment": comment}


def review(store: Store, ref_id: int, decision: str, reviewer: str, reason: str | None = None, comment: str = "",
           expected_version: int | None = None) -> int:
    """Accept (status ``reviewed``) or reject (``rejected``, with a reason) a ref; returns its new version.

    The data only: who may decide is :func:`app.services.permissions.can` (``RefService.review``)."""
    status, detail = decision_change(decision, reason, comment)
    return store.set_status(ref_id, status, reviewer, expected_version, action="review", detail=detail)


def review_queue(store: Store, offset: int = 0, limit: int = 50, *, annotator: str | None = None,
                 split: str | None = None, image_id: int | None = None, status: str = RefStatus.DONE,
                 by_disagreement: bool = False, by_uncertainty: bool = False,
                 flt: RefFilter | None = None) -> tuple[list[RefRow], int]:
    """Refs awaiting review (status ``done``; or ``flt``), oldest change first, with optional filters.

    ``by_disagreement``: refs where the model disagrees most with the annotator first (lowest
    ``qa`` IoU, see ``python -m app.curate qa``); refs without a qa result come last.
    ``by_uncertainty``: refs whose model prediction was least certain first (``predictions.uncertainty``
    of the prediction a person verified, see :mod:`app.curate.uncertainty`); refs without one come
    last (after the disagreement order when both are asked for)."""
    if flt is None:
        flt = RefFilter.of(status, split, annotator or None, image_id)
    order = (("q.iou IS NULL, q.iou ASC, q.no_target_agree ASC, " if by_disagreement else "")
             + ("p.uncertainty IS NULL, p.uncertainty DESC, " if by_uncertainty else "") + "r.updated_at ASC, r.id ASC")
    rows, total = store.ref_rows(flt, offset, limit, order,
                                 joins=REVIEW_JOINS)
    return rows, int(total)


def last_decision(store: Store, ref_id: int) -> Decision | None:
    rows = store._query("SELECT \"user\", at, detail FROM events WHERE ref_id = ? AND action = 'review' ORDER BY id DESC LIMIT 1",
                        (ref_id,))
    if not rows:
        return None
    d = json.loads(rows[0][2])
    return Decision(ref_id, rows[0][0], rows[0][1], d.get("decision", ""), d.get("reason"), d.get("comment", ""))


def to_fix(store: Store, annotator: str) -> list[tuple[RefRow, Decision | None]]:
    """An annotator's rejected refs, oldest first, each with the rejection (reason and comment)."""
    rows, _ = review_queue(store, 0, 500, annotator=annotator, status=RefStatus.REJECTED)
    return [(r, last_decision(store, r.id)) for r in rows]


_AUTHOR_KEY, _REJECT_KEY = """'"author": '""", """'"decision": "reject"'"""  # SQL literals


def _review_counts(d) -> str:
    """Review decisions since an event id, grouped by reviewer, rejected or not and the detail's tail (the author)."""
    return (f"""SELECT "user", {d.instr("detail", _REJECT_KEY)} > 0, substr(detail, {d.instr("detail", _AUTHOR_KEY)}),
                   COUNT(*), MAX(id)
                FROM events WHERE action = 'review' AND id > ? GROUP BY 1, 2, 3""")


@dataclass
class _Tally:
    """Review decisions counted up to event ``last_id`` (events are only ever appended, in id order)."""

    last_id: int = 0
    decisions: dict[str, dict[str, int]] = field(default_factory=dict)  # author -> accept/reject
    reviews: dict[str, int] = field(default_factory=dict)  # reviewer -> decisions given


_tallies: "weakref.WeakKeyDictionary[Store, _Tally]" = weakref.WeakKeyDictionary()
_tally_lock = threading.Lock()


def _author(tail: str) -> str | None:
    """The author from the end of a review event's JSON (``"author": "..."}``, the last key set_status
    writes); None when the detail has another shape (then the event is parsed whole)."""
    if tail.startswith('"author": ') and tail.endswith("}"):
        try:
            value = json.loads("{" + tail).get("author", "")
            return value if isinstance(value, str) else str(value)
        except json.JSONDecodeError:
            return None
    return None


def _review_tally(store: Store) -> _Tally:
    """The decision counts, brought up to date by reading only the events added since the last call
    (grouped in SQL, no JSON parsing per event): the Dataset view stays fast at 50 000 decisions."""
    with _tally_lock:
        tally = _tallies.setdefault(store, _Tally())
        rows = store._query(_review_counts(store.dialect), (tally.last_id,))
        odd = []
        for user, rejected, tail, n, _top in rows:
            author = _author(tail)
            if author is None:
                odd.append((user, tail))
                continue
            d = tally.decisions.setdefault(author, {"accept": 0, "reject": 0})
            d["reject" if rejected else "accept"] += n
            tally.reviews[user] = tally.reviews.get(user, 0) + n
        for user, tail in odd:  # details of another shape (older versions): those few events parsed whole
            for (detail,) in store._query("SELECT detail FROM events WHERE action = 'review' AND id > ? AND id <= ? "
                                          "AND \"user\" = ? AND substr(detail, "
                                          f"{store.dialect.instr('detail', _AUTHOR_KEY)}) = ?",
                                          (tally.last_id, max(r[4] for r in rows), user, tail)):
                dd = json.loads(detail)
                d = tally.decisions.setdefault(str(dd.get("author", "")), {"accept": 0, "reject": 0})
                d["reject" if dd.get("decision") == "reject" else "accept"] += 1
                tally.reviews[user] = tally.reviews.get(user, 0) + 1
        tally.last_id = max([tally.last_id] + [r[4] for r in rows])
        return _Tally(tally.last_id, {k: dict(v) for k, v in tally.decisions.items()}, dict(tally.reviews))


def person_stats(store: Store) -> list[dict]:
    """Per annotator: refs made, accepted and rejected decisions on them, acceptance rate; per reviewer: decisions."""
    made = dict(store._query("SELECT annotator, COUNT(*) FROM refs GROUP BY annotator"))
    tally = _review_tally(store)
    decisions, reviews = tally.decisions, tally.reviews
    people = sorted(set(made) | set(decisions) | set(reviews))
    out = []
    for p in people:
        acc, rej = decisions.get(p, {}).get("accept", 0), decisions.get(p, {}).get("reject", 0)
        out.append({"person": p or "(anonymous)", "refs_made": made.get(p, 0), "accepted": acc, "rejected": rej,
                    "acceptance_rate": acc / (acc + rej) if acc + rej else None, "reviews_given": reviews.get(p, 0)})
    return out
