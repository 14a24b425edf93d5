"""What a ref looked like when it was rejected: the ``rejected_versions`` table (schema 6).

Each rejection (a ``review`` decision, or any status change to ``rejected``) copies the ref's content
as it stood (sentences, no-target flag, every target's instance id and exact mask as compressed RLE)
in the transaction that rejects it, under the id of the rejection's event. A copy, because fixing the
ref removes the drawn instances no ref targets any more (``Store._drop_orphans``): keeping those rows
would make them pickable in Annotate and count them in exports. Review compares the copy with the ref
as it is now (before / after, :mod:`app.services.review`).

Databases made before schema 6 get the copies their history allows (:func:`backfill`): the sentences
and instance ids from the content event before each rejection, a mask only where that instance row
still exists and is older than the rejection (SQLite may give a deleted instance's id to a new one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .status import RefStatus

@dataclass(frozen=True)
class RejectedVersion:
    """A ref's content as it was rejected, and who rejected it why."""

    ref_id: int
    version: int  # the ref's version the reviewer saw
    event_id: int  # the rejection's event in the ref's history
    at: float
    reviewer: str
    reason: str | None  # a key of app.store.review.REASONS (None: a plain status change)
    comment: str
    sentences: list[str]
    no_target: bool
    instance_ids: list[int]
    rles: list[dict | None]  # per target; None: its mask was not kept (rejected before schema 6)


def _targets_of(db, ref_id: int) -> list[dict]:
    """The ref's targets in order, each ``{"instance_id", "rle"}`` (the instance's stored RLE)."""
    rows = db.execute("SELECT ri.instance_id, i.rle FROM ref_instances ri JOIN instances i ON i.id = ri.instance_id "
                      "WHERE ri.ref_id = ? ORDER BY ri.position", (ref_id,)).fetchall()
    return [{"instance_id": int(iid), "rle": json.loads(rle)} for iid, rle in rows]


def _insert(db, event_id: int, ref_id: int, version: int, at: float, sentences: list[str], no_target: bool,
            targets: list[dict]) -> None:
    """One row of ``rejected_versions`` (sentences and targets as JSON)."""
    db.execute("INSERT INTO rejected_versions (event_id, ref_id, version, at, sentences, no_target, targets) "
               "VALUES (?,?,?,?,?,?,?)", (event_id, ref_id, version, at, json.dumps(sentences), int(no_target),
                                          json.dumps(targets)))


def write_rejected_version(db, ref_id: int, event_id: int, version: int, at: float) -> None:
    """Copy the ref's current content as the version rejected by event ``event_id`` (inside the
    rejecting transaction, before anything else can change it)."""
    row = db.execute("SELECT no_target FROM refs WHERE id = ?", (ref_id,)).fetchone()
    if row is None:
        return
    sentences = [r[0] for r in db.execute("SELECT raw FROM sentences WHERE ref_id = ? ORDER BY position", (ref_id,))]
    _insert(db, event_id, ref_id, version, at, sentences, bool(row[0]), _targets_of(db, ref_id))


def _detail(text: str | None) -> dict:
    """An event's detail as a dict ({} for broken or foreign JSON)."""
    try:
        d = json.loads(text or "{}")
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _row(r: tuple) -> RejectedVersion:
    """A record from ``SELECT`` :data:`_COLUMNS` (the version joined with its event)."""
    event_id, ref_id, version, at, sentences, no_target, targets, user, detail = r
    d, t = _detail(detail), json.loads(targets)
    return RejectedVersion(int(ref_id), int(version), int(event_id), float(at), user or "", d.get("reason"),
                           str(d.get("comment") or ""), list(json.loads(sentences)), bool(no_target),
                           [int(x["instance_id"]) for x in t], [x.get("rle") for x in t])


_COLUMNS = ('v.event_id, v.ref_id, v.version, v.at, v.sentences, v.no_target, v.targets, e."user", e.detail '
            "FROM rejected_versions v LEFT JOIN events e ON e.id = v.event_id")


def last_rejected_version(store, ref_id: int) -> RejectedVersion | None:
    """The ref's last rejected version (None: never rejected, or rejected before its history was kept)."""
    rows = store.read(f"SELECT {_COLUMNS} WHERE v.ref_id = ? ORDER BY v.event_id DESC LIMIT 1", (int(ref_id),))
    return _row(rows[0]) if rows else None


def _content(d: dict) -> dict | None:
    """The sentences, instance ids and flag an event's detail wrote (None: not a content event)."""
    sents, targets = d.get("sentences"), d.get("targets")
    if not isinstance(sents, list) or not isinstance(targets, list) or not all(type(i) is int for i in targets):
        return None
    return {"sentences": [str(x) for x in sents], "targets": targets, "no_target": bool(d.get("no_target"))}


def _is_rejection(action: str, d: dict) -> bool:
    """Whether an event moved its ref to ``rejected`` (older review events may lack ``to``)."""
    return d.get("to") == RefStatus.REJECTED or (action == "review" and d.get("decision") == "reject")


def backfill(db) -> int:
    """Rejected versions of a database made before schema 6, from its history; returns how many were written.

    For each rejection of an existing ref: the sentences, flag and instance ids of the last content
    event before it; each mask from its instance row when that row is older than the rejection (else
    ``None``: not kept)."""
    refs = {int(r[0]): int(r[1]) for r in db.execute("SELECT id, image_id FROM refs")}
    content: dict[int, dict] = {}
    versions: dict[int, int] = {}
    wanted: list[tuple[int, int, int, float, dict]] = []
    for eid, ref_id, at, action, detail in db.execute(
            "SELECT id, ref_id, at, action, detail FROM events WHERE ref_id IN (SELECT ref_id FROM events "
            "WHERE action IN ('review', 'status') AND detail LIKE '%reject%') ORDER BY id").fetchall():
        d = _detail(detail)
        versions[ref_id] = versions.get(ref_id, 0) + (action != "delete")
        if (c := _content(d)) is not None:
            content[ref_id] = c
        elif _is_rejection(action, d) and ref_id in refs and ref_id in content:
            wanted.append((int(eid), int(ref_id), versions[ref_id] - 1, float(at), content[ref_id]))
    done = {int(r[0]) for r in db.execute("SELECT event_id FROM rejected_versions")}
    for eid, ref_id, version, at, d in wanted:
        if eid in done:
            continue
        targets = [{"instance_id": i, "rle": _kept_rle(db, i, refs[ref_id], at)} for i in d["targets"]]
        _insert(db, eid, ref_id, max(1, version), at, d["sentences"], d["no_target"], targets)
    return len([w for w in wanted if w[0] not in done])


def _kept_rle(db, instance_id: int, image_id: int, before: float) -> dict | None:
    """The stored RLE of an instance that still is the one a rejection at ``before`` saw, else None."""
    row = db.execute("SELECT rle FROM instances WHERE id = ? AND image_id = ? AND created_at <= ?",
                     (instance_id, image_id, before)).fetchone()
    return json.loads(row[0]) if row else None
