"""The objects the refiner is measured on: synthetic scenes' targets and hand-outlined photos."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTOS = Path(__file__).resolve().parents[2] / "tests" / "data" / "refine_photos"


@dataclass
class RefineObject:
    """One object to click on: its image (RGB), ground truth (bool), a name, and a sentence for DeRIS."""

    image: np.ndarray
    gt: np.ndarray
    name: str
    image_key: str
    sentence: str = ""


def photo_objects(folder: Path = PHOTOS) -> list[RefineObject]:
    """The photos' objects with their polygons (``objects.json``) rasterised at the photo's size."""
    spec = json.loads((folder / "objects.json").read_text())
    images: dict[str, np.ndarray] = {}
    out = []
    for o in spec["objects"]:
        if o["image"] not in images:
            bgr = cv2.imread(str(folder / o["image"]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"{folder / o['image']} could not be read")
            images[o["image"]] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        img = images[o["image"]]
        gt = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(gt, [np.asarray(o["polygon"], np.int32)], 1)
        out.append(RefineObject(img, gt.astype(bool), f"{o['image']}: {o['name']}", o["image"]))
    return out


def synthetic_objects(root: Path, limit: int, splits: tuple[str, ...] = ("testA", "testB")) -> list[RefineObject]:
    """Single-target refs of a synthetic set (``deris_core.synthetic``), one per target object, in order."""
    from deris_core.data import load_grefcoco

    ds = load_grefcoco(root)
    out, seen = [], set()
    images: dict[int, np.ndarray] = {}
    for s in ds.samples:
        if s.split not in splits or len(s.ann_ids) != 1 or (s.image_id, s.ann_ids[0]) in seen:
            continue
        seen.add((s.image_id, s.ann_ids[0]))
        if s.image_id not in images:
            images[s.image_id] = ds.image_rgb(s.image_id)
        out.append(RefineObject(images[s.image_id], ds.instance_mask(s.ann_ids[0]).astype(bool),
                                f"image {s.image_id} ann {s.ann_ids[0]}", f"synthetic{s.image_id}", s.sentence))
        if len(out) >= limit:
            break
    return out
