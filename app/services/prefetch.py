"""The next image's features, computed while the annotator works on the current one.

After a session opens a collection image, :meth:`Prefetcher.schedule` asks for the features of the
image PgDn / D would open next under that session's filter and order; one background worker
computes them into the server's :class:`~.features.FeatureCache`, where opening that image finds
them (no decoding, no encoder). What the page shows of it is prepared too: the hooks given to
:meth:`Prefetcher.on_ready` (the canvas's encoded picture), and, when the session keeps its
expression for the next image, that expression's run on the next image (:mod:`.speculate`, under the
session's own ``#next`` slot), so that PgDn costs the drawing only.

Bounds: one image ahead per session (a newer request of the same session replaces the older, and
stops it if it is running); the cache's cap in bytes for the whole server; and interactive work
first (:class:`~.features.Priority`): a prefetch starts only when no interactive request runs, and
pauses before each encoder block while one does (or while the typed expression's run does), so an
interactive request shares the CPU with at most one block of a prefetch. A job waits ``settle_s``
after it was asked for before it starts: the page that opened the image is drawing it meanwhile,
often on the same CPU. A change of the filter or the order cancels the session's prefetch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import StudioError
from ..store import Store
from ..store.queue import ImageFilter
from .model import ModelHolder
from .queue import Queue
from .speculate import Ask, Speculator
from .worker import SessionWorker

log = logging.getLogger(__name__)

SETTLE_S = 0.4  # a prefetch starts this long after its image opened (the page draws it meanwhile)
_SPECULATION_POLL_S = 0.02  # how often a paused prefetch looks whether the typed expression's run has ended
NEXT = "#next"  # the speculation slot of a session's next image: ``client + NEXT``


class _Cancelled(StudioError):
    """Raised at an encoder pause point to abandon a prefetch."""


@dataclass
class _Job:
    client: str
    flt: ImageFilter
    image_id: int  # the image the session has open; the job prefetches its successor
    seq: int
    not_before: float = 0.0  # time.monotonic() before which it does not start
    expression: tuple[str, float, float] | None = None  # the kept expression and thresholds, to run on it
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class PrefetchStats:
    scheduled: int = 0
    encoded: int = 0  # features computed and kept
    already: int = 0  # the next image's features were already cached
    cancelled: int = 0
    failed: int = 0


class Prefetcher(SessionWorker):
    """One background worker computing each session's next image, interactive work first."""

    thread_name = "deris-prefetch"

    def __init__(self, model: ModelHolder, store: Store, max_image_side: int = 4096,
                 speculation: Speculator | None = None, settle_s: float = SETTLE_S) -> None:
        self.model, self.store, self.queue, self.max_image_side = model, store, Queue(store), max_image_side
        self.speculation, self.settle_s = speculation, float(settle_s)
        self.stats = PrefetchStats()
        self._ready: list[Callable[[int, np.ndarray], None]] = []
        # client -> (features key, id) of the next image prepared for it: its features and the views' hooks done
        self._prepared: dict[str, tuple[str, int]] = {}
        super().__init__()

    # --- what the views call ---------------------------------------------------------------

    def on_ready(self, hook: Callable[[int, np.ndarray], None]) -> None:
        """Call ``hook(image_id, rgb)`` in the worker once a next image's features are ready: a view
        prepares what it will show of that image (its errors are logged, never raised). Once per hook."""
        if hook not in self._ready:
            self._ready.append(hook)

    def schedule(self, client: str | None, flt: ImageFilter, image_id: int | None,
                 expression: tuple[str, float, float] | None = None) -> None:
        """After ``client`` opened ``image_id`` under ``flt``: prefetch the image after it (replacing
        the session's earlier request). ``expression``: ``(text, score_threshold, mask_threshold)``
        the session keeps for the next image, run on it once its features are ready."""
        if not client or image_id is None or self.model is None or self.model.predictor is None or self._closed:
            return
        if self.model.cache.cap_bytes <= 0:  # no room to keep it (--feature-cache-mb 0, ZeroGPU): off
            return
        if expression is not None and not " ".join(str(expression[0] or "").split()):
            expression = None
        with self._wake:
            self._cancel_locked(client, count=False)
            self._jobs[client] = _Job(client, flt, int(image_id), next(self._seq),
                                      time.monotonic() + self.settle_s, expression)
            self.stats.scheduled += 1
            self._idle.clear()
            self._start_locked()
            self._wake.notify()

    def follow(self, client: str | None, expression: tuple[str, float, float] | None) -> None:
        """The session's kept expression (or its thresholds) changed while it works on the open image:
        the run on the next image follows (``None``: the expression is no longer kept)."""
        if not client:
            return
        if expression is not None and not " ".join(str(expression[0] or "").split()):
            expression = None
        with self._wake:
            key = self._prepared.get(client, (None, None))[0]
            job = self._jobs.get(client)
            if job is None and key is None and self._running is not None and self._running.client == client:
                job = self._running
            if job is not None and not job.cancelled.is_set():
                job.expression = expression  # read when its image is prepared (_prepare)
                return
        if self.speculation is None or key is None:
            return
        if expression is None:
            self.speculation.cancel(client + NEXT)
            return
        state = self.model.cache.get(key)
        if state is not None:
            self.speculation.schedule(client + NEXT, Ask.of(key, *expression), state)

    def upcoming(self, client: str | None) -> int | None:
        """The id of the next image prepared for ``client`` (its features and the views' hooks are done),
        or None while it is not (or was cancelled): the page loads that picture ahead of PgDn."""
        with self._wake:
            return self._prepared.get(client or "", (None, None))[1]

    def cancel(self, client: str | None) -> None:
        """The session's filter or order changed (or it left): drop its waiting or running prefetch."""
        if client:
            with self._wake:
                self._cancel_locked(client)

    # --- the worker ---------------------------------------------------------------------

    def _cancel_locked(self, client: str, count: bool = True) -> None:
        if self.speculation is not None:  # the kept expression's run on the next image is not wanted either
            self.speculation.cancel(client + NEXT)
        self._prepared.pop(client, None)
        job = self._jobs.pop(client, None)
        if job is not None and count:
            self.stats.cancelled += 1
        running = self._running
        if running is not None and running.client == client and not running.cancelled.is_set():
            running.cancelled.set()
            self.stats.cancelled += 1

    def _pick(self, jobs: dict[str, _Job]) -> str:
        return min(jobs, key=lambda c: jobs[c].seq)  # the oldest request first

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
        """Between encoder blocks: wait while interactive work runs, and while the run of a typed
        expression does (the annotator's Enter on this image comes before their PgDn, and on a small
        CPU the two runs side by side would make Enter wait); stop if cancelled."""
        while not job.cancelled.is_set():
            if not self.model.priority.wait_idle(0.5):
                continue
            if self.speculation is not None and self.speculation.busy():
                job.cancelled.wait(_SPECULATION_POLL_S)
                continue
            break
        if job.cancelled.is_set():
            raise _Cancelled

    def _settle(self, job: _Job) -> None:
        """Until ``job.not_before`` (the page draws the image just opened); stop if cancelled."""
        while (left := job.not_before - time.monotonic()) > 0:
            if job.cancelled.wait(min(left, 0.1)):
                raise _Cancelled

    def _prefetch(self, job: _Job) -> None:
        self._settle(job)
        self._pause(job)
        target = self.queue.neighbour(job.flt, job.image_id, 1)
        if target is None:
            return
        source = f"store:{target}"
        key = self.model.features_key(source)
        state = self.model.cache.get(key)
        if state is not None:
            self.stats.already += 1
        elif not self.model.cache.begin(key):  # an interactive request computes it
            self.stats.already += 1
            return
        else:
            try:
                rgb = self.store.load_image(target)
                if rgb is None or max(rgb.shape[:2]) > self.max_image_side:
                    return  # opening it says why; nothing to prepare
                self._pause(job)
                state = self.model.get().set_image(rgb, pause=lambda: self._pause(job))
                if self.model.features_key(source) != key:
                    return  # the model was switched meanwhile
                self.model.cache.put(key, state)
                self.stats.encoded += 1
                log.debug("prefetched image %s for %s", target, job.client)
            finally:
                self.model.cache.end(key)
        self._prepare(job, target, key, state)

    def _prepare(self, job: _Job, target: int, key: str, state) -> None:
        """What the page will show of the next image: the views' hooks, then the kept expression's run."""
        for hook in self._ready:
            if job.cancelled.is_set():
                raise _Cancelled
            try:
                hook(target, state.image)
            except Exception:  # noqa: BLE001 - a convenience: opening the image does it again if needed
                log.exception("preparing image %s for the page failed", target)
        with self._wake:  # from here on follow() schedules the kept expression's run itself
            if job.cancelled.is_set():
                raise _Cancelled
            self._prepared[job.client] = (key, target)
            expression = job.expression
        if expression is not None and self.speculation is not None and not job.cancelled.is_set():
            text, score_threshold, mask_threshold = expression
            self.speculation.schedule(job.client + NEXT, Ask.of(key, text, score_threshold, mask_threshold), state)
