"""Annotate's save key in a real browser (chromium): Ctrl+Enter held down for 1.2 s (a keyboard's
auto-repeats) or tapped twice 80 ms apart saves once, one ref per intended save (app/ui.py: a repeat is
ignored, and so is a press while the save is in flight)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_app import start_server
from tests.test_browser_review import _login, _wait_text

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser
EXPR = "#expression input, #expression textarea"


def _hold_ctrl_enter(page, seconds: float = 1.2) -> None:
    """Control down, then Enter held as a keyboard does: one keydown, then repeats every 33 ms."""
    page.keyboard.down("Control")
    page.keyboard.down("Enter")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        page.wait_for_timeout(33)
        page.keyboard.down("Enter")  # Playwright sends a repeat while the key is down
    page.keyboard.up("Enter")
    page.keyboard.up("Control")


def _segment(page, expression: str) -> None:
    box = page.locator(EXPR).first
    box.fill(expression)
    box.press("Enter")
    _wait_text(page, "#verdict", "existence probability")
    page.wait_for_timeout(300)


def _saved(page, before: str) -> str:
    """Wait for a save's answer (the message line changed to "Saved ref ...")."""
    page.wait_for_function(f"(() => {{ const t = document.querySelector('#save-msg')?.innerText ?? '';"
                           f" return t !== {json.dumps(before)} && !t.includes('processing') && t.includes('Saved ref'); }})()",
                           timeout=60_000)
    return page.locator("#save-msg").inner_text().strip()


def test_a_held_or_double_tapped_ctrl_enter_saves_once(chromium, studio_weights, tmp_path: Path) -> None:
    from app.store import Store
    from deris_core.synthetic import generate

    generate(tmp_path / "syn", seed=4, images=2)
    db = tmp_path / "keys.sqlite"
    subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(tmp_path / "syn" / "images" / "train2014"),
                    "--db", str(db)], cwd=ROOT, check=True, capture_output=True)
    weights, tok = studio_weights
    proc, url = start_server(weights, tok, db, ["--auth", "ann:ann-pw:annotator"])

    def refs() -> list:
        s = Store(db)
        try:
            return s.refs()
        finally:
            s.close()

    try:
        ann = _login(chromium, url, "ann", "ann-pw")
        ann.locator("body").click(position={"x": 5, "y": 5})
        ann.keyboard.press("d")
        _wait_text(ann, "#queue-pos", "1 / 2")
        # held in the expression box, where it is usually pressed
        _segment(ann, "the red circle")
        before = ann.locator("#save-msg").inner_text()
        _hold_ctrl_enter(ann)
        first = _saved(ann, before)
        ann.wait_for_timeout(1500)  # anything still on its way lands meanwhile
        assert [r.sentences for r in refs()] == [["the red circle"]], first
        assert ann.locator("#save-msg").inner_text().strip() == first  # no second answer (no "Updated ref")
        # a new ref on the same image (Alt+N), saved by a double tap from outside the boxes
        ann.keyboard.press("Alt+KeyN")
        ann.wait_for_function("!(document.querySelector('#save-msg')?.innerText ?? '').includes('Saved ref')",
                              timeout=30_000)  # the message of the ref just left is gone
        _segment(ann, "the big blue square")
        ann.locator("body").click(position={"x": 5, "y": 5})
        ann.keyboard.press("Control+Enter")
        ann.wait_for_timeout(80)
        ann.keyboard.press("Control+Enter")
        second = _saved(ann, "")
        ann.wait_for_timeout(1500)
        saved = refs()
        assert sorted(r.sentences[0] for r in saved) == ["the big blue square", "the red circle"], second
        assert ann.locator("#save-msg").inner_text().strip() == second
        # every ref was created once and not saved again
        s = Store(db)
        assert [[e.action for e in s.events(r.id)] for r in saved] == [["create"], ["create"]]
        s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
