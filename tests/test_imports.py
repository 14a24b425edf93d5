"""Datasets made by other people: every malformed or hostile input is refused with file, record
and field named, the database is left exactly as it was, and what is accepted exports again."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from app.dataset.cli import export_zip, import_coco, import_grefcoco, read_zip
from app.dataset.imports import ImportRefused
from app.store import Store
from app.store.masks import compressed_counts


ROOT = Path(__file__).resolve().parents[1]


def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def _dataset() -> tuple[dict, list[dict]]:
    m = np.zeros((10, 12), np.uint8)
    m[2:6, 3:9] = 1
    coco = {"images": [{"id": 7, "file_name": "a.png", "height": 10, "width": 12},
                       {"id": 8, "file_name": "sub/b.png", "height": 10, "width": 12}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]]},
                {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": _rle(m)},
                {"id": 3, "image_id": 8, "category_id": 3, "iscrowd": 1, "segmentation": [_rle(m)]}],
            "categories": [{"id": 3, "name": "cup"}]}
    sent = lambda i, t: {"raw": t, "sent": t, "tokens": t.split(), "sent_id": i}  # noqa: E731
    grefs = [{"ref_id": 1, "image_id": 7, "ann_id": [1, 2], "category_id": [3, 3], "split": "train",
              "sentences": [sent(10, "both cups")], "no_target": False},
             {"ref_id": 2, "image_id": 8, "ann_id": [-1], "category_id": [-1], "split": "val",
              "sentences": [sent(11, "a dog")], "no_target": True}]
    return coco, grefs


def _write(root: Path, coco, grefs, raw: dict[str, bytes] | None = None) -> Path:
    (root / "grefcoco").mkdir(parents=True, exist_ok=True)
    (root / "images" / "train2014" / "sub").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / "train2014" / "a.png"), np.zeros((10, 12, 3), np.uint8))
    cv2.imwrite(str(root / "images" / "train2014" / "sub" / "b.png"), np.full((10, 12, 3), 9, np.uint8))
    (root / "grefcoco" / "instances.json").write_bytes((raw or {}).get("instances") or json.dumps(coco).encode())
    (root / "grefcoco" / "grefs(unc).json").write_bytes((raw or {}).get("grefs") or json.dumps(grefs).encode())
    return root


def _dump(db: str) -> str:
    """Every row of every table (SQLite: the whole dump, sequences included)."""
    from app.store.location import parse_db

    if parse_db(db).is_postgres:
        s = Store(db)
        tables = ("images", "categories", "instances", "refs", "sentences", "ref_instances", "events", "imports", "media")
        out = "\n".join(f"{t}: {sorted(map(repr, s.read(f'SELECT * FROM {t}')))}" for t in tables)
        s.close()
        return out
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def _bad(path: list, value, target: str = "coco"):
    def mutate(coco, grefs):
        obj = coco if target == "coco" else grefs
        for key in path[:-1]:
            obj = obj[key]
        if value is _DELETE:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return mutate


_DELETE = object()


m_sum_wrong = {"size": [10, 12], "counts": "05"}  # runs add up to 5, not 120


HOSTILE = {
    "dotdot file name": (_bad(["images", 0, "file_name"], "../../../etc/passwd"), "leaves the image folder"),
    "absolute file name": (_bad(["images", 0, "file_name"], "/etc/passwd"), "absolute path"),
    "backslash file name": (_bad(["images", 0, "file_name"], "..\\..\\x.png"), "backslash"),
    "control characters": (_bad(["images", 0, "file_name"], "a\x00.png"), "control characters"),
    "id as string": (_bad(["images", 0, "id"], "7"), "images[0]: needs an integer 'id'"),
    "zero width": (_bad(["images", 0, "width"], 0), "width must be positive"),
    "negative height": (_bad(["images", 1, "height"], -4), "height must be positive"),
    "absurd size": (_bad(["images", 0, "width"], 10**9), "larger than"),
    "size as text": (_bad(["images", 0, "width"], "12"), "width must be an integer"),
    "text in polygon": (_bad(["annotations", 0, "segmentation"], [[3, 2, "x", 2, 9, 6]]), "not a finite number"),
    "list where dict": (_bad(["annotations", 0], [1, 2]), "annotations[0]: needs an integer 'id'"),
    "missing key": (_bad(["annotations", 0, "image_id"], _DELETE), "unknown image None"),
    "unknown category": (_bad(["annotations", 0, "category_id"], 99), "unknown category 99"),
    "duplicate image id": (_bad(["images", 1, "id"], 7), "duplicate image id 7"),
    "duplicate annotation id": (_bad(["annotations", 1, "id"], 1), "duplicate annotation id 1"),
    "RLE sum wrong": (_bad(["annotations", 1, "segmentation"], m_sum_wrong), "add up to 5 pixels"),
    "RLE bad characters": (_bad(["annotations", 1, "segmentation"], {"size": [10, 12], "counts": "0\x7f~"}),
                           "not in the RLE alphabet"),
    "RLE size mismatch": (_bad(["annotations", 1, "segmentation", "size"], [12, 10]), "does not match"),
    "empty mask": (_bad(["annotations", 1, "segmentation"], {"size": [10, 12], "counts": [120]}), "the mask is empty"),
    "categories not a list": (_bad(["categories"], {"id": 3}), "'categories' must be a list"),
    "ref to unknown annotation": (_bad([0, "ann_id"], [1, 99], "grefs"), "unknown annotation 99"),
    "ref to a crowd region": (_bad([1, "ann_id"], [3], "grefs"), "crowd region"),
    "ref to another image's annotation": (_bad([1, "ann_id"], [1], "grefs"), "belongs to another image"),
    "duplicate ref id": (_bad([1, "ref_id"], 1, "grefs"), "duplicate ref_id 1"),
    "unknown split": (_bad([1, "split"], "holdout", "grefs"), "'holdout' is not one of"),
    "sentences not a list": (_bad([0, "sentences"], "both cups", "grefs"), "non-empty list of objects"),
    "absurd sentence": (_bad([0, "sentences", 0, "raw"], "x" * 5000, "grefs"), "limit is 500"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_malformed_dataset_is_refused_and_changes_nothing(db_at, case: str, tmp_path: Path) -> None:
    db = db_at("db.sqlite")
    s = Store(db)
    s.save_ref(s.add_image(np.zeros((4, 4, 3), np.uint8)), ["earlier work"], no_target=True)
    before = _dump(db)
    coco, grefs = _dataset()
    mutate, expected = HOSTILE[case]
    mutate(coco, grefs)
    root = _write(tmp_path / "ds", coco, grefs)
    with pytest.raises(ImportRefused) as err:
        import_grefcoco(s, root)
    assert expected in str(err.value)
    assert "refs[" in str(err.value) or "images[" in str(err.value) or "annotations[" in str(err.value) \
        or "top level" in str(err.value) or "categories[" in str(err.value)
    assert _dump(db) == before


def test_a_large_file_whose_last_ref_is_bad_leaves_nothing_behind(db_at, tmp_path: Path) -> None:
    db = db_at("db.sqlite")
    s = Store(db)
    before = _dump(db)
    coco, grefs = _dataset()
    sent = {"raw": "cup", "sent": "cup", "tokens": ["cup"]}
    grefs += [{"ref_id": 100 + k, "image_id": 7, "ann_id": [1], "split": "train", "sentences": [sent]} for k in range(300)]
    grefs[-1]["ann_id"] = [4242]
    with pytest.raises(ImportRefused, match=r"refs\[301\] \(ref_id 399\): field 'ann_id': unknown annotation 4242"):
        import_grefcoco(s, _write(tmp_path / "ds", coco, grefs))
    assert _dump(db) == before


def test_non_utf8_and_invalid_json_are_named(db_at, tmp_path: Path) -> None:
    s = Store(db_at("db.sqlite"))
    coco, grefs = _dataset()
    with pytest.raises(ImportRefused, match=r"instances.json: not UTF-8"):
        import_grefcoco(s, _write(tmp_path / "a", coco, grefs, {"instances": b"\xff\xfe{}"}))
    with pytest.raises(ImportRefused, match=r"grefs\(unc\).json: not valid JSON \(line 1"):
        import_grefcoco(s, _write(tmp_path / "b", coco, grefs, {"grefs": b"[{"}))


def test_a_link_out_of_the_image_folder_is_refused(db_at, tmp_path: Path) -> None:
    s = Store(db_at("db.sqlite"))
    coco, grefs = _dataset()
    root = _write(tmp_path / "ds", coco, grefs)
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.zeros((10, 12, 3), np.uint8))
    (root / "images" / "train2014" / "a.png").unlink()
    (root / "images" / "train2014" / "a.png").symlink_to(secret)
    with pytest.raises(ImportRefused, match="resolves outside the image folder"):
        import_grefcoco(s, root)


def test_accepted_data_exports_again_and_reimport_is_refused(db_at, tmp_path: Path) -> None:
    db = db_at("db.sqlite")
    s = Store(db)
    coco, grefs = _dataset()
    root = _write(tmp_path / "ds", coco, grefs)
    res = import_grefcoco(s, root)
    assert res["refs"] == 2 and res["instances"] == 3
    assert s.image(8).file_name == "b.png" and s.image(8).original_name == "sub/b.png"
    assert s.load_image(8) is not None  # read inside the folder it was given
    before = _dump(db)
    with pytest.raises(Exception, match="already imported"):
        import_grefcoco(s, root)
    assert _dump(db) == before
    out = tmp_path / "e.zip"
    export_zip(s, out)
    coco2, grefs2 = read_zip(out)
    assert {r["ref_id"] for r in grefs2} == {1, 2}


def test_export_names_are_unique_and_confined(db_at, tmp_path: Path) -> None:
    s = Store(db_at("db.sqlite"))
    for k, name in enumerate(["x/cat.png", "y/cat.png", "../../etc/passwd", "/abs/CAT.png", "ünïcode name?.png", ""]):
        img = s.add_image(np.full((4, 4, 3), k, np.uint8), file_name=name)
        s.save_ref(img, [f"ref {k}"], no_target=True)
    out = tmp_path / "e.zip"
    export_zip(s, out)
    with zipfile.ZipFile(out) as zf:
        names = [n for n in zf.namelist() if n.startswith("images/")]
        meta = json.loads(zf.read("export.json"))
    assert len(names) == 6 and len({n.lower() for n in names}) == 6
    assert all(n.count("/") == 2 and ".." not in n and n.startswith("images/train2014/") for n in names)
    assert "images/train2014/passwd" in names and "images/train2014/unicode_name_.png" in names
    _, grefs = read_zip(out)
    assert {"images/train2014/" + g["file_name"] for g in grefs} == set(names)
    assert meta["filter"] == {"status": None, "split": None, "annotator": None}


def test_compressed_counts_match_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((17, 23)) > rng.random()
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        runs = compressed_counts(r["counts"].decode())
        assert sum(runs) == 17 * 23 and sum(runs[1::2]) == int(m.sum())


def test_cli_names_every_problem_and_exits_2(db_at, tmp_path: Path) -> None:
    coco, grefs = _dataset()
    bad = copy.deepcopy(coco)
    bad["images"][1]["file_name"] = "../x.png"
    bad["annotations"][1]["segmentation"] = m_sum_wrong
    (tmp_path / "instances.json").write_text(json.dumps(bad))
    db = db_at("c.sqlite")
    r = subprocess.run([sys.executable, "-m", "app.dataset", "import-coco", str(tmp_path / "instances.json"),
                        str(tmp_path), "--db", str(db)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "2 problems" in r.stderr
    assert "instances.json: images[1] (id 8): file_name leaves the image folder" in r.stderr
    assert "annotations[1] (id 2): field 'segmentation': RLE counts add up to 5 pixels" in r.stderr
    assert Store(db).stats()["images"] == 0
    good = tmp_path / "good.json"
    good.write_text(json.dumps(coco))
    assert import_coco(Store(db), good, tmp_path)["instances"] == 3


def test_an_import_never_brings_back_a_deleted_ref_id(db_at, tmp_path: Path) -> None:
    s = Store(db_at("db.sqlite"))
    img = s.add_image(np.zeros((4, 4, 3), np.uint8))
    gone = s.save_ref(img, ["x"], no_target=True, author="alice")
    s.delete_ref(gone, actor="bob")
    coco, grefs = _dataset()
    grefs[0]["ref_id"] = gone
    import_grefcoco(s, _write(tmp_path / "ds", coco, grefs))
    assert gone not in {r.id for r in s.refs()}
    assert [e.action for e in s.events(gone)] == ["create", "delete"]


@pytest.mark.parametrize("where", ["file_name", "category", "sentence", "annotator", "key", "sent"])
def test_lone_surrogates_in_a_dataset_are_a_one_line_refusal(db_at, tmp_path: Path, where: str) -> None:
    coco, grefs = _dataset()
    bad = "x\ud800y"
    if where == "file_name":
        coco["images"][0]["file_name"] = f"a{bad}.png"
    elif where == "category":
        coco["categories"][0]["name"] = bad
    elif where == "sentence":
        grefs[0]["sentences"][0]["raw"] = bad
    elif where == "annotator":
        grefs[0]["annotator"] = bad
    elif where == "key":
        grefs[0][bad] = 1
    else:
        grefs[0]["sentences"][0]["sent"] = "\udfff"
    root = tmp_path / "ds"
    (root / "grefcoco").mkdir(parents=True)
    (root / "grefcoco" / "instances.json").write_text(json.dumps(coco))  # json escapes the surrogate as \ud800
    (root / "grefcoco" / "grefs(unc).json").write_text(json.dumps(grefs))
    store = Store(db_at("d.sqlite"))
    with pytest.raises(ImportRefused, match="not valid Unicode") as err:
        import_grefcoco(store, root)
    assert "\n" not in str(err.value) and store.stats()["refs"] == 0 and store.stats()["images"] == 0
    str(err.value).encode("utf-8")  # printable
    if where == "file_name":  # the CLI: one error line, exit 2
        r = subprocess.run([sys.executable, "-m", "app.dataset", "import-grefcoco", str(root), "--db",
                            str(tmp_path / "e.sqlite")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "not valid Unicode" in r.stderr and "Traceback" not in r.stderr
