"""Hardest first: the uncertainty of hand-built verdicts, its place in ``predictions`` after a
pre-annotation, and the Annotate and Review queues in "most uncertain first" order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.curate.preannotate import PairResult, apply_threshold, fill_uncertainty, write_results
from app.curate.uncertainty import closeness, parts, uncertainty
from app.services import Actor, BadInput, RefService
from app.services.queue import Queue, image_filter
from app.store import Store, encode_mask
from app.store.queue import ImageFilter, image_page, neighbour, position
from app.store.review import review_queue
from tests.builders import noise_image, rect_mask


def test_the_score_on_hand_built_verdicts() -> None:
    assert closeness(0.5, 0.5) == 1.0 and closeness(1.0, 0.5) == 0.0 and closeness(0.0, 0.5) == 0.0
    assert closeness(0.75, 0.5) == pytest.approx(0.5) and closeness(0.25, 0.5) == pytest.approx(0.5)
    assert closeness(0.85, 0.7) == pytest.approx(0.5) and closeness(0.35, 0.7) == pytest.approx(0.5)
    sure = parts(0.99, [0.98, 0.02], 0.5)  # one clear target, the rest clearly not
    assert sure["existence"] == pytest.approx(0.02) and sure["boundary"] == pytest.approx(0.04)
    assert sure["margin"] == pytest.approx(0.04)
    assert uncertainty(0.99, [0.98, 0.02], 0.5) == pytest.approx(0.04)
    # the last accepted candidate sits on the threshold: the boundary speaks
    assert uncertainty(0.99, [0.98, 0.52, 0.01], 0.5) == pytest.approx(0.96)
    # two near-equal candidates, one taken, one left: the margin speaks (each alone is 0.4 from 0.5)
    assert parts(0.99, [0.71, 0.69], 0.7)["margin"] == pytest.approx(0.98)
    # no target, the best rejected candidate nearly made it
    assert uncertainty(0.02, [0.45, 0.01], 0.5) == pytest.approx(0.9)
    # no target, clearly: nothing close anywhere
    assert uncertainty(0.02, [0.03], 0.5) == pytest.approx(0.06)
    # the existence head hesitates although the scores are clear
    assert uncertainty(0.5, [0.99, 0.0], 0.5) == 1.0
    assert uncertainty(0.9, [], 0.5) == pytest.approx(0.2)  # no candidate at all: only the existence


def _result(image_id: int, sentence: str, existence: float, scores: list[float]) -> PairResult:
    rle = encode_mask(rect_mask())
    return PairResult(image_id, sentence, existence, 0.5, 0.5, [(q, s, rle) for q, s in enumerate(scores)])


def _store(tmp_path: Path) -> tuple[Store, list[int]]:
    """Four images; the model's verdicts on three of them, of known uncertainty."""
    s = Store(tmp_path / "u.sqlite")
    ids = [s.add_image(noise_image(k)) for k in range(4)]
    write_results(s, [_result(ids[0], "clear", 0.99, [0.98, 0.02]),  # 0.04
                      _result(ids[1], "unsure", 0.99, [0.98, 0.55, 0.01]),  # 0.9
                      _result(ids[1], "clear too", 0.01, [0.02]),  # 0.04
                      _result(ids[2], "middling", 0.99, [0.8, 0.02])], "m|cfg")  # 0.4
    return s, ids


def test_predictions_carry_their_uncertainty_and_rethresholding_updates_it(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    got = dict(s.read("SELECT sentence, uncertainty FROM predictions"))
    assert got == pytest.approx({"clear": 0.04, "unsure": 0.9, "clear too": 0.04, "middling": 0.4})
    assert {r[0] for r in s.read("SELECT origin FROM predictions")} == {"preannotate"}
    apply_threshold(s, "m|cfg", 0.9)  # now "middling" (0.8) is rejected and close to the threshold
    assert dict(s.read("SELECT sentence, uncertainty FROM predictions"))["middling"] == pytest.approx(1 - 0.1 / 0.9)
    # a store migrated from schema 3 has none: they are computed from the stored candidates
    with s.transaction() as db:
        db.execute("UPDATE predictions SET uncertainty = NULL")
    assert fill_uncertainty(s) == 4 and s.read("SELECT COUNT(*) FROM predictions WHERE uncertainty IS NULL") == [(0,)]


def test_the_annotate_queue_most_uncertain_first(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    flt = ImageFilter(status="predicted", order="uncertain")
    rows, total = image_page(s, flt)
    assert [r.id for r in rows] == [ids[1], ids[2], ids[0]] and total == 3
    everything = ImageFilter(order="uncertain")
    assert [r.id for r in image_page(s, everything)[0]] == [ids[1], ids[2], ids[0], ids[3]]  # none: last
    assert [position(s, flt, i)[0] for i in (ids[1], ids[2], ids[0])] == [0, 1, 2]
    assert neighbour(s, flt, None, 1) == ids[1] and neighbour(s, flt, ids[1], 1) == ids[2]
    assert neighbour(s, flt, ids[2], 1) == ids[0] and neighbour(s, flt, ids[0], 1) is None
    assert neighbour(s, flt, ids[0], -1) == ids[2] and neighbour(s, flt, None, -1) == ids[0]
    assert Queue(s).nth(flt, 1) == ids[2]
    # image 1 verified: its remaining open verdict is a sure one, so it moves back
    rid = s.read("SELECT ref_id FROM predictions WHERE sentence = 'unsure'")[0][0]
    rec = s.ref(rid)
    RefService(s).save(Actor("ann"), rec.image_id, rec.sentences, no_target=True, ref_id=rid,
                       expected_version=rec.version)
    assert [r.id for r in image_page(s, flt)[0]] == [ids[2], ids[0], ids[1]]  # ties (0.04) by id
    assert [r.id for r in image_page(s, ImageFilter(status="predicted"))[0]] == [ids[0], ids[1], ids[2]]  # by id
    with pytest.raises(BadInput, match="unknown queue order"):
        image_filter("", "", "", "", "random")


def test_the_review_queue_most_uncertain_first(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    by_sentence = {r[0]: r[1] for r in s.read("SELECT sentence, ref_id FROM predictions")}
    svc = RefService(s)
    for sentence in ("clear", "middling", "unsure"):  # verified by a person, oldest first
        rec = s.ref(by_sentence[sentence])
        svc.save(Actor("ann"), rec.image_id, rec.sentences, no_target=rec.no_target, instance_ids=rec.instance_ids,
                 ref_id=rec.id, expected_version=rec.version)
    own = svc.save(Actor("ann"), ids[3], ["drawn by hand"], masks=[rect_mask()]).ref_id  # no prediction
    assert [r.id for r in review_queue(s)[0]] == [by_sentence["clear"], by_sentence["middling"], by_sentence["unsure"], own]
    assert [r.id for r in review_queue(s, by_uncertainty=True)[0]] == [by_sentence["unsure"], by_sentence["middling"],
                                                                        by_sentence["clear"], own]


def test_the_review_view_orders_by_uncertainty(tmp_path: Path) -> None:
    from app.views import review

    s, ids = _store(tmp_path)
    by_sentence = {r[0]: r[1] for r in s.read("SELECT sentence, ref_id FROM predictions")}
    for sentence in ("clear", "unsure"):
        rec = s.ref(by_sentence[sentence])
        RefService(s).save(Actor("ann"), rec.image_id, rec.sentences, no_target=True, ref_id=rec.id,
                           expected_version=rec.version)

    from app.services import ModelHolder, Workspace

    class _Svc:  # only what show() reads
        refs = RefService(s)
        workspace = Workspace(ModelHolder(None, "no model"), s)

    first = review.show(_Svc(), 0, "", "", None, False, True)
    assert first.ref[0] == by_sentence["unsure"] and "1 / 2" in first.info
    assert review.show(_Svc(), 0, "", "", None, False, False).ref[0] == by_sentence["clear"]
    assert json.loads(s.read("SELECT candidates FROM predictions WHERE ref_id = ?", (by_sentence["unsure"],))[0][0])
