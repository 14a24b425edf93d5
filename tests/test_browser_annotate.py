"""The Annotate view's boxes and keys in a real browser (chromium, 1440x900): a paraphrase typed for one
ref never reaches the next one (the per-ref boxes follow the ref, app/views/annotate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


from tests.test_browser_canvas import scene_studio

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser

CV = "[...document.querySelectorAll('#canvas, #canvas *')].find(e => e.__canvas).__canvas"
EXPR = "#expression textarea, #expression input"
EXTRA = "#extra textarea, #extra input"


@pytest.fixture(scope="module")
def studio(studio_weights, tmp_path_factory):
    yield from scene_studio(studio_weights, tmp_path_factory, "annotate", 7)


def _wait(page, js: str, what: str, timeout: int = 30_000) -> None:
    try:
        page.wait_for_function(js, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure to wait is reported with what the page shows
        raise AssertionError(f"waited for {what}; verdict {page.locator('#verdict').inner_text()!r}, queue "
                             f"{page.locator('#queue-pos').inner_text()!r}, save "
                             f"{page.locator('#save-msg').inner_text()!r}") from None


def _queue_at(page, n: int) -> None:
    _wait(page, f"document.querySelector('#queue-pos')?.innerText.includes({json.dumps(f'{n} /')})", f"image {n}")


def _value(page, selector: str) -> str:
    return page.locator(selector).first.input_value()


def _run(page, text: str) -> None:
    box = page.locator(EXPR).first
    box.fill(text)
    box.press("Enter")
    _wait(page, "document.querySelector('#verdict')?.innerText.includes('existence probability')", "a verdict")


def _save(page, word: str = "Saved") -> str:
    """Press Save and wait for its answer (``word``: Saved for a new ref, Updated for the open one)."""
    before = page.locator("#save-msg").inner_text()
    page.locator("#save-btn").click()
    _wait(page, f"(() => {{ const t = document.querySelector('#save-msg')?.innerText ?? '';"
                f" return t !== {json.dumps(before)} && !t.includes('processing') && t.includes('{word} ref'); }})()",
          f"the save ({word})")
    return page.locator("#save-msg").inner_text().strip()


def _open(studio_page_url: str, chromium):
    page = chromium.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(studio_page_url)
    page.wait_for_selector("#queue-pos")
    return page, errors


def test_a_paraphrase_typed_then_pgdn_never_reaches_the_next_ref(chromium, studio) -> None:
    from app.store import Store

    url, db = studio
    page, errors = _open(url, chromium)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("PageDown")
    _queue_at(page, 1)
    page.wait_for_function(f"{CV}.W > 0", timeout=60_000)
    _run(page, "the red circle")
    extra = page.locator(EXTRA).first
    extra.fill("both red balls")  # typed for image 1's ref, never saved there
    extra.press("PageDown")  # PgDn works from a text box
    _queue_at(page, 2)
    _wait(page, f"document.querySelector({json.dumps(EXTRA)}).value === ''", "the paraphrase box emptied")
    _run(page, "the purple star")
    message = _save(page)
    assert message.startswith("Saved ref"), message
    rid = int(message.split("ref ")[1].split()[0])
    store = Store(db)
    try:
        rec = store.ref(rid)
        assert rec.sentences == ["the purple star"] and rec.split == "train" and rec.status == "done"
        assert [r.id for r in store.refs()] == [rid]  # nothing was saved on image 1
    finally:
        store.close()
    # the saved ref's boxes show it as stored; Alt+N starts a new one with empty boxes
    assert _value(page, EXTRA) == ""
    extra.fill("the star in purple")
    assert _save(page, "Updated").startswith(f"Updated ref {rid}")
    assert _value(page, EXTRA) == "the star in purple"
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("Alt+n")
    _wait(page, f"document.querySelector({json.dumps(EXTRA)}).value === ''", "Alt+N emptied the box")
    assert errors == []
    page.close()


def _focused_in(page, elem_id: str) -> bool:
    return page.evaluate(f"() => !!document.activeElement?.closest('#{elem_id}')")


def test_an_empty_enter_is_ignored_with_a_hint(chromium, studio) -> None:
    url, _ = studio
    page, errors = _open(url, chromium)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("PageDown")
    _queue_at(page, 1)
    page.wait_for_function(f"{CV}.W > 0 && !!{CV}.img", timeout=60_000)
    verdict = page.locator("#verdict").inner_text()
    box = page.locator(EXPR).first
    for empty in ("", "   "):
        box.fill(empty)
        box.press("Enter")
        hint = page.locator("#expression-hint")
        hint.wait_for(state="visible", timeout=5_000)
        assert "Type an expression first" in hint.inner_text()
    page.wait_for_timeout(1_000)  # had anything been sent, its answer would be here by now
    assert page.evaluate(f"() => !!{CV}.img && {CV}.W > 0")  # the picture stays
    assert page.locator("#verdict").inner_text() == verdict
    assert page.locator(".toast-body.error").count() == 0 and page.locator(".error").count() == 0
    assert errors == []
    page.close()


def test_letter_keys_navigate_outside_text_boxes_and_never_type(chromium, studio) -> None:
    url, _ = studio
    page, errors = _open(url, chromium)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("d")
    _queue_at(page, 1)
    page.wait_for_timeout(300)  # after the answer: the focus stays outside, the next D goes on
    assert not _focused_in(page, "expression")
    page.keyboard.press("d")
    _queue_at(page, 2)
    page.keyboard.press("a")
    _queue_at(page, 1)
    assert _value(page, EXPR) == ""
    page.keyboard.press("/")  # to the expression box: now letters are text
    page.wait_for_function("!!document.activeElement?.closest('#expression')", timeout=5_000)
    page.keyboard.type("a dot")
    assert _value(page, EXPR) == "a dot"
    page.keyboard.press("PageDown")  # works from the box, and the box keeps the focus
    _queue_at(page, 2)
    page.wait_for_function("!!document.activeElement?.closest('#expression')", timeout=5_000)
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    _queue_at(page, 1)
    assert "PgDn" in page.locator("#next-img").inner_text() and "Esc" in page.locator(".keys-hint").inner_text()
    assert errors == []
    page.close()


def test_question_mark_opens_one_overlay_with_the_views_keys_and_the_canvas_tools(chromium, studio) -> None:
    url, _ = studio
    page, errors = _open(url, chromium)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("d")
    _queue_at(page, 1)
    overlay = page.locator("#keys-overlay")
    assert not overlay.is_visible()
    page.keyboard.press("?")
    overlay.wait_for(state="visible", timeout=5_000)
    text = overlay.inner_text()
    for key in ("PgDn / PgUp", "Alt+N", "Ctrl+Enter", "B brush", "X no target", "F refine"):
        assert key in text, key
    page.keyboard.press("Escape")
    overlay.wait_for(state="hidden", timeout=5_000)
    page.locator("#canvas .dc-help").click()  # the canvas's ? button opens the same overlay
    overlay.wait_for(state="visible", timeout=5_000)
    assert page.locator("#keys-overlay").count() == 1
    page.locator("#keys-overlay .keys-close").click()
    overlay.wait_for(state="hidden", timeout=5_000)
    box = page.locator(EXPR).first
    box.click()
    page.keyboard.type("which one?")  # in a text box, ? is text
    assert _value(page, EXPR) == "which one?" and not overlay.is_visible()
    assert errors == []
    page.close()
