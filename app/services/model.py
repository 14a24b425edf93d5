"""The model every session shares, and the identity of the image features computed with it.

A session keeps the features of its open image (``Session.image_state``) under a *features key*
``"<model version>:<source>"`` (``source``: ``store:<image id>`` or the upload's content hash);
loading other weights bumps the version, so features of the old model are never reused. The
server keeps recent features in one :class:`~.features.FeatureCache` (bounded in bytes; the
prefetch of :mod:`.prefetch` fills it) and runs interactive work before background work
(:class:`~.features.Priority`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from deris_core.predictor import ImageState, Predictor

from ..store import Store, StoreError, model_name_problem
from ..store.models import file_sha256, pin_problem
from .errors import NoModel
from .features import DEFAULT_CACHE_BYTES, FeatureCache, Priority

log = logging.getLogger(__name__)


class ModelHolder:
    """The shared predictor and a description of where its weights came from."""

    def __init__(self, predictor: Predictor | None, description: str, note: str = "",
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.predictor = predictor
        self.description = description
        self.note = note
        self.version = 0  # bumped on every load: cached image features of older models are stale
        self.cache = FeatureCache(cache_bytes)  # recent and prefetched image features of the server
        self.priority = Priority()  # interactive requests before prefetching
        self.changed_by = ""  # who loaded the current weights in the app, and when (0: as launched)
        self.changed_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> Predictor:
        if self.predictor is None:
            raise NoModel(f"No model is loaded: {self.note or self.description}")
        return self.predictor

    def features_key(self, source: str) -> str:
        """The key of features of ``source`` computed by the current model."""
        return f"{self.version}:{source}"

    def is_current(self, key: str | None) -> bool:
        """Whether features stored under ``key`` came from the model loaded now."""
        return bool(key) and str(key).split(":", 1)[0] == str(self.version)

    def encode(self, rgb) -> ImageState:
        """The image's features (the expensive half of a prediction, done once per open image)."""
        with self.priority.interactive():
            return self.get().set_image(rgb)

    def cached(self, source: str) -> ImageState | None:
        """Features of ``source`` by the current model already in the server's cache (or being
        prefetched: then this waits for them), else None."""
        return self.cache.wait(self.features_key(source))

    def features(self, source: str, rgb) -> ImageState:
        """The features of ``source`` (pixels ``rgb``): from the cache, else encoded now and kept."""
        key = self.features_key(source)
        state = self.cache.wait(key)
        if state is None:
            state = self.encode(rgb)
            if self.features_key(source) == key:  # not computed by a model replaced meanwhile
                self.cache.put(key, state)
        return state

    def notice(self) -> str:
        """One line for every session after a switch: what runs now, who loaded it, when ("" before any)."""
        if not self.changed_at:
            return ""
        when = time.strftime("%H:%M", time.localtime(self.changed_at))
        return f"The model was switched to {self.description} by {self.changed_by or 'someone'} at {when}."

    def load(self, weights: str, device: str = "auto", name: str = "", by: str = "") -> str:
        """Load other weights for everyone (only what the operator allowed at launch reaches this),
        in the precision the studio runs (``launch.py --dtype``); ``name`` (a registered model's)
        replaces the weights' own description on the model line."""
        from deris_core.weights import load_predictor

        dtype = self.predictor.precision.requested if self.predictor is not None else None
        with self._lock:
            predictor = load_predictor(weights or None, device=device, dtype=dtype)
            self.predictor = predictor
            self.description = name or getattr(predictor, "description", str(weights))
            self.note = ""
            self.version += 1
            self.cache.clear()  # features of the old model are never used again
            self.changed_by, self.changed_at = by, time.time()
        log.info("model loaded for everyone: %s", self.description)
        return self.description


FINE_TUNED = " (fine-tuned here)"  # the Model panel's mark of a model registered in the store


def allowed_weights(store: Store, specs: list[str]) -> dict[str, str]:
    """The Model panel's entries for ``--allow-weights``: label -> weights spec. A model registered in
    the store (``python -m app.curate promote``) is allowed by its name and shown as
    ``NAME (fine-tuned here)``; a path is shown by its file name only, a published name as it is."""
    out: dict[str, str] = {}
    for w in specs:
        rec = store.model(w) if model_name_problem(w) is None and not Path(w).exists() else None
        if rec is not None:
            if not Path(rec.weights).is_file():
                raise StoreError(f"--allow-weights {w}: the registered model's weights file is gone "
                                 f"({Path(rec.weights).name} in {Path(rec.weights).parent.name}/)")
            problem = pin_problem(rec, file_sha256(rec.weights)) if rec.weights_sha256 else None
            if problem:  # the registry pinned the weights it checked: another file is not that model
                raise StoreError(f"--allow-weights {w}: {problem}")
            out[f"{rec.name}{FINE_TUNED}"] = rec.weights
        else:
            out[Path(w).name if os.sep in w or Path(w).suffix else w] = w
    return out
