"""The studio's layout in a real browser (chromium), measured with the elements' boxes: on a phone (390x844)
the header takes at most a quarter of the first screen and the Annotate picture starts in it; on a laptop
(1440x900) Save, split, status and the save message are above the fold after an image opens, after the
expression box takes the focus (the picture's top stays on screen) and with a long "fix these first" list;
the thumbnails are never cut on the right and each says its image's state. Saves a screenshot at each size."""

from __future__ import annotations

import json

import pytest

from tests.test_browser import SCREENSHOT_DIR
from tests.test_browser_canvas import scene_studio

pytestmark = pytest.mark.browser

CV = "[...document.querySelectorAll('#canvas, #canvas *')].find(e => e.__canvas).__canvas"
EXPR = "#expression textarea, #expression input"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1440, "height": 900}
FIXER = "alice"  # an annotator with rejected refs (on image 3)
COMMENT = "the outline misses the left half of the shape; redraw it around the whole shape please"


@pytest.fixture(scope="module")
def studio(studio_weights, tmp_path_factory):
    from app.store import Store
    from app.store.review import review

    for url, db in scene_studio(studio_weights, tmp_path_factory, "layout", 9):
        store = Store(db)
        try:
            for k in range(6):  # a "fix these first" list taller than the room above the save box
                rid = store.save_ref(3, [f"the rejected sentence number {k}"], no_target=True, author=FIXER)
                review(store, rid, "reject", "reviewer", "wrong_mask", COMMENT if k == 0 else "")
        finally:
            store.close()
        yield url, db


def _open(chromium, url: str, viewport: dict):
    page = chromium.new_page(viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#queue-pos")
    return page, errors


def _queue_at(page, n: int) -> None:
    page.wait_for_function(f"document.querySelector('#queue-pos')?.innerText.includes({json.dumps(f'{n} /')})",
                           timeout=60_000)


def _box(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not on the page"
    return box


def _on_screen(page, selector: str, viewport: dict) -> None:
    """The element is wholly inside the window (nothing to scroll to see it)."""
    b = _box(page, selector)
    inside = b["x"] >= 0 and b["y"] >= 0 and b["x"] + b["width"] <= viewport["width"] + 0.5 \
        and b["y"] + b["height"] <= viewport["height"] + 0.5
    assert inside, f"{selector} at {b} is not inside the {viewport['width']}x{viewport['height']} window " \
                   f"(scrolled to {page.evaluate('window.scrollY')})"


def test_on_a_phone_the_header_is_short_and_the_picture_starts_in_the_first_screen(chromium, studio) -> None:
    url, _ = studio
    page, errors = _open(chromium, url, PHONE)
    page.locator("#queue-pos").click()  # focus outside any text box
    page.keyboard.press("d")
    _queue_at(page, 1)
    page.wait_for_function(f"{CV}.W > 0 && !!{CV}.img", timeout=60_000)
    page.evaluate("window.scrollTo(0, 0)")
    # the header: everything above the tabs (title, model line, who is working, Add images)
    tabs = _box(page, "[role=tablist]")
    header_bottom = max(_box(page, s)["y"] + _box(page, s)["height"] for s in ("#studio-header", "#add-images"))
    assert header_bottom <= tabs["y"] + 0.5
    assert header_bottom <= 0.25 * PHONE["height"], f"the header ends at {header_bottom}px of {PHONE['height']}"
    picture = _box(page, "#canvas canvas")
    assert picture["y"] < PHONE["height"] - 200, f"the picture starts at {picture['y']}px: not in the first screen"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing wider than the phone
    for selector in ("#title", "#annotator", "#add-images", "#queue-pos", EXPR, "#segment-btn", "#next-btn"):
        _on_screen(page, selector, PHONE)
    # the model line is one line here, and all of it is one tap away
    note = page.locator("#model-line .model-note")
    assert _box(page, "#model-line .model-note")["height"] < 24
    assert page.evaluate("(() => { const n = document.querySelector('#model-line .model-note');"
                         " return n.scrollWidth > n.clientWidth; })()")  # cut (the bundled model's line is long)
    note.click()
    page.wait_for_function("document.querySelector('#model-line').classList.contains('open')", timeout=5_000)
    assert _box(page, "#model-line .model-note")["height"] > 24
    assert page.evaluate("(() => { const n = document.querySelector('#model-line .model-note');"
                         " return n.scrollWidth <= n.clientWidth; })()")
    note.click()  # and a tap closes it
    page.wait_for_function("!document.querySelector('#model-line').classList.contains('open')", timeout=5_000)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "layout_phone_390x844.png"))
    assert errors == []
    page.close()


def test_at_1440x900_saving_stays_above_the_fold(chromium, studio) -> None:
    url, _ = studio
    page, errors = _open(chromium, url, LAPTOP)
    saving = ("#save-btn", "#split", "#status")
    page.locator("#queue-pos").click()
    page.keyboard.press("d")
    _queue_at(page, 1)
    page.wait_for_function(f"{CV}.W > 0 && !!{CV}.img", timeout=60_000)
    for selector in (*saving, "#canvas canvas", EXPR):  # the whole picture too
        _on_screen(page, selector, LAPTOP)
    box = page.locator(EXPR).first
    box.fill("the red circle")
    box.press("Enter")
    page.wait_for_function("document.querySelector('#verdict')?.innerText.includes('existence probability')",
                           timeout=60_000)
    page.keyboard.press("Escape")  # out of the box; then back in by mouse and by /
    box.click()
    for selector in (*saving, "#canvas canvas"):
        _on_screen(page, selector, LAPTOP)
    # someone who scrolled down to the candidates and presses /: the box comes back, the picture's top stays
    page.keyboard.press("Escape")
    page.evaluate("window.scrollTo(0, 400)")
    page.keyboard.press("/")
    page.wait_for_function("!!document.activeElement?.closest('#expression')", timeout=5_000)
    page.wait_for_timeout(300)
    _on_screen(page, EXPR, LAPTOP)
    picture = _box(page, "#canvas canvas")
    assert 0 <= picture["y"] < LAPTOP["height"], f"the picture's top at {picture['y']} is off screen"
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#save-btn").click()
    page.wait_for_function("document.querySelector('#save-msg')?.innerText.includes('Saved ref')", timeout=30_000)
    for selector in (*saving, "#save-msg"):
        _on_screen(page, selector, LAPTOP)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "layout_laptop_1440x900.png"))
    # the image's thumbnail says it is done now
    page.get_by_text("Collection: filter and jump").click()
    page.wait_for_function("document.querySelector('#thumbs .thumbnail-item[title^=\"1 · \"]')?.dataset.state === 'done'",
                           timeout=30_000)
    page.evaluate("window.scrollTo(0, 0)")
    # an annotator with a long "fix these first" list: it sits below the save box, which stays where it was
    who = page.locator("#annotator textarea, #annotator input").first
    who.fill(FIXER)
    who.press("Enter")
    page.locator("#to-fix").wait_for(state="visible", timeout=30_000)
    page.evaluate("window.scrollTo(0, 0)")
    for selector in (*saving, "#save-msg"):
        _on_screen(page, selector, LAPTOP)
    assert _box(page, "#to-fix")["y"] > _box(page, "#save-btn")["y"]
    assert errors == []
    page.close()


def test_the_thumbnails_fit_and_each_says_its_images_state(chromium, studio) -> None:
    url, _ = studio
    for viewport in (LAPTOP, PHONE):
        page, errors = _open(chromium, url, viewport)
        page.get_by_text("Collection: filter and jump").click()
        page.wait_for_function("document.querySelectorAll('#thumbs .thumbnail-item[data-state]').length === 3",
                               timeout=60_000)
        page.locator("#thumbs").scroll_into_view_if_needed()
        strip = _box(page, "#thumbs")
        assert strip["x"] >= 0 and strip["x"] + strip["width"] <= viewport["width"]
        items = page.locator("#thumbs .thumbnail-item")
        states = {}
        for k in range(items.count()):
            b = items.nth(k).bounding_box()
            assert b["x"] >= strip["x"] and b["x"] + b["width"] <= strip["x"] + strip["width"] + 0.5, \
                f"thumbnail {k + 1} at {b} is cut by the strip {strip}"
            title = items.nth(k).get_attribute("title") or ""
            image_id, state = title.split(" · ")[:2]
            assert items.nth(k).get_attribute("data-state") == state.replace(" ", "-")
            assert state in items.nth(k).locator(".caption-label").inner_text()  # visible, not only in the title
            states[int(image_id)] = state
        assert states[3] == "rejected" and states[2] == "no refs", states
        assert errors == []
        page.close()


LINES_JS = """(cells) => cells.filter((c) => c.innerText.trim()).map((c) => {
    const tops = new Set(), walk = document.createTreeWalker(c, NodeFilter.SHOW_TEXT);
    const box = c.getBoundingClientRect(); let inside = true;
    for (let t = walk.nextNode(); t; t = walk.nextNode()) {
      if (!t.textContent.trim()) continue;
      const r = document.createRange(); r.selectNodeContents(t);
      for (const b of r.getClientRects()) if (b.width > 0) {
        tops.add(Math.round(b.top)); inside = inside && b.left >= box.left - 1 && b.right <= box.right + 1; } }
    return [c.innerText.trim(), tops.size, Math.round(box.width), inside]; })"""


def _lines(page, selector: str) -> list:
    """Each non-empty cell's text, its number of lines on screen, its width and whether it is whole inside."""
    return page.locator(selector).evaluate_all(LINES_JS)


def _no_word_broken(page, table: str) -> None:
    """No one-word cell of the table's body is broken over lines (as "alic / e" was) or cut."""
    cells = _lines(page, f"{table} [role=gridcell]")
    assert cells, f"{table} has no cells"
    broken = [c for c in cells if " " not in c[0] and not (c[1] == 1 and c[3])]
    assert not broken, f"words broken over lines or cut in {table} (text, lines, width, whole): {broken}"


def test_the_to_fix_tables_headers_stay_on_one_line_and_its_comment_is_readable(chromium, studio) -> None:
    """At 1440x900 the "fix these first" table's headers never wrap ("re / f", "revi / ewer" did) and its
    comment column is wide enough to read a comment, wrapped inside its cell; the image's refs table
    neither wraps a header nor breaks an author's name ("alic / e")."""
    url, _ = studio
    page, errors = _open(chromium, url, LAPTOP)
    who = page.locator("#annotator textarea, #annotator input").first
    who.fill(FIXER)
    who.press("Enter")
    page.locator("#to-fix").wait_for(state="visible", timeout=30_000)
    page.wait_for_function("document.querySelector('#to-fix')?.innerText.includes('redraw it')", timeout=30_000)
    lines = _lines(page, "#to-fix thead th")
    assert [name for name, *_ in lines] == ["ref", "sentences", "reason", "comment", "reviewer"], lines
    assert all(n == 1 and inside for _, n, _, inside in lines), \
        f"headers on more than one line or cut (name, lines, width, whole): {lines}"
    _no_word_broken(page, "#to-fix")
    # the comment column: inside the table's box, wide enough, the whole comment shown (wrapped)
    table = _box(page, "#to-fix")
    heads = page.locator("#to-fix thead th")
    comment_head = heads.nth([name for name, *_ in lines].index("comment") + (heads.count() - len(lines))).bounding_box()
    assert comment_head["width"] >= 120, comment_head
    assert table["x"] <= comment_head["x"] and comment_head["x"] + comment_head["width"] <= table["x"] + table["width"] + 1
    cell = page.locator("#to-fix [role=gridcell]", has_text="redraw it").first
    assert cell.evaluate("(c) => c.innerText.replace(/\\s+/g, ' ').trim()") == COMMENT
    shown = cell.evaluate("""(c) => { const r = document.createRange(); r.selectNodeContents(c);
        const box = c.getBoundingClientRect(), rects = [...r.getClientRects()].filter((b) => b.width > 0);
        return [rects.every((b) => b.right <= box.right + 1 && b.left >= box.left - 1),
                new Set(rects.map((b) => Math.round(b.top))).size]; }""")
    assert shown[0] and shown[1] >= 2, f"the comment is cut, or not wrapped: {shown}"
    page.screenshot(path=str(SCREENSHOT_DIR / "layout_to_fix_1440x900.png"))
    # the image's refs (a row of the list opened): its headers on one line, no author cut ("alic / e")
    page.locator("#to-fix [role=gridcell]", has_text="redraw it").first.click()
    page.wait_for_function(f"document.querySelector('#image-refs')?.innerText.includes({json.dumps(FIXER)})",
                           timeout=30_000)
    heads = _lines(page, "#image-refs thead th")
    assert len(heads) == 6 and all(n == 1 and inside for _, n, _, inside in heads), heads
    _no_word_broken(page, "#image-refs")
    assert errors == []
    page.close()


def test_an_empty_id_box_shows_no_zero(chromium, studio) -> None:
    """The Dataset tab's ref id, the Jobs tab's job and the review filter's image id are empty boxes with
    a hint (a number box showed 0, and Delete… then said "0 is not a ref id"); Delete… on the empty box
    asks for a ref id."""
    url, _ = studio
    page, errors = _open(chromium, url, LAPTOP)
    boxes = {"Dataset": "#ref-id input", "Jobs": "#job-id input", "Review": "#review-image input"}
    for tab, selector in boxes.items():
        page.get_by_role("tab", name=tab).click()
        if tab == "Review":
            page.get_by_text("Filter the queue").click()
        box = page.locator(selector).first
        box.wait_for(state="visible", timeout=30_000)
        assert box.input_value() == "", f"{tab}: {box.input_value()!r}"
        assert box.get_attribute("placeholder"), tab
    page.get_by_role("tab", name="Dataset").click()
    page.locator("#delete-ref-btn").click()
    page.wait_for_function("document.querySelector('#dataset-msg')?.innerText.includes('Type a ref id')", timeout=30_000)
    assert not page.locator("#confirm-delete-btn").is_visible()
    assert errors == []
    page.close()
