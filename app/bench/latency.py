"""Server-side latency of the studio's two hot paths: ``python -m app.bench latency``.

*Enter*: predict on the cached image, build the target set from the referred candidates
(full-size masks of those only), render the overlay, the candidate list and the gallery, and
encode every image the way Gradio does before sending it (``IMAGE_FORMAT``). *Threshold
change*: re-threshold the cached prediction (no network call), rebuild the target set with
an undo step, render and encode again; the score threshold alternates between the model's
default and one that admits the top three candidates, so both directions are timed.
Everything runs on the same :class:`~app.viewkit.session.Session` the UI handlers use.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Callable

import cv2
import numpy as np

from deris_core.predictor import ImageState, Prediction, Predictor

from ..viewkit.overlay import IMAGE_FORMAT
from ..viewkit.session import Session
from ..views.shell import render


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth colour fields plus mild sensor noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3)).astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base.astype(np.int16) + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def _encode(images: list[np.ndarray], cache_dir: str) -> None:
    from gradio import processing_utils  # what gr.Image / gr.Gallery do with a numpy output

    for img in images:
        processing_utils.save_img_array_to_cache(img, cache_dir, format=IMAGE_FORMAT)


def render_and_encode(sess: Session, cache_dir: str) -> None:
    """Everything the Annotate view sends after an action (the views' own ``shell.render``: the canvas's
    value with its RLE targets, the picture and candidate masks it serves from memory, verdict,
    candidate list, gallery, parts line), the gallery's images encoded the way Gradio does
    (also used by ``python -m app.bench annotate``)."""
    assert sess.image is not None
    _encode([g for g, _ in render(sess).gallery], cache_dir)


def _median_ms(fn: Callable[[], None], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def measure(predictor: Predictor, image: np.ndarray, predict: Callable[[ImageState], Prediction],
            runs: int = 20, warmup: int = 3) -> dict:
    """Median latency of Enter and of a threshold change on ``image`` (its features cached first)."""
    cache_dir = tempfile.mkdtemp(prefix="deris_latency_")
    state = predictor.set_image(image)
    sess = Session(image=image, image_state=state, features_key="bench")

    def enter() -> None:
        sess.apply_prediction(predict(state))  # what the segment handler does
        render_and_encode(sess, cache_dir)

    enter_stats = _median_ms(enter, runs, warmup)
    first = sess.prediction
    assert first is not None
    ranked = np.sort(first.scores)[::-1]
    low = float((ranked[2] + ranked[3]) / 2) if len(ranked) > 3 else 0.0
    thresholds = [low, float(first.score_threshold)]
    flip = [0]

    def rethreshold() -> None:
        flip[0] ^= 1
        sess.rethreshold(thresholds[flip[0] - 1], sess.prediction.mask_threshold)  # type: ignore[union-attr]
        render_and_encode(sess, cache_dir)

    return {
        "image_size": [int(image.shape[0]), int(image.shape[1])],
        "candidates": first.num_candidates,
        "image_format": IMAGE_FORMAT,
        "enter": enter_stats,
        "threshold_change": _median_ms(rethreshold, runs, warmup),
    }


def app_latency(config: str, device: str = "cpu", dtype: str = "fp32", runs: int = 20, warmup: int = 3) -> dict:
    """Latency of Enter and of a threshold change: the bundled model on its 128x128 example
    (``config="bundled"``), or a published config (random weights, fixed token ids) on a 1024x768 photo."""
    if config == "bundled":
        from deris_core.weights import BUNDLED_DIR, load_predictor

        predictor = load_predictor("bundled", device=device, dtype=dtype)
        image = np.ascontiguousarray(cv2.imread(str(BUNDLED_DIR.parents[0] / "examples" / "shapes_4.png"))[:, :, ::-1])
        r = measure(predictor, image, lambda state: predictor.predict("the yellow circle", image=state), runs, warmup)
    else:
        from deris_core.tools.bench_setup import build

        predictor, fixed = build(config, device, dtype)
        ids, mask = fixed.batch(1)
        r = measure(predictor, synthetic_photo(768, 1024), lambda state: predictor.predict_tokens(ids, mask, image=state)[0],
                    runs, warmup)
    return {"config": config, "dtype": dtype, "device": device, **r}
