"""The :class:`Refiner` protocol and the checks every implementation shares.

A refiner turns prompts into a mask: positive / negative points, a box and a prior mask (a DeRIS
candidate, the previous result), all in the ORIGINAL image's pixel coordinates (x right, y down).
``set_image`` does the per-image work once (SAM's image embedding, GrabCut's downscaled copy) and
returns a state that ``refine`` reuses for every click on that image.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import UserError


class RefineError(UserError, ValueError):
    """Prompts that cannot be used (one line saying which and why)."""


@dataclass(frozen=True)
class RefineResult:
    """``masks``: ``[K, H, W]`` bool candidates at the original size; ``scores``: ``[K]``; ``best``: the index to show."""

    masks: np.ndarray
    scores: np.ndarray
    best: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """The mask to show: ``[H, W]`` bool."""
        return self.masks[self.best]

    @property
    def score(self) -> float:
        return float(self.scores[self.best])


@dataclass(frozen=True)
class Prompts:
    """Validated prompts: ``points`` ``[N, 2]`` float (x, y), ``labels`` ``[N]`` int (1 positive, 0 negative),
    ``box`` ``(x1, y1, x2, y2)`` or None, ``prior`` ``[H, W]`` bool or None."""

    points: np.ndarray
    labels: np.ndarray
    box: tuple[float, float, float, float] | None
    prior: np.ndarray | None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None and (self.prior is None or not self.prior.any())


@runtime_checkable
class Refiner(Protocol):
    """What the studio calls: ``set_image`` once per image, ``refine`` per prompt change."""

    name: str

    def set_image(self, image: np.ndarray, key: str | None = None) -> Any:
        """The per-image state (cached by ``key``, default: a digest of the pixels)."""

    def refine(self, image_state: Any, points=None, labels=None, box=None, prior_mask=None) -> RefineResult:
        """Masks for these prompts (points, box in original pixels; prior ``[H, W]``)."""


class StateCache:
    """The last ``size`` images' refiner states by image key, least recently used out first; one lock,
    so that sessions refining at once never see a half-updated cache."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, state: Any) -> Any:
        with self._lock:
            self._items[key] = state
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return state


def image_key(image: np.ndarray) -> str:
    """A digest of the pixels: the same image gives the same cached state."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def check_image(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` array (grey images get three channels), or :class:`RefineError`."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 2:
        raise RefineError(f"the image must be an RGB array of shape [H, W, 3], not {list(image.shape)}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def check_prompts(size: tuple[int, int], points=None, labels=None, box=None, prior_mask=None) -> Prompts:
    """Validate prompts against an image of ``size`` = (H, W); points outside the image are refused."""
    h, w = size
    pts = np.zeros((0, 2), np.float64) if points is None or len(points) == 0 else np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise RefineError(f"points must be a list of (x, y) pairs, not an array of shape {list(pts.shape)}")
    if labels is None:
        lab = np.ones(len(pts), np.int64)
    else:
        lab = np.asarray(labels, np.int64).reshape(-1)
    if len(lab) != len(pts):
        raise RefineError(f"{len(pts)} points but {len(lab)} labels: give one label (1 or 0) per point")
    if not np.isin(lab, (0, 1)).all():
        raise RefineError("point labels must be 1 (positive: part of the object) or 0 (negative: not part of it)")
    if len(pts) and (not np.isfinite(pts).all() or (pts[:, 0] < 0).any() or (pts[:, 1] < 0).any()
                     or (pts[:, 0] > w - 1).any() or (pts[:, 1] > h - 1).any()):
        raise RefineError(f"a point lies outside the {w}x{h} image (points are (x, y) in the image's pixels)")
    bx = None
    if box is not None:
        b = np.asarray(box, np.float64).reshape(-1)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise RefineError("the box must be (x1, y1, x2, y2) in the image's pixels")
        x1, x2 = sorted((float(np.clip(b[0], 0, w - 1)), float(np.clip(b[2], 0, w - 1))))
        y1, y2 = sorted((float(np.clip(b[1], 0, h - 1)), float(np.clip(b[3], 0, h - 1))))
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise RefineError(f"the box ({b[0]:g}, {b[1]:g}, {b[2]:g}, {b[3]:g}) has no area inside the {w}x{h} image")
        bx = (x1, y1, x2, y2)
    prior = None
    if prior_mask is not None:
        prior = np.asarray(prior_mask).astype(bool)
        if prior.shape != (h, w):
            raise RefineError(f"the prior mask is {list(prior.shape)}, the image is [{h}, {w}]")
    return Prompts(pts, lab, bx, prior)


def empty_result(size: tuple[int, int]) -> RefineResult:
    """No prompts: an empty mask with score 0."""
    return RefineResult(np.zeros((1, *size), bool), np.zeros(1, np.float32))
