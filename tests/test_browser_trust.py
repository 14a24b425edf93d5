"""Issue 35 in a real browser (two signed-in users, an annotator and a reviewer, 1440×900): a delete
that asks first, R disabled until a reason is chosen, no Accept/Reject for an annotator, no Share
button, a rejection that reaches the annotator live (her image and place kept), the reviewer's
queue that fills live from 1 / N, and one clear message after the studio restarted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_app import start_server
from tests.test_browser_review import _login, _wait_text

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser
USERS = ["--auth", "ann:ann-pw:annotator", "--auth", "rev:rev-pw:reviewer"]


def _visible(page, selector: str) -> bool:
    loc = page.locator(selector)
    return loc.count() > 0 and loc.first.is_visible()


def test_a_team_round_without_silent_surprises(chromium, studio_weights, tmp_path: Path) -> None:
    from app.services.permissions import Actor
    from app.services.refs import RefService
    from app.store import Store
    from deris_core.synthetic import generate

    generate(tmp_path / "syn", seed=4, images=3)
    db = tmp_path / "team.sqlite"
    subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(tmp_path / "syn" / "images" / "train2014"),
                    "--db", str(db)], cwd=ROOT, check=True, capture_output=True)
    store = Store(db)
    ann = Actor("ann", frozenset({"annotator"}), accounts=True)
    first = RefService(store).save(ann, 1, ["the red circle"], no_target=True)
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, USERS)
    try:
        rev = _login(chromium, url, "rev", "rev-pw")
        rev.set_viewport_size({"width": 1440, "height": 900})
        assert rev.locator("button[aria-label='Share'], button[title='Share']").count() == 0
        rev.get_by_role("tab", name="Review").click()
        _wait_text(rev, "#review-info", "1 / 1")
        assert rev.locator("#review-reject").is_disabled()  # R waits for a reason
        rev.locator("body").click(position={"x": 5, "y": 5})
        rev.keyboard.press("r")
        rev.wait_for_timeout(500)
        assert "1 / 1" in rev.locator("#review-info").inner_text()  # nothing decided, nothing blanked
        assert rev.locator(".error:visible").count() == 0
        # ... but not silently nothing: R opened the list of reasons
        rev.get_by_role("option", name="wrong mask (the outline is off)").wait_for(timeout=5_000)
        rev.keyboard.press("Escape")
        rev.locator("body").click(position={"x": 5, "y": 5})
        # a second ref arrives while rev looks at the first: the counter follows, the ref stays
        RefService(store).save(ann, 2, ["the blue square"], no_target=True)
        _wait_text(rev, "#review-info", "1 / 2", timeout=20_000)
        assert "the red circle" in rev.locator("#review-sentences").inner_text()
        # a reason and comment written for this ref stay with it: → shows the next ref with empty boxes and
        # Reject disabled (they used to wait there, and R rejected the next ref with them)
        rev.locator("#review-reason input").first.click()
        rev.get_by_role("option", name="wrong referent (a masked object is not what the sentence means)").click()
        rev.locator("#review-comment textarea").fill("meant for the red circle")
        rev.wait_for_function("!document.querySelector('#review-reject').disabled", timeout=10_000)
        rev.locator("#review-next").click()
        _wait_text(rev, "#review-info", "2 / 2")
        rev.wait_for_function("document.querySelector('#review-reject').disabled", timeout=10_000)
        assert rev.locator("#review-comment textarea").input_value() == ""
        assert rev.locator("#review-reason input").first.input_value() == ""
        rev.locator("#review-prev").click()
        _wait_text(rev, "#review-info", "1 / 2")

        annp = _login(chromium, url, "ann", "ann-pw")
        annp.get_by_role("tab", name="Review").click()
        _wait_text(annp, "#review-msg", "deciding on refs is for reviewers")
        assert not _visible(annp, "#review-accept") and not _visible(annp, "#review-reject")
        annp.get_by_role("tab", name="Annotate").click()
        annp.locator("body").click(position={"x": 5, "y": 5})
        annp.keyboard.press("d")
        _wait_text(annp, "#queue-pos", "1 / 3")
        # rev rejects: the comment reaches ann live, her place in the queue is kept
        rev.locator("#review-reason input").first.click()
        rev.get_by_role("option", name="wrong mask (the outline is off)").click()
        rev.locator("#review-comment textarea").fill("there is a red circle")
        rev.wait_for_function("!document.querySelector('#review-reject').disabled", timeout=10_000)
        rev.locator("#review-reject").click()
        _wait_text(rev, "#review-msg", "rejected by rev")
        _wait_text(annp, "#to-fix", "there is a red circle", timeout=20_000)
        assert "1 / 3" in annp.locator("#queue-pos").inner_text()
        # a clicked cell opens its ref: no edit ring, handle or menu that would make it look editable
        annp.locator("#to-fix [role=gridcell]", has_text="there is a red circle").first.click()
        annp.wait_for_timeout(300)
        assert annp.evaluate("""() => [...document.querySelectorAll('#to-fix .cell-selected, #to-fix .cell-selected *')]
            .every((c) => getComputedStyle(c).boxShadow === 'none')""")  # the wrapped text's span had an orange frame
        assert annp.evaluate("""() => [...document.querySelectorAll('#to-fix .cell-menu-button, #to-fix .selection-button')]
            .every((b) => getComputedStyle(b).display === 'none')""")

        # the Dataset tab's delete asks first
        annp.get_by_role("tab", name="Dataset").click()
        annp.locator("#ref-id input").fill(str(first.ref_id))
        annp.locator("#delete-ref-btn").click()
        _wait_text(annp, "#dataset-msg", f"Delete ref {first.ref_id}")
        assert _visible(annp, "#confirm-delete-btn")
        annp.locator("#cancel-delete-btn").click()
        _wait_text(annp, "#dataset-msg", f"Kept ref {first.ref_id}")
        assert store.ref(first.ref_id).id == first.ref_id

        # the studio restarts: an open page says so (with accounts, Gradio itself then asks to sign in
        # again), never a screen of Error badges
        port = url.rstrip("/").rsplit(":", 1)[1]
        proc.terminate()
        proc.wait(timeout=30)
        _wait_text(rev, "#restart-banner", "cannot be reached", timeout=20_000)
        proc, _ = start_server(weights, tok, db, [*USERS, "--port", port])  # the last --port wins
        rev.wait_for_function("(document.querySelector('#restart-banner')?.innerText || '').includes('restarted') || "
                              "!!document.querySelector('input[type=password]')", timeout=40_000)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_page_of_an_open_studio_says_the_studio_restarted(chromium, tmp_path: Path) -> None:
    """The restart watcher on a real Gradio server without accounts: a page of the old start shows one
    clear banner, first while the server is away, then once it is back with another start id."""
    import socket

    import gradio as gr

    from app.views import live

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def studio(start: str) -> gr.Blocks:
        with gr.Blocks() as demo:
            live.layout(start)
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
        return demo

    demo = studio("first-start")
    page = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.__studioWatch === true", timeout=30_000)
        demo.close()
        _wait_text(page, "#restart-banner", "cannot be reached", timeout=20_000)
        demo = studio("second-start")
        _wait_text(page, "#restart-banner", "The studio restarted — reload the page", timeout=20_000)
    finally:
        page.close()
        demo.close()


def test_the_first_day_from_the_app_alone(chromium, studio_weights, tmp_path: Path) -> None:
    """An empty studio offers Add images (several files at once; a server folder under --import-root),
    the Jobs tab pre-annotates them as the command does, and a model switch on one page is told on
    another. No terminal after launch."""
    from deris_core.synthetic import generate

    generate(tmp_path / "roots" / "syn", seed=8, images=3)
    pictures = sorted((tmp_path / "roots" / "syn" / "images" / "train2014").glob("*.png"))
    weights, tok = studio_weights
    db = tmp_path / "first.sqlite"
    proc, url = start_server(weights, tok, db, ["--import-root", str(tmp_path / "roots"),
                                                "--allow-weights", str(weights)])
    try:
        page = chromium.new_context(viewport={"width": 1440, "height": 900}).new_page()
        page.goto(url)
        _wait_text(page, "#add-images-msg", "The collection is empty")
        notes = tmp_path / "notes.txt"  # a file that is no image, dropped with the pictures
        notes.write_text("not a picture")
        page.locator("#add-files input[type=file]").set_input_files([str(p) for p in pictures[:2]] + [str(notes)])
        page.wait_for_function("(document.querySelector('#add-files')?.innerText || '').includes('.txt')",
                               timeout=30_000)  # the list of chosen files names it (name and suffix apart)
        assert page.locator("#add-files .error:visible").count() == 0  # no red Error badge over the files
        page.locator("#add-files-btn").click()
        _wait_text(page, "#add-images-msg", "Added 2 images; skipped 1: notes.txt (not an image file)")
        _wait_text(page, "#queue-pos", "2 in the queue")  # the Annotate view counts them at once
        page.locator("#add-folder textarea, #add-folder input").first.fill("syn")
        page.locator("#add-folder-btn").click()
        _wait_text(page, "#add-images-msg", "Added 1 image; 2 already in the collection", timeout=60_000)
        page.locator("#add-folder textarea, #add-folder input").first.fill("../")
        page.locator("#add-folder-btn").click()
        _wait_text(page, "#add-images-msg", "outside the folders the operator allowed")

        page.get_by_role("tab", name="Jobs").click()
        page.locator("#job-sentences textarea").fill("the red circle")
        page.locator("#job-start").click()
        _wait_text(page, "#job-msg", "Started job 1")
        _wait_text(page, "#job-board", "✓ done", timeout=180_000)
        assert "written 3" in page.locator("#job-board").inner_text()

        other = chromium.new_context(viewport={"width": 1440, "height": 900}).new_page()
        other.goto(url)
        other.wait_for_selector("#queue-pos", timeout=60_000)
        other.wait_for_timeout(6_000)  # its first tick: the version it shows
        page.get_by_text("Model", exact=True).first.click()
        page.locator("#weights-choice input").first.click()
        page.get_by_role("option", name=weights.name).click()
        page.locator("#load-weights-btn").click()
        _wait_text(page, "#model-status", "for everyone", timeout=60_000)
        _wait_text(other, "#model-notice", "The model was switched to", timeout=30_000)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
