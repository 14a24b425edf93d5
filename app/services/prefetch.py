"""The next image's features, computed while the annotator works on the current one.

After a session opens a collection image, :meth:`Prefetcher.schedule` asks for the features of the
image PgDn / D would open next under that session's filter and order; one background worker
computes them into the server's :class:`~.features.FeatureCache`, where opening that image finds
them (no decoding, no encoder: the kept expression runs on them at once).

Bounds: one image ahead per session (a newer request of the same session replaces the older, and
stops it if it is running); the cache's cap in bytes for the whole server; and interactive work
first (:class:`~.features.Priority`): a prefetch starts only when no interactive request runs, and
pauses before each encoder block while one does, so an interactive request shares the CPU with at
most one block of a prefetch. A change of the filter or the order cancels the session's prefetch.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field

from ..errors import StudioError
from ..store import Store
from ..store.queue import ImageFilter
from .model import ModelHolder
from .queue import Queue

log = logging.getLogger(__name__)


class _Cancelled(StudioError):
    """Raised at an encoder pause point to abandon a prefetch."""


@dataclass
class _Job:
    client: str
    flt: ImageFilter
    image_id: int  # the image the session has open; the job prefetches its successor
    seq: int
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class PrefetchStats:
    scheduled: int = 0
    encoded: int = 0  # features computed and kept
    already: int = 0  # the next image's features were already cached
    cancelled: int = 0
    failed: int = 0


class Prefetcher:
    """One background worker computing each session's next image, interactive work first."""

    def __init__(self, model: ModelHolder, store: Store, max_image_side: int = 4096) -> None:
        self.model, self.store, self.queue, self.max_image_side = model, store, Queue(store), max_image_side
        self.stats = PrefetchStats()
        self._jobs: dict[str, _Job] = {}  # waiting, one per session
        self._running: _Job | None = None
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- what the views call ---------------------------------------------------------------

    def schedule(self, client: str | None, flt: ImageFilter, image_id: int | None) -> None:
        """After ``client`` opened ``image_id`` under ``flt``: prefetch the image after it (replacing
        the session's earlier request)."""
        if not client or image_id is None or self.model is None or self.model.predictor is None or self._closed:
            return
        if self.model.cache.cap_bytes <= 0:  # no room to keep it (--feature-cache-mb 0, ZeroGPU): off
            return
        with self._wake:
            self._cancel_locked(client, count=False)
            self._jobs[client] = _Job(client, flt, int(image_id), next(self._seq))
            self.stats.scheduled += 1
            self._idle.clear()
            self._start_locked()
            self._wake.notify()

    def cancel(self, client: str | None) -> None:
        """The session's filter or order changed (or it left): drop its waiting or running prefetch."""
        if client:
            with self._wake:
                self._cancel_locked(client)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing waits or runs (tests, benchmarks)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            for client in list(self._jobs):
                self._cancel_locked(client)
            if self._running is not None:
                self._running.cancelled.set()
            self._wake.notify_all()

    # --- the worker ---------------------------------------------------------------------

    def _cancel_locked(self, client: str, count: bool = True) -> None:
        job = self._jobs.pop(client, None)
        if job is not None and count:
            self.stats.cancelled += 1
        running = self._running
        if running is not None and running.client == client and not running.cancelled.is_set():
            running.cancelled.set()
            self.stats.cancelled += 1

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="deris-prefetch", daemon=True)
            self._thread.start()

    def _next_job(self) -> _Job | None:
        with self._wake:
            while not self._jobs and not self._closed:
                self._running = None
                self._idle.set()
                self._wake.wait()
            if self._closed:
                self._running = None
                self._idle.set()
                return None
            client = min(self._jobs, key=lambda c: self._jobs[c].seq)  # oldest request first
            self._running = self._jobs.pop(client)
            return self._running

    def _work(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._prefetch(job)
            except _Cancelled:
                log.debug("prefetch for %s cancelled", job.client)
            except Exception:  # a background convenience: never let it take the server down
                self.stats.failed += 1
                log.exception("prefetch after image %s failed", job.image_id)

    def _pause(self, job: _Job) -> None:
        """Between encoder blocks: wait while interactive work runs; stop if cancelled."""
        while not self.model.priority.wait_idle(0.5):
            if job.cancelled.is_set():
                break
        if job.cancelled.is_set():
            raise _Cancelled

    def _prefetch(self, job: _Job) -> None:
        self._pause(job)
        target = self.queue.neighbour(job.flt, job.image_id, 1)
        if target is None:
            return
        source = f"store:{target}"
        key = self.model.features_key(source)
        if key in self.model.cache:
            self.stats.already += 1
            return
        if not self.model.cache.begin(key):  # another session's prefetch computes it
            self.stats.already += 1
            return
        try:
            rgb = self.store.load_image(target)
            if rgb is None or max(rgb.shape[:2]) > self.max_image_side:
                return  # opening it says why; nothing to prepare
            self._pause(job)
            state = self.model.get().set_image(rgb, pause=lambda: self._pause(job))
            if self.model.features_key(source) == key:
                self.model.cache.put(key, state)
                self.stats.encoded += 1
                log.debug("prefetched image %s for %s", target, job.client)
        finally:
            self.model.cache.end(key)
