"""The server's image features: a cache bounded in bytes, and who may run the encoder when.

:class:`FeatureCache` keeps :class:`~deris_core.predictor.ImageState` objects under their features
keys (:meth:`~app.services.model.ModelHolder.features_key`), least recently used first out, never
more than its cap in bytes (the features' tensors plus the picture they hold). An image whose
features are being computed in the background is *pending*: asking for it waits for that work
instead of starting it again.

:class:`Priority` is the one rule between interactive work and background work: interactive
requests (an image opened, an expression run) never wait for anything it knows of; background work
(:mod:`.prefetch`) starts only when no interactive request is running, and pauses between encoder
blocks while one is (``Predictor.set_image(pause=...)``). It also holds off for a moment after one
ended (``quiet_s``): the page that asked is still drawing the answer, often on the same CPU (the
studio on a laptop), and a background encoder started at once would slow that drawing down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np
import torch

from deris_core.predictor import ImageState

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 1 << 30  # launch.py --feature-cache-mb


def state_nbytes(state: ImageState) -> int:
    """Bytes held by an image's features and picture (each tensor storage counted once)."""
    seen: set[int] = set()
    total = 0

    def walk(obj: Any) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(obj, np.ndarray):
            total += obj.nbytes
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name))
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                walk(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                walk(o)

    walk(state)
    return total


class FeatureCache:
    """Image features by key, at most ``cap_bytes`` in all (least recently used evicted first)."""

    def __init__(self, cap_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.cap_bytes = int(cap_bytes)
        self._items: OrderedDict[str, tuple[ImageState, int]] = OrderedDict()
        self._pending: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.evictions = 0

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> ImageState | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, state: ImageState) -> bool:
        """Keep ``state`` (evicting the least recently used); False when it alone exceeds the cap."""
        size = state_nbytes(state)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if size > self.cap_bytes:
                return False
            while self._items and self.nbytes + size > self.cap_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self.nbytes -= freed
                self.evictions += 1
            self._items[key] = (state, size)
            self.nbytes += size
            return True

    def resize(self, cap_bytes: int) -> None:
        """Another cap (evicting at once what no longer fits)."""
        with self._lock:
            self.cap_bytes = int(cap_bytes)
            while self._items and self.nbytes > self.cap_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self.nbytes -= freed
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    # --- work in progress ------------------------------------------------------------------

    def begin(self, key: str) -> bool:
        """Mark ``key`` as being computed; False when it already is."""
        with self._lock:
            if key in self._pending:
                return False
            self._pending[key] = threading.Event()
            return True

    def end(self, key: str) -> None:
        """The work on ``key`` finished (stored, failed or abandoned): wake whoever waits for it."""
        with self._lock:
            event = self._pending.pop(key, None)
        if event is not None:
            event.set()

    def wait(self, key: str, timeout: float | None = None) -> ImageState | None:
        """The features of ``key``, waiting for work in progress on them; None when there are none."""
        with self._lock:
            event = self._pending.get(key)
        if event is not None:
            event.wait(timeout)
        return self.get(key)


class Priority:
    """Interactive requests first: background work waits while any is running, and ``quiet_s`` after
    the last one ended (see the module doc)."""

    QUIET_S = 0.3  # the page draws what it got (a picture, a few targets) in about this long

    def __init__(self, quiet_s: float = QUIET_S) -> None:
        self.quiet_s = float(quiet_s)
        self._running = 0
        self._last_end = float("-inf")
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def interactive(self) -> Iterator[None]:
        """Around interactive model work: it starts at once; background work holds off meanwhile."""
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._last_end = time.monotonic()
                if not self._running:
                    self._idle.notify_all()

    @property
    def busy(self) -> bool:
        return self._running > 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block while interactive work runs or ended less than ``quiet_s`` ago (background work calls
        this before and during each step); False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while True:
                now = time.monotonic()
                left = None if deadline is None else deadline - now
                if self._running == 0:
                    quiet_left = self._last_end + self.quiet_s - now
                    if quiet_left <= 0:
                        return True
                    wait = quiet_left if left is None else min(quiet_left, left)
                else:
                    wait = left
                if left is not None and left <= 0:
                    return False
                self._idle.wait(wait)
