"""The expression run while the annotator types (app/services/speculate.py): Enter with the same
text takes its answer (the model runs once), another text or thresholds run the model as before, a
run under way is waited for instead of started twice, interactive work never waits for it, and the
kept answers are bounded."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.services import ModelHolder, Services
from app.services.speculate import Ask, Speculator
from app.store import Store
from app.viewkit.session import Session
from app.views import annotate

TEXT, OTHER = "the red circle", "all blue squares"


class SlowPredictor:
    """The real predictor, counting expression runs; each also takes ``predict_s`` seconds, in ``steps``
    equal sleeps each preceded by the pause point of the expression's pass (a slow model stand-in)."""

    def __init__(self, real, predict_s: float = 0.0, steps: int = 1) -> None:
        self.real, self.predict_s, self.steps = real, predict_s, steps
        self.runs: list[tuple[str, str]] = []  # (thread name, expression) of each run
        self.started: list[tuple[str, float]] = []  # (expression, when) each run started
        self.steps_done: list[tuple[str, float]] = []  # (expression, when) each slow step finished
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict(self, text, *, image=None, score_threshold=None, mask_threshold=None, pause=None):
        with self._lock:
            self.runs.append((threading.current_thread().name, text))
            self.started.append((text, time.perf_counter()))
        for _ in range(self.steps if self.predict_s else 0):
            if pause is not None:
                pause()
            time.sleep(self.predict_s / self.steps)
            self.steps_done.append((text, time.perf_counter()))
        return self.real.predict(text, image=image, score_threshold=score_threshold, mask_threshold=mask_threshold)


@pytest.fixture(scope="module")
def predictor(studio_weights):
    from deris_core.weights import load_predictor

    return load_predictor(str(studio_weights[0]))


def _services(tmp_path: Path, predictor, cache_bytes: int = 1 << 30) -> Services:
    svc = Services(ModelHolder(predictor, "test model", cache_bytes=cache_bytes), Store(tmp_path / "s.sqlite"))
    rng = np.random.default_rng(0)
    for k in range(4):
        svc.store.add_image(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), file_name=f"photo_{k}.png")
    return svc


def _request(client: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=client, username=None)


def _typed(svc: Services, sess: Session, text: str, client: str = "a", st: float = 0.5, mt: float = 0.5) -> None:
    """The page's signal: ``text`` has been still in the expression box."""
    annotate.speculate(svc, text, st, mt, sess, request=_request(client))


def _enter(svc: Services, sess: Session, text: str, client: str = "a", st: float = 0.5, mt: float = 0.5):
    return annotate.segment(svc, None, text, st, mt, sess, request=_request(client))


def _wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cond(), "timed out"


def test_enter_after_a_pause_takes_the_run_made_while_typing(tmp_path: Path, predictor) -> None:
    slow = SlowPredictor(predictor)
    svc = _services(tmp_path, slow)
    try:
        sess = svc.workspace.open_image(1)
        _typed(svc, sess, TEXT)
        assert svc.speculation.wait_idle(30) and svc.speculation.stats.ran == 1
        assert slow.runs == [("deris-speculate", TEXT)]
        out = _enter(svc, sess, "  the red  circle ")  # the same text as the model gets it
        assert len(slow.runs) == 1, "Enter ran the model again"
        assert svc.speculation.stats.hits == 1 and svc.speculation.stats.misses == 0
        expected = predictor.predict(TEXT, image=sess.image_state, score_threshold=0.5, mask_threshold=0.5)
        pred = sess.prediction
        assert pred.expression == TEXT and pred.referred == expected.referred
        np.testing.assert_array_equal(pred.scores, expected.scores)
        np.testing.assert_array_equal(pred.low_res_logits.numpy(), expected.low_res_logits.numpy())
        assert [t.candidate for t in sess.targets] == expected.referred
        assert "existence probability" in out.rendered.verdict  # the verdict, as after any Enter
    finally:
        svc.speculation.close()


def test_the_page_learns_the_typed_answer_and_enter_names_the_same_masks(tmp_path: Path, predictor) -> None:
    """Once the run made while typing has its answer, its candidates' masks are encoded (the view's
    ``prepare_typed`` hook) and the page, by its session's ticket, learns their key; Enter's canvas
    value names that key (the page then draws from the masks it loaded), and another page learns nothing."""
    from app.views.canvas import PAYLOADS, prepare_typed

    svc = _services(tmp_path, SlowPredictor(predictor))
    svc.speculation.on_result(prepare_typed)
    PAYLOADS.clear()
    try:
        sess = svc.sessions.track("a", svc.workspace.open_image(1))
        assert annotate.typed_for(svc, sess.ticket) is None  # nothing typed yet
        _typed(svc, sess, TEXT)
        assert svc.speculation.wait_idle(30)
        answer = annotate.typed_for(svc, sess.ticket)
        assert answer is not None and PAYLOADS.get("pred:" + answer["pred"]) is not None
        assert annotate.typed_for(svc, Session().ticket) is None
        prepared = svc.speculation._prepared["a"][1]  # the copy the hook worked on
        assert set(prepared._cache["part_problems"]) == set(prepared.referred)
        value = _enter(svc, sess, TEXT).rendered.result
        assert value["pred"] == answer["pred"] and svc.speculation.stats.hits == 1
        assert sess.prediction is prepared and "a" not in svc.speculation._prepared  # taken, once
        rows = PAYLOADS.get("pred:" + answer["pred"])
        assert [r["id"] for r in rows if r["referred"]] == sess.prediction.referred
    finally:
        svc.speculation.close()


def test_enter_with_another_text_or_thresholds_runs_the_model(tmp_path: Path, predictor) -> None:
    slow = SlowPredictor(predictor)
    svc = _services(tmp_path, slow)
    try:
        sess = svc.workspace.open_image(1)
        _typed(svc, sess, TEXT)
        assert svc.speculation.wait_idle(30)
        _enter(svc, sess, OTHER)
        assert slow.runs[-1] == ("MainThread", OTHER) and sess.prediction.expression == OTHER
        _enter(svc, sess, TEXT, st=0.6)  # other thresholds: not the kept answer
        assert slow.runs[-1] == ("MainThread", TEXT) and sess.prediction.score_threshold == 0.6
        assert len(slow.runs) == 3 and svc.speculation.stats.misses == 2 and svc.speculation.stats.hits == 0
    finally:
        svc.speculation.close()


def test_enter_during_the_run_waits_for_it_instead_of_starting_a_second(tmp_path: Path, predictor) -> None:
    slow = SlowPredictor(predictor, predict_s=1.0, steps=20)
    svc = _services(tmp_path, slow)
    try:
        sess = svc.workspace.open_image(1)
        _typed(svc, sess, TEXT)
        _wait_for(lambda: len(slow.steps_done) >= 3)
        t0 = time.perf_counter()
        _enter(svc, sess, TEXT)
        took = time.perf_counter() - t0
        assert [r[1] for r in slow.runs] == [TEXT], "Enter started a second run"
        assert svc.speculation.stats.waited == 1 and sess.prediction.expression == TEXT
        # the rest of the run (0.85 s) at full speed, not a second run nor a paused one
        assert took < 1.7, f"Enter took {took:.2f} s"
    finally:
        svc.speculation.close()


def test_a_run_while_typing_never_delays_an_interactive_request(tmp_path: Path, predictor) -> None:
    """Session a's run (20 blocks of 50 ms) is under way when session b presses Enter on its own image:
    b's model call starts at once, and at most the block of a's run already started goes on meanwhile."""
    slow = SlowPredictor(predictor, predict_s=1.0, steps=20)
    svc = _services(tmp_path, slow)
    try:
        mine, other = svc.workspace.open_image(1), svc.workspace.open_image(4)
        _typed(svc, mine, TEXT, client="a")
        _wait_for(lambda: len(slow.steps_done) >= 3)
        t0 = time.perf_counter()
        _enter(svc, other, OTHER, client="b")
        t1 = time.perf_counter()
        started = next(when for text, when in slow.started if text == OTHER)
        assert started - t0 < 0.1, f"the interactive request waited {started - t0:.2f} s behind the run while typing"
        during = [when for text, when in slow.steps_done if text == TEXT and t0 < when < t1]
        assert len(during) <= 1, f"{len(during)} blocks of the run while typing ran during the interactive request"
        assert svc.speculation.wait_idle(30) and svc.speculation.stats.ran == 1  # then it went on
    finally:
        svc.speculation.close()


def test_new_text_replaces_the_run_and_another_image_cancels_it(tmp_path: Path, predictor) -> None:
    slow = SlowPredictor(predictor, predict_s=1.0, steps=20)
    svc = _services(tmp_path, slow)
    try:
        sess = svc.workspace.open_image(1)
        _typed(svc, sess, "the red")
        _wait_for(lambda: len(slow.steps_done) >= 2)
        _typed(svc, sess, TEXT)  # the annotator typed on, then paused again
        assert svc.speculation.wait_idle(30)
        done = {text for text, _ in slow.steps_done}
        assert svc.speculation.stats.cancelled == 1 and svc.speculation.stats.ran == 1
        assert sum(1 for text, _ in slow.steps_done if text == "the red") <= 3, "the replaced run went on"
        assert TEXT in done
        _enter(svc, sess, TEXT)
        assert svc.speculation.stats.hits == 1 and [r[1] for r in slow.runs] == ["the red", TEXT]
        _typed(svc, sess, OTHER)  # then PgDn before the run is done: it stops
        _wait_for(lambda: any(text == OTHER for text, _ in slow.steps_done))
        annotate.step_image(svc, 1, False, sess, False, "", 0.5, 0.5, "", "", "", "", "", request=_request("a"))
        assert svc.speculation.wait_idle(30) and svc.speculation.stats.cancelled == 2
        assert sum(1 for text, _ in slow.steps_done if text == OTHER) <= 3
        assert svc.speculation.stats.ran == 1
    finally:
        svc.speculation.close()
        svc.prefetch.close()


def test_a_model_switch_abandons_the_run_and_its_answer(tmp_path: Path, predictor) -> None:
    slow = SlowPredictor(predictor, predict_s=1.0, steps=20)
    svc = _services(tmp_path, slow)
    try:
        sess = svc.workspace.open_image(1)
        _typed(svc, sess, TEXT)
        _wait_for(lambda: len(slow.steps_done) >= 2)
        svc.model.version += 1  # what ModelHolder.load does to the features of the old model
        svc.model.cache.clear()
        assert svc.speculation.wait_idle(30) and svc.speculation.stats.ran == 0
        assert len(slow.steps_done) <= 3
        slow.predict_s = 0.0
        _enter(svc, sess, TEXT)  # the features are made again, the model runs
        assert svc.speculation.stats.misses == 1 and [r[1] for r in slow.runs] == [TEXT, TEXT]
    finally:
        svc.speculation.close()


def test_the_kept_answers_are_bounded_and_never_changed_by_a_session(predictor) -> None:
    model = ModelHolder(predictor, "test model")
    spec = Speculator(model, max_results=3)
    state = predictor.set_image(np.zeros((40, 48, 3), np.uint8))
    key = model.features_key("store:1")
    asks = [Ask.of(key, f"the shape {k}", 0.5, 0.5) for k in range(5)]
    for ask in asks:
        spec.keep(ask, predictor.predict(ask.text, image=state))
    assert spec.counts()["kept"] == 3
    assert spec.take("a", asks[0]) is None and spec.take("a", asks[1]) is None  # the oldest went first
    got = spec.take("a", asks[4])
    assert got is not None and got.expression == "the shape 4"
    got.masks_384  # a session computes its masks: the kept answer stays as small as it was
    assert spec.take("a", asks[4])._cache == {}
    assert spec.counts()["hits"] == 2


def test_off_without_room_for_features(tmp_path: Path, predictor) -> None:
    slow = SlowPredictor(predictor)
    svc = _services(tmp_path, slow, cache_bytes=0)  # --feature-cache-mb 0 (and ZeroGPU)
    sess = svc.workspace.open_image(1)
    _typed(svc, sess, TEXT)
    assert svc.speculation.stats.scheduled == 0 and slow.runs == []
    _enter(svc, sess, TEXT)
    _enter(svc, sess, TEXT)
    assert [r[0] for r in slow.runs] == ["MainThread", "MainThread"] and svc.speculation.counts()["kept"] == 0


def test_a_background_prediction_pauses_before_every_block_and_can_be_abandoned(predictor) -> None:
    from deris_core.model.beit3 import MultiwayBlock
    from deris_core.model.layers import CrossAttentionLayer
    from deris_core.model.loopback import LoopbackStep

    blocks = sum(isinstance(m, (MultiwayBlock, CrossAttentionLayer, LoopbackStep)) for m in predictor.model.modules())
    state = predictor.set_image(np.zeros((40, 48, 3), np.uint8))
    calls: list[int] = []
    paused = predictor.predict(TEXT, image=state, pause=lambda: calls.append(threading.get_ident()))
    assert len(calls) == blocks > 10 and set(calls) == {threading.get_ident()}
    plain = predictor.predict(TEXT, image=state)  # without pause: nothing called, the same answer
    assert len(calls) == blocks
    np.testing.assert_array_equal(paused.low_res_logits.numpy(), plain.low_res_logits.numpy())

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predictor.predict(TEXT, image=state, pause=stop)
    again = predictor.predict(TEXT, image=state)  # nothing left behind by the abandoned run
    np.testing.assert_array_equal(again.low_res_logits.numpy(), plain.low_res_logits.numpy())
