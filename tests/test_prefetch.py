"""The next image's features prepared in the background (app/services/prefetch.py, features.py):
used when the next image opens, cancelled when the filter changes, bounded in memory, and never in
the way of an interactive request."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.services import ModelHolder, Services
from app.services import image_digest
from app.services.features import FeatureCache, Priority, state_nbytes
from app.viewkit.session import Session
from app.store import Store
from app.views import annotate

ANY = ("", "", "", "")  # the four queue filters, empty


class CountingPredictor:
    """The real predictor, counting image encodes; ``encode_s``: each encode also takes this long, in
    ``steps`` equal sleeps each preceded by the encoder's pause point (a slow encoder stand-in);
    ``predict_s``: each prediction also takes this long."""

    def __init__(self, real, encode_s: float = 0.0, steps: int = 1, predict_s: float = 0.0) -> None:
        self.real, self.encode_s, self.steps, self.predict_s = real, encode_s, steps, predict_s
        self.encodes = 0
        self.interactive_encodes = 0  # those not on the prefetch worker's thread
        self.steps_done: list[float] = []  # when each slow encoder step finished
        self.predict_started: list[float] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def set_image(self, rgb, pause=None):
        with self._lock:
            self.encodes += 1
            self.interactive_encodes += threading.current_thread().name != "deris-prefetch"
        for _ in range(self.steps if self.encode_s else 0):
            if pause is not None:
                pause()
            time.sleep(self.encode_s / self.steps)
            self.steps_done.append(time.perf_counter())
        return self.real.set_image(rgb)

    def predict(self, *args, **kwargs):
        self.predict_started.append(time.perf_counter())
        time.sleep(self.predict_s)
        return self.real.predict(*args, **kwargs)


@pytest.fixture(scope="module")
def predictor(studio_weights):
    from deris_core.weights import load_predictor

    return load_predictor(str(studio_weights[0]))


def _services(tmp_path: Path, predictor, images: int = 6, cache_bytes: int = 1 << 30) -> Services:
    svc = Services(ModelHolder(predictor, "test model", cache_bytes=cache_bytes), Store(tmp_path / "p.sqlite"))
    rng = np.random.default_rng(0)
    for k in range(images):
        svc.store.add_image(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), file_name=f"photo_{k}.png")
    return svc


def _request(client: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=client, username=None)


def _step(svc: Services, sess: Session, client: str, flt=ANY, text: str = "", order: str = ""):
    out = annotate.step_image(svc, 1, False, sess, bool(text), text, 0.5, 0.5, *flt, order, request=_request(client))
    return out.rendered.sess  # the new session


def test_the_next_image_opens_on_prefetched_features_without_the_encoder(tmp_path: Path, predictor) -> None:
    counting = CountingPredictor(predictor)
    svc = _services(tmp_path, counting)
    try:
        sess = _step(svc, Session(), "a")  # image 1: encoded now, image 2 prefetched
        assert sess.image_id == 1 and counting.interactive_encodes == 1
        assert svc.prefetch.wait_idle(30)
        assert svc.prefetch.stats.encoded == 1 and svc.model.cache.get(svc.model.features_key("store:2")) is not None
        assert counting.encodes == 2
        sess = _step(svc, sess, "a", text="the red circle")  # the kept expression runs at once
        assert sess.image_id == 2 and counting.interactive_encodes == 1, "the next image ran the encoder again"
        assert sess.prediction is not None and sess.prediction.expression == "the red circle"
        assert sess.image_state is svc.model.cache.get(svc.model.features_key("store:2"))
        np.testing.assert_array_equal(sess.image, svc.store.load_image(2))
        assert svc.prefetch.wait_idle(30) and svc.prefetch.stats.encoded == 2  # image 3 next
    finally:
        svc.prefetch.close()


def test_a_filter_change_cancels_the_prefetch_and_asks_for_the_new_next_image(tmp_path: Path, predictor) -> None:
    slow = CountingPredictor(predictor, encode_s=1.0, steps=20)
    svc = _services(tmp_path, slow)
    try:
        sess = svc.workspace.open_image(1)  # image 1 open; next by id: 2, next under "photo_4": 5
        annotate.prefetch_next(svc, 1, annotate.image_filter(*ANY), _request("a"))
        deadline = time.monotonic() + 10
        while not slow.steps_done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.steps_done, "the prefetch did not start"
        annotate.refilter(svc, sess, "photo_4", "", "", "", "", request=_request("a"))
        assert svc.prefetch.wait_idle(30)
        assert svc.prefetch.stats.cancelled == 1
        assert svc.model.features_key("store:2") not in svc.model.cache, "the cancelled prefetch was kept"
        assert svc.model.features_key("store:5") in svc.model.cache  # the next image of the new filter
    finally:
        svc.prefetch.close()


def test_the_feature_cache_stays_under_its_cap_with_16_sessions(tmp_path: Path, predictor) -> None:
    one = state_nbytes(predictor.set_image(np.zeros((40, 48, 3), np.uint8)))
    cap = int(3.5 * one)
    svc = _services(tmp_path, predictor, images=20, cache_bytes=cap)
    try:
        high = 0
        sessions = {f"client{k}": Session() for k in range(16)}
        for k, client in enumerate(sessions):
            sessions[client] = svc.workspace.open_image(k + 1)
            annotate.prefetch_next(svc, k + 1, annotate.image_filter(*ANY), _request(client))
            high = max(high, svc.model.cache.nbytes)
        assert svc.prefetch.wait_idle(60)
        for client, sess in sessions.items():  # each moves on: the prefetched image, or the encoder
            sessions[client] = _step(svc, sess, client)
            high = max(high, svc.model.cache.nbytes)
        assert svc.prefetch.wait_idle(60)
        assert high <= cap and svc.model.cache.nbytes <= cap and len(svc.model.cache) == 3
        assert svc.model.cache.evictions > 0
    finally:
        svc.prefetch.close()


def test_an_interactive_request_never_waits_for_a_running_prefetch(tmp_path: Path, predictor) -> None:
    """A 1 s encoder stand-in without pause points (the worst case): an Enter on another session's
    image starts at once, not after the prefetch."""
    slow = CountingPredictor(predictor, encode_s=1.0, steps=1)
    svc = _services(tmp_path, predictor)
    try:
        other = svc.workspace.open_image(4)
        svc.model.predictor = slow
        annotate.prefetch_next(svc, 1, annotate.image_filter(*ANY), _request("a"))  # prefetches image 2
        time.sleep(svc.prefetch.settle_s + 0.2)  # the prefetch is inside its 1 s encode
        assert slow.encodes == 1
        t0 = time.perf_counter()
        annotate.segment(svc, None, "the red circle", 0.5, 0.5, other, request=_request("b"))
        waited = slow.predict_started[0] - t0
        assert waited < 0.5, f"the interactive request waited {waited:.2f} s behind the prefetch"
        assert svc.prefetch.wait_idle(30) and svc.prefetch.stats.encoded == 1
    finally:
        svc.prefetch.close()


def _prefetch_under_way(svc: Services, slow: CountingPredictor) -> Session:
    """Image 4 open (encoded by the real predictor), then ``slow`` as the model and client "a"'s prefetch
    after image 1 three blocks into its encoder; returns image 4's session."""
    other = svc.workspace.open_image(4)
    svc.model.predictor = slow
    annotate.prefetch_next(svc, 1, annotate.image_filter(*ANY), _request("a"))
    deadline = time.monotonic() + 10
    while len(slow.steps_done) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(slow.steps_done) >= 3, "the prefetch did not start"
    return other


def test_a_prefetch_pauses_between_encoder_blocks_while_interactive_work_runs(tmp_path: Path, predictor) -> None:
    """The stand-in encoder has 20 blocks of 50 ms; an interactive prediction of 0.5 s runs while it
    is under way: at most the block already started finishes meanwhile."""
    slow = CountingPredictor(predictor, encode_s=1.0, steps=20, predict_s=0.5)
    svc = _services(tmp_path, predictor)
    try:
        other = _prefetch_under_way(svc, slow)
        t0 = time.perf_counter()
        svc.workspace.predict(other, "the red circle", 0.5, 0.5)
        t1 = time.perf_counter()
        during = [t for t in slow.steps_done if t0 < t < t1]
        assert len(during) <= 1, f"{len(during)} prefetch blocks ran during the interactive request"
        assert svc.prefetch.wait_idle(30) and svc.prefetch.stats.encoded == 1
        assert len(slow.steps_done) == 20
    finally:
        svc.prefetch.close()


def test_a_prefetch_pauses_while_the_typed_expression_runs(tmp_path: Path, predictor) -> None:
    """The annotator's Enter on the open image comes before their PgDn: while the run of the typed
    expression (0.5 s, app.services.speculate) goes on, a prefetch under way (20 blocks of 50 ms)
    finishes at most the block it had started."""
    slow = CountingPredictor(predictor, encode_s=1.0, steps=20, predict_s=0.5)
    svc = _services(tmp_path, predictor)
    try:
        other = _prefetch_under_way(svc, slow)
        deadline = time.monotonic() + 10
        annotate.speculate(svc, "the red circle", 0.5, 0.5, other, request=_request("b"))
        while not slow.predict_started and time.monotonic() < deadline:
            time.sleep(0.005)
        assert slow.predict_started, "the typed expression did not run"
        t0 = slow.predict_started[0]
        assert svc.speculation.wait_idle(30)
        t1 = time.perf_counter()
        during = [t for t in slow.steps_done if t0 < t < t1]
        assert len(during) <= 1, f"{len(during)} prefetch blocks ran beside the typed expression's run"
        assert svc.prefetch.wait_idle(30) and svc.prefetch.stats.encoded == 1 and len(slow.steps_done) == 20
    finally:
        svc.prefetch.close()
        svc.speculation.close()


def test_a_prefetch_starts_once_the_page_had_time_to_draw_the_image_it_opened(tmp_path: Path, predictor) -> None:
    counting = CountingPredictor(predictor)
    svc = _services(tmp_path, counting)
    svc.prefetch.settle_s = 0.6
    try:
        svc.workspace.open_image(1)
        annotate.prefetch_next(svc, 1, annotate.image_filter(*ANY), _request("a"))
        time.sleep(0.3)
        assert counting.encodes == counting.interactive_encodes, "the prefetch started while the page drew"
        assert svc.prefetch.wait_idle(30) and svc.prefetch.stats.encoded == 1
    finally:
        svc.prefetch.close()


def test_background_work_holds_off_a_moment_after_an_interactive_request() -> None:
    priority = Priority(quiet_s=0.3)
    assert priority.wait_idle(0)
    with priority.interactive():
        assert not priority.wait_idle(0.05)
    t0 = time.monotonic()
    assert not priority.wait_idle(0.1), "background work started while the page drew the answer"
    assert priority.wait_idle(2) and time.monotonic() - t0 >= 0.25


def test_the_kept_expression_runs_on_the_next_image_and_its_picture_is_ready(tmp_path: Path, predictor) -> None:
    """PgDn with the expression kept costs the drawing only: the next image's features, its encoded
    picture and the kept expression's prediction were made in the background."""
    from app.views.canvas import PAYLOADS, prepare_picture

    counting = CountingPredictor(predictor)
    svc = _services(tmp_path, counting)
    svc.prefetch.on_ready(prepare_picture)  # as the Annotate view's wiring does
    PAYLOADS.clear()
    try:
        sess = _step(svc, Session(), "a", text="the red circle")  # image 1, its run; image 2 prepared
        assert svc.prefetch.wait_idle(30) and svc.speculation.wait_idle(30)
        assert PAYLOADS.get("img:" + image_digest(svc.store.load_image(2))) is not None, "the picture was not encoded"
        runs = len(counting.predict_started)
        sess = _step(svc, sess, "a", text="the red circle")
        assert sess.image_id == 2 and sess.prediction.expression == "the red circle"
        assert len(counting.predict_started) == runs, "opening the next image ran the model"
        assert svc.speculation.stats.hits == 1
        # a new text typed on image 2 (kept): the run on image 3 follows it
        assert svc.prefetch.wait_idle(30) and svc.speculation.wait_idle(30)
        annotate.speculate(svc, "the blue square", 0.5, 0.5, sess, True, request=_request("a"))
        assert svc.speculation.wait_idle(30)
        runs = len(counting.predict_started)
        sess = _step(svc, sess, "a", text="the blue square")
        assert sess.image_id == 3 and len(counting.predict_started) == runs
        assert sess.prediction.expression == "the blue square" and svc.speculation.stats.hits == 2
        # without the expression kept, nothing is run on the next image
        assert svc.prefetch.wait_idle(30) and svc.speculation.wait_idle(30)
        ran = svc.speculation.stats.ran
        sess = _step(svc, sess, "a")
        assert svc.prefetch.wait_idle(30) and svc.speculation.wait_idle(30)
        assert sess.image_id == 4 and svc.speculation.stats.ran == ran
    finally:
        svc.prefetch.close()
        svc.speculation.close()


def test_the_page_learns_the_prepared_next_picture_by_its_own_ticket_only(tmp_path: Path, predictor) -> None:
    """The canvas asks (``upcoming_for``, its ``canvas_upcoming`` server call) for the picture PgDn will
    open: nothing before the prefetch prepared it, then that picture's key and size; another ticket
    gets nothing; a filter change withdraws it until the new next image is prepared."""
    from app.views.canvas import PAYLOADS, canvas_value, prepare_picture

    svc = _services(tmp_path, CountingPredictor(predictor, encode_s=0.3, steps=3))
    svc.prefetch.on_ready(prepare_picture)
    PAYLOADS.clear()
    try:
        sess = _step(svc, Session(), "a")  # image 1 open, image 2 asked for
        ticket = canvas_value(sess)["ticket"]
        assert ticket == sess.ticket and annotate.upcoming_for(svc, ticket) is None  # not prepared yet
        assert svc.prefetch.wait_idle(30)
        rgb = svc.store.load_image(2)
        assert annotate.upcoming_for(svc, ticket) == {"image": image_digest(rgb), "w": 48, "h": 40}
        assert annotate.upcoming_for(svc, Session().ticket) is None and annotate.upcoming_for(svc, "") is None
        annotate.refilter(svc, sess, "photo_4", "", "", "", "", request=_request("a"))
        assert annotate.upcoming_for(svc, ticket) is None  # withdrawn at once
        assert svc.prefetch.wait_idle(30)
        assert annotate.upcoming_for(svc, ticket)["image"] == image_digest(svc.store.load_image(5))
        sess = _step(svc, sess, "a")  # another image opened: its session has a new ticket, asked for anew
        assert annotate.upcoming_for(svc, ticket) is None
        assert canvas_value(sess, readonly=True).get("ticket") is None  # read-only canvases never ask
    finally:
        svc.prefetch.close()


def test_the_feature_cache_evicts_the_least_recently_used_first(predictor) -> None:
    state = predictor.set_image(np.zeros((40, 48, 3), np.uint8))
    size = state_nbytes(state)
    assert size > state.image.nbytes  # the features count, not only the picture
    cache = FeatureCache(2 * size + 10)
    cache.put("0:a", state)
    cache.put("0:b", state)
    assert cache.get("0:a") is state  # a is now the most recent
    cache.put("0:c", state)
    assert "0:b" not in cache and "0:a" in cache and "0:c" in cache and cache.nbytes == 2 * size
    assert not FeatureCache(size - 1).put("0:a", state)  # larger than the cap alone: not kept


def test_a_background_encode_pauses_before_every_encoder_block_and_can_be_abandoned(predictor) -> None:
    from deris_core.model.pixel_decoder import DeformableEncoderLayer, PixelDecoder
    from deris_core.model.swin import SwinBlock

    modules = list(predictor.model.modules())
    blocks = (sum(isinstance(m, (SwinBlock, DeformableEncoderLayer)) for m in modules)
              + 2 * sum(isinstance(m, PixelDecoder) for m in modules) + 1)  # + its output convs, BEiT-3's embedding
    calls = []
    rgb = np.zeros((40, 48, 3), np.uint8)
    state = predictor.set_image(rgb, pause=lambda: calls.append(threading.get_ident()))
    assert len(calls) == blocks and set(calls) == {threading.get_ident()}
    predictor.set_image(rgb)  # without pause: nothing called
    assert len(calls) == blocks

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predictor.set_image(rgb, pause=stop)
    again = predictor.set_image(rgb)  # nothing left behind by the abandoned encode
    assert torch_equal(again.features.vision_tokens, state.features.vision_tokens)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_without_room_for_features_nothing_is_prefetched(tmp_path: Path, predictor) -> None:
    counting = CountingPredictor(predictor)
    svc = _services(tmp_path, counting, cache_bytes=0)  # --feature-cache-mb 0 (and ZeroGPU)
    sess = _step(svc, Session(), "a")
    assert sess.image_id == 1 and svc.prefetch.stats.scheduled == 0 and len(svc.model.cache) == 0
    assert counting.encodes == 1
