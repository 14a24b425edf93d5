"""The simulated-click protocol of interactive segmentation (NoC@85 / NoC@90, IoU after k clicks).

Each next click goes to the centre of the largest error region: the error pixels are split into
missed (ground truth not predicted) and false (predicted, not ground truth) connected components;
in the largest one the click is the pixel farthest from its border (the maximum of the distance
transform, the image's edge counting as a border; the middle of a ridge of maxima), positive in a missed region, negative in a false
one. Clicking stops at ``max_clicks`` (20) or once IoU >= ``stop_iou`` and ``min_clicks`` were made.
NoC@t is the number of clicks before IoU >= t (``max_clicks`` when never reached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

MAX_CLICKS = 20


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[tuple[int, int], int] | None:
    """``((x, y), label)`` of the next simulated click, or None when there is no error left."""
    best = None
    for label, err in ((1, gt & ~pred), (0, pred & ~gt)):
        if not err.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        k = int(np.argmax(stats[1:, cv2.CC_STAT_AREA]) + 1)
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, label, lab == k)
    if best is None:
        return None
    _, label, region = best
    padded = np.pad(region, 1).astype(np.uint8)  # the image's edge is a border too
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= dist.max() - 1e-3)  # a ridge of maxima: its middle, not its first pixel
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return (int(xs[k]), int(ys[k])), label


@dataclass
class ClickRun:
    """One object: IoU after each click (``ious[k-1]`` after k clicks; ``start_iou`` before any)."""

    ious: list[float] = field(default_factory=list)
    points: list[tuple[int, int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    start_iou: float = 0.0
    seconds: list[float] = field(default_factory=list)

    def noc(self, threshold: float, max_clicks: int = MAX_CLICKS) -> int:
        """Clicks until IoU >= threshold (0 when the start mask already is; ``max_clicks`` when never)."""
        if self.start_iou >= threshold:
            return 0
        for k, v in enumerate(self.ious[:max_clicks], 1):
            if v >= threshold:
                return k
        return max_clicks

    def iou_at(self, k: int) -> float:
        """IoU after ``k`` clicks (the last one when clicking stopped earlier; the start for k = 0)."""
        if k == 0 or not self.ious:
            return self.start_iou
        return self.ious[min(k, len(self.ious)) - 1]


def simulate(refiner, state: Any, gt: np.ndarray, prior: np.ndarray | None = None, *, max_clicks: int = MAX_CLICKS,
             stop_iou: float = 0.90, min_clicks: int = 5, feed_back: bool = False) -> ClickRun:
    """Click on ``gt`` with ``refiner``: the prompts are every click so far and ``prior`` (as
    :class:`~.session.RefineSession` does: the mask is a function of the prompts). ``feed_back``: pass the
    previous click's mask as the prior instead (measured for GrabCut: steadier but worse, docs/refine.md)."""
    gt = np.asarray(gt, bool)
    pred = np.zeros_like(gt) if prior is None else np.asarray(prior, bool)
    run = ClickRun(start_iou=iou(pred, gt))
    for k in range(1, max_clicks + 1):
        click = next_click(pred, gt)
        if click is None:  # perfect: every later click would change nothing
            run.ious.append(1.0)
            break
        (x, y), label = click
        run.points.append((x, y))
        run.labels.append(label)
        res = refiner.refine(state, run.points, run.labels, None, pred if feed_back and k > 1 else prior)
        pred = res.mask
        run.ious.append(iou(pred, gt))
        run.seconds.append(res.timings.get("refine_s", 0.0))
        if run.ious[-1] >= stop_iou and k >= min_clicks:
            break
    return run


def summarize(runs: list[ClickRun], max_clicks: int = MAX_CLICKS) -> dict[str, float]:
    """Means over objects: NoC@85, NoC@90, IoU@1/3/5, and how many never reach 90% (``fail@90``)."""
    if not runs:
        return {"objects": 0}
    out = {"objects": len(runs),
           "NoC@85": float(np.mean([r.noc(0.85, max_clicks) for r in runs])),
           "NoC@90": float(np.mean([r.noc(0.90, max_clicks) for r in runs])),
           "start_IoU": float(np.mean([r.start_iou for r in runs]))}
    for k in (1, 3, 5):
        out[f"IoU@{k}"] = float(np.mean([r.iou_at(k) for r in runs]))
    out["fail@90"] = int(sum(r.noc(0.90, max_clicks) >= max_clicks and r.iou_at(max_clicks) < 0.90 for r in runs))
    return out
