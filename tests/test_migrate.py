"""app/migrate.py: a whole store SQLite -> PostgreSQL -> SQLite, checked by counts, pixels and identical
exports; ids ever given move with it; locks stay behind; a non-empty target, a copy that lost pixels and
an image whose file is gone are said plainly."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.migrate import migrate, table_columns
from app.store import Store, StoreError
from app.store.models import ModelRecord
from app.store.review import review
from tests.builders import noise_image, rect_mask


def _team_store(path: Path) -> Store:
    """A small store with a bit of everything: images (one imported by path), refs of every status,
    a deleted ref (its id must stay unused), reviews, a registered model and a held lock."""
    store = Store(path)
    ids = [store.add_image(noise_image(k), f"img_{k}.png", split="train") for k in range(3)]
    on_disk = path.parent / "photo.png"
    import cv2

    cv2.imwrite(str(on_disk), noise_image(9)[:, :, ::-1])
    ids.append(store.add_image(noise_image(9), "photo.png", split="val", path=on_disk))
    a = store.save_ref(ids[0], ["the left box"], masks=[rect_mask()], author="ann")
    b = store.save_ref(ids[1], ["nothing green"], no_target=True, author="ann")
    c = store.save_ref(ids[2], ["the box", "the square"], masks=[rect_mask((5, 5, 20, 30))], author="ann2")
    store.save_ref(ids[3], ["a box on a photo"], masks=[rect_mask()], author="ann", split="val")
    gone = store.save_ref(ids[0], ["to be deleted"], masks=[rect_mask((1, 1, 4, 4))], author="ann")
    store.delete_ref(gone, actor="ann")
    review(store, a, "accept", "rev")
    review(store, c, "reject", "rev", reason="wrong_mask", comment="too loose")
    store.save_ref(b, ["nothing green here"], no_target=True, author="ann", ref_id=b,
                   expected_version=store.ref(b).version)
    store.register_model(ModelRecord(0, "team-v1", "/runs/team-v1/model.safetensors", "deris-small", "bundled (sha256:x)",
                                     {"refs": 3}, {"gIoU": 20.0}, {"gIoU": 40.0}, "ann"))
    assert store.take_lock("finetune", "otherhost:123:ann:run") is None
    return store


def _counts(store: Store) -> dict[str, int]:
    return {t: int(store.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in table_columns() if t != "locks"}


def test_a_store_goes_to_postgres_and_back_unchanged(tmp_path: Path, pg_server) -> None:
    src = _team_store(tmp_path / "team.sqlite")
    before = _counts(src)
    src_refs = [(r.id, r.sentences, r.status, r.version, r.annotator) for r in src.refs()]
    src.close()
    url = pg_server.new_database()
    res = migrate(str(tmp_path / "team.sqlite"), url)
    assert res["identical_export"] and res["images_without_pixels"] == 0
    assert "locks" not in res["copied"]  # a lock belongs to a process working on the source
    pg = Store(url)
    assert _counts(pg) == before and pg.read("SELECT COUNT(*) FROM locks")[0][0] == 0
    assert [(r.id, r.sentences, r.status, r.version, r.annotator) for r in pg.refs()] == src_refs
    assert [m.name for m in pg.models()] == ["team-v1"]
    assert all(pg.image_bytes(i) is not None for (i,) in pg.read("SELECT id FROM images"))
    new = pg.save_ref(1, ["a new ref after the move"], no_target=True, author="ann")
    assert new > max(r[0] for r in src_refs) + 1  # the deleted ref's id was given once: never again
    pg.delete_ref(new, actor="ann")
    pg.close()
    back = tmp_path / "back.sqlite"
    res2 = migrate(url, str(back))
    assert res2["identical_export"] and res2["images_without_pixels"] == 0
    again = Store(back)
    assert _counts(again)["refs"] == before["refs"] and again.load_image(4) is not None
    assert [(r.id, r.sentences, r.status, r.version, r.annotator) for r in again.refs()] == src_refs
    again.close()
    with pytest.raises(StoreError, match="is not empty"):
        migrate(str(tmp_path / "team.sqlite"), url)


def test_an_image_whose_file_is_gone_is_listed(tmp_path: Path, pg_server) -> None:
    store = _team_store(tmp_path / "team.sqlite")
    store.close()
    (tmp_path / "photo.png").unlink()  # the imported folder moved away
    for target in (pg_server.new_database(), str(tmp_path / "copy.sqlite")):  # into the database, into files
        res = migrate(str(tmp_path / "team.sqlite"), target)
        assert res["images_without_pixels"] == 1 and res["without_pixels_e_g"] == ["4"] and res["identical_export"]


def test_a_copy_that_lost_pixels_fails_and_says_the_target_holds_it(tmp_path: Path, pg_server,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _team_store(tmp_path / "team.sqlite").close()
    url = pg_server.new_database()
    real = Store.write_media

    def lossy(self, db, image_id, data):  # a target that drops one image's bytes
        if image_id != 2:
            real(self, db, image_id, data)

    monkeypatch.setattr(Store, "write_media", lossy)
    with pytest.raises(StoreError, match=r"pixels for 3 images, the source for 4.*drop that database"):
        migrate(str(tmp_path / "team.sqlite"), url)
