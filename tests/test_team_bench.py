"""app/bench/team.py: a short run of the team bench (one real launch.py server, two gradio_client
annotators) keeps its promises: no error, every acknowledged save stored once, and the CPU split."""

from __future__ import annotations

import pytest

from app.bench.team import _cpu_split, _machine_busy, _process_cpu_s, bench_team


def test_cpu_split_per_round():
    before = {"servers": [1.0, 2.0], "self": 10.0, "machine": (100.0, 400.0)}
    after = {"servers": [2.0, 4.0], "self": 11.0, "machine": (104.0, 408.0)}
    out = _cpu_split(before, after, rounds=10)
    assert out == {"servers_cpu_ms_per_round": 300.0, "clients_cpu_ms_per_round": 100.0,
                   "machine_cpu_ms_per_round": 400.0, "machine_busy_share": 0.5}
    unknown = _cpu_split({**before, "servers": [None]}, {**after, "servers": [None]}, rounds=0)
    assert "servers_cpu_ms_per_round" not in unknown and unknown["clients_cpu_ms_per_round"] == 1000.0


def test_proc_readers_answer_on_linux():
    import os

    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc here: the bench reports no CPU split")
    assert _process_cpu_s(os.getpid()) is not None and _process_cpu_s(2**22 + 7) is None
    busy, total = _machine_busy()
    assert 0 <= busy <= total


@pytest.mark.slow
def test_a_short_team_run_loses_nothing():
    res = bench_team(None, servers=1, clients=2, seconds=6, images=24, think=0.2)  # more images than rounds
    assert res["errors"] == 0, res["first_errors"]
    assert res["saves"] > 0 and res["think_s"] == 0.2
    assert res["acknowledged_saves_missing"] == 0 and res["acknowledged_saves_duplicated"] == 0
    assert res["new_refs_in_database"] >= res["saves"]
    assert res["servers_cpu_ms_per_round"] > 0 and res["clients_cpu_ms_per_round"] > 0
