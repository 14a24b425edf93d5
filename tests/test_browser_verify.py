"""The verification mode of proposed hard negatives in a real browser, by keys alone: Y stores a
no-target ref by the signed-in person, the arrows move, N records "it refers" and opens the sentence,
run, in the Annotate view. The decisions per minute by keys are measured and written next to the
screenshots (``verify_rate.json``); the figure is reported, not asserted (timings are noisy here)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_app import start_server
from tests.test_browser import SCREENSHOT_DIR
from tests.test_browser_review import _login, _wait_text

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


def _to_decide(page) -> int:
    text = page.locator("#verify-info").inner_text()
    return int(text.split(" / ")[1].split()[0])


def _message_gone(page) -> None:
    """The message line is empty (the Negatives tab's ← / → / filter empty it: it spoke of the sentence left)."""
    page.wait_for_function("(document.querySelector('#verify-msg')?.innerText || '').trim() === ''", timeout=10_000)


def test_verification_by_keys(chromium, studio_weights, tmp_path: Path) -> None:
    from app.store import Store
    from app.store.negatives import negative, negative_queue
    from deris_core.synthetic import generate

    generate(tmp_path / "syn", seed=3, images=8)
    db = tmp_path / "team.sqlite"
    weights, tok = studio_weights
    for cmd in (["app.dataset", "import-grefcoco", "--db", str(db), str(tmp_path / "syn")],
                ["app.curate", "negatives", "--db", str(db), "--weights", str(weights), "--per-image", "3", "--json"]):
        r = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    store = Store(db)
    queue, total = negative_queue(store, 0, 100, "open")
    assert total >= 14
    proc, url = start_server(weights, tok, db, ["--auth", "ann:ann-pw:annotator"])
    try:
        page = _login(chromium, url, "ann", "ann-pw")
        page.get_by_role("tab", name="Negatives").click()
        _wait_text(page, "#verify-info", f"1 / {total} to decide")
        _wait_text(page, "#verify-sentence", queue[0].sentence)
        page.wait_for_timeout(500)
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "verify.png"))
        page.locator("body").click(position={"x": 5, "y": 5})

        page.keyboard.press("y")  # the first: it refers to nothing here
        _wait_text(page, "#verify-info", f"1 / {total - 1} to decide")
        _wait_text(page, "#verify-msg", "no target")
        first = negative(store, queue[0].id)
        assert (first.decision, first.decided_by) == ("no_target", "ann")
        ref = store.ref(first.ref_id)
        assert ref.no_target and ref.author == "ann" and ref.status == "done" and ref.sentences == [queue[0].sentence]

        page.keyboard.press("ArrowLeft")  # at the first already: the same place, the message goes
        _wait_text(page, "#verify-info", f"1 / {total - 1} to decide")
        _message_gone(page)  # "no target" spoke of the sentence decided, no longer shown
        page.keyboard.press("ArrowRight")
        _wait_text(page, "#verify-info", f"2 / {total - 1} to decide")
        _wait_text(page, "#verify-sentence", queue[2].sentence)
        page.keyboard.press("ArrowLeft")
        _wait_text(page, "#verify-info", f"1 / {total - 1} to decide")
        _wait_text(page, "#verify-sentence", queue[1].sentence)
        page.wait_for_timeout(300)  # a decision key acts on what was shown for at least 0.25 s (app/ui.py)

        page.keyboard.press("n")  # the second: it does refer; the Annotate view opens it, run
        page.wait_for_function("document.querySelector('#expression')?.offsetParent != null", timeout=30_000)
        _wait_text(page, "#verdict", "existence probability")
        assert page.locator("#expression input, #expression textarea").first.input_value() == queue[1].sentence
        said = negative(store, queue[1].id)
        assert (said.decision, said.decided_by) == ("refers", "ann")
        if said.ref_id is not None:  # the model's predicted ref stays as it was until the person saves
            assert store.ref(said.ref_id).status == "predicted"

        # keys alone, as fast as the studio answers: Y, and an arrow now and then
        page.get_by_role("tab", name="Negatives").click()
        _wait_text(page, "#verify-info", f"/ {total - 2} to decide")
        page.locator("body").click(position={"x": 5, "y": 5})
        n = min(12, total - 2)
        left = _to_decide(page)
        t0 = time.perf_counter()
        for k in range(n):
            if k % 4 == 3:  # look at the next one, then back
                _wait_text(page, "#verify-msg", "no target")
                page.keyboard.press("ArrowRight")
                _wait_text(page, "#verify-info", f"2 / {left} to decide")
                _message_gone(page)
                page.keyboard.press("ArrowLeft")
                _wait_text(page, "#verify-info", f"1 / {left} to decide")
            page.wait_for_timeout(300)  # what a person needs at least to see the new sentence (keys sooner are ignored)
            page.keyboard.press("y")
            left -= 1
            if left:
                _wait_text(page, "#verify-info", f"/ {left} to decide")
            else:
                _wait_text(page, "#verify-info", "Nothing to decide")
        seconds = time.perf_counter() - t0
        # the last Y's message, then a change of the filter: the line empties
        _wait_text(page, "#verify-msg", "no target")
        page.locator("#verify-show input").first.click()
        page.get_by_role("option", name="decided", exact=True).click()
        _message_gone(page)
        rate = n / seconds * 60
        (SCREENSHOT_DIR / "verify_rate.json").write_text(json.dumps(
            {"decisions": n, "arrow_pairs": n // 4, "seconds": round(seconds, 2), "decisions_per_min": round(rate, 1)}))
        print(f"verification by keys: {n} decisions in {seconds:.1f} s = {rate:.0f} decisions/min")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    decided = store.read("SELECT decision, decided_by, COUNT(*) FROM negatives WHERE decision <> '' GROUP BY 1, 2")
    assert sorted(decided) == [("no_target", "ann", 1 + n), ("refers", "ann", 1)]
    no_target_refs = store.read("SELECT COUNT(*) FROM negatives g JOIN refs r ON r.id = g.ref_id WHERE g.decision = "
                                "'no_target' AND r.no_target = 1 AND r.annotator = 'ann' AND r.status = 'done'")
    assert no_target_refs == [(1 + n,)]


def test_a_held_y_or_a_double_tap_decides_one_negative(chromium, studio_weights, tmp_path: Path) -> None:
    """Holding Y for 1.2 s, or tapping it twice 80 ms apart, decides the negative on screen and no other."""
    from app.store import Store
    from app.store.negatives import negative_queue
    from deris_core.synthetic import generate
    from tests.test_browser_review import hold_key

    generate(tmp_path / "syn", seed=3, images=8)
    db = tmp_path / "team.sqlite"
    weights, tok = studio_weights
    for cmd in (["app.dataset", "import-grefcoco", "--db", str(db), str(tmp_path / "syn")],
                ["app.curate", "negatives", "--db", str(db), "--weights", str(weights), "--per-image", "3", "--json"]):
        r = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    store = Store(db)
    total = negative_queue(store, 0, 100, "open")[1]
    assert total >= 4

    def decided() -> int:
        return store.read("SELECT COUNT(*) FROM negatives WHERE decision <> ''")[0][0]

    proc, url = start_server(weights, tok, db, ["--auth", "ann:ann-pw:annotator"])
    try:
        page = _login(chromium, url, "ann", "ann-pw")
        page.get_by_role("tab", name="Negatives").click()
        _wait_text(page, "#verify-info", f"1 / {total} to decide")
        page.wait_for_timeout(500)
        page.locator("body").click(position={"x": 5, "y": 5})
        hold_key(page, "y")
        _wait_text(page, "#verify-msg", "no target")
        page.wait_for_timeout(1500)
        assert decided() == 1
        _wait_text(page, "#verify-info", f"1 / {total - 1} to decide")
        page.wait_for_timeout(500)
        page.keyboard.press("y")
        page.wait_for_timeout(80)
        page.keyboard.press("y")
        _wait_text(page, "#verify-info", f"1 / {total - 2} to decide")
        page.wait_for_timeout(1500)
        assert decided() == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert store.read("SELECT COUNT(*) FROM refs WHERE annotator = 'ann' AND no_target = 1")[0][0] == 2
