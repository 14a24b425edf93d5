"""Export and import of the store's data in the gRefCOCO / COCO formats, and their CLI.

Export writes a zip with ``grefcoco/instances.json`` (COCO: images, annotations,
categories) and ``grefcoco/grefs(unc).json`` (gRefCOCO refs), plus the images under
``images/train2014/`` when their pixels are known: the official gRefCOCO layout.

Segmentations. The official gRefCOCO loader only accepts polygons or a *list* of compressed
RLE dicts; pycocotools' ``annToRLE`` only accepts polygons or a single RLE dict. Polygons are
the one encoding both read, so ``segmentation`` holds polygons traced from the mask. Polygons
cannot represent every pixel set exactly (holes, one-pixel details), so every annotation also
carries the exact mask as a compressed RLE dict in an extra ``rle`` field, which both loaders
ignore and our importer prefers: no annotated pixel is lost in a round trip.

The functions here are pure over :class:`app.store.Snapshot` data, except the thin
``export_zip`` / ``import_*`` wrappers that read or write a :class:`Store` and files.

    python -m app.dataset import-grefcoco DIR --db DB
    python -m app.dataset import-coco INSTANCES_JSON IMAGE_DIR --db DB
    python -m app.dataset export --db DB --out dataset.zip
    python -m app.dataset stats --db DB
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from deris_core.data.refer import DataError, decode_segmentation

from .store import SPLITS, Snapshot, Store, StoreError, decode_mask, encode_mask

_PUNCT = re.compile(r"[.,'!?\"()*#:;]")


def normalise_sentence(raw: str) -> str:
    """gRefCOCO's ``sent``: lower case, punctuation removed, single spaces."""
    return " ".join(_PUNCT.sub("", raw.lower()).replace("-", " ").replace("/", " ").split())


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons (pixel-corner coordinates, >= 3 points each) whose union approximates ``mask``.

    Each outer boundary is traced on a 2x nearest-neighbour upsampling, so its vertices lie on
    pixel corners (x/2, y/2) and pycocotools rasterises most pixels back exactly.
    """
    m = np.asarray(mask).astype(np.uint8)
    big = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    big = np.pad(big, 1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c[:, 0, :].astype(np.float64) - 1.0  # undo the padding
        pts = (pts + 0.5) / 2.0  # 2x-pixel centres -> original coordinates on the pixel grid
        # push each vertex out to the nearest pixel corner of the original grid
        pts = np.where(pts % 1.0 >= 0.5, np.ceil(pts), np.floor(pts))
        if len(pts) < 3:
            x, y = pts.min(0)
            pts = np.array([[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]])
        polys.append([float(v) for v in pts.reshape(-1)])
    return polys


def polygons_to_mask(polys: list[list[float]], height: int, width: int) -> np.ndarray:
    rles = mask_utils.frPyObjects(polys, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


# --- export -------------------------------------------------------------------------------


def to_grefcoco(snap: Snapshot) -> tuple[dict, list[dict]]:
    """``(instances.json, grefs(unc).json)`` contents for a snapshot."""
    images = {im.id: im for im in snap.images}
    inst_by_id = {i.id: i for i in snap.instances}
    used_images = {r.image_id for r in snap.refs} | {i.image_id for i in snap.instances}
    coco = {
        "info": {"description": "exported by DeRIS Studio", "format": "gRefCOCO (grefer v0.1) + COCO instances",
                 "exact_masks": "annotation['rle'] holds the exact mask as compressed COCO RLE; "
                                "'segmentation' holds polygons for the official loaders"},
        "images": [{"id": im.id, "file_name": im.file_name, "height": im.height, "width": im.width}
                   for im in snap.images if im.id in used_images],
        "annotations": [],
        "categories": [{"id": cid, "name": name, "supercategory": ""} for cid, name in sorted(snap.categories.items())],
    }
    for inst in snap.instances:
        mask = decode_mask(inst.rle)
        coco["annotations"].append({
            "id": inst.id, "image_id": inst.image_id, "category_id": inst.category_id, "iscrowd": int(inst.iscrowd),
            "segmentation": mask_to_polygons(mask), "bbox": inst.bbox, "area": float(inst.area), "rle": inst.rle,
        })
    grefs = []
    for r in snap.refs:
        im = images[r.image_id]
        sents = [{"tokens": normalise_sentence(s).split(), "raw": s, "sent": normalise_sentence(s), "sent_id": sid}
                 for sid, s in zip(r.sentence_ids, r.sentences)]
        targets = [] if r.no_target else list(r.instance_ids)
        grefs.append({
            "ref_id": r.id, "image_id": r.image_id, "split": r.split,
            "ann_id": targets or [-1],
            "category_id": [inst_by_id[i].category_id for i in targets] or [-1],
            "sentences": sents, "sent_ids": [s["sent_id"] for s in sents],
            "file_name": im.file_name, "no_target": not targets,
            "annotator": r.annotator, "status": r.status,
        })
    return coco, grefs


def validate_grefcoco(coco: dict, grefs: list[dict]) -> list[str]:
    """Problems that would break the official loaders (empty when the data follows the spec)."""
    problems = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            problems.append(f"instances.json: {key!r} must be a list")
    if problems:
        return problems
    images = {im["id"]: im for im in coco["images"]}
    anns = {a["id"]: a for a in coco["annotations"]}
    cats = {c["id"] for c in coco["categories"]}
    for a in coco["annotations"]:
        seg = a.get("segmentation")
        if not (isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 6 for p in seg)):
            problems.append(f"annotation {a['id']}: segmentation must be a list of polygons with >= 3 points")
        if a["image_id"] not in images:
            problems.append(f"annotation {a['id']}: unknown image {a['image_id']}")
        if a["category_id"] not in cats:
            problems.append(f"annotation {a['id']}: unknown category {a['category_id']}")
    ref_ids, sent_ids = set(), set()
    for r in grefs:
        rid = r.get("ref_id")
        if rid in ref_ids:
            problems.append(f"duplicate ref_id {rid}")
        ref_ids.add(rid)
        if r.get("image_id") not in images:
            problems.append(f"ref {rid}: unknown image {r.get('image_id')}")
        ann, cat = r.get("ann_id"), r.get("category_id")
        if not isinstance(ann, list) or not ann or not isinstance(cat, list) or len(cat) != len(ann):
            problems.append(f"ref {rid}: ann_id and category_id must be parallel non-empty lists")
            continue
        if ann == [-1]:
            if cat != [-1] or r.get("no_target") is not True:
                problems.append(f"ref {rid}: a no-target ref needs category_id [-1] and no_target true")
        else:
            if -1 in ann:
                problems.append(f"ref {rid}: -1 mixed with real annotation ids")
            for a, c in zip(ann, cat):
                if a not in anns:
                    problems.append(f"ref {rid}: unknown annotation {a}")
                elif anns[a]["category_id"] != c or anns[a]["image_id"] != r["image_id"]:
                    problems.append(f"ref {rid}: annotation {a} has another category or image")
                elif anns[a].get("iscrowd"):
                    problems.append(f"ref {rid}: annotation {a} is a crowd region (the official loader drops it)")
            if r.get("no_target") is not False:
                problems.append(f"ref {rid}: no_target must be false for a targeted ref")
        if r.get("split") not in SPLITS:
            problems.append(f"ref {rid}: split {r.get('split')!r} is not one of {SPLITS}")
        sents = r.get("sentences")
        if not isinstance(sents, list) or not sents:
            problems.append(f"ref {rid}: needs at least one sentence")
            continue
        for s in sents:
            if not isinstance(s.get("tokens"), list) or not isinstance(s.get("sent_id"), int) or "raw" not in s or "sent" not in s:
                problems.append(f"ref {rid}: each sentence needs tokens (list), raw, sent and an integer sent_id")
            elif s["sent_id"] in sent_ids:
                problems.append(f"ref {rid}: duplicate sent_id {s['sent_id']}")
            else:
                sent_ids.add(s["sent_id"])
    return problems


def export_zip(store: Store, out: str | Path, include_images: bool = True) -> dict:
    """Write the dataset zip atomically (temporary file, then rename); returns a summary."""
    out = Path(out)
    snap = store.snapshot()
    coco, grefs = to_grefcoco(snap)
    problems = validate_grefcoco(coco, grefs)
    if problems:
        raise StoreError("export refused, the data would break the official loaders: " + "; ".join(problems[:5]))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    images_written = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("grefcoco/instances.json", json.dumps(coco))
            zf.writestr("grefcoco/grefs(unc).json", json.dumps(grefs))
            if include_images:
                wanted = {im["id"] for im in coco["images"]}
                for im in snap.images:
                    if im.id in wanted and im.path and Path(im.path).is_file():
                        zf.write(im.path, f"images/train2014/{im.file_name}")
                        images_written += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"out": str(out), "images": len(coco["images"]), "annotations": len(coco["annotations"]),
            "refs": len(grefs), "image_files": images_written}


# --- import -------------------------------------------------------------------------------


def _annotation_mask(a: dict, height: int, width: int) -> np.ndarray:
    if isinstance(a.get("rle"), dict):
        return decode_mask(a["rle"])
    return decode_segmentation(a["segmentation"], height, width).astype(bool)


def _import_instances(store: Store, coco: dict, image_dir: Path | None) -> tuple[dict[int, int], dict[int, int], list[str]]:
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"instances.json has no {key!r} list")
    cat_map = {int(c["id"]): store.category_id(str(c["name"]), str(c.get("supercategory", "")), int(c["id"]))
               for c in coco["categories"]}
    img_map, sizes = {}, {}
    for im in coco["images"]:
        path = image_dir / im["file_name"] if image_dir else None
        img_map[int(im["id"])] = store.add_image_record(im["file_name"], im["width"], im["height"],
                                                        str(path) if path and path.is_file() else None, int(im["id"]))
        sizes[int(im["id"])] = (int(im["height"]), int(im["width"]))
    ann_map, skipped = {}, []
    for a in coco["annotations"]:
        h, w = sizes[int(a["image_id"])]
        try:
            mask = _annotation_mask(a, h, w)
            ann_map[int(a["id"])] = store.add_instance(
                img_map[int(a["image_id"])], rle=encode_mask(mask), iscrowd=bool(a.get("iscrowd", 0)), source="import",
                instance_id=int(a["id"]), category_id=cat_map[int(a["category_id"])])
        except (DataError, StoreError, KeyError) as exc:
            skipped.append(f"annotation {a.get('id')}: {exc}")
    return img_map, ann_map, skipped


def import_coco(store: Store, instances_json: str | Path, image_dir: str | Path | None) -> dict:
    """Add the images and instances of a plain COCO ``instances.json`` (so they can be picked as referents)."""
    path = Path(instances_json)
    try:
        coco = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    img_map, ann_map, skipped = _import_instances(store, coco, Path(image_dir) if image_dir else None)
    return {"images": len(img_map), "instances": len(ann_map), "skipped": skipped}


def import_grefcoco_data(store: Store, coco: dict, grefs: list[dict], image_dir: Path | None) -> dict:
    img_map, ann_map, skipped = _import_instances(store, coco, image_dir)
    refs = 0
    for r in grefs:
        ann = r["ann_id"] if isinstance(r["ann_id"], list) else [r["ann_id"]]
        no_target = ann == [-1]
        try:
            targets = [] if no_target else [ann_map[int(a)] for a in ann]
        except KeyError as exc:
            skipped.append(f"ref {r.get('ref_id')}: annotation {exc} was not imported")
            continue
        sents = [(int(s["sent_id"]) if "sent_id" in s else None, s.get("raw") or s.get("sent", "")) for s in r["sentences"]]
        split = r.get("split", "train") if r.get("split") in SPLITS else "train"
        store.insert_ref(int(r["ref_id"]), img_map[int(r["image_id"])], sents, targets, no_target, split,
                         r.get("annotator", ""), r.get("status", "done") if r.get("status") in ("draft", "done", "reviewed", "rejected") else "done")
        refs += 1
    return {"images": len(img_map), "instances": len(ann_map), "refs": refs, "skipped": skipped}


def import_grefcoco(store: Store, root: str | Path) -> dict:
    """Import ``root/grefcoco/{grefs(unc).json, instances.json}`` with images in ``root/images/train2014``."""
    root = Path(root)
    files = {}
    for name in ("instances.json", "grefs(unc).json"):
        p = root / "grefcoco" / name
        try:
            files[name] = json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(f"missing file: {p} (expected the official layout DIR/grefcoco/{name})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{p} is not valid JSON: {exc}") from None
    image_dir = root / "images" / "train2014"
    return import_grefcoco_data(store, files["instances.json"], files["grefs(unc).json"], image_dir if image_dir.is_dir() else None)


def read_zip(path: str | Path) -> tuple[dict, list[dict]]:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("grefcoco/instances.json")), json.loads(zf.read("grefcoco/grefs(unc).json"))


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.dataset", description="Scripted curation of a DeRIS Studio database.")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("import-grefcoco", help="import a dataset in the official gRefCOCO layout")
    a.add_argument("dir")
    a.add_argument("--db", required=True)
    b = sub.add_parser("import-coco", help="import a COCO instances.json and its image folder")
    b.add_argument("instances_json")
    b.add_argument("image_dir")
    b.add_argument("--db", required=True)
    c = sub.add_parser("export", help="export the database as a gRefCOCO zip")
    c.add_argument("--db", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--no-images", action="store_true", help="annotations only")
    d = sub.add_parser("stats", help="print counts")
    d.add_argument("--db", required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd in ("stats", "export") and not Path(args.db).is_file():
            raise StoreError(f"database not found: {args.db}")
        store = Store(args.db)
        if args.cmd == "import-grefcoco":
            res = import_grefcoco(store, args.dir)
        elif args.cmd == "import-coco":
            res = import_coco(store, args.instances_json, args.image_dir)
        elif args.cmd == "export":
            res = export_zip(store, args.out, include_images=not args.no_images)
        else:
            res = store.stats()
    except (DataError, StoreError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
