"""The one door to the ``predictions`` and ``qa`` tables (app/store/predictions.py)."""

from __future__ import annotations

import numpy as np
import pytest

from app.store import Store, StoreError, encode_mask
from app.store import predictions as P


def _rle(x: int) -> dict:
    m = np.zeros((8, 8), bool)
    m[1:4, x:x + 3] = True
    return encode_mask(m)


def test_predictions_are_written_and_read_back_through_the_store(db_at) -> None:
    s = Store(db_at("p.sqlite"))
    img = s.add_image(np.zeros((8, 8, 3), np.uint8))
    rid = s.save_ref(img, ["the box"], no_target=True, author="model:k", status="predicted")
    cands = [{"query": 3, "score": 0.9, "rle": _rle(0)}, {"query": 1, "score": 0.4, "rle": _rle(4)}]
    with s.transaction() as db:
        assert not P.has_pair(db, img, "the box", "k|cfg")
        P.write_prediction(db, rid, img, "the box", "k|cfg", score_threshold=0.5, mask_threshold=0.5, existence=0.8,
                           candidates=cands, uncertainty=None)
        P.write_prediction(db, None, img, "a cat", "k|cfg", score_threshold=0.5, mask_threshold=0.5, existence=0.1,
                           candidates=[], uncertainty=0.2, origin=P.NEGATIVES)
        assert P.has_pair(db, img, "the box", "k|cfg") and P.of_ref_in(db, rid).candidates == cands
    got = P.of_ref(s, rid)
    assert (got.image_id, got.sentence, got.model, got.origin, got.uncertainty) == (img, "the box", "k|cfg", "preannotate", None)
    assert [c["query"] for c in got.referred()] == [3] and [c["query"] for c in got.referred(0.3)] == [3, 1]
    assert P.of_pair(s, img, "a cat", "k|cfg").origin == "negatives" and P.of_pair(s, img, "a dog", "k|cfg") is None
    assert P.predicted_pairs(s, "k|cfg") == {(img, "the box"), (img, "a cat")} and P.model_keys(s) == ["k|cfg"]
    assert P.still_predicted(s, "k|cfg") == [(rid, 1)] and P.of_ref(s, rid + 1) is None
    assert [p.sentence for p in P.without_uncertainty(s)] == ["the box"]
    with s.transaction() as db:
        P.write_uncertainty(db, got.id, 0.25)
        P.write_threshold(db, rid, 0.3, 0.5)
    assert (P.of_ref(s, rid).score_threshold, P.of_ref(s, rid).uncertainty) == (0.3, 0.5) and P.without_uncertainty(s) == []
    with pytest.raises(StoreError, match="unknown prediction origin"), s.transaction() as db:
        P.write_prediction(db, None, img, "x", "k", score_threshold=0.5, mask_threshold=0.5, existence=0.1,
                           candidates=[], uncertainty=None, origin="guess")


def test_qa_results_replace_older_ones(db_at) -> None:
    s = Store(db_at("q.sqlite"))
    img = s.add_image(np.zeros((8, 8, 3), np.uint8))
    rid = s.save_ref(img, ["x"], no_target=True, author="ann")
    with s.transaction() as db:
        P.write_qa(db, [P.QaResult(rid, "k", 0.4, False, True, 1.0)])
    with s.transaction() as db:
        P.write_qa(db, [P.QaResult(rid, "k2", 0.9, True, False, 2.0)])
    assert P.qa_results(s) == {rid: P.QaResult(rid, "k2", 0.9, True, False, 2.0)}
