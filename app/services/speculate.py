"""The expression run while the annotator types: Enter finds its answer computed.

When the expression box's text has been still for a moment (the page waits
``SPECULATE_PAUSE_MS``, :mod:`app.ui`), the page asks :meth:`Speculator.schedule` to predict that
text on the session's open image; one background worker runs it on the image's cached features
and keeps the prediction in a small least-recently-used table of the server, under an
:class:`Ask` (the features key, which names the model and the image, the expression as the model
gets it, and both thresholds). Enter asks :meth:`Speculator.take` first: a kept prediction is
used as it is (no network); one still being computed for the same ask is waited for, at full
speed, instead of starting a second; anything else (another text, other thresholds, another
model) runs the model as it always did.

Bounds, as for the prefetch of :mod:`.prefetch`: one run per session (a newer request of the
session replaces its older one and stops it if it is running; so do another image, a model
switch, the client leaving, and an Enter on another text); interactive work first
(:class:`~.features.Priority`): a run starts only when no interactive request runs and pauses
before each block of the expression's pass while one does; ``max_results`` predictions kept for
the whole server. Off where the feature cache is (``--feature-cache-mb 0``, ZeroGPU).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from deris_core.predictor import ImageState, Prediction

from ..errors import StudioError
from .model import ModelHolder
from .worker import SessionWorker

log = logging.getLogger(__name__)

DEFAULT_MAX_RESULTS = 64  # DeRIS-B: 20 candidates of 96x96 float logits, 0.74 MB each, 47 MB at most
WAIT_S = 60.0  # an Enter waits at most this long for the run under way (then runs the model itself)
_POLL_S = 0.025  # how often a paused run looks whether it was cancelled or is now awaited


def normalised(text: str | None) -> str:
    """The expression as the model gets it (runs of white space as one space, none at the ends)."""
    return " ".join((text or "").split())


@dataclass(frozen=True)
class Ask:
    """One expression on one image under one model and thresholds: what a run computes, what Enter looks up."""

    key: str  # the features key (ModelHolder.features_key): the model's version and the image
    text: str
    score_threshold: float
    mask_threshold: float

    @classmethod
    def of(cls, key: str, text: str | None, score_threshold: float, mask_threshold: float) -> "Ask":
        return cls(str(key), normalised(text), float(score_threshold), float(mask_threshold))


class _Cancelled(StudioError):
    """Raised at a pause point to abandon a run."""


@dataclass
class _Job:
    client: str
    ask: Ask
    state: ImageState
    seq: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    urgent: threading.Event = field(default_factory=threading.Event)  # an Enter waits for it: no more pauses
    done: threading.Event = field(default_factory=threading.Event)
    result: Prediction | None = None


@dataclass
class SpeculationStats:
    scheduled: int = 0
    ran: int = 0  # predictions computed and kept
    already: int = 0  # the ask was kept already (or asked again while under way)
    cancelled: int = 0
    failed: int = 0  # the model raised (an Enter on that text reports it)
    hits: int = 0  # Enters answered from a kept prediction
    waited: int = 0  # Enters answered by the run under way, waited for
    misses: int = 0  # expressions run by the model interactively (an Enter, a kept expression on the next image)


def detached(pred: Prediction) -> Prediction:
    """A copy of ``pred`` for one session: the same logits, its own lazily computed masks (a kept
    prediction stays small and is never changed by the session that uses it)."""
    return dataclasses.replace(pred, timings=dict(pred.timings), _cache={})


class Speculator(SessionWorker):
    """One background worker predicting each session's typed expression, interactive work first."""

    thread_name = "deris-speculate"

    def __init__(self, model: ModelHolder, max_results: int = DEFAULT_MAX_RESULTS) -> None:
        self.model, self.max_results = model, int(max_results)
        self.stats = SpeculationStats()
        self._results: OrderedDict[Ask, Prediction] = OrderedDict()
        self._ready: list[Callable[[str, Prediction], None]] = []
        self._prepared: dict[str, tuple[Ask, Prediction]] = {}  # client -> its latest answer, prepared by the hooks
        super().__init__()

    def on_result(self, hook: Callable[[str, Prediction], None]) -> None:
        """Call ``hook(client, prediction)`` once a run for ``client`` has its answer (in the worker; the
        prediction is the client's own copy, the one its Enter on that text then takes): a view prepares
        what Enter will show of it, so that Enter costs the drawing only. Also when the answer was kept
        already; not after a run an Enter waited for. Errors are logged, never raised."""
        if hook not in self._ready:
            self._ready.append(hook)

    def _answered(self, client: str, ask: Ask, pred: Prediction) -> None:
        """The hooks prepare the client's own copy of the answer; that copy, with what they computed on
        it (its masks), is what the client's Enter on ``ask`` takes (:meth:`take`)."""
        if not self._ready:
            return
        copy = detached(pred)
        for hook in self._ready:
            try:
                hook(client, copy)
            except Exception:  # noqa: BLE001 - a convenience: Enter prepares it again if needed
                log.exception("preparing the typed expression's answer for the page failed")
        copy.forget_masks(keep=copy.referred)  # the targets Enter draws; the rest comes back on demand
        with self._wake:
            self._prepared[client] = (ask, copy)

    @property
    def enabled(self) -> bool:
        """Whether runs are made and kept: a model, room for features (not ``--feature-cache-mb 0``, not ZeroGPU)."""
        return (not self._closed and self.model is not None and self.model.predictor is not None
                and self.model.cache.cap_bytes > 0 and self.max_results > 0)

    # --- what the workspace calls ---------------------------------------------------------

    def schedule(self, client: str | None, ask: Ask, state: ImageState | None) -> bool:
        """Predict ``ask`` on ``state`` in the background for ``client`` (replacing its earlier request);
        False when nothing was scheduled (off, nothing to run, kept already, or under way already)."""
        if not client or state is None or not ask.text or not self.enabled or not self.model.is_current(ask.key):
            return False
        with self._wake:
            kept = self._results.get(ask)
            if kept is not None:
                self.stats.already += 1
        if kept is not None:
            self._answered(client, ask, kept)
            return False
        with self._wake:
            mine = self._jobs.get(client) or (self._running if self._running and self._running.client == client else None)
            if mine is not None and mine.ask == ask and not mine.cancelled.is_set():
                return False  # the same text again (a key pressed and taken back): under way already
            self._cancel_locked(client)
            self._jobs[client] = _Job(client, ask, state, next(self._seq))
            self.stats.scheduled += 1
            self._idle.clear()
            self._start_locked()
            self._wake.notify()
        return True

    def cancel(self, client: str | None) -> None:
        """The session's image changed, or it left: drop its waiting or running run."""
        if client:
            with self._wake:
                self._cancel_locked(client)

    def take(self, client: str | None, ask: Ask, timeout: float = WAIT_S) -> Prediction | None:
        """Enter's look-up: the kept prediction of ``ask`` (a copy), else the one under way (waited for,
        at full speed), else None (then the caller runs the model and :meth:`keep` s it). A run of the
        session for another text is stopped: the annotator pressed Enter on something else."""
        if not self.enabled:
            return None
        with self._wake:
            kept = self._results.get(ask)
            if kept is not None:
                self._results.move_to_end(ask)
                self.stats.hits += 1
                log.debug("speculation: Enter took the run made while typing (hits %d)", self.stats.hits)
                prepared = self._prepared.get(client or "")
                if prepared is not None and prepared[0] == ask:  # the copy the page's hooks prepared: its masks made
                    del self._prepared[client]
                    return prepared[1]
                return detached(kept)
            running = self._running if self._running is not None and self._running.ask == ask else None
            if running is None or running.cancelled.is_set():
                for waiting in [j for j in self._jobs.values() if j.ask == ask]:  # not started: the Enter runs it
                    del self._jobs[waiting.client]
                if client:
                    self._cancel_locked(client)
                self.stats.misses += 1
                return None
            running.urgent.set()
        with self.model.priority.interactive():  # background work holds off; the run itself no longer pauses
            running.done.wait(timeout)
        result = running.result
        with self._wake:
            if result is None:
                self.stats.misses += 1
                return None
            self.stats.waited += 1
            log.debug("speculation: Enter waited for the run under way (waited %d)", self.stats.waited)
        return detached(result)

    def keep(self, ask: Ask, pred: Prediction) -> None:
        """Keep an Enter's own prediction too: a request for that text arriving late finds it done."""
        if self.enabled and self.model.is_current(ask.key):
            with self._wake:
                self._keep_locked(ask, pred)

    def counts(self) -> dict[str, int]:
        """The statistics as a plain dict (the studio's ``/background_stats``)."""
        return dataclasses.asdict(self.stats) | {"kept": len(self._results)}

    # --- the worker -------------------------------------------------------------------

    def _keep_locked(self, ask: Ask, pred: Prediction) -> None:
        self._results[ask] = detached(pred)
        self._results.move_to_end(ask)
        while len(self._results) > self.max_results:
            self._results.popitem(last=False)

    def _cancel_locked(self, client: str) -> None:
        self._prepared.pop(client, None)
        job = self._jobs.pop(client, None)
        if job is not None:
            job.cancelled.set()
            job.done.set()
            self.stats.cancelled += 1
        running = self._running
        if running is not None and running.client == client and not running.cancelled.is_set() \
                and not running.urgent.is_set():  # an Enter waits for it: it finishes
            running.cancelled.set()
            self.stats.cancelled += 1

    def _pick(self, jobs: dict[str, _Job]) -> str:
        return max(jobs, key=lambda c: jobs[c].seq)  # the newest first: its Enter comes soonest

    def _work(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._run(job)
            except _Cancelled:
                log.debug("speculation for %s cancelled", job.client)
            except Exception as exc:  # noqa: BLE001 - the Enter on that text runs the model and reports it
                with self._wake:
                    self.stats.failed += 1
                log.debug("speculation on %r failed: %s", job.ask.text, exc)
            finally:
                job.done.set()
            # after done, and only when no Enter waited for this run: that Enter shows the answer itself,
            # and the hooks' work beside it would only slow it down
            if job.result is not None and not job.cancelled.is_set() and not job.urgent.is_set():
                self._answered(job.client, job.ask, job.result)

    def _pause(self, job: _Job) -> None:
        """Before each block: wait while interactive work runs (unless an Enter awaits this run);
        stop if cancelled or the model changed."""
        while not job.urgent.is_set() and not job.cancelled.is_set() and not self.model.priority.wait_idle(_POLL_S):
            pass
        if job.cancelled.is_set() or not self.model.is_current(job.ask.key):
            raise _Cancelled

    def _run(self, job: _Job) -> None:
        self._pause(job)
        with self._wake:
            if job.ask in self._results:
                self.stats.already += 1
                job.result = self._results[job.ask]
                return
        ask = job.ask
        pred = self.model.get().predict(ask.text, image=job.state, score_threshold=ask.score_threshold,
                                        mask_threshold=ask.mask_threshold, pause=lambda: self._pause(job))
        if not self.model.is_current(ask.key):
            raise _Cancelled
        with self._wake:
            self._keep_locked(ask, pred)
            self.stats.ran += 1
        job.result = pred
