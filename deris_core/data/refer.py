"""Loaders for gRefCOCO (``grefs(unc).json``) and RefCOCO/+/g (``refs(unc).p``).

Both give a :class:`ReferDataset`: one :class:`ReferSample` per (image, sentence) pair, as
the official loaders expand refs, plus the COCO annotations to rasterise the targets. The
segmentation encodings of ``instances.json`` that either official loader or pycocotools
accept are decoded: polygons (parts OR-ed), a list of compressed RLE dicts, a single RLE dict
(compressed or not). RefCOCO's pickles are read with a restricted unpickler that only builds
plain containers, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import DerisError

SPLITS = ("train", "val", "testA", "testB", "test")


class DataError(DerisError, ValueError):
    """A dataset that cannot be read, with the file and the problem."""


@dataclass(frozen=True)
class ReferSample:
    ref_id: int
    sent_id: int
    image_id: int
    sentence: str
    ann_ids: tuple[int, ...]  # empty for a no-target sample
    split: str

    @property
    def no_target(self) -> bool:
        return not self.ann_ids


@dataclass
class ReferDataset:
    samples: list[ReferSample]
    images: dict[int, dict]  # image id -> COCO image record
    annotations: dict[int, dict]  # annotation id -> COCO annotation
    image_dir: Path
    categories: dict[int, str] = field(default_factory=dict)
    # decoded RGB pixels by image id, for a dataset built in memory (a store's refs): read once by
    # whoever built it, never from ``image_dir``
    pixels: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, image_id: int) -> Path:
        """Where the image's file is: ``image_dir / file_name``, or the record's own ``path`` (the
        images a :func:`merge` brought from another dataset)."""
        rec = self.images[image_id]
        return Path(rec["path"]) if "path" in rec else self.image_dir / rec["file_name"]

    def image_rgb(self, image_id: int) -> np.ndarray:
        """The image's RGB uint8 pixels: the in-memory copy when there is one, else its file."""
        if image_id in self.pixels:
            return self.pixels[image_id]
        from ..preprocess import load_image

        return load_image(self.image_path(image_id))

    def instance_mask(self, ann_id: int) -> np.ndarray:
        ann = self.annotations[ann_id]
        img = self.images[ann["image_id"]]
        return decode_segmentation(ann["segmentation"], img["height"], img["width"])

    def target_mask(self, sample: ReferSample) -> np.ndarray:
        """Union of the target instances (all zero for no-target), uint8 HxW."""
        img = self.images[sample.image_id]
        out = np.zeros((img["height"], img["width"]), np.uint8)
        for a in sample.ann_ids:
            out |= self.instance_mask(a)
        return out


def merge(a: ReferDataset, b: ReferDataset) -> ReferDataset:
    """One dataset of ``a`` and ``b`` (fine-tuning on a store's refs with replayed training refs):
    ``b``'s image, annotation, category and ref ids are moved past ``a``'s so nothing collides, and
    its images keep their own files (a ``path`` per record) or in-memory pixels."""
    def past(ids) -> int:
        return max((int(i) for i in ids), default=0) + 1

    di, da = past(a.images), past(a.annotations)
    dc, dr = past(a.categories), past(s.ref_id for s in a.samples)
    images = dict(a.images)
    for iid, rec in b.images.items():
        images[iid + di] = {**rec, "id": iid + di, "path": str(b.image_path(iid).resolve())}
    anns = dict(a.annotations)
    for aid, ann in b.annotations.items():
        anns[aid + da] = {**ann, "id": aid + da, "image_id": int(ann["image_id"]) + di,
                          "category_id": int(ann.get("category_id", 0)) + dc}
    samples = list(a.samples) + [ReferSample(s.ref_id + dr, s.sent_id, s.image_id + di, s.sentence,
                                             tuple(x + da for x in s.ann_ids), s.split) for s in b.samples]
    cats = {**a.categories, **{c + dc: n for c, n in b.categories.items()}}
    pixels = {**a.pixels, **{i + di: p for i, p in b.pixels.items()}}
    return ReferDataset(samples, images, anns, a.image_dir, cats, pixels)


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """A COCO segmentation in any common encoding -> uint8 {0,1} mask of ``height x width``."""
    if isinstance(seg, dict):
        rles = [seg]
    elif isinstance(seg, list) and seg and isinstance(seg[0], dict):
        rles = list(seg)
    elif isinstance(seg, list) and seg and isinstance(seg[0], (list, tuple)):
        polys = [list(map(float, p)) for p in seg if len(p) >= 6]
        if not polys:
            raise DataError("polygon segmentation without any part of 3 or more points")
        rles = mask_utils.frPyObjects(polys, height, width)
    else:
        raise DataError(f"unsupported segmentation encoding: {type(seg).__name__}")
    out = np.zeros((height, width), np.uint8)
    for rle in rles:
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        elif isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        m = mask_utils.decode(rle)
        if m.shape != (height, width):
            raise DataError(f"RLE size {m.shape} does not match the image ({height}, {width})")
        out |= m.astype(np.uint8)
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None


def _index_instances(instances: dict, path: Path) -> tuple[dict[int, dict], dict[int, dict], dict[int, str]]:
    for key in ("images", "annotations", "categories"):
        if key not in instances:
            raise DataError(f"{path} has no {key!r} list (not a COCO instances file)")
    images = {int(i["id"]): i for i in instances["images"]}
    anns = {int(a["id"]): a for a in instances["annotations"]}
    cats = {int(c["id"]): c["name"] for c in instances["categories"]}
    return images, anns, cats


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def load_grefcoco(root: str | Path, split: str | None = None, image_dir: str | Path | None = None) -> ReferDataset:
    """``root/grefcoco/{grefs(unc).json, instances.json}``, images in ``root/images/train2014``."""
    root = Path(root)
    _check_split(split)
    refs_path = root / "grefcoco" / "grefs(unc).json"
    inst_path = root / "grefcoco" / "instances.json"
    refs = _read_json(refs_path)
    if not isinstance(refs, list):
        raise DataError(f"{refs_path} must hold a JSON list of refs")
    images, anns, cats = _index_instances(_read_json(inst_path), inst_path)
    samples = []
    for ref in refs:
        if split is not None and ref["split"] != split:
            continue
        ann_ids = ref["ann_id"]
        if not isinstance(ann_ids, list):
            raise DataError(f"ref {ref['ref_id']}: ann_id must be a list ([-1] for no-target)")
        targets = () if ann_ids == [-1] else tuple(int(a) for a in ann_ids)
        for a in targets:
            if a not in anns:
                raise DataError(f"ref {ref['ref_id']} names annotation {a}, which {inst_path} does not have")
        if ref["image_id"] not in images:
            raise DataError(f"ref {ref['ref_id']} names image {ref['image_id']}, which {inst_path} does not have")
        targets = tuple(a for a in targets if not anns[a].get("iscrowd", 0))  # as G_REFER.getMaskByRef
        for sent in ref["sentences"]:
            samples.append(ReferSample(int(ref["ref_id"]), int(sent["sent_id"]), int(ref["image_id"]),
                                       sent.get("raw", sent.get("sent", "")), targets, ref["split"]))
    return ReferDataset(samples, images, anns, Path(image_dir) if image_dir else root / "images" / "train2014", cats)


class _PlainUnpickler(pickle.Unpickler):
    """Builds only plain Python data; any class or function reference is refused."""

    def find_class(self, module: str, name: str):
        raise DataError(f"refusing to unpickle {module}.{name}: ref files hold only plain data")


def load_refcoco(root: str | Path, dataset: str = "refcoco", split_by: str = "unc", split: str | None = None,
                 image_dir: str | Path | None = None) -> ReferDataset:
    """``root/<dataset>/{refs(<split_by>).p, instances.json}``; images in ``root/images/mscoco/images/train2014``."""
    root = Path(root)
    _check_split(split)
    refs_path = root / dataset / f"refs({split_by}).p"
    inst_path = root / dataset / "instances.json"
    try:
        refs = _PlainUnpickler(io.BytesIO(refs_path.read_bytes())).load()
    except FileNotFoundError:
        raise DataError(f"missing file: {refs_path}") from None
    except (pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{refs_path} is not a readable ref pickle: {exc}") from None
    images, anns, cats = _index_instances(_read_json(inst_path), inst_path)
    samples = []
    for ref in refs:
        if split is not None and ref["split"] != split:
            continue
        for sent in ref["sentences"]:
            samples.append(ReferSample(int(ref["ref_id"]), int(sent["sent_id"]), int(ref["image_id"]),
                                       sent.get("raw", sent.get("sent", "")), (int(ref["ann_id"]),), ref["split"]))
    default_dir = root / "images" / "mscoco" / "images" / "train2014"
    return ReferDataset(samples, images, anns, Path(image_dir) if image_dir else default_dir, cats)
