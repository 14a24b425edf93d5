"""The next picture, loaded by the page ahead of PgDn, in a real browser (chromium): once the server has
prepared the next image (app.services.prefetch), the canvas fetches and decodes its picture; PgDn then
shows that very picture (no transfer, no decode), and the page keeps no run history of the studio's
data in the browser's storage (Gradio's run history is off: ``launch.py``)."""

from __future__ import annotations

import pytest

from tests.test_browser_canvas import CV, open_first_image, scene_studio

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def studio(studio_weights, tmp_path_factory):
    yield from scene_studio(studio_weights, tmp_path_factory, "prefetch", 11)


def _wait(page, js: str, what: str, timeout: int = 60_000) -> None:
    try:
        page.wait_for_function(js, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure to wait is reported with what the page shows
        raise AssertionError(f"waited for {what}; queue {page.locator('#queue-pos').inner_text()!r}, canvas status "
                             f"{page.locator('#canvas .dc-status').inner_text()!r}") from None


def test_pgdn_shows_the_picture_the_page_loaded_ahead(chromium, studio) -> None:
    url, _db = studio
    page, errors = open_first_image(chromium, url)
    _wait(page, f"!!{CV}.next", "the next picture loaded ahead")
    ahead = page.evaluate(f"() => {{ const S = {CV}; window.__ahead = S.next.img; return [S.next.key, S.imgKey]; }}")
    assert ahead[0] != ahead[1]
    # count the canvas's picture requests from here on: PgDn must not need one
    page.evaluate("""() => { window.__pictures = 0; const of = window.fetch;
      window.fetch = function (...a) { if (String(a[0]).includes('component_server')
        && String(a[1]?.body || '').includes('canvas_image')) window.__pictures++; return of.apply(this, a); }; }""")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("PageDown")
    _wait(page, "document.querySelector('#queue-pos')?.innerText.includes('2 /')", "image 2")
    _wait(page, f"{CV}.imgKey === {ahead[0]!r}", "the picture loaded ahead shown")
    assert page.evaluate(f"() => {CV}.img === window.__ahead"), "PgDn decoded the picture again"
    assert page.evaluate("() => window.__pictures") == 0
    # Gradio's run history would have copied each event's inputs and outputs into localStorage
    kept = page.evaluate("() => Object.keys(window.localStorage).filter(k => k.startsWith('gradio:run-history'))")
    assert kept == []
    assert errors == []
