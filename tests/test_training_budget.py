"""The time budget (deris_core/train/budget.py, as the training loop uses it): the schedule's length
follows the measured speed both ways, so a run whose machine slows down or speeds up ends at its
deadline, uses its time, and ends the cosine there. The model step is replaced by a no-op that records
the learning rate, and the machine's speed by a sleep in the ``on_step`` hook: the loop, its data
loading, its saves and its clock are the real ones."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deris_core.checkpoint import safe_torch_load
from deris_core.train import trainer
from deris_core.train.budget import TimeBudget
from deris_core.train.trainer import TrainConfig, train

DEADLINE = 5.0
SLOW, FAST = 0.15, 0.01  # seconds per step injected by the hook


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from deris_core.synthetic import generate

    root = tmp_path_factory.mktemp("budget_data")
    generate(root, seed=3, images=6)
    return root


def _run(data: Path, out: Path, delay, monkeypatch, seconds: float = DEADLINE) -> tuple[dict, list[float]]:
    rates: list[float] = []

    def no_step(model, optimizer, *a, **kw) -> dict:
        rates.append(optimizer.param_groups[0]["lr"])
        return {"total": 0.0}

    monkeypatch.setattr(trainer, "train_step", no_step)
    cfg = TrainConfig(data=str(data), out=str(out), model="deris-tiny", vocab_size=100, eval_split=None, epochs=100_000,
                      max_seconds=seconds, batch_size=2, expressions_per_image=1, warmup_steps=2, lr=1e-3, threads=1,
                      log_every=1000, progress=False, nsc_enabled=False)
    train(cfg, on_step=lambda step: time.sleep(delay(step)))
    return safe_torch_load(out / "trainer_state.pt"), rates


def _check_ends_at_deadline(state: dict, rates: list[float], warm_up: bool = True) -> None:
    used = state["seconds"]
    assert abs(used - DEADLINE) <= 0.05 * DEADLINE, f"used {used:.2f} s of {DEADLINE} s ({state['step']} steps)"
    assert used >= 0.9 * DEADLINE
    assert rates[-1] <= 0.1 * max(rates)  # the cosine ended there, not at a high learning rate
    if warm_up:
        assert max(rates) == pytest.approx(1e-3, rel=0.05)  # the warm-up reached the peak


def test_a_machine_that_speeds_up_uses_the_whole_budget(data, tmp_path, monkeypatch):
    # slow first steps (other jobs on the machine), then full speed: the plan made from the slow steps
    # would end the run at about a third of its time
    state, rates = _run(data, tmp_path / "run", lambda step: SLOW if step <= 12 else FAST, monkeypatch)
    _check_ends_at_deadline(state, rates)
    assert state["planned_total"] > 12 + (DEADLINE - 12 * SLOW) / SLOW * 2  # re-planned up


def test_a_machine_that_slows_down_still_ends_at_the_deadline(data, tmp_path, monkeypatch):
    state, rates = _run(data, tmp_path / "run", lambda step: FAST if step <= 40 else SLOW, monkeypatch)
    _check_ends_at_deadline(state, rates)


def test_a_resumed_run_keeps_its_plan_and_its_clock(data, tmp_path, monkeypatch):
    """A run stopped mid-way resumes with the seconds it used, its plan and its speed, and ends at
    the same deadline."""
    run = tmp_path / "run"

    class Stop(Exception):
        pass

    def delay(step: int) -> float:
        if step == 60:
            raise Stop  # killed after an epoch end has saved the state
        return 0.03

    with pytest.raises(Stop):
        _run(data, run, delay, monkeypatch)
    before = safe_torch_load(run / "trainer_state.pt")
    assert before["planned_total"] and before["per_step"] and 0 < before["seconds"] < DEADLINE
    state, rates = _run(data, run, lambda step: 0.03, monkeypatch)
    _check_ends_at_deadline(state, rates, warm_up=False)
    assert rates[0] < 1e-3 * 0.999  # not a second warm-up from the start: the cosine went on


def test_the_plan_follows_the_measured_speed():
    b = TimeBudget(seconds=100.0, cap=10_000)
    b.start(0.0)
    now, plans = 0.0, []
    for step in range(1, 40):
        now += 1.0 if step <= 10 else 0.25
        p = b.step_done(step, now)
        if p is not None:
            b.set_plan(p)
            plans.append(p)
    assert plans[0] == pytest.approx(6 + (100 - 6) / 1.0, abs=2)  # planned from the first (slow) steps
    assert plans[-1] > 2 * plans[0]  # then re-planned up as the steps got faster
    assert b.position(20, 100, 50.0) == 50  # the clock's share when it is ahead of the step's
