"""A training time budget that follows the clock both ways.

Under ``TrainConfig.max_seconds`` the cosine schedule needs a length in steps, but the machine's
speed is not known in advance and may change (other jobs start or finish, a laptop throttles).
:class:`TimeBudget` measures the seconds per step as the run goes (an exponential moving average,
so one slow step does not swing it), and re-plans the schedule's length every few steps as
``steps done + time left / seconds per step``: a machine that speeds up gets more steps, one that
slows down fewer, and the cosine ends at the deadline either way. The learning-rate position is the
larger of the step's and the clock's share of the plan, so a slow-down between two re-plans still
cannot leave the run stopping at a high rate.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_STEPS = 5  # timed steps (after a session's first) before the first plan
REPLAN_EVERY = 5  # steps between re-plans
SMOOTHING = 0.3  # weight of the newest step's time in the moving average


@dataclass
class TimeBudget:
    """The schedule's length for a run that must end ``seconds`` after it started (over resumes)."""

    seconds: float
    cap: int  # the most steps the run may make (epochs x steps per epoch, or max_steps)
    used: float = 0.0  # seconds spent by earlier sessions of the run
    planned: int | None = None  # the schedule's length in steps, once measured
    per_step: float | None = None  # smoothed seconds per step
    replans: int = 0
    _session_t0: float = 0.0
    _last: float | None = None  # the clock at the previous step's end
    _timed: int = 0  # steps timed in this session
    _probe: float = 0.0  # their seconds, until the first plan

    def start(self, now: float) -> None:
        """The session starts (its first step is not timed: kernels warm up, caches fill)."""
        self._session_t0 = now
        self._last = None
        self._timed = 0
        self._probe = 0.0

    def elapsed(self, now: float) -> float:
        """Seconds of the budget used so far (earlier sessions included)."""
        return self.used + now - self._session_t0

    def over(self, now: float) -> bool:
        return self.elapsed(now) >= self.seconds

    def step_done(self, step: int, now: float) -> int | None:
        """Record that ``step`` steps are done at ``now``; returns the re-planned schedule length when
        it is time to re-plan (every :data:`REPLAN_EVERY` steps, and whenever the plan runs out while
        time is left), else None. Under DDP the caller agrees the length across processes and calls
        :meth:`set_plan` with it."""
        if self._last is not None:
            dt = now - self._last
            self._timed += 1
            if self.per_step is None:
                self._probe += dt
                if self._timed >= PROBE_STEPS:
                    self.per_step = self._probe / self._timed
            else:
                self.per_step = SMOOTHING * dt + (1 - SMOOTHING) * self.per_step
        self._last = now
        if self.per_step is None:
            return None
        first = self.planned is None
        if not (first or step >= self.planned or (self._timed and self._timed % REPLAN_EVERY == 0)):
            return None
        left = max(0.0, self.seconds - self.elapsed(now))
        return min(self.cap, step + int(left / self.per_step))

    def set_plan(self, total: int) -> None:
        self.replans += self.planned is not None and total != self.planned
        self.planned = total

    def position(self, step: int, total: int, now: float) -> int:
        """The learning-rate schedule's position: the larger of the step's and the clock's."""
        if self.planned is None:
            return step
        return max(step, int(total * min(1.0, self.elapsed(now) / self.seconds)))
