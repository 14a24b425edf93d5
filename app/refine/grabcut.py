"""The offline default refiner: OpenCV's GrabCut seeded from the prompts, no weights needed.

Seeds: outside the box is sure background; a prior mask (a DeRIS candidate) is probable
foreground; positive points are sure-foreground discs, negative points sure-background discs.
With points alone, the start region is a box around the positive points grown by ``margin`` of
the long side (measured better on shapes and on photos than a colour flood from the points,
``init="flood"``; ``docs/refine.md``). GrabCut runs on a copy whose long side is at most
``work_side`` pixels, cut to the region that can change (outside it all is sure background), and
the mask is upsampled; the connected parts that hold a positive point are kept.

Nothing better ships with the installed libraries: OpenCV without contrib has no
``ximgproc``, and scikit-image (random walker) is not a dependency.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .base import RefineResult, StateCache, check_image, check_prompts, empty_result, image_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrabCutState:
    """One image: the original size and the downscaled, smoothed working copies (BGR for OpenCV)."""

    key: str
    size: tuple[int, int]  # original (H, W)
    scale: float  # working size / original size
    work: np.ndarray  # BGR uint8, long side <= work_side
    smooth: np.ndarray  # the working copy, smoothed, for the colour flood
    timings: dict[str, float] = field(default_factory=dict)


class GrabCutRefiner:
    """GrabCut on a downscaled copy. ``init``: how points alone start, ``"margin"`` (default: a box around the
    positive points grown by ``margin`` of the long side) or ``"flood"`` (a colour flood from them, grown)."""

    name = "grabcut"

    def __init__(self, work_side: int = 384, iterations: int = 3, init: str = "margin", flood_tolerance: int = 14,
                 margin: float = 0.2, flood_margin: float = 0.05, click_radius: float = 0.008,
                 cache_images: int = 4) -> None:
        if init not in ("flood", "margin"):
            raise ValueError(f"init must be 'flood' or 'margin', not {init!r}")
        self.work_side, self.iterations, self.init = work_side, iterations, init
        self.flood_tolerance, self.margin, self.flood_margin = flood_tolerance, margin, flood_margin
        self.click_radius = click_radius
        self._cache = StateCache(cache_images)

    def set_image(self, image: np.ndarray, key: str | None = None) -> GrabCutState:
        """The working copies of ``image`` (RGB), made once per ``key``."""
        image = check_image(image)
        key = key or image_key(image)
        if (cached := self._cache.get(key)) is not None:
            return cached
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        scale = min(1.0, self.work_side / max(h, w))
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        smooth = cv2.GaussianBlur(bgr, (5, 5), 0)
        state = GrabCutState(key, (h, w), scale, bgr, smooth, {"set_image_s": time.perf_counter() - t0})
        self._cache.put(key, state)
        return state

    # --- seeds ----------------------------------------------------------------------------

    def _to_work(self, state: GrabCutState, xy: np.ndarray) -> np.ndarray:
        wh, ww = state.work.shape[:2]
        h, w = state.size
        out = np.empty_like(xy)
        out[:, 0] = np.clip(np.round((xy[:, 0] + 0.5) * ww / w - 0.5), 0, ww - 1)
        out[:, 1] = np.clip(np.round((xy[:, 1] + 0.5) * wh / h - 0.5), 0, wh - 1)
        return out.astype(np.int64)

    def _flood(self, state: GrabCutState, pos: np.ndarray) -> np.ndarray:
        """Pixels reached by a fixed-range colour flood from the positive points (working size, bool)."""
        wh, ww = state.work.shape[:2]
        region = np.zeros((wh, ww), bool)
        tol = (self.flood_tolerance,) * 3
        for x, y in pos:
            if region[y, x]:
                continue
            m = np.zeros((wh + 2, ww + 2), np.uint8)
            cv2.floodFill(state.smooth, m, (int(x), int(y)), 0, tol, tol,
                          4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8))
            region |= m[1:-1, 1:-1] > 0
        return region

    def _seed(self, state: GrabCutState, p, pos: np.ndarray) -> np.ndarray:
        wh, ww = state.work.shape[:2]
        gc = np.full((wh, ww), cv2.GC_BGD, np.uint8)
        long_side = max(wh, ww)
        if p.prior is not None and p.prior.any():
            prior = cv2.resize(p.prior.astype(np.uint8), (ww, wh), interpolation=cv2.INTER_NEAREST) > 0
            ys, xs = np.nonzero(prior)
            pad = max(4, int(0.5 * max(xs.max() - xs.min(), ys.max() - ys.min())))
            x1, y1, x2, y2 = xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad
            if len(pos):  # a positive click far from the prior widens the region
                x1, y1 = min(x1, pos[:, 0].min() - pad), min(y1, pos[:, 1].min() - pad)
                x2, y2 = max(x2, pos[:, 0].max() + pad), max(y2, pos[:, 1].max() + pad)
            if p.box is not None:
                x1, y1, x2, y2 = self._to_work(state, np.array([p.box[:2], p.box[2:]])).reshape(-1)
            gc[max(0, y1):y2 + 1, max(0, x1):x2 + 1] = cv2.GC_PR_BGD
            gc[prior] = cv2.GC_PR_FGD
        elif p.box is not None:
            x1, y1, x2, y2 = self._to_work(state, np.array([p.box[:2], p.box[2:]])).reshape(-1)
            gc[y1:y2 + 1, x1:x2 + 1] = cv2.GC_PR_FGD
        elif len(pos):
            if self.init == "flood":
                region = self._flood(state, pos)
                ys, xs = np.nonzero(region)
                ys, xs = np.concatenate([ys, pos[:, 1]]), np.concatenate([xs, pos[:, 0]])
                pad = max(3, int(0.5 * max(xs.max() - xs.min(), ys.max() - ys.min())), int(self.flood_margin * long_side))
            else:
                region = None
                xs, ys = pos[:, 0], pos[:, 1]
                pad = max(3, int(self.margin * long_side))
            x1, y1, x2, y2 = xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad
            gc[max(0, y1):y2 + 1, max(0, x1):x2 + 1] = cv2.GC_PR_FGD if region is None else cv2.GC_PR_BGD
            if region is not None:
                gc[region] = cv2.GC_PR_FGD
        return gc

    # --- refine ---------------------------------------------------------------------------

    def refine(self, image_state: GrabCutState, points=None, labels=None, box=None, prior_mask=None) -> RefineResult:
        """The mask for these prompts (original pixels); stateless: the same prompts give the same mask."""
        t0 = time.perf_counter()
        state = image_state
        p = check_prompts(state.size, points, labels, box, prior_mask)
        if p.empty:
            return empty_result(state.size)
        xy = self._to_work(state, p.points) if len(p.points) else np.zeros((0, 2), np.int64)
        pos, neg = xy[p.labels == 1], xy[p.labels == 0]
        gc = self._seed(state, p, pos)
        wh, ww = gc.shape
        radius = max(1, round(self.click_radius * max(wh, ww)))
        for (x, y) in neg:
            cv2.circle(gc, (int(x), int(y)), radius, cv2.GC_BGD, -1)
        for (x, y) in pos:
            cv2.circle(gc, (int(x), int(y)), radius, cv2.GC_FGD, -1)
        fg_seed = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
        bg_seed = (gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)
        if not fg_seed.any():
            return empty_result(state.size)
        if bg_seed.any():
            # only the region that can change is cut (outside it all is sure background): much faster
            # than the whole image, and the background colours are learnt near the object
            ys, xs = np.nonzero(gc != cv2.GC_BGD)
            pad = max(8, int(0.15 * max(xs.max() - xs.min(), ys.max() - ys.min())))
            y1, y2, x1, x2 = max(0, ys.min() - pad), min(wh, ys.max() + pad + 1), max(0, xs.min() - pad), min(ww, xs.max() + pad + 1)
            sub = np.ascontiguousarray(gc[y1:y2, x1:x2])
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's global RNG: same prompts, same mask
            try:
                cv2.grabCut(np.ascontiguousarray(state.work[y1:y2, x1:x2]), sub, None, bgd, fgd, self.iterations,
                            cv2.GC_INIT_WITH_MASK)
                gc[y1:y2, x1:x2] = sub
            except cv2.error as exc:  # too few pixels of one kind for a colour model: keep the seeds
                log.debug("grabcut skipped: %s", exc)
        fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
        fg = _keep_clicked_parts(fg, pos)
        h, w = state.size
        if (wh, ww) != (h, w):
            fg = cv2.resize(fg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
        return RefineResult(fg[None], np.ones(1, np.float32), 0, {"refine_s": time.perf_counter() - t0})


def _keep_clicked_parts(fg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The connected parts of ``fg`` that hold a positive point (the largest part when there is none)."""
    n, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if n <= 2:
        return fg
    keep = {int(lab[y, x]) for x, y in pos} - {0}
    if not keep:
        keep = {int(np.argmax(np.bincount(lab.ravel())[1:]) + 1)}
    return np.isin(lab, list(keep))
