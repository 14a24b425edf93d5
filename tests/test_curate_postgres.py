"""Pre-annotation on PostgreSQL: under torchrun (2 gloo processes) every rank writes its own results
and the store holds exactly what one process stores on SQLite; a rerun resumes; two runs at once
on one database never store a pair twice."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.dataset.migrate import migrate
from app.store import Store
from tests.test_curate import _cli, _content, _fresh, collection  # noqa: F401 - the shared collection fixture


@pytest.fixture
def pg_collection(collection: Path, pg_server):  # noqa: F811
    """``new()``: the synthetic collection copied into a fresh PostgreSQL database (its URL)."""
    def new() -> str:
        url = pg_server.new_database()
        migrate(str(collection / "base.sqlite"), url, check=False)
        return url

    return new


def test_two_gloo_ranks_writing_directly_store_what_one_sqlite_process_stores(collection: Path,  # noqa: F811
                                                                                pg_collection) -> None:
    one, url = _fresh(collection, "pg_one"), pg_collection()
    sentences = str(collection / "sentences.txt")
    r1 = _cli("preannotate", "--db", str(one), "--sentences", sentences, "--threads", "1", "--json")
    assert r1.returncode == 0, r1.stderr
    r2 = _cli("preannotate", "--db", url, "--sentences", sentences, "--threads", "1", "--json", "--chunk", "2",
              torchrun=2)
    assert r2.returncode == 0, r2.stderr
    s2 = json.loads(r2.stdout.strip().splitlines()[-1])
    assert s2["written"] == 18 and s2["ranks"] == 2 and s2["already_done"] == 0
    assert _content(url) == _content(one)
    # resumable exactly as on SQLite: a rerun finds everything done
    r3 = _cli("preannotate", "--db", url, "--sentences", sentences, "--threads", "1", "--json", torchrun=2)
    assert r3.returncode == 0, r3.stderr
    s3 = json.loads(r3.stdout.strip().splitlines()[-1])
    assert s3["written"] == 0 and s3["already_done"] == 18


def test_two_runs_at_once_never_store_a_pair_twice(collection: Path, pg_collection) -> None:  # noqa: F811
    url = pg_collection()
    sentences = str(collection / "sentences.txt")
    import os
    import sys

    from tests.test_curate import ROOT

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "app.curate", "preannotate", "--db", url, "--sentences", sentences,
                               "--threads", "1", "--chunk", "1", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert sum(o["written"] for o in outs) == 18  # each pair written by exactly one of them
    s = Store(url)
    assert s.read("SELECT COUNT(*) FROM predictions")[0][0] == 18
    assert s.read("SELECT COUNT(*) FROM (SELECT image_id, sentence, model FROM predictions "
                  "GROUP BY 1, 2, 3 HAVING COUNT(*) > 1) AS d")[0][0] == 0
    assert s.stats()["refs"] == 18
