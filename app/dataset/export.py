"""Export of the store as a gRefCOCO zip (the official layout), and the checks it must pass.

The zip holds ``grefcoco/instances.json`` (COCO: images, annotations, categories),
``grefcoco/grefs(unc).json`` (gRefCOCO refs), ``images/train2014/*`` when the pixels are
known, and ``export.json`` (what was exported, by which filter, when).

Segmentations. The official gRefCOCO loader only accepts polygons or a *list* of compressed
RLE dicts; pycocotools' ``annToRLE`` only accepts polygons or a single RLE dict. Polygons are
the one encoding both read, so ``segmentation`` holds polygons traced from the mask. Polygons
cannot represent every pixel set exactly (holes, one-pixel details), so every annotation also
carries the exact mask as a compressed RLE dict in an extra ``rle`` field, which both loaders
ignore and our importer prefers: no annotated pixel is lost in a round trip.

Image names in the zip are the store's safe names made unique (``-<id>`` on a clash), so no
entry can escape ``images/train2014/`` and no two images share an entry.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..store import SPLITS, RefFilter, Snapshot, Store, StoreError, decode_mask, os_error_message, unique_names

log = logging.getLogger(__name__)

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
    """``(instances.json, grefs(unc).json)`` contents for a snapshot (image names made unique and safe)."""
    images = {im.id: im for im in snap.images}
    inst_by_id = {i.id: i for i in snap.instances}
    used_images = {r.image_id for r in snap.refs} | {i.image_id for i in snap.instances}
    names = export_names(snap)
    coco = {
        "info": {"description": "exported by DeRIS Studio", "format": "gRefCOCO (grefer v0.1) + COCO instances",
                 "exact_masks": "annotation['rle'] holds the exact mask as compressed COCO RLE; "
                                "'segmentation' holds polygons for the official loaders"},
        "images": [{"id": im.id, "file_name": names[im.id], "height": im.height, "width": im.width}
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
        sents = [{"tokens": normalise_sentence(s).split(), "raw": s, "sent": normalise_sentence(s), "sent_id": sid}
                 for sid, s in zip(r.sentence_ids, r.sentences)]
        targets = [] if r.no_target else list(r.instance_ids)
        grefs.append({
            "ref_id": r.id, "image_id": r.image_id, "split": r.split,
            "ann_id": targets or [-1],
            "category_id": [inst_by_id[i].category_id for i in targets] or [-1],
            "sentences": sents, "sent_ids": [s["sent_id"] for s in sents],
            "file_name": names[images[r.image_id].id], "no_target": not targets,
            "annotator": r.author, "status": r.status,
        })
    return coco, grefs


def export_names(snap: Snapshot) -> dict[int, str]:
    """Unique, safe zip names per image id (the store's safe name; ``-<id>`` before the extension on a clash)."""
    return unique_names({im.id: im.file_name for im in snap.images})


def filter_snapshot(snap: Snapshot, status: str | None = None, split: str | None = None,
                    annotator: str | None = None) -> Snapshot:
    """Only the refs that match every given filter (one :class:`~app.store.RefFilter`), with their images
    and those images' instances."""
    flt = RefFilter.of(status, split, annotator)
    if flt.empty:
        return snap
    refs = [r for r in snap.refs if flt.matches(r)]
    image_ids = {r.image_id for r in refs}
    return Snapshot([im for im in snap.images if im.id in image_ids], snap.categories,
                    [i for i in snap.instances if i.image_id in image_ids], refs)


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


def export_zip(store: Store, out: str | Path, include_images: bool = True, *, status: str | None = None,
               split: str | None = None, annotator: str | None = None) -> dict:
    """Write the dataset zip atomically (unique temporary file, then rename); returns a summary.

    ``status`` / ``split`` / ``annotator`` keep only the matching refs (None: every ref); the
    filter is recorded in the zip's ``export.json``.
    """
    out = Path(out)
    snap = filter_snapshot(store.snapshot(), status, split, annotator)
    coco, grefs = to_grefcoco(snap)
    problems = validate_grefcoco(coco, grefs)
    if problems:
        raise StoreError("export refused, the data would break the official loaders: " + "; ".join(problems[:5]))
    names = export_names(snap)
    meta = {"exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tool": "DeRIS Studio",
            "filter": {"status": status, "split": split, "annotator": annotator},
            "refs": len(grefs), "annotations": len(coco["annotations"]), "images": len(coco["images"])}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}h{_HOST_ID}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot write the export: {os_error_message(exc)}") from None
    images_written = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("grefcoco/instances.json", json.dumps(coco))
            zf.writestr("grefcoco/grefs(unc).json", json.dumps(grefs))
            if include_images:
                wanted = {im["id"] for im in coco["images"]}
                for im in snap.images:
                    if im.id not in wanted:
                        continue
                    if store.location.is_postgres:  # the bytes are in the database
                        data = store.image_bytes(im.id)
                        if data is not None:
                            zf.writestr(f"images/train2014/{names[im.id]}", data)
                            images_written += 1
                    elif im.path and Path(im.path).is_file():
                        zf.write(im.path, f"images/train2014/{names[im.id]}")
                        images_written += 1
            meta["image_files"] = images_written
            zf.writestr("export.json", json.dumps(meta, indent=2))
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"cannot write the export: {os_error_message(exc).replace('nothing was saved', 'no zip was written')}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("exported %d refs, %d instances, %d images (filter %s) to %s", len(grefs), len(coco["annotations"]),
             len(coco["images"]), meta["filter"], Path(out).name)
    return {"out": str(out), "images": len(coco["images"]), "annotations": len(coco["annotations"]),
            "refs": len(grefs), "image_files": images_written, "filter": meta["filter"]}


def read_zip(path: str | Path) -> tuple[dict, list[dict]]:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("grefcoco/instances.json")), json.loads(zf.read("grefcoco/grefs(unc).json"))


STALE_TMP_S = 3600.0  # a half-written export not touched for this long is abandoned, whoever wrote it


def _host_id() -> str:
    """This machine and PID namespace, briefly: a pid means something only where it was taken (a
    container, another host on a shared folder see other processes)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return hashlib.sha1(f"{socket.gethostname()}|{boot}|{ns}".encode()).hexdigest()[:8]


_HOST_ID = _host_id()


def _temp_owner(name: str) -> int | None:
    """The writer's pid in a temporary export name ``.<target>.<pid>h<host>.<random>.tmp``, when the
    writer ran here (None: another machine or PID namespace, or not one of ours)."""
    parts = name.split(".")
    if not name.startswith(".") or not name.endswith(".tmp") or len(parts) < 5:
        return None
    pid, _, host = parts[-3].partition("h")
    if not pid.isdigit() or host != _HOST_ID:
        return None
    return int(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _abandoned(p: Path, now: float, stale_s: float) -> bool:
    """A temporary export whose writer died here (SIGKILL, power cut) or that nobody touched for
    ``stale_s``; another export being written right now (a live writer here, or any fresh file of a
    writer elsewhere) is never abandoned."""
    pid = _temp_owner(p.name)
    try:
        age = now - p.stat().st_mtime
    except OSError:
        return False
    return (pid is not None and not _alive(pid)) or age > stale_s


def clean_stale_temps(out: Path, stale_s: float = STALE_TMP_S) -> int:
    """Remove the abandoned temporary files of earlier exports to ``out`` (see :func:`_abandoned`)."""
    removed, now = 0, time.time()
    for p in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        try:
            if _abandoned(p, now, stale_s):
                p.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def new_export_path(folder: Path, prefix: str = "deris_dataset") -> Path:
    """A fresh file name in ``folder`` (the time, then random letters: two exports in the same second differ)."""
    return folder / f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(4)}.zip"


def clean_stale_exports(folder: Path, max_age_s: float = 3600.0, stale_s: float = STALE_TMP_S) -> int:
    """Remove abandoned half-written exports and finished ones older than ``max_age_s`` from an app-owned
    export folder; exports other people are writing at this moment are left alone."""
    removed = 0
    if not folder.is_dir():
        return 0
    now = time.time()
    for p in folder.iterdir():
        try:
            if not p.is_file():
                continue
            if p.suffix == ".tmp":
                stale = _abandoned(p, now, stale_s)
            else:
                stale = now - p.stat().st_mtime > max_age_s
            if stale:
                p.unlink()
                removed += 1
        except OSError:
            pass
    return removed
