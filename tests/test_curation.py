"""The curation studio's pure parts: hit-testing on overlapping masks, the queue's order and
filters, idempotent folder import, the image's ref list, overlays and progress."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from app.collection import import_images, thumbnail_file
from app.overlay import COLOURS, render, view_scale
from app.picking import hit
from app.session import Session, Target
from app.store import Store
from app.store.queue import ImageFilter, image_page, neighbour, nth, position, progress
from app.views import display
from deris_core.predictor import Prediction


def _prediction(masks: list[np.ndarray], scores: list[float], thr: float = 0.5) -> Prediction:
    h, w = masks[0].shape
    logits = torch.tensor(np.stack([np.where(m, 10.0, -10.0) for m in masks]), dtype=torch.float32)
    return Prediction("x", np.array(scores, np.float32), 0.9, np.zeros((len(masks), 4), np.float32), (h, w), thr, 0.5, logits)


def _box(y0: int, x0: int, y1: int, x1: int, h: int = 40, w: int = 40) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_a_click_adds_the_best_scoring_candidate_under_it_and_removes_a_target() -> None:
    big, small, other = _box(0, 0, 30, 30), _box(10, 10, 20, 20), _box(32, 32, 40, 40)
    pred = _prediction([big, small, other], [0.4, 0.8, 0.3])
    # where the two candidates overlap, the better score (the small box) wins
    assert hit(pred, [], 15, 15).action == "add" and hit(pred, [], 15, 15).candidate == 1
    assert hit(pred, [], 2, 2).candidate == 0  # only the big one there
    assert hit(pred, [], 31, 5).action == "none"  # nothing under the cursor
    assert hit(pred, [], 100, 5).action == "none"  # outside the image
    # inside a target of the set: removed, the topmost (last) one first
    targets = [big, small]
    assert hit(pred, targets, 15, 15) == hit(pred, targets, 12, 12)
    assert hit(pred, targets, 15, 15).action == "remove" and hit(pred, targets, 15, 15).target == 1
    assert hit(pred, targets, 2, 2).target == 0
    assert hit(None, [], 2, 2).action == "none"  # no prediction yet


def test_clicks_drive_the_session_and_undo() -> None:
    big, small = _box(0, 0, 30, 30), _box(10, 10, 20, 20)
    pred = _prediction([big, small], [0.9, 0.2], thr=0.5)
    sess = Session(image=np.zeros((40, 40, 3), np.uint8))
    sess.apply_prediction(pred)
    assert sess.selected_candidates() == [0]
    action = hit(pred, [t.mask for t in sess.targets], 15, 15)
    assert action.action == "remove"
    sess.change()
    del sess.targets[action.target]
    action = hit(pred, [t.mask for t in sess.targets], 15, 15)
    assert action.candidate == 0  # the best-scoring candidate under the point
    sess.toggle_candidates(sess.selected_candidates() + [1, 1])  # duplicates are ignored
    assert sess.selected_candidates() == [1]
    assert sess.undo() and sess.selected_candidates() == []


def _collection(tmp_path: Path, n: int = 6) -> tuple[Store, Path]:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for k in range(n):
        img = np.full((24 + k, 30, 3), 10 * k, np.uint8)
        cv2.imwrite(str(folder / ("sub" if k % 2 else "") / f"img_{k}.png"), img)
    return Store(tmp_path / "c.sqlite"), folder


def test_folder_import_is_idempotent_and_lists_unreadable_files(tmp_path: Path) -> None:
    store, folder = _collection(tmp_path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    cv2.imwrite(str(folder / "copy_of_0.png"), np.full((24, 30, 3), 0, np.uint8))  # same pixels as img_0
    first = import_images(store, folder, split="val", progress=False)
    assert first.added == 6 and first.known == 1 and [n for n, _ in first.skipped] == ["broken.jpg"]
    again = import_images(store, folder, progress=False)
    assert again.added == 0 and again.known == 7 and len(again.skipped) == 1
    cv2.imwrite(str(folder / "new.png"), np.full((50, 30, 3), 200, np.uint8))
    assert import_images(store, folder, progress=False).added == 1
    assert store.stats()["images"] == 7
    im = store.image(1)
    assert im.split == "val" and store.load_image(1).shape == (im.height, im.width, 3)
    assert thumbnail_file(store, 1).is_file() and thumbnail_file(store, 1) == thumbnail_file(store, 1)
    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "huge.png"), np.zeros((300, 100, 3), np.uint8))
    import_images(store, big, max_side=150, progress=False)
    (rec,) = [store.image(i) for i in range(1, 9) if store.image(i).original_name == "huge.png"]
    assert (rec.height, rec.width) == (150, 50) and "_media" in rec.path  # scaled down and copied


def test_the_queue_order_positions_and_filters(tmp_path: Path) -> None:
    store, folder = _collection(tmp_path)
    import_images(store, folder, progress=False)
    ids = [r.id for r in image_page(store, ImageFilter(), 0, 100)[0]]
    assert ids == sorted(ids) and len(ids) == 6
    store.save_ref(ids[1], ["a"], no_target=True, annotator="ann", status="done")
    store.save_ref(ids[3], ["b"], no_target=True, annotator="bob", status="draft")
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


def test_the_image_ref_list_shows_every_ref_of_that_image(tmp_path: Path) -> None:
    store, folder = _collection(tmp_path, 3)
    import_images(store, folder, progress=False)
    m = np.zeros((24, 30), bool)
    m[2:8, 2:8] = True
    r1 = store.save_ref(1, ["the box", "the square"], masks=[m], annotator="ann")
    r2 = store.save_ref(1, ["a cat"], no_target=True, annotator="bob", status="draft")
    store.save_ref(2, ["elsewhere"], no_target=True)
    rows, total = store.refs_page(0, 200, image_id=1, newest_first=False)
    table = display.ref_rows(rows, with_image=False)
    assert total == 2 and [r[0] for r in table] == [r1, r2]
    assert table[0][1:5] == ["the box | the square", "1", "done", "ann"]
    assert table[1][2] == "no target" and table[1][3] == "draft"


def test_overlays_number_targets_like_the_candidate_list_and_flag_no_target() -> None:
    img = np.full((100, 100, 3), 128, np.uint8)
    a, b = _box(5, 5, 50, 50, 100, 100), _box(60, 60, 95, 95, 100, 100)
    pred = _prediction([a, b], [0.3, 0.9])
    sess = Session(image=img)
    sess.apply_prediction(pred)
    sess.toggle_candidates([1, 0])
    sess.targets.append(Target(_box(0, 90, 10, 100, 100, 100)))
    assert display.target_numbers(sess) == [("1", 0), ("2", 1), ("D1", 10)]
    assert [c[0][:2] for c in display.candidate_choices(sess)] == ["1.", "2."]
    out = display.picture(sess)
    k = view_scale(img.shape)
    assert out.shape == (100 * k, 100 * k, 3) and k == 6
    # candidate 1 (row 1, colour 0) is tinted with colour 0 and outlined in black
    inside = out[70 * k, 65 * k].astype(int)
    assert np.abs(inside - (0.6 * 128 + 0.4 * COLOURS[0])).max() < 3
    assert (out == 0).all(axis=2).any()  # the dark outer outline
    sess.toggle_candidates([])
    sess.targets, sess.no_target = [], True
    flagged = display.picture(sess)
    assert (flagged[2, :, 0] > 200).all() and (flagged[2, :, 1] < 40).all()  # red NO TARGET bar
    assert "NO TARGET" in display.verdict_html(sess)
    assert render(img, [], [], []).shape == out.shape


def test_queue_html_counts() -> None:
    assert "37 / 1,204" in display.queue_html(36, 1204, "cat.jpg")
    assert "1,204 in the queue" in display.queue_html(None, 1204)
