"""A real browser on a collection imported from a folder: the annotator's loop with keyboard and
mouse (next image by key, Enter, click to add and remove, Ctrl+Enter, the image's ref list,
reopen with one click, next image without refs). Saves the screenshots of the README and docs/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_app import start_server
from tests.test_browser import SCREENSHOT_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(chromium):
    yield chromium.new_page(viewport={"width": 1440, "height": 1000})


def _queue_text(page) -> str:
    return page.locator("#queue-pos").inner_text()


def _wait_queue(page, text: str) -> None:
    page.wait_for_function(f"document.querySelector('#queue-pos')?.innerText.includes({json.dumps(text)})",
                           timeout=60_000)


def _n_targets(page) -> int:
    v = page.locator("#verdict").inner_text()
    if "target instance" not in v:
        return 0
    return int(v.split(" target instance")[0].split()[-1])


def _wait_targets(page, n: int) -> None:
    page.wait_for_function(
        "(n) => { const v = document.querySelector('#verdict')?.innerText || '';"
        " return n === 0 ? !v.includes('target instance') : v.includes(n + ' target instance'); }",
        arg=n, timeout=60_000)


def _click_pixel(page, x: int, y: int, scale: int) -> None:
    """Click the centre of image pixel (x, y) on the canvas (``scale`` is unused: the canvas knows its zoom)."""
    page.evaluate("window.scrollTo(0, 0)")
    box = page.locator("#canvas canvas").first.bounding_box()
    sx, sy = page.evaluate(f"[...document.querySelectorAll('#canvas, #canvas *')].find(e => e.__canvas)"
                           f".__canvas.api.toScreen({x + 0.5}, {y + 0.5})")
    page.mouse.click(box["x"] + sx, box["y"] + sy)


def _inside(mask: np.ndarray, avoid: np.ndarray) -> tuple[int, int] | None:
    """A pixel well inside ``mask`` and outside ``avoid`` (eroded so a click cannot miss)."""
    import cv2

    m = (mask & ~avoid).astype(np.uint8)
    m = cv2.erode(m, np.ones((3, 3), np.uint8))
    if not m.any():
        return None
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def test_the_annotators_loop_on_a_collection(page, studio_weights, tmp_path: Path) -> None:
    from app.viewkit.overlay import view_scale
    from app.store import Store
    from deris_core.synthetic import generate
    from deris_core.weights import load_predictor

    generate(tmp_path / "syn", seed=11, images=22)
    folder = tmp_path / "photos"
    shutil.copytree(tmp_path / "syn" / "images" / "train2014", folder)
    (folder / "broken.jpg").write_bytes(b"not a picture")
    db = tmp_path / "collection.sqlite"
    run = subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(folder), "--db", str(db)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["added"] >= 20 and summary["skipped"] == 1 and "broken.jpg" in summary["skipped_files"][0]
    total = summary["added"]
    store = Store(db)
    grefs = json.loads((tmp_path / "syn" / "grefcoco" / "grefs(unc).json").read_text())
    by_file = {}
    for r in grefs:
        if r["ann_id"] != [-1]:
            by_file.setdefault(r["file_name"], r["sentences"][0]["raw"])
    name2 = store.image(2).original_name
    expression = by_file.get(name2, "the red circle")
    # what the server's model will answer, to know where to click
    weights, tok = studio_weights
    predictor = load_predictor(str(weights))
    rgb = store.load_image(2)
    pred = predictor.predict(expression, image=predictor.set_image(rgb))
    scale = view_scale(rgb.shape)
    store.close()

    proc, url = start_server(weights, tok, db)
    try:
        page.goto(url)
        _wait_queue(page, f"{total} in the queue")
        page.locator("body").click(position={"x": 5, "y": 5})  # focus outside any text box
        page.keyboard.press("d")  # first image of the queue
        _wait_queue(page, f"1 / {total}")
        page.keyboard.press("PageDown")  # next image: works from the expression box too
        _wait_queue(page, f"2 / {total}")
        box = page.locator("#expression textarea, #expression input").first
        box.fill(expression)
        box.press("Enter")
        page.wait_for_function("document.querySelector('#verdict')?.innerText.includes('existence probability')",
                               timeout=60_000)
        page.wait_for_function("document.querySelectorAll('#candidates input[type=checkbox]').length > 0")
        n = _n_targets(page)
        assert n == len(pred.referred)
        # click on a candidate outside the current target set: it is added
        taken = np.zeros(pred.original_size, bool)
        for k in pred.referred:
            taken |= pred.mask(k).astype(bool)
        spot = None
        for k in pred.order:
            if k in pred.referred:
                continue
            spot = _inside(pred.mask(k).astype(bool), taken)
            if spot is not None:
                break
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        if spot is not None:  # a candidate outside the target set: a click adds it ...
            _click_pixel(page, *spot, scale)
            _wait_targets(page, n + 1)
            page.wait_for_timeout(800)  # let the progress shading fade
            page.screenshot(path=str(SCREENSHOT_DIR / "annotate.png"))
            added = pred.mask(k).astype(bool)
            other = None
            for j in pred.referred:  # ... and a click on another object of the set removes that one
                rest = added.copy()
                for i in pred.referred:
                    if i != j:
                        rest |= pred.mask(i).astype(bool)
                other = _inside(pred.mask(j).astype(bool), rest)
                if other is not None:
                    break
            _click_pixel(page, *(other or spot), scale)
            _wait_targets(page, n)
        else:  # every candidate overlaps the set: a click inside a target removes it, a second adds it back
            others = np.zeros(pred.original_size, bool)
            for k in pred.referred[1:]:
                others |= pred.mask(k).astype(bool)
            spot = _inside(pred.mask(pred.referred[0]).astype(bool), others)
            assert spot is not None
            _click_pixel(page, *spot, scale)
            _wait_targets(page, n - 1)
            _click_pixel(page, *spot, scale)
            _wait_targets(page, n)
            page.wait_for_timeout(800)  # let the progress shading fade
            page.screenshot(path=str(SCREENSHOT_DIR / "annotate.png"))
        if _n_targets(page) == 0:  # keep one target for the save
            _click_pixel(page, *spot, scale)
            _wait_targets(page, 1)
        saved_targets = _n_targets(page)
        box.press("Control+Enter")
        page.wait_for_function("document.querySelector('#save-msg')?.innerText.includes('Saved ref')", timeout=30_000)
        refs = page.locator("#image-refs")
        page.wait_for_function(f"document.querySelector('#image-refs')?.innerText.includes({json.dumps(expression)})",
                               timeout=30_000)
        # a new expression clears the view; one click on the row reopens the saved ref
        page.keyboard.press("Alt+n")
        page.wait_for_function("!document.querySelector('#verdict')?.innerText.includes('target instance')")
        refs.locator("[role=gridcell]", has_text=expression).first.click()
        page.wait_for_function(f"(document.querySelector('#expression input, #expression textarea')?.value || '') === {json.dumps(expression)}",
                               timeout=30_000)
        _wait_targets(page, saved_targets)
        # back to image 1 and on to the next image without refs: image 2 is skipped
        page.keyboard.press("PageUp")
        _wait_queue(page, f"1 / {total}")
        page.keyboard.press("Shift+PageDown")
        _wait_queue(page, f"3 / {total}")
        page.get_by_text("Collection: filter and jump").click()
        page.wait_for_selector("#thumbs img", timeout=30_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(SCREENSHOT_DIR / "collection.png"))
        page.locator("#thumbs img").nth(4).click()  # jump anywhere from the thumbnails
        _wait_queue(page, f"5 / {total}")
        page.get_by_role("tab", name="Dataset").click()
        page.wait_for_selector("#progress-box", timeout=30_000)
        assert f"1 / {total}" in page.locator("#progress-box").inner_text()
        page.wait_for_timeout(800)
        page.screenshot(path=str(SCREENSHOT_DIR / "dataset.png"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    s = Store(db)
    (ref,) = s.refs()
    assert ref.image_id == 2 and ref.sentences == [expression] and len(ref.instance_ids) == saved_targets
