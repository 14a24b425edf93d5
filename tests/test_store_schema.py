"""Schema versions (app/store/schema.py): a database of the previous version migrates with every
ref and learns who wrote each ref's content from its history."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.services import Actor, RefService, Refused
from app.store import SCHEMA_VERSION, Store

ROOT = Path(__file__).resolve().parents[1]
V2_DB = ROOT / "tests" / "data" / "studio_v2.sqlite"  # made by the schema-2 code (commit 5681739)


def test_a_version_2_database_migrates_and_knows_who_wrote_each_refs_content(tmp_path: Path) -> None:
    import pytest

    db = tmp_path / "studio.sqlite"
    shutil.copy(V2_DB, db)
    s = Store(db)
    assert s.migrated_from == 2 and s.schema_version() == SCHEMA_VERSION == 3
    assert (tmp_path / "studio.sqlite.v2.bak").is_file() and s.integrity_check() == "ok"
    refs = {r.id: r for r in s.refs()}
    assert sorted(refs) == [1, 2, 3, 4, 5]
    # 1: ann's ref, rewritten by rev, then accepted by bob: the content is rev's
    assert (refs[1].annotator, refs[1].editor, refs[1].status, refs[1].version) == ("ann", "rev", "reviewed", 3)
    assert refs[1].sentences == ["the left box", "a square"] and len(refs[1].instance_ids) == 1
    assert (refs[2].annotator, refs[2].editor, refs[2].status) == ("bob", "bob", "done")
    assert (refs[3].annotator, refs[3].editor) == ("consensus(ann,bob)", "agreement")
    assert (refs[4].editor, refs[4].status) == ("ann", "rejected")
    assert (refs[5].annotator, refs[5].editor, refs[5].status) == ("model:bundled", "model:bundled", "predicted")
    assert [e.action for e in s.events(1)] == ["create", "edit", "review"]
    # the migrated database works as a new one, with the new rule
    service = RefService(s)
    rev = Actor("rev", accounts=True)
    with pytest.raises(Refused, match="cannot accept it"):
        service.save(rev, 1, ["the right box", "rewritten"], instance_ids=refs[2].instance_ids, ref_id=2,
                     expected_version=1, status="reviewed")
    service.review(rev, 2, "accept", expected_version=1)
    assert s.ref(2).status == "reviewed"
    s.close()
    assert Store(db).migrated_from == SCHEMA_VERSION  # reopening does not migrate again
