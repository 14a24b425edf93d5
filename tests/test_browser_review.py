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
        # moving on empties the message line ("Ref N rejected by rev." is not about the ref now shown)
        rev.wait_for_function("(document.querySelector('#review-msg')?.innerText || '').trim() === ''", timeout=10_000)
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
    history = [(e.action, e.actor, e.detail.get("decision")) for e in s.events(fixed["ref_id"])]
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



def _choose_reason(page, reason: str = "wrong mask (the outline is off)") -> None:
    """Pick a rejection reason for the ref on screen (Reject waits for one), then leave the list."""
    page.locator("#review-reason input").first.click()
    page.get_by_role("option", name=reason).click()
    page.wait_for_function("!document.querySelector('#review-reject').disabled", timeout=10_000)
    page.locator("body").click(position={"x": 5, "y": 5})


def test_a_held_or_double_tapped_r_rejects_one_ref(browser, studio_weights, tmp_path: Path) -> None:
    """With a reason chosen, holding R for 1.2 s, or tapping it twice 80 ms apart, rejects the ref on
    screen and nothing else (the next ref waits for its own reason)."""
    import numpy as np

    from app.store import Store

    db = tmp_path / "held_r.sqlite"
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
        _choose_reason(rev)
        hold_key(rev, "r")
        _wait_text(rev, "#review-msg", "rejected by rev")
        rev.wait_for_timeout(1500)  # anything still on its way lands meanwhile
        assert Store(db).refs_page(status="rejected")[1] == 1
        _wait_text(rev, "#review-info", "1 / 11")
        # the repeats opened no list of reasons: the next ref's reason is still to be chosen
        assert rev.get_by_role("option").count() == 0
        assert rev.locator("#review-reason input").first.input_value() == ""
        _choose_reason(rev)
        rev.keyboard.press("r")
        rev.wait_for_timeout(80)
        rev.keyboard.press("r")
        _wait_text(rev, "#review-info", "1 / 10")
        rev.wait_for_timeout(1500)
        assert Store(db).refs_page(status="rejected")[1] == 2
        _wait_text(rev, "#review-info", "1 / 10")  # nothing else left the queue
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert Store(db).refs_page(status="rejected")[1] == 2 and Store(db).refs_page(status="done")[1] == 10

RV = "[...document.querySelectorAll('#review-picture, #review-picture *')].find(e => e.__canvas).__canvas"
ANNOTATE_CV = "[...document.querySelectorAll('#canvas, #canvas *')].find(e => e.__canvas).__canvas"


def _canvas_masks(page, cv: str, h: int, w: int) -> list:
    """The masks the canvas ``cv`` shows now (its targets, in order), decoded here."""
    from app.views.canvas import decode_mask

    rles = page.evaluate(f"() => {{ const S = {cv}; return S.targets.map(t => S.api.encodeRle(t.mask)); }}")
    return [decode_mask(r, h, w) for r in rles]


def _drag_on(page, cv: str, selector: str, points: list[tuple[float, float]]) -> None:
    """A mouse drag through image points on the canvas ``cv`` (scrolled into the window first)."""
    page.locator(f"{selector} canvas").first.scroll_into_view_if_needed()
    box = page.locator(f"{selector} canvas").first.bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        sx, sy = page.evaluate(f"() => {cv}.api.toScreen({x}, {y})")
        return box["x"] + sx, box["y"] + sy

    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(*p), steps=4)
    page.mouse.up()


def test_the_reviewer_sees_before_and_after_of_a_fixed_ref(browser, studio_weights, tmp_path: Path) -> None:
    """rev rejects ann's ref (wrong mask), ann trims the mask with the eraser and saves, rev opens the ref
    again: the line says what changed, and B / the buttons switch the read-only canvas between the
    rejected masks and the fixed ones (compared pixel for pixel with the store)."""
    import numpy as np

    from app.services import RefService, compare
    from app.store import Store

    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    picture = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)], -1).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[30:80, 40:120] = True
    db = tmp_path / "fix.sqlite"
    s = Store(db)
    ref_id = s.save_ref(s.add_image(picture, file_name="gradient.png"), ["the big rectangle"], masks=[mask], author="ann")
    s.close()
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, ["--auth", "ann:ann-pw:annotator", "--auth", "rev:rev-pw:reviewer"])
    errors: list[str] = []
    try:
        rev = _login(browser, url, "rev", "rev-pw")
        rev.set_viewport_size({"width": 1440, "height": 900})
        rev.on("pageerror", lambda e: errors.append(str(e)))
        rev.get_by_role("tab", name="Review").click()
        _wait_text(rev, "#review-sentences", "the big rectangle")
        assert not rev.locator("#review-changes").is_visible()  # never rejected: no line, no switch
        rev.wait_for_function(f"{RV}.W > 0 && {RV}.versions === null", timeout=30_000)
        rev.locator("#review-reason input").first.click()
        rev.get_by_role("option", name="wrong mask (the outline is off)").click()
        rev.locator("#review-comment textarea").fill("the right part is not the rectangle")
        rev.locator("#review-reject").click()
        _wait_text(rev, "#review-info", "Nothing awaits review")

        ann = _login(browser, url, "ann", "ann-pw")
        ann.on("pageerror", lambda e: errors.append(str(e)))
        _wait_text(ann, "#to-fix", "the right part is not the rectangle")
        ann.locator("#to-fix [role=gridcell]", has_text="the big rectangle").first.click()
        _wait_text(ann, "#save-msg", "Rejected by rev")
        ann.wait_for_function(f"{ANNOTATE_CV}.W > 0 && {ANNOTATE_CV}.targets.length === 1", timeout=30_000)
        ann.locator("body").click(position={"x": 5, "y": 5})
        ann.keyboard.press("e")  # the eraser, on every target: trim the right part
        _drag_on(ann, ANNOTATE_CV, "#canvas", [(112, 20), (112, 100)])
        ann.wait_for_function(f"{ANNOTATE_CV}.targets[0].edited", timeout=10_000)
        ann.keyboard.press("Control+Enter")
        _wait_text(ann, "#save-msg", "Updated ref")

        s = Store(db)
        rejected = RefService(s).rejection(ref_id)
        rec = s.ref(ref_id)
        now = [{i.id: i.mask for i in s.instances(rec.image_id)}[i] for i in rec.instance_ids]
        summary = compare(rejected, rec.sentences, now, rec.no_target).summary()
        s.close()
        assert rec.status == "done" and (rejected.masks[0] == mask).all() and not (now[0] == mask).all()
        assert summary.startswith("target 1: ") and "(+0 / −" in summary and summary.endswith("sentences unchanged")

        rev.locator("#review-next").click()  # the fixed ref is back in the queue
        _wait_text(rev, "#review-changes", "Fixed after a rejection")
        _wait_text(rev, "#review-diff", summary)
        assert "by rev (wrong mask)" in rev.locator("#review-changes").inner_text()
        rev.wait_for_function(f"{RV}.versions !== null && {RV}.version === 'after'", timeout=30_000)
        shown = _canvas_masks(rev, RV, h, w)
        assert len(shown) == 1 and (shown[0] == now[0]).all()
        rev.locator("body").click(position={"x": 5, "y": 5})
        rev.keyboard.press("b")  # before: the masks as they were rejected
        assert rev.evaluate(f"() => {RV}.version") == "before"
        shown = _canvas_masks(rev, RV, h, w)
        assert len(shown) == 1 and (shown[0] == mask).all()
        assert rev.evaluate(f"() => {RV}.img !== null && {RV}.W === {w}")  # the picture stays
        assert "before: as rejected" in rev.locator("#review-picture .dc-status").inner_text()
        rev.wait_for_timeout(300)
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        rev.screenshot(path=str(SCREENSHOT_DIR / "review_before.png"))
        rev.locator("#review-picture .dc-version[data-version=after]").click()  # the button does the same
        assert rev.evaluate(f"() => {RV}.version") == "after"
        assert (_canvas_masks(rev, RV, h, w)[0] == now[0]).all()
        rev.wait_for_timeout(300)
        rev.screenshot(path=str(SCREENSHOT_DIR / "review_after.png"))
        rev.wait_for_timeout(300)  # a decision key acts on what was on screen for 0.25 s
        rev.keyboard.press("y")  # the decision is on the ref as it is now
        _wait_text(rev, "#review-msg", "accepted by rev")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert errors == []
    s = Store(db)
    assert s.ref(ref_id).status == "reviewed" and [e.action for e in s.events(ref_id)] == ["create", "review", "edit", "review"]
