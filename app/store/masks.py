"""Masks as exact compressed COCO RLE, and the checks an untrusted RLE must pass.

pycocotools decodes some malformed RLE strings into uninitialised memory (a different mask on
every run), so every RLE that comes from outside is checked here first: its counts must be
non-negative and add up to exactly height x width.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

MAX_SIDE = 16384  # larger images/masks are refused as absurd
MAX_PIXELS = 1 << 28  # 268 M pixels: a decoded mask of this size is already 268 MB


def encode_mask(mask: np.ndarray) -> dict:
    """Exact compressed COCO RLE (``counts`` as text) of a binary HxW mask."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8) > 0, dtype=np.uint8)
    rle = mask_utils.encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
        return mask_utils.decode(rle).astype(bool)
    return mask_utils.decode({"size": rle["size"], "counts": counts.encode("ascii")}).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def size_problem(width: object, height: object) -> str | None:
    """Why ``width`` x ``height`` is not a usable image size (None when it is)."""
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{name} must be an integer, got {type(v).__name__}"
        if v <= 0:
            return f"{name} must be positive, got {v}"
        if v > MAX_SIDE:
            return f"{name} {v} is larger than {MAX_SIDE}"
    if width * height > MAX_PIXELS:  # type: ignore[operator]
        return f"{width}x{height} has more than {MAX_PIXELS} pixels"
    return None


def compressed_counts(counts: str) -> list[int]:
    """The run lengths encoded in a compressed COCO RLE string (COCO's 6-bit LEB128 variant).

    Raises ValueError on characters outside the alphabet or a truncated number.
    """
    out: list[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise ValueError("the counts string ends in the middle of a number")
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[pos]!r} is not in the RLE alphabet")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(out) > 2:
            value += out[-2]
        out.append(value)
    return out


def rle_problem(rle: object, height: int, width: int) -> str | None:
    """Why ``rle`` is not a valid RLE of an ``height`` x ``width`` mask (None when it is)."""
    if not isinstance(rle, dict):
        return f"an RLE must be an object with 'size' and 'counts', got {type(rle).__name__}"
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return "RLE 'size' must be [height, width]"
    if size != [height, width]:
        return f"RLE size {size[0]}x{size[1]} (h x w) does not match the image's {height}x{width}"
    if isinstance(counts, str):
        try:
            runs = compressed_counts(counts)
        except ValueError as exc:
            return f"RLE counts are corrupt: {exc}"
    elif isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            return "uncompressed RLE counts must be integers"
        runs = counts
    else:
        return "RLE 'counts' must be a string or a list of integers"
    if any(v < 0 for v in runs):
        return "RLE counts contain a negative run"
    total = sum(runs)
    if total != height * width:
        return f"RLE counts add up to {total} pixels, not {height}x{width} = {height * width}"
    return None


def polygons_problem(seg: object) -> str | None:
    """Why ``seg`` is not a list of polygons (flat x, y lists with >= 3 points)."""
    if not isinstance(seg, list) or not seg:
        return "segmentation must be a non-empty list of polygons"
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "each polygon must be a flat list of at least 3 x, y pairs"
        for v in poly:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or abs(v) > 10 * MAX_SIDE:
                return f"polygon coordinate {v!r} is not a finite number"
    return None
