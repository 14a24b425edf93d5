"""The collection as a queue (app/store/queue.py): order, positions, filters, progress; the image's ref
list and the queue line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.dataset.collection import import_images
from app.store.queue import ImageFilter, image_page, neighbour, nth, position, progress
from app.views import display
from tests.builders import picture_folder


def test_the_queue_order_positions_and_filters(db_at, tmp_path: Path) -> None:
    store, folder = picture_folder(tmp_path, db=db_at("c.sqlite"))
    import_images(store, folder, progress=False)
    ids = [r.id for r in image_page(store, ImageFilter(), 0, 100)[0]]
    assert ids == sorted(ids) and len(ids) == 6
    store.save_ref(ids[1], ["a"], no_target=True, author="ann", status="done")
    store.save_ref(ids[3], ["b"], no_target=True, author="bob", status="draft")
    everyone = ImageFilter()
    assert position(store, everyone, ids[2]) == (2, 6)
    assert neighbour(store, everyone, ids[2], 1) == ids[3] and neighbour(store, everyone, ids[2], -1) == ids[1]
    assert neighbour(store, everyone, None, 1) == ids[0] and neighbour(store, everyone, ids[-1], 1) is None
    # next without refs skips 3, and wraps around from the end
    assert neighbour(store, everyone, ids[2], 1, without_refs=True) == ids[4]
    assert neighbour(store, everyone, ids[5], 1, without_refs=True, wrap=True) == ids[0]
    assert [r.id for r in image_page(store, ImageFilter(status="none"), 0, 10)[0]] == [ids[0], ids[2], ids[4], ids[5]]
    assert image_page(store, ImageFilter(status="todo"), 0, 10)[1] == 5  # no refs, or a draft
    assert [r.id for r in image_page(store, ImageFilter(annotator="bob"), 0, 10)[0]] == [ids[3]]
    assert image_page(store, ImageFilter(name="sub/"), 0, 10)[1] == 3
    assert image_page(store, ImageFilter(name="%"), 0, 10)[1] == 0  # LIKE wildcards are literal
    assert nth(store, ImageFilter(status="none"), 2) == ids[4] and nth(store, everyone, 99) is None
    p = progress(store)
    assert p["images"] == 6 and p["images_with_refs"] == 2 and p["images_done"] == 1 and p["no_target_share"] == 1.0
    assert {a["annotator"] for a in p["annotators"]} == {"ann", "bob"}
    html = display.progress_html(p)
    assert "1 / 6" in html and "2 / 6" in html and "ann" in html


def test_each_image_of_a_page_says_its_state(db_at, tmp_path: Path) -> None:
    """A thumbnail's badge: no refs, done (handed in or accepted), to do (a draft or the model's), rejected
    (one sent back, whatever the others are)."""
    from app.services.queue import thumb_caption

    store, folder = picture_folder(tmp_path, 5, db=db_at("c.sqlite"))
    import_images(store, folder, progress=False)
    ids = [r.id for r in image_page(store, ImageFilter(), 0, 100)[0]]
    store.save_ref(ids[1], ["a"], no_target=True, status="done")
    store.save_ref(ids[1], ["b"], no_target=True, status="reviewed")
    store.save_ref(ids[2], ["c"], no_target=True, status="done")
    store.save_ref(ids[2], ["d"], no_target=True, status="predicted")
    store.save_ref(ids[3], ["e"], no_target=True, status="draft")
    store.save_ref(ids[3], ["f"], no_target=True, status="rejected")
    for flt in (ImageFilter(), ImageFilter(name="p", order="uncertain")):  # the arguments stay in their places
        rows = image_page(store, flt, 0, 10)[0]
        assert [(r.state, r.refs) for r in rows] == [("no refs", 0), ("done", 2), ("to do", 2), ("rejected", 2),
                                                     ("no refs", 0)]
    caption = thumb_caption(image_page(store, ImageFilter(), 0, 10)[0][1])
    assert caption.startswith(f"{ids[1]} · done · ") and caption.endswith(" · 2 refs")


def test_the_image_ref_list_shows_every_ref_of_that_image(db_at, tmp_path: Path) -> None:
    store, folder = picture_folder(tmp_path, 3, db=db_at("c.sqlite"))
    import_images(store, folder, progress=False)
    m = np.zeros((24, 30), bool)
    m[2:8, 2:8] = True
    r1 = store.save_ref(1, ["the box", "the square"], masks=[m], author="ann")
    r2 = store.save_ref(1, ["a cat"], no_target=True, author="bob", status="draft")
    store.save_ref(2, ["elsewhere"], no_target=True)
    rows, total = store.refs_page(0, 200, image_id=1, newest_first=False)
    table = display.ref_rows(rows, with_image=False)
    assert total == 2 and [r[0] for r in table] == [r1, r2]
    assert table[0][1:5] == ["the box | the square", "1", "done", "ann"]
    assert table[1][2] == "no target" and table[1][3] == "draft"


def test_queue_html_counts() -> None:
    assert "37 / 1,204" in display.queue_html(36, 1204, "cat.jpg")
    assert "1,204 in the queue" in display.queue_html(None, 1204)
