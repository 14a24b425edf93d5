"""The model's side of the store: ``predictions`` (what the model proposed for an (image, sentence)
pair: model key, thresholds, existence, every kept candidate with its exact mask, uncertainty and
the job that asked) and ``qa`` (per ref, how far the model's answer is from the person's).

The one door to both tables: the batch tools (:mod:`app.curate`), the services and the views read
and write them only through these functions. Writes take a caller's transaction
(:meth:`app.store.Store.transaction`), so a batch writes the ref, its prediction and its proposal
in one. What the numbers mean (uncertainty, thresholds) is computed by the callers; this module
only keeps them. Plain SQL that SQLite and PostgreSQL both run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from .errors import StoreError
from .status import RefStatus


class Store(Protocol):
    """What the reads need of :class:`app.store.Store`: its read query. A protocol, not an import of the
    store, because the store's own modules (models, filters) take their SQL from this module."""

    def read(self, sql: str, args: Sequence = ()) -> list[tuple]: ...

PREANNOTATE, NEGATIVES = "preannotate", "negatives"  # predictions.origin: which job asked the model
_COLUMNS = ("id, ref_id, image_id, sentence, model, score_threshold, mask_threshold, existence, candidates, "
            "uncertainty, origin, created_at")


@dataclass
class Prediction:
    """One stored answer of the model to an (image, sentence) pair."""

    id: int
    ref_id: int | None  # the model's ref (None: it found a target on a proposed negative, or the ref is gone)
    image_id: int
    sentence: str
    model: str  # the model key (``name|config|sha256:...|precision``)
    score_threshold: float
    mask_threshold: float
    existence: float
    candidates: list[dict]  # {"query", "score", "rle"}, best first
    uncertainty: float | None
    origin: str
    created_at: float

    def referred(self, score_threshold: float | None = None) -> list[dict]:
        """The candidates above ``score_threshold`` (default: the stored one), best first."""
        thr = self.score_threshold if score_threshold is None else score_threshold
        return [c for c in self.candidates if c["score"] > thr]


@dataclass
class QaResult:
    """The model against a person's ref (``python -m app.curate qa``)."""

    ref_id: int
    model: str
    iou: float  # the lowest IoU of the merged masks over the ref's sentences
    no_target_agree: bool
    model_no_target: bool
    at: float


# --- SQL fragments for the other store modules' queries (they name neither table themselves) ---------

PREDICTED_PAIRS_SQL = "SELECT image_id, sentence FROM predictions"  # every (image id, sentence) the model was asked
REVIEW_JOINS = " LEFT JOIN qa q ON q.ref_id = r.id LEFT JOIN predictions p ON p.ref_id = r.id"  # ``q.*``, ``p.*`` per ref ``r``


def model_use_counts_sql(cond: str) -> list[str]:
    """One ``COUNT(*)`` query per table a model key is written to (``predictions``, ``qa``), each with
    ``cond`` (a condition on the ``model`` column) as its WHERE: what makes a model "in use"."""
    return [f"SELECT COUNT(*) FROM {table} WHERE {cond}" for table in ("predictions", "qa")]


def image_uncertainty_sql(alias: str) -> str:
    """The SQL value of an image ``alias``: the highest uncertainty of its refs still to verify
    (status ``predicted``), -1 where it has none (the queue's "most uncertain first" key)."""
    return ("COALESCE((SELECT MAX(p.uncertainty) FROM refs r JOIN predictions p ON p.ref_id = r.id "
            f"WHERE r.image_id = {alias}.id AND r.status = '{RefStatus.PREDICTED.value}'), -1.0)")


def _prediction(row) -> Prediction:
    return Prediction(int(row[0]), row[1], int(row[2]), row[3], row[4], float(row[5]), float(row[6]), float(row[7]),
                      json.loads(row[8]), row[9], row[10], float(row[11]))


# --- reads ---------------------------------------------------------------------------------------


def of_ref(store: Store, ref_id: int) -> Prediction | None:
    """The prediction behind a model-made ref (None: the ref was not made by the model)."""
    rows = store.read(f"SELECT {_COLUMNS} FROM predictions WHERE ref_id = ?", (int(ref_id),))
    return _prediction(rows[0]) if rows else None


def of_pair(store: Store, image_id: int, sentence: str, model: str) -> Prediction | None:
    """A model's prediction for one (image, sentence) pair (None: not asked)."""
    rows = store.read(f"SELECT {_COLUMNS} FROM predictions WHERE image_id = ? AND sentence = ? AND model = ?",
                      (int(image_id), sentence, model))
    return _prediction(rows[0]) if rows else None


def predicted_pairs(store: Store, model: str) -> set[tuple[int, str]]:
    """The ``(image id, sentence)`` pairs this model has answered (a rerun skips them)."""
    return {(int(r[0]), r[1]) for r in store.read("SELECT image_id, sentence FROM predictions WHERE model = ?", (model,))}


def model_keys(store: Store) -> list[str]:
    """Every model key with stored predictions, sorted."""
    return sorted(r[0] for r in store.read("SELECT DISTINCT model FROM predictions"))


def still_predicted(store: Store, model: str) -> list[tuple[int, int]]:
    """``(ref id, version)`` of this model's refs nobody verified yet (status ``predicted``)."""
    return [(int(r), int(v)) for r, v in store.read(
        "SELECT p.ref_id, r.version FROM predictions p JOIN refs r ON r.id = p.ref_id "
        "WHERE p.model = ? AND r.status = ? ORDER BY p.ref_id", (model, RefStatus.PREDICTED.value))]


def without_uncertainty(store: Store) -> list[Prediction]:
    """Predictions stored without an uncertainty (made before schema 4)."""
    return [_prediction(r) for r in store.read(f"SELECT {_COLUMNS} FROM predictions WHERE uncertainty IS NULL ORDER BY id")]


def qa_results(store: Store) -> dict[int, QaResult]:
    """Every stored qa result, by ref id."""
    return {int(r[0]): QaResult(int(r[0]), r[1], float(r[2]), bool(r[3]), bool(r[4]), float(r[5])) for r in store.read(
        "SELECT ref_id, model, iou, no_target_agree, model_no_target, at FROM qa ORDER BY ref_id")}


# --- writes inside a caller's transaction -------------------------------------------------------


def has_pair(db, image_id: int, sentence: str, model: str) -> bool:
    """Whether the pair is already predicted by this model, as the caller's transaction sees it."""
    return db.execute("SELECT 1 FROM predictions WHERE image_id = ? AND sentence = ? AND model = ?",
                      (int(image_id), sentence, model)).fetchone() is not None


def of_ref_in(db, ref_id: int) -> Prediction | None:
    """:func:`of_ref` inside a caller's transaction."""
    row = db.execute(f"SELECT {_COLUMNS} FROM predictions WHERE ref_id = ?", (int(ref_id),)).fetchone()
    return _prediction(row) if row else None


def write_prediction(db, ref_id: int | None, image_id: int, sentence: str, model: str, *, score_threshold: float,
                     mask_threshold: float, existence: float, candidates: Sequence[dict], uncertainty: float | None,
                     origin: str = PREANNOTATE, at: float | None = None) -> None:
    """Insert the ``predictions`` row of one answer (``candidates``: ``{"query", "score", "rle"}``)."""
    if origin not in (PREANNOTATE, NEGATIVES):
        raise StoreError(f"unknown prediction origin {origin!r}; expected {PREANNOTATE} or {NEGATIVES}")
    db.execute("INSERT INTO predictions (ref_id, image_id, sentence, model, score_threshold, mask_threshold, "
               "existence, candidates, created_at, uncertainty, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (ref_id, int(image_id), sentence, model, float(score_threshold), float(mask_threshold), float(existence),
                json.dumps(list(candidates)), time.time() if at is None else at, uncertainty, origin))


def write_uncertainty(db, prediction_id: int, uncertainty: float) -> None:
    """Set one prediction's uncertainty."""
    db.execute("UPDATE predictions SET uncertainty = ? WHERE id = ?", (float(uncertainty), int(prediction_id)))


def write_threshold(db, ref_id: int, score_threshold: float, uncertainty: float | None) -> None:
    """A model-made ref's prediction re-thresholded (its new score threshold and uncertainty)."""
    db.execute("UPDATE predictions SET score_threshold = ?, uncertainty = ? WHERE ref_id = ?",
               (float(score_threshold), uncertainty, int(ref_id)))


def write_qa(db, results: Sequence[QaResult]) -> None:
    """Store qa results (one per ref: a newer check replaces the older one)."""
    db.executemany("INSERT INTO qa (ref_id, model, iou, no_target_agree, model_no_target, at) VALUES (?,?,?,?,?,?) "
                   "ON CONFLICT(ref_id) DO UPDATE SET model=excluded.model, iou=excluded.iou, "
                   "no_target_agree=excluded.no_target_agree, model_no_target=excluded.model_no_target, at=excluded.at",
                   [(r.ref_id, r.model, float(r.iou), int(r.no_target_agree), int(r.model_no_target), r.at)
                    for r in results])
