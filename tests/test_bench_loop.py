"""The measured learning loop (app/bench/loop.py): ``--store`` fine-tunes from a store the bench did
not make, as it is (nothing imported into it), and reports the store's held-out figures and the
independent set's; a store that is not there is one line. A smoke run: seconds, not the measurement."""

from __future__ import annotations

import json
import sqlite3

from app.bench.cli import main as bench_main
from app.store import Store


def test_loop_on_a_store_the_bench_did_not_make(tmp_path, capsys):
    from app.dataset.imports import import_grefcoco_data, read_json
    from deris_core.synthetic import generate

    syn = tmp_path / "team_scenes"
    generate(syn, seed=13, images=10)
    coco, _ = read_json(syn / "grefcoco" / "instances.json")
    grefs, _ = read_json(syn / "grefcoco" / "grefs(unc).json")
    for r in grefs:  # reviewed refs of every split, as a team's store holds them
        r.update(status="reviewed", annotator="team")
    db = tmp_path / "team.sqlite"
    import_grefcoco_data(Store(db), coco, grefs, syn / "images" / "train2014")
    before = sqlite3.connect(db).execute("SELECT COUNT(*), MAX(updated_at) FROM refs").fetchone()
    work = tmp_path / "work"
    assert bench_main(["loop", "--store", str(db), "--minutes", "0.05", "--replay-share", "0", "--eval-images", "30",
                       "--work", str(work), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["store"].endswith("team.sqlite") and res["refs"] == before[0]
    assert set(res["store_held_out"]) == {"before", "after"} and "promotion_problem" in res
    assert res["testB"]["after"]["gIoU"] is not None and res["testA"]["before"]["gIoU"] is not None
    assert not (work / "loop.sqlite").exists() and not (work / "synthetic_seed21").exists()  # nothing made or drawn
    assert sqlite3.connect(db).execute("SELECT COUNT(*), MAX(updated_at) FROM refs").fetchone() == before
    assert bench_main(["loop", "--store", str(tmp_path / "nowhere.sqlite"), "--work", str(work)]) == 2
    assert capsys.readouterr().err.startswith("error: store not found")
