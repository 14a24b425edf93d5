"""The latency measure of the Annotate view's path (app/bench/latency.py), on a stub model."""

from __future__ import annotations

import pytest

from tests.test_overlay import _prediction


def test_latency_measure_runs(tmp_path):
    pytest.importorskip("gradio")
    from app.bench.latency import measure, synthetic_photo

    class _Stub:
        def __init__(self) -> None:
            self.calls = 0

        def set_image(self, image):
            return object()

    p = _prediction(96, 128, q=6)
    r = measure(_Stub(), synthetic_photo(96, 128), lambda state: p, runs=2, warmup=1)  # type: ignore[arg-type]
    assert r["candidates"] == 6 and r["enter"]["median_s"] > 0 and r["threshold_change"]["median_s"] > 0
