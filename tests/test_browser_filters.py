"""A real browser on the queue filters: each Annotate filter ("Collection: filter and jump": name,
split, status, annotator) and each Dataset filter (status, split, annotator) used through its own
visible widget, with its effect checked, and neither tab's filter changing the other's list.
(The two tabs once shared one namespace of widgets, and the Annotate filters did nothing.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_app import start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(chromium):
    yield chromium.new_page(viewport={"width": 1440, "height": 1000})


def _collection(db: Path) -> None:
    """Six images: 1 ann's ref (done), 2 bob's (accepted, val), 3 ann's draft, 4 the model's
    prediction (to verify), 5 and 6 without refs."""
    from app.services import Actor, RefService
    from app.store import Store

    store = Store(db)
    rng = np.random.default_rng(0)
    ids = [store.add_image(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), file_name=f"photo_{k}.png")
           for k in range(1, 7)]
    refs = RefService(store)
    refs.save(Actor("ann"), ids[0], ["a thing"], no_target=True)
    bobs = refs.save(Actor("bob"), ids[1], ["b thing"], no_target=True, split="val")
    refs.review(Actor("rev"), bobs.ref_id, "accept", expected_version=bobs.version)
    refs.save(Actor("ann"), ids[2], ["c thing"], no_target=True, status="draft")
    refs.save(Actor.tool("model:bundled"), ids[3], ["d thing"], no_target=True, status="predicted")
    store.close()


def _wait(page, selector: str, text: str) -> None:
    page.wait_for_function(f"document.querySelector({json.dumps(selector)})?.innerText.includes({json.dumps(text)})",
                           timeout=60_000)


def _choose(page, widget: str, option: str) -> None:
    page.locator(f"{widget} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def _annotate(page, url: str) -> None:
    page.goto(url)
    _wait(page, "#queue-pos", "6 in the queue")
    page.get_by_text("Collection: filter and jump").click()
    page.wait_for_function("document.querySelectorAll('#thumbs img').length === 6", timeout=60_000)


def _thumbs(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#thumbs img').length === {n}", timeout=60_000)


def _dataset(page, text: str) -> None:
    page.get_by_role("tab", name="Dataset").click()
    _wait(page, "#page-info", text)


def test_each_filter_through_its_own_widget(page, studio_weights, tmp_path: Path) -> None:
    db = tmp_path / "filters.sqlite"
    _collection(db)
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db)
    try:
        # Annotate: status (no refs), and the queue moves within the filter
        _annotate(page, url)
        _choose(page, "#q-status", "no refs")
        _wait(page, "#queue-pos", "2 in the queue")
        _thumbs(page, 2)
        page.locator("#next-img").click()
        _wait(page, "#queue-pos", "1 / 2")
        _wait(page, "#queue-pos", "photo_5.png")
        _dataset(page, "4 refs")  # the Annotate filter leaves the Dataset list alone
        # Annotate: the other statuses
        for option, n in (("to do (no refs, drafts, to verify)", 4), ("to verify (predicted)", 1), ("reviewed", 1)):
            _annotate(page, url)
            _choose(page, "#q-status", option)
            _wait(page, "#queue-pos", f"{n} in the queue")
            _thumbs(page, n)
        # Annotate: split
        _annotate(page, url)
        _choose(page, "#q-split", "val")
        _wait(page, "#queue-pos", "1 in the queue")
        _thumbs(page, 1)
        # Annotate: annotator and file name (typed, Enter)
        for box, value, n in (("#q-annotator", "ann", 2), ("#q-name", "photo_5", 1)):
            _annotate(page, url)
            field = page.locator(f"{box} textarea, {box} input").first
            field.fill(value)
            field.press("Enter")
            _wait(page, "#queue-pos", f"{n} in the queue")
            _thumbs(page, n)
        # Dataset: status, split, annotator, each on a fresh page
        for widget, option, n in (("#filter-status", "reviewed", 1), ("#filter-status", "draft", 1),
                                  ("#filter-split", "val", 1)):
            page.goto(url)
            _wait(page, "#queue-pos", "6 in the queue")
            _dataset(page, "4 refs")
            _choose(page, widget, option)
            _wait(page, "#page-info", f"{n} refs")
            page.wait_for_function(f"document.querySelectorAll('#refs-table tbody tr').length === {n}", timeout=30_000)
        page.get_by_role("tab", name="Annotate").click()
        _wait(page, "#queue-pos", "6 in the queue")  # the Dataset filter leaves the Annotate queue alone
        page.goto(url)
        _dataset(page, "4 refs")
        field = page.locator("#filter-annotator textarea, #filter-annotator input").first
        field.fill("ann")
        field.press("Enter")
        _wait(page, "#page-info", "2 refs")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
