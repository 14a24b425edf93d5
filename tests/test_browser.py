"""A real browser (Debian's chromium, driven by Playwright) on the real app: upload, type,
see the overlay and candidates, toggle one, save, export; saves a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_app import start_server

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = Path(os.environ.get("DERIS_SCREENSHOT_DIR", ROOT / "test-artifacts"))

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser_page(chromium):
    yield chromium.new_page(viewport={"width": 1400, "height": 1000})


def test_browser_flow(browser_page, studio_weights, tmp_path: Path) -> None:
    from deris_core.synthetic import generate

    generate(tmp_path / "syn", seed=5, images=4)
    image = sorted((tmp_path / "syn" / "images" / "train2014").glob("*.png"))[0]
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, tmp_path / "db.sqlite")
    page = browser_page
    try:
        page.goto(url)
        try:  # an empty collection opens the upload box by itself
            page.wait_for_selector("#image-input input[type=file]", state="attached", timeout=15_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            page.get_by_text("Add an image (upload, paste, webcam, examples)").click()
            page.wait_for_selector("#image-input input[type=file]", state="attached", timeout=60_000)
        page.set_input_files("#image-input input[type=file]", str(image))
        page.wait_for_selector("#image-input img", timeout=30_000)
        box = page.locator("#expression textarea, #expression input").first
        box.fill("the red circle")
        box.press("Enter")
        page.wait_for_function("document.querySelector('#verdict')?.innerText.includes('existence probability')", timeout=60_000)
        page.wait_for_function("[...document.querySelectorAll('#canvas, #canvas *')].find(e => e.__canvas)?.__canvas.W > 0",
                               timeout=30_000)  # the picture is on the canvas
        checkboxes = page.locator("#candidates input[type=checkbox]")
        checkboxes.first.wait_for(timeout=30_000)
        assert checkboxes.count() == 10
        page.get_by_text("Candidate masks", exact=True).first.click()
        page.wait_for_selector("#gallery img", timeout=30_000)
        was = checkboxes.first.is_checked()
        before = page.locator("#verdict").inner_text()

        def settled(checked: bool, verdict: str | None = None, changed_from: str | None = None) -> None:
            """Wait for the box state *and* the server's answer (the verdict), so that a late reply to
            one toggle cannot undo the next one."""
            page.wait_for_function(
                """([checked, verdict, old]) => {
                    const box = document.querySelector('#candidates input[type=checkbox]');
                    const text = document.querySelector('#verdict')?.innerText;
                    return box && box.checked === checked && (verdict === null || text === verdict)
                        && (old === null || text !== old);
                }""", arg=[checked, verdict, changed_from], timeout=15_000)

        checkboxes.first.click()
        settled(not was, changed_from=before)
        after = page.locator("#verdict").inner_text()
        # keyboard shortcut (Blocks js): Alt+1 toggles the best candidate back, and again
        page.locator("#verdict").click()
        page.keyboard.press("Alt+1")
        settled(was, changed_from=after)  # (the verdict need not return to `before`: a manual
        page.keyboard.press("Alt+1")      # selection clears the model's no-target verdict)
        settled(not was, after)
        page.wait_for_timeout(500)
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "screenshot.png"), full_page=False)
        verdict = page.locator("#verdict").inner_text()
        if "target instance" not in verdict:  # nothing selected: select the best candidate so the save has a target
            page.locator("#candidates input[type=checkbox]").first.click()
            page.wait_for_function("document.querySelector('#verdict')?.innerText.includes('target instance')")
        page.fill("#annotator textarea, #annotator input", "browser")
        page.click("#save-btn")
        page.wait_for_function("document.querySelector('#save-msg')?.innerText.includes('Saved ref')", timeout=30_000)
        page.get_by_role("tab", name="Dataset").click()
        page.click("#export-btn")
        link = page.locator("#export-file a").first
        link.wait_for(timeout=60_000)
        assert "deris_dataset_" in (link.get_attribute("href") or "")
        with page.expect_download() as dl:
            link.click()
        out = tmp_path / "download.zip"
        dl.value.save_as(out)
        import zipfile

        with zipfile.ZipFile(out) as zf:
            assert "grefcoco/grefs(unc).json" in zf.namelist()
        # leaving the page frees the session's image, features and history on the server at once
        page.goto("about:blank")
        assert _wait_for_line(proc, "its session was freed", 60), "the server did not free the session of a client that left"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (SCREENSHOT_DIR / "screenshot.png").stat().st_size > 10_000


def _wait_for_line(proc, text: str, timeout: float) -> bool:
    """Read the server's output (in a thread: a buffered pipe defeats select) until ``text`` appears."""
    import queue
    import threading

    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in iter(proc.stdout.readline, "")], daemon=True).start()
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if text in lines.get(timeout=1.0):
                return True
        except queue.Empty:
            pass
    return False
