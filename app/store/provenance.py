"""Where a ref's content came from: the people who wrote it, read from the ref's history.

A ref's current content (sentences, targets, no-target flag) was written by the user of the last
event that changed it. When that event copied the content from another ref (``copied_from`` in its
detail: a consensus merge), the authors of the source's content at that moment count too, and so
on along the chain. An imported ref whose history was left behind counts its annotator, and for a
``consensus(a,b)`` annotator every named person (the copy's source is not known any more).
A migration copies the events with their ids, so the chains hold there as well.
"""

from __future__ import annotations

import json

MAX_CHAIN = 50  # copies of copies followed at most (a guard against a hand-edited, circular history)


def _detail(text: str | None) -> dict:
    try:
        d = json.loads(text or "{}")
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def consensus_members(name: str) -> set[str]:
    """The people named in a ``consensus(a,b,...)`` author (empty for any other name)."""
    name = name or ""
    if not (name.startswith("consensus(") and name.endswith(")")):
        return set()
    return {p.strip() for p in name[len("consensus("):-1].split(",") if p.strip()}


def content_authors(db, ref_id: int, before: int | None = None, _depth: int = 0) -> set[str]:
    """Everyone who wrote the content ``ref_id`` had just before event ``before`` (None: now),
    following ``copied_from`` chains; ``db`` is an open transaction or connection of the store."""
    rows = db.execute('SELECT id, "user", action, detail FROM events WHERE ref_id = ? AND id < ? ORDER BY id DESC',
                      (ref_id, before if before is not None else 2**62)).fetchall()
    for event_id, user, action, detail in rows:
        d = _detail(detail)
        if action == "import":
            return {a for a in ({user} | consensus_members(user)) if a}
        if "sentences" not in d or d.get("content_changed") is False:
            continue  # a status change, a delete, or a save that left the content as it was
        authors = {user} if user else set()
        source = d.get("copied_from")
        if isinstance(source, int) and not isinstance(source, bool):
            if _depth < MAX_CHAIN:
                authors |= content_authors(db, source, event_id, _depth + 1)
        elif action == "create":  # a consensus ref made without its source on record: every party counts
            authors |= consensus_members(str(d.get("annotator", "")))
        return authors
    row = db.execute("SELECT editor, annotator FROM refs WHERE id = ?", (ref_id,)).fetchone()
    if row is None:
        return set()
    return {a for a in (row[0], row[1]) if a} | consensus_members(row[1])
