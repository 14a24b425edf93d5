"""``python -m app.bench refine``'s parts on a few objects (the full run is a benchmark, never a test)."""

from __future__ import annotations

from app.refine.bench import _table, latency, print_table
from app.refine.data import photo_objects
from app.refine.grabcut import GrabCutRefiner


def test_photo_set_has_ten_objects_or_more_with_their_outlines():
    objs = photo_objects()
    assert len(objs) >= 10
    for o in objs:
        assert o.gt.shape == o.image.shape[:2] and 0.002 < o.gt.mean() < 0.6, o.name


def test_table_and_latency_print(capsys):
    r = GrabCutRefiner()
    coins = [o for o in photo_objects() if o.image_key == "coins.jpg"][:2]
    row = _table(r, coins, max_clicks=3)
    assert row["objects"] == 2 and 0 <= row["NoC@90"] <= 3
    lat = latency(r, runs=2)
    assert lat["click_ms_wall"] > 0 and lat["set_image_ms_wall"] >= 0
    print_table({"refiner": "grabcut", "spec": "grabcut", "cpu": "a CPU", "threads": 2, "load_average_1min": 0.0,
                 "synthetic_from_nothing": row, "synthetic_from_deris": row, "photos": row, "latency": lat})
    out = capsys.readouterr().out
    assert "| NoC@85 | NoC@90 |" in out and "one click at 1024x768" in out
