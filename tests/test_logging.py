"""What the store, the services and the batch tools write to the log: each save at DEBUG, refusals
(with their reason), imports and batch summaries at INFO."""

from __future__ import annotations

import logging

import pytest

from app.dataset.collection import import_images
from app.services import Actor, Refused, require
from app.store import StoreError
from tests.builders import noise_image, picture_folder, rect_mask


def _lines(caplog, level: int, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith(logger)]


def test_a_save_at_debug_a_refused_write_at_info_with_its_reason(tmp_path, caplog):
    store, _ = picture_folder(tmp_path, n=1)
    image = store.add_image(noise_image(1))
    caplog.set_level(logging.DEBUG, logger="app")
    ref = store.save_ref(image, ["the box"], masks=[rect_mask()], author="ann")
    saved = _lines(caplog, logging.DEBUG, "app.store")
    assert any(f"ref {ref} v1 create by ann" in line and "1 target(s)" in line for line in saved), saved
    store.set_status(ref, "reviewed", actor="rev")
    assert any(f"ref {ref} v2 status by rev: done -> reviewed" in line for line in _lines(caplog, logging.DEBUG, "app.store"))
    with pytest.raises(StoreError):
        store.save_ref(image, ["nothing"], author="ann")  # no target, not marked no-target
    refused = _lines(caplog, logging.INFO, "app.store")
    assert any("nothing written (StoreError): select or draw at least one target" in line for line in refused), refused


def test_a_refusal_of_the_permission_table_at_info(tmp_path, caplog):
    store, _ = picture_folder(tmp_path, n=1)
    image = store.add_image(noise_image(1))
    ref = store.ref(store.save_ref(image, ["the box"], masks=[rect_mask()], author="ann"))
    caplog.set_level(logging.INFO, logger="app.services")
    someone = Actor("bob", frozenset({"annotator"}), accounts=True)
    with pytest.raises(Refused) as refused:
        require(someone, "delete", ref)
    lines = _lines(caplog, logging.INFO, "app.services")
    assert lines == [f"refused: bob may not delete ref {ref.id}: {refused.value}"]


def test_an_import_and_a_batch_summary_at_info(tmp_path, caplog):
    store, folder = picture_folder(tmp_path, n=3)
    (folder / "broken.png").write_bytes(b"not a picture")
    caplog.set_level(logging.INFO, logger="app")
    res = import_images(store, folder, progress=False)
    lines = _lines(caplog, logging.INFO, "app.dataset.collection")
    assert lines[0] == f"images from {folder}: {res.added} added, 0 already there, 1 skipped" and res.added == 3
    assert lines[1].startswith("skipped broken.png: ")


def test_a_refused_import_and_a_refused_negative_decision_at_info_with_their_reason(tmp_path, caplog):
    from app.dataset.imports import ImportRefused, plan_import
    from app.services import NegativeService

    store, _ = picture_folder(tmp_path, n=1)
    caplog.set_level(logging.INFO, logger="app")
    with pytest.raises(ImportRefused):
        plan_import({"images": "not a list"}, None, None)
    lines = _lines(caplog, logging.INFO, "app.dataset.imports")
    assert len(lines) == 1 and lines[0].startswith("import refused (") and "nothing written" in lines[0], lines
    with pytest.raises(StoreError):
        NegativeService(store).decide(Actor("ann"), 999, "maybe")
    lines = _lines(caplog, logging.INFO, "app.services.negatives")
    assert lines == ["negative 999: ann's decision 'maybe' not written (StoreError): unknown decision 'maybe'; "
                     "expected one of no_target, refers"], lines


def test_a_comparison_with_the_rejection_at_debug(caplog):
    from app.services.review import Rejection, compare

    caplog.set_level(logging.DEBUG, logger="app.services")
    compare(Rejection(7, 2, 0.0, "rev", "wrong_mask", "", ["the box"], False, [None]), ["the box"], [rect_mask()], False)
    lines = _lines(caplog, logging.DEBUG, "app.services.review")
    assert len(lines) == 1 and lines[0].startswith("ref 7 against its rejected v2: the rejected masks were not kept"), lines
