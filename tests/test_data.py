"""Dataset loaders and the synthetic generator."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from deris_core.data.refer import DataError, decode_segmentation, load_grefcoco, load_refcoco, merge
from deris_core.synthetic import HELD_OUT, generate
from tests.conftest import require_reference


def test_grefcoco_loader_matches_the_official_merged_masks(tmp_path: Path) -> None:
    example = require_reference("grefcoco_example")
    (tmp_path / "grefcoco").mkdir()
    for name in ("grefs(unc).json", "instances.json"):
        (tmp_path / "grefcoco" / name).write_bytes((example / name).read_bytes())
    data = load_grefcoco(tmp_path)
    expected = np.load(example / "expected_merged_masks.npz")
    seen = set()
    for s in data.samples:
        np.testing.assert_array_equal(data.target_mask(s), expected[f"ref_{s.ref_id}"])
        seen.add(s.ref_id)
    assert seen == {int(k.split("_")[1]) for k in expected.files}
    assert [s.no_target for s in data.samples if s.ref_id == 2] == [True]
    assert {s.split for s in load_grefcoco(tmp_path, "val").samples} == {"val"}


def test_segmentation_encodings_agree() -> None:
    from pycocotools import mask as mask_utils

    m = np.zeros((7, 9), np.uint8)
    m[1:4, 2:6] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    as_str = {"size": rle["size"], "counts": rle["counts"].decode()}
    poly = [[2, 1, 6, 1, 6, 4, 2, 4]]
    for seg in ([as_str], as_str, poly):
        np.testing.assert_array_equal(decode_segmentation(seg, 7, 9), m)
    with pytest.raises(DataError):
        decode_segmentation([[1, 2, 3, 4]], 7, 9)


def test_refcoco_loader_and_hostile_pickle(tmp_path: Path) -> None:
    (tmp_path / "refcoco").mkdir()
    inst = {"images": [{"id": 5, "file_name": "a.jpg", "height": 4, "width": 4}],
            "annotations": [{"id": 9, "image_id": 5, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]], "bbox": [0, 0, 2, 2], "area": 4}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "refcoco" / "instances.json").write_text(json.dumps(inst))
    refs = [{"ref_id": 0, "image_id": 5, "ann_id": 9, "category_id": 1, "split": "testA",
             "sentences": [{"raw": "Left thing", "sent": "left thing", "sent_id": 3, "tokens": ["left", "thing"]}]}]
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    data = load_refcoco(tmp_path, split="testA")
    assert len(data) == 1 and data.samples[0].ann_ids == (9,) and data.target_mask(data.samples[0]).sum() == 4

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_refcoco(tmp_path)


def test_bad_dataset_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing file"):
        load_grefcoco(tmp_path)
    (tmp_path / "grefcoco").mkdir()
    (tmp_path / "grefcoco" / "grefs(unc).json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_grefcoco(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_grefcoco(tmp_path, "training")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    generate(root, seed=11, images=40)
    return root


def test_synthetic_is_deterministic(synthetic: Path, tmp_path: Path) -> None:
    generate(tmp_path, seed=11, images=40)
    assert _digest(tmp_path) == _digest(synthetic)
    other = tmp_path / "other"
    generate(other, seed=12, images=40)
    assert _digest(other) != _digest(synthetic)


def test_synthetic_masks_agree_with_expressions(synthetic: Path) -> None:
    refs = json.loads((synthetic / "grefcoco" / "grefs(unc).json").read_text())
    inst = json.loads((synthetic / "grefcoco" / "instances.json").read_text())
    anns = {a["id"]: a for a in inst["annotations"]}
    by_image: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cats = {c["id"]: c["name"] for c in inst["categories"]}

    def props(a: dict) -> dict:
        return {"shape": cats[a["category_id"]], **a["attributes"]}

    splits = {r["split"] for r in refs}
    assert splits == {"train", "val", "testA", "testB"}
    nt = sum(r["no_target"] for r in refs) / len(refs)
    assert 0.04 < nt < 0.16
    assert sum(len(r["ann_id"]) > 1 for r in refs) > 0.1 * len(refs)
    checked = 0
    for r in refs:
        sent = r["sentences"][0]["raw"]
        words = sent.split()
        objs = by_image[r["image_id"]]
        targets = [anns[a] for a in r["ann_id"] if a != -1]
        assert r["no_target"] == (r["ann_id"] == [-1]) == (r["category_id"] == [-1])
        if len(words) == 3 and words[0] == "the" and words[1] in ("red", "green", "blue", "yellow", "purple", "orange") \
                and words[2] in ("circle", "square", "triangle", "star"):
            want = [a for a in objs if props(a)["color"] == words[1] and props(a)["shape"] == words[2]]
            assert [a["id"] for a in want] == [a["id"] for a in targets]  # unique referent or no-target
            checked += 1
        if words[0] == "all" and words[-1] == "shapes":
            want = {a["id"] for a in objs if props(a)["color"] == words[1]}
            assert want == {a["id"] for a in targets}
            checked += 1
        if r["split"] == "testB" and targets:
            assert any((props(a)["color"], props(a)["shape"]) in HELD_OUT for a in targets)
        if r["split"] != "testB":
            assert all((props(a)["color"], props(a)["shape"]) not in HELD_OUT for a in objs)
        for a in targets:
            m = decode_segmentation(a["segmentation"], 128, 128)
            assert m.sum() == a["area"] > 0
    assert checked > 20


def test_merge_keeps_two_datasets_apart(synthetic: Path, tmp_path: Path) -> None:
    """Replayed refs join a store's: ids never collide, each sample keeps its own masks and pixels,
    and the second dataset's images are read from their own folder."""
    generate(tmp_path / "b", seed=12, images=12)
    a, b = load_grefcoco(synthetic, "train"), load_grefcoco(tmp_path / "b")
    m = merge(a, b)
    assert len(m) == len(a) + len(b)
    assert len(m.images) == len(a.images) + len(b.images) and len(m.annotations) == len(a.annotations) + len(b.annotations)
    assert len({s.ref_id for s in m.samples}) == len({s.ref_id for s in a.samples}) + len({s.ref_id for s in b.samples})
    for mine, orig, src in ((m.samples[0], a.samples[0], a), (m.samples[len(a)], b.samples[0], b),
                            (m.samples[-1], b.samples[-1], b)):
        assert mine.sentence == orig.sentence and mine.no_target == orig.no_target
        assert (m.target_mask(mine) == src.target_mask(orig)).all()
        assert (m.image_rgb(mine.image_id) == src.image_rgb(orig.image_id)).all()
    assert m.image_path(m.samples[-1].image_id).parent == (tmp_path / "b" / "images" / "train2014").resolve()
    assert set(m.categories.values()) == set(a.categories.values()) | set(b.categories.values())
