"""Two signed-in users in a real browser: the annotator saves two refs, the reviewer accepts one and
rejects the other with a comment, the annotator sees the comment and fixes the ref, the reviewer
accepts it; the export of reviewed refs holds both with the right authors and history."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.test_app import start_server
from tests.test_browser import SCREENSHOT_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(chromium):
    yield chromium


def _login(browser, url: str, user: str, password: str):
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.goto(url)
    page.locator("input[type=text]").first.fill(user)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#queue-pos", timeout=60_000)
    page.wait_for_function(f"document.querySelector('#signed-in')?.innerText.includes({json.dumps(user)})",
                           timeout=30_000)
    return page


def _wait_text(page, selector: str, text: str, timeout: int = 60_000) -> None:
    page.wait_for_function(f"(document.querySelector({json.dumps(selector)})?.innerText || '').includes({json.dumps(text)})",
                           timeout=timeout)


def _annotate(page, expression: str) -> None:
    box = page.locator("#expression input, #expression textarea").first
    box.fill(expression)
    box.press("Enter")
    _wait_text(page, "#verdict", "existence probability")
    page.wait_for_timeout(300)
    box.press("Control+Enter")
    _wait_text(page, "#save-msg", "Saved ref")


def test_annotator_and_reviewer(browser, studio_weights, tmp_path: Path) -> None:
    from app.store import Store
    from deris_core.synthetic import generate

    generate(tmp_path / "syn", seed=4, images=3)
    db = tmp_path / "team.sqlite"
    subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(tmp_path / "syn" / "images" / "train2014"),
                    "--db", str(db)], cwd=ROOT, check=True, capture_output=True)
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, ["--auth", "ann:ann-pw:annotator", "--auth", "rev:rev-pw:reviewer"])
    try:
        ann = _login(browser, url, "ann", "ann-pw")
        ann.locator("body").click(position={"x": 5, "y": 5})
        ann.keyboard.press("d")
        _wait_text(ann, "#queue-pos", "1 / 3")
        _annotate(ann, "the red circle")
        ann.keyboard.press("PageDown")
        _wait_text(ann, "#queue-pos", "2 / 3")
        _annotate(ann, "the big blue square")
        assert ann.locator("#annotator").count() == 0 or not ann.locator("#annotator").is_visible()

        rev = _login(browser, url, "rev", "rev-pw")
        rev.get_by_role("tab", name="Review").click()
        _wait_text(rev, "#review-info", "1 / 2")
        _wait_text(rev, "#review-sentences", "the red circle")
        rev.wait_for_timeout(500)
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        rev.screenshot(path=str(SCREENSHOT_DIR / "review.png"))
        rev.locator("body").click(position={"x": 5, "y": 5})
        rev.keyboard.press("y")  # accept the first
        _wait_text(rev, "#review-msg", "accepted by rev")
        _wait_text(rev, "#review-sentences", "the big blue square")
        rev.locator("#review-reason input").first.click()
        rev.get_by_role("option", name="missing referent (not every object the sentence refers to is masked)").click()
        rev.locator("#review-comment textarea").fill("the second square is missing")
        rev.locator("#review-reject").click()
        _wait_text(rev, "#review-msg", "rejected by rev")
        _wait_text(rev, "#review-info", "Nothing awaits review")

        ann.reload()
        ann.wait_for_selector("#to-fix", timeout=60_000)
        _wait_text(ann, "#to-fix", "the second square is missing")
        ann.locator("#to-fix [role=gridcell]", has_text="the big blue square").first.click()
        _wait_text(ann, "#save-msg", "Rejected by rev")
        ann.locator("#extra textarea, #extra input").first.fill("the large blue square")
        ann.locator("#expression input, #expression textarea").first.press("Control+Enter")
        _wait_text(ann, "#save-msg", "Updated ref")
        ann.wait_for_function("!document.querySelector('#to-fix')?.offsetParent", timeout=30_000)

        rev.locator("#review-next").click()
        _wait_text(rev, "#review-sentences", "the large blue square")
        rev.locator("body").click(position={"x": 5, "y": 5})
        rev.wait_for_timeout(300)  # a decision key acts on a ref shown for at least 0.25 s (app/ui.py)
        rev.keyboard.press("y")
        _wait_text(rev, "#review-msg", "accepted by rev")
        # an annotator cannot review
        ann.get_by_role("tab", name="Review").click()
        _wait_text(ann, "#review-info", "Nothing awaits review")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = tmp_path / "reviewed.zip"
    r = subprocess.run([sys.executable, "-m", "app.dataset", "export", "--db", str(db), "--out", str(out), "--status",
                        "reviewed"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as zf:
        grefs = json.loads(zf.read("grefcoco/grefs(unc).json"))
    assert len(grefs) == 2 and {g["annotator"] for g in grefs} == {"ann"} and {g["status"] for g in grefs} == {"reviewed"}
    fixed = next(g for g in grefs if g["sentences"][0]["raw"] == "the big blue square")
    assert [s["raw"] for s in fixed["sentences"]] == ["the big blue square", "the large blue square"]
    s = Store(db)
    history = [(e.action, e.user, e.detail.get("decision")) for e in s.events(fixed["ref_id"])]
    assert history == [("create", "ann", None), ("review", "rev", "reject"), ("edit", "ann", None),
                       ("review", "rev", "accept")]
    assert s.events(fixed["ref_id"])[1].detail["comment"] == "the second square is missing"


def hold_key(page, key: str, seconds: float = 1.2) -> None:
    """Hold ``key`` as a keyboard does: one keydown, then auto-repeats (``repeat: true``) every 33 ms."""
    page.keyboard.down(key)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        page.wait_for_timeout(33)
        page.keyboard.down(key)  # Playwright sends a repeat while the key is down
    page.keyboard.up(key)


def test_a_held_key_or_a_double_tap_accepts_one_ref(browser, studio_weights, tmp_path: Path) -> None:
    """Holding Y for 1.2 s, or tapping it twice 80 ms apart, accepts the ref on screen and nothing else."""
    import numpy as np

    from app.store import Store

    db = tmp_path / "held.sqlite"
    s = Store(db)
    img = s.add_image(np.full((32, 32, 3), 90, np.uint8), file_name="a.png")
    for k in range(12):
        s.save_ref(img, [f"the grey square {k}"], no_target=True, author="ann")
    s.close()
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, ["--auth", "ann:ann-pw:annotator", "--auth", "rev:rev-pw:reviewer"])
    try:
        rev = _login(browser, url, "rev", "rev-pw")
        rev.get_by_role("tab", name="Review").click()
        _wait_text(rev, "#review-info", "1 / 12")
        rev.wait_for_timeout(500)
        rev.locator("body").click(position={"x": 5, "y": 5})
        hold_key(rev, "y")
        _wait_text(rev, "#review-msg", "accepted by rev")
        rev.wait_for_timeout(1500)  # anything still on its way lands meanwhile
        assert Store(db).refs_page(status="reviewed")[1] == 1
        _wait_text(rev, "#review-info", "1 / 11")
        rev.wait_for_timeout(500)
        rev.keyboard.press("y")
        rev.wait_for_timeout(80)
        rev.keyboard.press("y")
        _wait_text(rev, "#review-info", "1 / 10")
        rev.wait_for_timeout(1500)
        assert Store(db).refs_page(status="reviewed")[1] == 2
        _wait_text(rev, "#review-info", "1 / 10")  # nothing else left the queue
        # a deliberate next press, once the new ref has been seen, still decides it
        rev.wait_for_timeout(300)
        rev.keyboard.press("y")
        _wait_text(rev, "#review-info", "1 / 9")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert Store(db).refs_page(status="reviewed")[1] == 3
