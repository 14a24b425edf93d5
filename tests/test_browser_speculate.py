"""The expression run while typing, in a real browser (chromium): an expression typed key by key is
sent once, after the typing pause; the page loads that run's masks meanwhile; Enter then shows the
model's targets from that run (the server counts a hit and runs nothing more, the page fetches no
masks), and an expression entered without a pause runs as before."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.bench.browser import background_stats
from tests.test_browser_canvas import CV, open_first_image, scene_studio

pytestmark = pytest.mark.browser

EXPR = "#expression textarea, #expression input"
TEXTS = ("the two stars", "the orange triangle", "all orange shapes", "the rightmost star")  # scene 1 of seed 9


@pytest.fixture(scope="module")
def studio(studio_weights, tmp_path_factory):
    yield from scene_studio(studio_weights, tmp_path_factory, "speculate", 9)


def _expected(weights, db, st: float) -> tuple[str, list[np.ndarray]]:
    """A text of TEXTS the model refers to something with on image 1, and those target masks."""
    from deris_core.weights import load_predictor

    from app.store import Store

    predictor = load_predictor(str(weights))
    state = predictor.set_image(Store(str(db)).load_image(1))
    for text in TEXTS:
        pred = predictor.predict(text, image=state, score_threshold=st, mask_threshold=0.5)
        if pred.referred:
            return text, [pred.mask(k) > 0 for k in pred.referred]
    pytest.fail("no text of TEXTS refers to anything on image 1")


def _wait(page, js: str, what: str, timeout: int = 90_000) -> None:
    try:
        page.wait_for_function(js, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure to wait is reported with what the page shows
        raise AssertionError(f"waited for {what}; verdict {page.locator('#verdict').inner_text()!r}, queue "
                             f"{page.locator('#queue-pos').inner_text()!r}") from None


def _wait_stats(url: str, cond, what: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = background_stats(url)["speculation"]
        if cond(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"waited for {what}: {stats}")
        time.sleep(0.2)


def test_enter_after_a_typing_pause_shows_the_targets_of_the_run_made_meanwhile(chromium, studio, studio_weights) -> None:
    from app.views.canvas import decode_mask
    from app.viewkit.model_info import score_threshold

    url, db = studio
    page, errors = open_first_image(chromium, url, timeout=90_000)
    from deris_core.weights import load_predictor

    st = score_threshold(load_predictor(str(studio_weights[0])))  # where the slider starts
    text, masks = _expected(studio_weights[0], db, st)
    before = background_stats(url)["speculation"]
    box = page.locator(EXPR).first
    box.click()
    box.press_sequentially(text, delay=60)  # key by key, faster than the pause: one request at the end
    stats = _wait_stats(url, lambda s: s["ran"] > before["ran"], "the run while typing")
    assert stats["scheduled"] == before["scheduled"] + 1, stats
    # the page loads the answer's masks ahead (watchTyped): Enter then asks the server for no masks
    _wait(page, f"!!{CV}.typed", "the typed answer's masks loaded ahead")
    page.evaluate("""() => { window.__masks = 0; const of = window.fetch;
      window.fetch = function (...a) { if (String(a[0]).includes('component_server')
        && String(a[1]?.body || '').includes('canvas_masks')) window.__masks++; return of.apply(this, a); }; }""")
    box.press("Enter")
    _wait(page, f"{CV}.targets.length === {len(masks)}", f"{len(masks)} targets on the canvas")
    _wait(page, "document.querySelector('#verdict')?.innerText.includes('existence probability')", "the verdict")
    h, w = masks[0].shape
    shown = [decode_mask(r, h, w) > 0 for r in page.evaluate(f"() => {{ const S = {CV}; "
                                                               "return S.targets.map(t => S.api.encodeRle(t.mask)); }")]
    assert len(shown) == len(masks) and all(np.array_equal(a, b) for a, b in zip(shown, masks))
    assert page.evaluate("() => window.__masks") == 0, "Enter fetched the masks loaded ahead again"
    stats = background_stats(url)["speculation"]
    assert stats["hits"] == before["hits"] + 1 and stats["misses"] == before["misses"], stats
    assert stats["ran"] == before["ran"] + 1
    # another text, Enter at once: no request was sent (Enter drops the pending one), the model runs as before
    other = next(t for t in TEXTS if t != text)
    box.fill(other)
    box.press("Enter")
    _wait_stats(url, lambda s: s["misses"] == before["misses"] + 1, "the Enter without a pause")
    page.wait_for_timeout(800)  # past the pause: nothing more is sent
    after = background_stats(url)["speculation"]
    assert after["scheduled"] == stats["scheduled"] and after["hits"] == stats["hits"], after
    assert errors == []
