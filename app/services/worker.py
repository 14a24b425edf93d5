"""One background worker thread serving at most one job per session (:mod:`.prefetch`, :mod:`.speculate`).

:class:`SessionWorker` owns what both share: the waiting jobs (one per client, a newer one replaces
the older), the one running, the thread (started on the first job, a daemon), ``wait_idle`` and
``close``. A subclass says which waiting job goes first (:meth:`_pick`), how a client's jobs are
cancelled (:meth:`_cancel_locked`) and what running one means (:meth:`_work`, a loop over
:meth:`_next_job`). Every change of the jobs happens under ``self._wake``.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any


class SessionWorker:
    """The jobs, the thread and the idle signal of one background worker (see the module doc)."""

    thread_name = "deris-worker"

    def __init__(self) -> None:
        self._jobs: dict[str, Any] = {}  # waiting, one per session
        self._running: Any | None = None
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing waits or runs (tests, benchmarks)."""
        return self._idle.wait(timeout)

    def busy(self) -> bool:
        """Whether a job is running now."""
        with self._wake:
            return self._running is not None

    def close(self) -> None:
        """Cancel everything and let the thread end."""
        with self._wake:
            self._closed = True
            for client in list(self._jobs):
                self._cancel_locked(client)
            if self._running is not None:
                self._running.cancelled.set()
            self._wake.notify_all()

    # --- for subclasses -------------------------------------------------------------------

    def _cancel_locked(self, client: str) -> None:
        raise NotImplementedError

    def _pick(self, jobs: dict[str, Any]) -> str:
        """The client whose waiting job runs next."""
        raise NotImplementedError

    def _work(self) -> None:
        raise NotImplementedError

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
            self._thread.start()

    def _next_job(self) -> Any | None:
        """The next job to run (None: closed), waiting while there is none; marks the worker idle meanwhile."""
        with self._wake:
            while not self._jobs and not self._closed:
                self._running = None
                self._idle.set()
                self._wake.wait()
            if self._closed:
                self._running = None
                self._idle.set()
                return None
            self._running = self._jobs.pop(self._pick(self._jobs))
            return self._running
