"""Proposed negatives: a sentence written for another image, asked of this one, with the model's
verdict and a person's decision (table ``negatives``, schema 4). The data only: which sentences
are proposed is :mod:`app.curate.negatives`, who may decide is :mod:`app.services.permissions`.

Decisions: ``no_target`` (the sentence refers to nothing here; the person's no-target ref is
``ref_id``) and ``refers`` (it does: the person annotates it in the Annotate view). The queue
shows the ones where the model found a target first (the model is wrong, or the sentence really
fits this image too: the valuable ones), then by the model's best score, highest first.
Plain SQL that SQLite and PostgreSQL both run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import StoreError
from .predictions import PREDICTED_PAIRS_SQL
from .status import RefStatus
from .store import Store

DECISIONS = {"no_target": "refers to nothing here", "refers": "it does refer to something here"}
SHOW = {"open": "decision = ''", "decided": "decision <> ''", "all": "1 = 1"}  # which negatives a queue shows
_COLUMNS = ("id, image_id, sentence, source_ref_id, model, existence, found_target, top_score, ref_id, decision, "
            "decided_by, decided_at, created_at")


@dataclass
class Negative:
    id: int
    image_id: int
    sentence: str
    source_ref_id: int | None  # the ref the sentence was written for (on another image)
    model: str
    existence: float
    found_target: bool  # the model's verdict: it found a referent on this image
    top_score: float  # its best candidate's score
    ref_id: int | None  # the predicted no-target ref, or the person's ref after "no_target"
    decision: str  # "", "no_target" or "refers"
    decided_by: str
    decided_at: float | None
    created_at: float


def _negative(row) -> Negative:
    return Negative(int(row[0]), int(row[1]), row[2], row[3], row[4], float(row[5]), bool(row[6]), float(row[7]),
                    row[8], row[9], row[10], row[11], row[12])


def sources(store: Store) -> list[tuple[int, int, str]]:
    """``(ref id, image id, sentence)`` of every sentence people wrote for an image (refs not made by
    the model and not rejected): where proposed negatives come from."""
    return [(int(r), int(i), s) for r, i, s in store.read(
        "SELECT r.id, r.image_id, s.raw FROM refs r JOIN sentences s ON s.ref_id = r.id "
        "WHERE r.status NOT IN (?, ?) ORDER BY r.id, s.position", (RefStatus.PREDICTED.value, RefStatus.REJECTED.value))]


def asked(store: Store) -> dict[int, set[str]]:
    """Per image, every sentence already asked of it: its refs' (any status), its predictions' and its
    proposed negatives' (a sentence of the same image is never proposed to it)."""
    out: dict[int, set[str]] = {}
    for image_id, text in store.read(
            "SELECT r.image_id, s.raw FROM refs r JOIN sentences s ON s.ref_id = r.id "
            f"UNION {PREDICTED_PAIRS_SQL} UNION SELECT image_id, sentence FROM negatives"):
        out.setdefault(int(image_id), set()).add(text)
    return out


def targeted_images(store: Store) -> list[int]:
    """Images with at least one ref that has a target (NSC converts only samples that have one)."""
    return [int(r[0]) for r in store.read("SELECT DISTINCT image_id FROM refs WHERE no_target = 0 AND status <> ? "
                                          "ORDER BY image_id", (RefStatus.REJECTED.value,))]


def proposed_counts(store: Store) -> dict[int, int]:
    return {int(i): int(n) for i, n in store.read("SELECT image_id, COUNT(*) FROM negatives GROUP BY image_id")}


def write_negative(db, image_id: int, sentence: str, source_ref_id: int | None, model: str, existence: float,
                   found_target: bool, top_score: float, ref_id: int | None) -> bool:
    """Insert one proposal inside a caller's transaction; False when the pair was proposed before."""
    cur = db.execute("INSERT INTO negatives (image_id, sentence, source_ref_id, model, existence, found_target, top_score, "
                     "ref_id, created_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (image_id, sentence) DO NOTHING",
                     (image_id, sentence, source_ref_id, model, float(existence), int(bool(found_target)),
                      float(top_score), ref_id, time.time()))
    return cur.rowcount == 1


def proposed_in(db, image_id: int, sentence: str) -> bool:
    """Whether the pair was proposed already, as a caller's transaction sees it."""
    return db.execute("SELECT 1 FROM negatives WHERE image_id = ? AND sentence = ?",
                      (int(image_id), sentence)).fetchone() is not None


def ref_version(store: Store, ref_id: int | None) -> int | None:
    """The version of a negative's ref now (None: no ref, or gone)."""
    if ref_id is None:
        return None
    rows = store.read("SELECT version FROM refs WHERE id = ?", (int(ref_id),))
    return int(rows[0][0]) if rows else None


def source_image(store: Store, neg: "Negative") -> int | None:
    """The image the negative's sentence was written for (None: unknown, or its ref is gone)."""
    if neg.source_ref_id is None:
        return None
    rows = store.read("SELECT image_id FROM refs WHERE id = ?", (int(neg.source_ref_id),))
    return int(rows[0][0]) if rows else None


def negative(store: Store, negative_id: int) -> Negative:
    rows = store.read(f"SELECT {_COLUMNS} FROM negatives WHERE id = ?", (int(negative_id),))
    if not rows:
        raise StoreError(f"no proposed negative with id {negative_id}")
    return _negative(rows[0])


def negative_in(db, negative_id: int) -> Negative | None:
    """A negative as seen inside a caller's transaction (None: gone)."""
    row = db.execute(f"SELECT {_COLUMNS} FROM negatives WHERE id = ?", (int(negative_id),)).fetchone()
    return _negative(row) if row else None


def negative_queue(store: Store, offset: int = 0, limit: int = 1, show: str = "open") -> tuple[list[Negative], int]:
    """One page of the verification queue (found targets first, then by the model's best score) and its size."""
    if show not in SHOW:
        raise StoreError(f"unknown choice {show!r}; expected one of {', '.join(SHOW)}")
    cond = SHOW[show]
    total = store.read(f"SELECT COUNT(*) FROM negatives WHERE {cond}")[0][0]
    rows = store.read(f"SELECT {_COLUMNS} FROM negatives WHERE {cond} ORDER BY found_target DESC, top_score DESC, id ASC "
                      "LIMIT ? OFFSET ?", (max(1, int(limit)), max(0, int(offset))))
    return [_negative(r) for r in rows], int(total)


def write_decision(db, negative_id: int, decision: str, user: str, ref_id: int | None) -> None:
    """Record a person's decision on a negative inside a caller's transaction."""
    if decision not in DECISIONS:
        raise StoreError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
    cur = db.execute("UPDATE negatives SET decision = ?, decided_by = ?, decided_at = ?, ref_id = ? WHERE id = ?",
                     (decision, user, time.time(), ref_id, int(negative_id)))
    if cur.rowcount != 1:
        raise StoreError(f"no proposed negative with id {negative_id}")


def decision_counts(store: Store) -> dict[str, int]:
    """How many negatives wait (``""``) and how many got each decision."""
    return {d: int(n) for d, n in store.read("SELECT decision, COUNT(*) FROM negatives GROUP BY decision")}
