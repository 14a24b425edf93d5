"""``python -m deris_core.tools.bench flops --profile``: the forward's time by kind of operation."""

from __future__ import annotations

import json


def test_the_profile_splits_a_forward_by_kind(capsys) -> None:
    from deris_core.tools.bench_flops import KINDS, main

    assert main(["--config", "deris-tiny", "--threads", "1", "--profile", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prof = r["profile"]
    assert prof["total_s"] > 0 and set(prof["self_cpu_s"]) <= {k for k, _ in KINDS} | {"other"}
    assert prof["self_cpu_s"]["linear layers"] > 0 and r["gflop"]["image"]["linear"] > 0
    assert r["peak"]["fp32_gflops"] > 0
