"""A procedurally generated referring-segmentation dataset in the gRefCOCO format.

Scenes hold 2-6 shapes (circle, square, triangle, star) of six colours, three sizes and
three textures on varied backgrounds, with partial occlusions. Expressions are generated
from the scene graph and their referents are computed from it, so every mask agrees with
its sentence by construction. They need attributes ("the big red circle"), spatial
relations ("the triangle left of the blue square", "the leftmost circle"), superlatives
("the largest star"), counting and multi-target references ("the two triangles", "all red
shapes"), and natural no-target references ("the green star" when there is none, about 9%).

Splits: ``train``, ``val`` and ``testA`` share one distribution. ``testB`` asks about
colour-shape pairs (:data:`HELD_OUT`) that never appear in train/val/testA images, inside
relational and attribute expressions: a compositional-generalisation test.

    python -m deris_core.tools.synthetic --out DIR --seed N --images K

writes ``DIR/grefcoco/{instances.json, grefs(unc).json}`` and ``DIR/images/train2014/*.png``,
deterministically for a seed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 180),
    "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "star")
TEXTURES = ("plain", "striped", "dotted")
SIZES = {"small": (11, 15), "medium": (17, 21), "big": (23, 28)}  # radius ranges (px)
HELD_OUT = {("red", "triangle"), ("blue", "circle"), ("green", "star"), ("yellow", "square")}
CATEGORIES = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
SPLIT_SHARES = (("train", 0.80), ("val", 0.07), ("testA", 0.07), ("testB", 0.06))
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
IMAGE_SIZE = 128


@dataclass
class Shape:
    color: str
    shape: str
    size: str
    texture: str
    cx: float
    cy: float
    radius: float
    mask: np.ndarray  # visible mask (after occlusion), bool HxW

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if shape == "square":
        pts = [(np.cos(angle + k * np.pi / 2 + np.pi / 4), np.sin(angle + k * np.pi / 2 + np.pi / 4)) for k in range(4)]
        pts = [(x * r * 1.0, y * r * 1.0) for x, y in pts]
    elif shape == "triangle":
        pts = [(np.cos(angle + k * 2 * np.pi / 3 - np.pi / 2) * r * 1.15, np.sin(angle + k * 2 * np.pi / 3 - np.pi / 2) * r * 1.15) for k in range(3)]
    elif shape == "star":
        pts = []
        for k in range(10):
            rr = r * 1.15 if k % 2 == 0 else r * 0.5
            a = angle + k * np.pi / 5 - np.pi / 2
            pts.append((np.cos(a) * rr, np.sin(a) * rr))
    else:
        raise ValueError(shape)
    return np.array([(cx + x, cy + y) for x, y in pts], dtype=np.float64)


def _draw_mask(shape: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    if shape == "circle":
        cv2.circle(canvas, (int(round(cx * 4)), int(round(cy * 4))), int(round(r * 4)), 1, -1, cv2.LINE_8, shift=2)
    else:
        poly = np.round(_shape_polygon(shape, cx, cy, r, angle) * 4).astype(np.int32)
        cv2.fillPoly(canvas, [poly], 1, cv2.LINE_8, shift=2)
    return canvas.astype(bool)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(150, 256, size=3).astype(np.float32)
    tint = rng.integers(-60, 60, size=3).astype(np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    grad = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
    img = base[None, None, :] + grad[..., None] * tint[None, None, :]
    img = np.broadcast_to(img, (size, size, 3)).copy()
    img += rng.normal(0, rng.uniform(2, 10), size=(size, size, 3)).astype(np.float32)
    return img


def _paint(img: np.ndarray, mask: np.ndarray, color: str, texture: str, rng: np.random.Generator) -> None:
    rgb = np.array(COLORS[color], np.float32) + rng.normal(0, 8, size=3).astype(np.float32)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    layer = np.broadcast_to(rgb, (h, w, 3)).copy()
    if texture == "striped":
        stripes = ((xx + yy) // 3) % 2 == 0
        layer[stripes] *= 0.7
    elif texture == "dotted":
        dots = (xx % 5 < 2) & (yy % 5 < 2)
        layer[dots] = layer[dots] * 0.5 + 127
    img[mask] = layer[mask]


def _place_shapes(rng: np.random.Generator, pairs: list[tuple[str, str]], size: int) -> list[Shape] | None:
    shapes: list[Shape] = []
    occupied = np.zeros((size, size), bool)
    for color, shape in pairs:
        for _ in range(30):
            size_name = str(rng.choice(list(SIZES)))
            r = float(rng.uniform(*SIZES[size_name]))
            cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
            m = _draw_mask(shape, float(cx), float(cy), r, float(rng.uniform(0, np.pi / 6)), size)
            overlap = (m & occupied).sum() / max(m.sum(), 1)
            # Allow mild occlusion only: the new shape is drawn on top of the older ones.
            if overlap > 0.25:
                continue
            hidden_ok = all(((s.mask & ~m).sum() / max(s.mask.sum(), 1)) > 0.7 for s in shapes)
            if not hidden_ok:
                continue
            for s in shapes:
                s.mask = s.mask & ~m
            shapes.append(Shape(color, shape, size_name, str(rng.choice(TEXTURES)), float(cx), float(cy), r, m))
            occupied |= m
            break
        else:
            return None
    return shapes


def _sample_pairs(rng: np.random.Generator, n: int, held_out: str) -> list[tuple[str, str]]:
    """``held_out``: 'exclude' (train distribution) or 'require' (testB: at least one held-out pair)."""
    colors, shapes = list(COLORS), list(SHAPES)
    pairs: list[tuple[str, str]] = []
    # Repeated colours or shapes make counting and relations necessary.
    while len(pairs) < n:
        if pairs and rng.random() < 0.45:
            c, s = pairs[int(rng.integers(len(pairs)))]
            if rng.random() < 0.5:
                c = str(rng.choice(colors))
            else:
                s = str(rng.choice(shapes))
        else:
            c, s = str(rng.choice(colors)), str(rng.choice(shapes))
        if held_out == "exclude" and (c, s) in HELD_OUT:
            continue
        pairs.append((c, s))
    if held_out == "require":
        held = sorted(HELD_OUT)
        k = int(rng.integers(1, 3))
        for i in rng.choice(len(pairs), size=min(k, len(pairs)), replace=False):
            pairs[int(i)] = held[int(rng.integers(len(held)))]
    return pairs


# --- expressions ------------------------------------------------------------------------


def _plural(shape: str) -> str:
    return shape + "s"


def _describe(rng: np.random.Generator, objs: list[Shape], target: Shape) -> str | None:
    """The shortest attribute phrase that singles out ``target`` (or None)."""
    options = [
        (target.shape,),
        (target.color, "shape"),
        (target.color, target.shape),
        (target.size if target.size != "medium" else None, target.shape),
        (target.size if target.size != "medium" else None, target.color, target.shape),
        (target.texture if target.texture != "plain" else None, target.shape),
        (target.texture if target.texture != "plain" else None, target.color, target.shape),
    ]
    for words in options:
        if None in words:
            continue
        if len([o for o in objs if _matches(o, words)]) == 1:
            return " ".join(words)
    return None


def _matches(o: Shape, words: tuple) -> bool:
    for w in words:
        if w == "shape":
            continue
        if w not in (o.color, o.shape, o.size, o.texture):
            return False
    return True


def _expressions(rng: np.random.Generator, objs: list[Shape], focus: set[int] | None) -> list[tuple[str, list[int], str]]:
    """Candidate ``(sentence, target indices, kind)``; ``focus`` limits targets (testB)."""
    out: list[tuple[str, list[int], str]] = []

    def allowed(targets: list[int]) -> bool:
        return focus is None or any(t in focus for t in targets)

    # Attribute references to a single object.
    for i, o in enumerate(objs):
        phrase = _describe(rng, objs, o)
        if phrase and allowed([i]):
            out.append((f"the {phrase}", [i], "attribute"))
    # Multi-target: all of a colour / shape / colour+shape, with counts.
    groups: dict[tuple, list[int]] = {}
    for i, o in enumerate(objs):
        groups.setdefault(("color", o.color), []).append(i)
        groups.setdefault(("shape", o.shape), []).append(i)
        groups.setdefault(("pair", o.color, o.shape), []).append(i)
    for key, idx in groups.items():
        if len(idx) < 2 or not allowed(idx):
            continue
        if key[0] == "color":
            noun = f"{key[1]} shapes"
        elif key[0] == "shape":
            noun = _plural(key[1])
        else:
            noun = f"{key[1]} {_plural(key[2])}"
        if len(idx) in NUMBER_WORDS and rng.random() < 0.5:
            out.append((f"the {NUMBER_WORDS[len(idx)]} {noun}", idx, "multi"))
        else:
            out.append((f"all {noun}", idx, "multi"))
    # Extremes within a shape group: leftmost/rightmost/top/bottom, largest/smallest.
    for key, idx in groups.items():
        if key[0] == "color" or len(idx) < 2:
            continue
        noun = key[1] if key[0] == "shape" else f"{key[1]} {key[2]}"
        xs = np.array([objs[i].cx for i in idx])
        ys = np.array([objs[i].cy for i in idx])
        areas = np.array([objs[i].area for i in idx], float)
        for word, values, sign in (("leftmost", xs, -1), ("rightmost", xs, 1), ("top", ys, -1), ("bottom", ys, 1)):
            order = np.argsort(sign * values)[::-1]
            if abs(values[order[0]] - values[order[1]]) > 12 and allowed([idx[order[0]]]):
                out.append((f"the {word} {noun}", [idx[order[0]]], "superlative"))
        for word, sign in (("largest", 1), ("smallest", -1)):
            order = np.argsort(sign * areas)[::-1]
            if abs(areas[order[0]] - areas[order[1]]) > 0.35 * areas[order[0]] and allowed([idx[order[0]]]):
                out.append((f"the {word} {noun}", [idx[order[0]]], "superlative"))
    # Relations to a uniquely described anchor.
    relations = (
        ("left of", lambda a, b: a.cx < b.cx - 12),
        ("right of", lambda a, b: a.cx > b.cx + 12),
        ("above", lambda a, b: a.cy < b.cy - 12),
        ("below", lambda a, b: a.cy > b.cy + 12),
    )
    for j, anchor in enumerate(objs):
        anchor_phrase = _describe(rng, objs, anchor)
        if not anchor_phrase:
            continue
        for word, rel in relations:
            for noun_key in ("shape", "pair"):
                cands = {}
                for i, o in enumerate(objs):
                    if i == j:
                        continue
                    noun = o.shape if noun_key == "shape" else f"{o.color} {o.shape}"
                    cands.setdefault(noun, []).append(i)
                for noun, idx in cands.items():
                    hits = [i for i in idx if rel(objs[i], anchor)]
                    if len(hits) == 1 and allowed(hits):
                        out.append((f"the {noun} {word} the {anchor_phrase}", hits, "relation"))
    return out


def _no_target(rng: np.random.Generator, objs: list[Shape], held_out: str) -> str | None:
    """A natural expression that refers to nothing: an absent colour-shape pair or relation."""
    present = {(o.color, o.shape) for o in objs}
    colors_here = sorted({o.color for o in objs})
    shapes_here = sorted({o.shape for o in objs})
    for _ in range(50):
        kind = rng.random()
        c = str(rng.choice(colors_here if rng.random() < 0.5 else list(COLORS)))
        s = str(rng.choice(shapes_here if rng.random() < 0.5 else list(SHAPES)))
        if (c, s) in present or (held_out == "exclude" and (c, s) in HELD_OUT):
            continue
        if kind < 0.6:
            return f"the {c} {s}"
        if kind < 0.8:
            return f"all {c} {_plural(s)}"
        anchor = objs[int(rng.integers(len(objs)))]
        phrase = _describe(rng, objs, anchor)
        if phrase:
            word = str(rng.choice(["left of", "right of", "above", "below"]))
            return f"the {c} {s} {word} the {phrase}"
    return None


def _balanced_choice(rng: np.random.Generator, cands: list[tuple[str, list[int], str]], k: int) -> list[tuple[str, list[int] | None]]:
    """Up to ``k`` distinct candidates, drawing the kinds (attribute, multi, ...) in turn."""
    by_kind: dict[str, list[tuple[str, list[int]]]] = {}
    for sentence, targets, kind in cands:
        by_kind.setdefault(kind, []).append((sentence, targets))
    for items in by_kind.values():
        rng.shuffle(items)
    kinds = sorted(by_kind)
    chosen: list[tuple[str, list[int] | None]] = []
    while len(chosen) < k and any(by_kind.values()):
        for kind in [kinds[int(i)] for i in rng.permutation(len(kinds))]:
            if by_kind[kind] and len(chosen) < k:
                chosen.append(by_kind[kind].pop())
    return chosen


# --- writing ----------------------------------------------------------------------------


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def split_counts(images: int) -> dict[str, int]:
    """How many images each split gets (every split at least one when ``images >= 4``)."""
    counts = {name: int(round(share * images)) for name, share in SPLIT_SHARES[1:]}
    if images >= 4:
        counts = {k: max(1, v) for k, v in counts.items()}
    counts = {"train": images - sum(counts.values()), **counts}
    if counts["train"] < 0:
        raise ValueError(f"--images must be at least 4, got {images}")
    return counts


def generate(out: str | os.PathLike, seed: int = 0, images: int = 1000, refs_per_image: int = 8,
             no_target_rate: float = 0.09, size: int = IMAGE_SIZE) -> dict[str, int]:
    """Write the dataset under ``out``; returns the number of refs per split."""
    out = Path(out)
    img_dir = out / "images" / "train2014"
    ann_dir = out / "grefcoco"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco = {"info": {"description": f"DeRIS Studio synthetic referring shapes, seed {seed}"},
            "images": [], "annotations": [], "categories": CATEGORIES}
    refs: list[dict] = []
    cat_id = {c["name"]: c["id"] for c in CATEGORIES}
    image_id, ann_id, sent_id = 0, 0, 0
    per_split = {k: 0 for k, _ in SPLIT_SHARES}
    for split, count in split_counts(images).items():
        held = "require" if split == "testB" else "exclude"
        made = 0
        while made < count:
            pairs = _sample_pairs(rng, int(rng.integers(2, 7)), held)
            objs = _place_shapes(rng, pairs, size)
            if objs is None:
                continue
            focus = {i for i, o in enumerate(objs) if (o.color, o.shape) in HELD_OUT} if split == "testB" else None
            cands = _expressions(rng, objs, focus)
            if not cands:
                continue
            image_id += 1
            made += 1
            img = _background(rng, size)
            for o in objs:  # in drawing order: each visible mask excludes the shapes drawn later
                _paint(img, o.mask, o.color, o.texture, rng)
            file_name = f"synthetic_{image_id:06d}.png"
            cv2.imwrite(str(img_dir / file_name), cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
            coco["images"].append({"id": image_id, "file_name": file_name, "height": size, "width": size})
            ids = []
            for o in objs:
                ann_id += 1
                ids.append(ann_id)
                coco["annotations"].append({
                    "id": ann_id, "image_id": image_id, "category_id": cat_id[o.shape], "iscrowd": 0,
                    "segmentation": [_rle(o.mask)], "bbox": _bbox(o.mask), "area": float(o.area),
                    "attributes": {"color": o.color, "size": o.size, "texture": o.texture},
                })
            chosen = _balanced_choice(rng, cands, refs_per_image)
            for k in range(len(chosen)):
                if rng.random() < no_target_rate:
                    sentence = _no_target(rng, objs, held)
                    if sentence:
                        chosen[k] = (sentence, None)
            for sentence, targets in chosen:
                sent_id += 1
                ref = {
                    "ref_id": len(refs), "image_id": image_id, "split": split,
                    "ann_id": [-1] if targets is None else [ids[t] for t in targets],
                    "category_id": [-1] if targets is None else [cat_id[objs[t].shape] for t in targets],
                    "sentences": [{"tokens": sentence.split(), "raw": sentence, "sent": sentence, "sent_id": sent_id}],
                    "sent_ids": [sent_id], "file_name": file_name, "no_target": targets is None,
                }
                refs.append(ref)
                per_split[split] += 1
    _atomic_json(ann_dir / "instances.json", coco)
    _atomic_json(ann_dir / "grefs(unc).json", refs)
    return per_split


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
