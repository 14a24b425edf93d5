"""Imports of datasets other people made: validate everything first, then write in one transaction.

A malformed dataset is refused with :class:`ImportRefused`, which names the file, the record
and the field of each problem; the database is then exactly as it was. Whatever is accepted
follows the rules the export checks, so it can always be exported again. File names are read
only inside the image folder that was given (no ``..``, no absolute paths, no links out), and
stored under a safe name with the original kept. Importing the same files twice is refused.

Segmentations: polygons, a compressed or uncompressed RLE dict, or a list of those; an extra
``rle`` field (our export's exact mask) is preferred. RLE counts must add up to height x width
(pycocotools would otherwise decode garbage).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pycocotools import mask as mask_utils

from ..store import SPLITS, STATUSES, RefStatus, Store, StoreError, clean_sentences
from ..store.bulk import ImportPlan, PlannedAnnotation, PlannedImage, PlannedRef, write_plan
from ..store.masks import polygons_problem, rle_problem, size_problem
from ..store.names import display_name, not_utf8, relative_name_problem

MAX_PROBLEMS_SHOWN = 8
log = logging.getLogger(__name__)


class ImportRefused(StoreError):
    """A dataset that cannot be imported; ``problems`` lists every reason found (file: record: field)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        super().__init__(f"import refused, the database was not changed: {shown}{more}")


def _refused(problems: list[str]) -> ImportRefused:
    """The refusal of an import, logged at INFO with its first reason (the whole list goes to the person)."""
    log.info("import refused (%d problem(s)), nothing written: %s", len(problems), problems[0] if problems else "-")
    return ImportRefused(problems)


@dataclass
class _Checker:
    file: str
    problems: list[str] = field(default_factory=list)
    refused: set[tuple[str, object]] = field(default_factory=set)  # records already reported

    def add(self, where: str, what: str) -> None:
        self.problems.append(f"{self.file}: {where}: {what}")


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _located(chk: _Checker, kind: str, n: int, rec: object, key: str, seen, label: str) -> str | None:
    """``"kind[n] (key value)"`` for a record with a new integer id; None (problem recorded) otherwise."""
    where = f"{kind}[{n}]"
    if not isinstance(rec, dict) or not _int(rec.get(key)):
        chk.add(where, f"needs an integer {key!r}")
        return None
    where += f" ({'id' if key == 'id' else key} {rec[key]})"
    if rec[key] in seen:
        chk.add(where, f"duplicate {label} {rec[key]}")
        return None
    return where


def read_json(path: Path) -> tuple[object, bytes]:
    """Parsed JSON and its bytes; a clear ImportRefused for a missing, non-UTF-8 or invalid file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _refused([f"{path.name}: the file is missing"]) from None
    except OSError as exc:
        raise _refused([f"{path.name}: cannot be read ({exc.strerror})"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refused([f"{path.name}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        return json.loads(text), data
    except json.JSONDecodeError as exc:
        raise _refused([f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"]) from None


def _segmentation_rle(a: dict, h: int, w: int, where: str, chk: _Checker) -> dict | None:
    """The annotation's mask as one compressed RLE (bytes counts), or None with a problem recorded."""
    seg = a["rle"] if isinstance(a.get("rle"), dict) else a.get("segmentation")
    field_name = "rle" if isinstance(a.get("rle"), dict) else "segmentation"
    parts = [seg] if isinstance(seg, dict) else seg
    if isinstance(parts, list) and parts and all(isinstance(p, dict) for p in parts):
        rles = []
        for p in parts:
            bad = rle_problem(p, h, w)
            if bad:
                chk.add(where, f"field {field_name!r}: {bad}")
                return None
            c = p["counts"]
            rles.append(mask_utils.frPyObjects(p, h, w) if isinstance(c, list) else {"size": [h, w], "counts": c.encode("ascii")})
        return rles[0] if len(rles) == 1 else mask_utils.merge(rles)
    bad = polygons_problem(seg)
    if bad:
        chk.add(where, f"field {field_name!r}: {bad}")
        return None
    return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in seg], h, w))


def _check_instances(coco: object, image_dir: Path | None, chk: _Checker) -> tuple[list[PlannedImage], list[PlannedAnnotation], dict]:
    if not isinstance(coco, dict):
        chk.add("top level", f"must be an object with images, annotations and categories, got {type(coco).__name__}")
        return [], [], {}
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            chk.add("top level", f"{key!r} must be a list")
    if chk.problems:
        return [], [], {}
    cats: dict[int, tuple[str, str]] = {}
    for n, c in enumerate(coco["categories"]):
        where = f"categories[{n}]"
        if not isinstance(c, dict) or not _int(c.get("id")) or not isinstance(c.get("name"), str) or not c["name"].strip():
            chk.add(where, "needs an integer 'id' and a non-empty 'name'")
        elif c["id"] in cats:
            chk.add(where, f"duplicate category id {c['id']}")
        else:
            cats[c["id"]] = (c["name"], str(c.get("supercategory") or ""))
    images: dict[int, PlannedImage] = {}
    root = image_dir.resolve() if image_dir else None
    for n, im in enumerate(coco["images"]):
        where = _located(chk, "images", n, im, "id", images, "image id")
        if where is None:
            continue
        bad = size_problem(im.get("width"), im.get("height")) or relative_name_problem(im.get("file_name"))
        if bad:
            chk.add(where, bad)
            chk.refused.add(("image", im["id"]))
            continue
        path = None
        if root is not None:
            candidate = (root / im["file_name"]).resolve()
            if not candidate.is_relative_to(root):
                chk.add(where, "file_name resolves outside the image folder (a link?)")
                chk.refused.add(("image", im["id"]))
                continue
            path = str(candidate) if candidate.is_file() else None
        images[im["id"]] = PlannedImage(im["id"], im["file_name"], path, im["width"], im["height"])
    anns: dict[int, PlannedAnnotation] = {}
    for n, a in enumerate(coco["annotations"]):
        where = _located(chk, "annotations", n, a, "id", anns, "annotation id")
        if where is None:
            continue
        img, cat = images.get(a.get("image_id")), a.get("category_id")
        if ("image", a.get("image_id")) in chk.refused:
            chk.refused.add(("annotation", a["id"]))
            continue  # its image's problem is already listed
        if img is None:
            chk.add(where, f"field 'image_id': unknown image {a.get('image_id')!r}")
            continue
        if not _int(cat) or cat not in cats:
            chk.add(where, f"field 'category_id': unknown category {cat!r}")
            continue
        if a.get("iscrowd", 0) not in (0, 1, True, False):
            chk.add(where, "field 'iscrowd' must be 0 or 1")
            continue
        rle = _segmentation_rle(a, img.height, img.width, where, chk)
        if rle is None:
            chk.refused.add(("annotation", a["id"]))
            continue
        if int(mask_utils.area(rle)) == 0:
            chk.add(where, "the mask is empty")
            continue
        anns[a["id"]] = PlannedAnnotation(a["id"], img.src_id, cat, cats[cat][0], cats[cat][1], rle, bool(a.get("iscrowd", 0)))
    return list(images.values()), list(anns.values()), anns


def _check_refs(grefs: object, images: dict[int, PlannedImage], anns: dict[int, PlannedAnnotation],
                chk: _Checker) -> list[PlannedRef]:
    if not isinstance(grefs, list):
        chk.add("top level", f"must be a list of refs, got {type(grefs).__name__}")
        return []
    out, ref_ids = [], set()
    for n, r in enumerate(grefs):
        where = _located(chk, "refs", n, r, "ref_id", ref_ids, "ref_id")
        if where is None:
            continue
        ref_ids.add(r["ref_id"])
        if r.get("image_id") not in images or not _int(r.get("image_id")):
            chk.add(where, f"field 'image_id': unknown image {r.get('image_id')!r}")
            continue
        ann = r.get("ann_id")
        ann = [ann] if _int(ann) else ann
        if not isinstance(ann, list) or not ann or not all(_int(a) for a in ann):
            chk.add(where, "field 'ann_id' must be a non-empty list of integers ([-1] for no target)")
            continue
        no_target = ann == [-1]
        targets = [] if no_target else ann
        if any(("annotation", a) in chk.refused for a in targets):
            continue  # the annotation's problem is already listed
        bad = [a for a in targets if a not in anns]
        if bad:
            chk.add(where, f"field 'ann_id': unknown annotation {bad[0]}")
            continue
        if any(anns[a].image_src != r["image_id"] for a in targets):
            chk.add(where, "field 'ann_id': an annotation belongs to another image")
            continue
        if any(anns[a].iscrowd for a in targets):
            chk.add(where, "field 'ann_id': a crowd region cannot be a referent (the official loader drops it)")
            continue
        if len(set(targets)) != len(targets):
            chk.add(where, "field 'ann_id': an annotation is listed twice")
            continue
        sents = r.get("sentences")
        if not isinstance(sents, list) or not sents or not all(isinstance(s, dict) for s in sents):
            chk.add(where, "field 'sentences' must be a non-empty list of objects")
            continue
        texts = [s.get("raw") if isinstance(s.get("raw"), str) and s["raw"].strip() else s.get("sent") for s in sents]
        if not all(isinstance(t, str) for t in texts):
            chk.add(where, "field 'sentences': each needs a 'raw' or 'sent' string")
            continue
        try:
            clean_sentences(texts)
        except StoreError as exc:
            chk.add(where, f"field 'sentences': {exc}")
            continue
        sent_ids = [s.get("sent_id") if _int(s.get("sent_id")) else None for s in sents]
        split = r.get("split", "train")
        if split not in SPLITS:
            chk.add(where, f"field 'split': {split!r} is not one of {', '.join(SPLITS)}")
            continue
        status = r.get("status", RefStatus.DONE.value)
        annotator = r.get("annotator", "")
        if status not in STATUSES or not isinstance(annotator, str):
            chk.add(where, "field 'status' or 'annotator' is not valid")
            continue
        out.append(PlannedRef(r["ref_id"], r["image_id"], list(zip(sent_ids, texts)), targets, no_target, split,
                              annotator, status))
    return out


def _text_problems(obj: object, file: str, where: str = "", out: list[str] | None = None) -> list[str]:
    """Every string (keys included) that is not valid Unicode (a lone surrogate, from a JSON ``\\udXXX``
    escape): SQLite cannot store it, so the dataset is refused naming the file, record and field."""
    out = [] if out is None else out
    stack = [(where or "top level", obj)]
    while stack and len(out) < MAX_PROBLEMS_SHOWN:
        at, o = stack.pop()
        if isinstance(o, str):
            if not_utf8(o):
                out.append(f"{file}: {at}: text {display_name(o)[:80]!r} is not valid Unicode (a lone surrogate)")
        elif isinstance(o, dict):
            for k, v in o.items():
                if isinstance(k, str) and not_utf8(k):
                    out.append(f"{file}: {at}: key {display_name(k)[:80]!r} is not valid Unicode (a lone surrogate)")
                stack.append((f"{at}.{display_name(str(k))[:40]}" if at != "top level" else display_name(str(k))[:40], v))
        elif isinstance(o, list):
            stack.extend((f"{at}[{n}]", v) for n, v in reversed(list(enumerate(o))))
    return out


def plan_import(coco: object, grefs: object | None, image_dir: Path | None, coco_name: str = "instances.json",
                grefs_name: str = "grefs(unc).json") -> ImportPlan:
    """Validate a whole dataset and return what to write (ImportRefused with every problem otherwise)."""
    bad_text = _text_problems(coco, coco_name) + (_text_problems(grefs, grefs_name) if grefs is not None else [])
    if bad_text:
        raise _refused(bad_text)
    chk = _Checker(coco_name)
    images, annotations, anns = _check_instances(coco, image_dir, chk)
    refs: list[PlannedRef] = []
    if grefs is not None:
        rchk = _Checker(grefs_name, refused=chk.refused)
        refs = _check_refs(grefs, {im.src_id: im for im in images}, anns, rchk)
        chk.problems.extend(rchk.problems)
    if chk.problems:
        raise _refused(chk.problems)
    log.debug("import checked: %d images, %d instances, %d refs to write", len(images), len(annotations), len(refs))
    return ImportPlan(images, annotations, refs)


def _fingerprint(kind: str, *blobs: bytes) -> str:
    h = hashlib.sha256(kind.encode())
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    return h.hexdigest()


def import_coco(store: Store, instances_json: str | Path, image_dir: str | Path | None) -> dict:
    """Add the images and instances of a plain COCO ``instances.json`` (pickable referents)."""
    path = Path(instances_json)
    coco, data = read_json(path)
    plan = plan_import(coco, None, Path(image_dir) if image_dir else None, path.name)
    return write_plan(store, plan, _fingerprint("coco", data), "coco", path.name)


def import_grefcoco(store: Store, root: str | Path) -> dict:
    """Import ``root/grefcoco/{grefs(unc).json, instances.json}`` with images in ``root/images/train2014``."""
    root = Path(root)
    if not (root / "grefcoco").is_dir():
        raise _refused([f"{root.name}: expected the official layout DIR/grefcoco/{{instances.json, grefs(unc).json}}"])
    coco, cdata = read_json(root / "grefcoco" / "instances.json")
    grefs, gdata = read_json(root / "grefcoco" / "grefs(unc).json")
    image_dir = root / "images" / "train2014"
    return import_grefcoco_data(store, coco, grefs, image_dir if image_dir.is_dir() else None,
                                _fingerprint("grefcoco", cdata, gdata), root.name)


def import_grefcoco_data(store: Store, coco: object, grefs: object, image_dir: Path | None,
                         fingerprint: str | None = None, source: str = "") -> dict:
    """Import already-parsed gRefCOCO data (validated first; one transaction)."""
    plan = plan_import(coco, grefs, image_dir)
    if fingerprint is None:
        fingerprint = _fingerprint("grefcoco", json.dumps(coco, sort_keys=True).encode(), json.dumps(grefs, sort_keys=True).encode())
    return write_plan(store, plan, fingerprint, "grefcoco", source)
