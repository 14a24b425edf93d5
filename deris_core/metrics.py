"""Official evaluation metrics for generalized (GRES) and classic (RIS) referring segmentation.

Both are re-implemented from the definitions of the official code (ReLA ``ReferEvaluator``,
DeRIS ``gres_evaluate`` and ``accuracy``), including their edge cases, and checked against
the reference case sets in ``shared/reference/metrics``:

GRES, per sample (I, U over binary pixels):
- no-target GT, predicted no-target: IoU 1, adds nothing to the cumulative I and U;
- no-target GT, predicted target: IoU 0, adds the predicted area to U;
- target GT, predicted no-target: I forced to 0, U = |pred or gt|, IoU 0;
- target GT, predicted target: IoU = I / U (0 when U is 0).
gIoU = 100 * mean IoU; cIoU = 100 * sum I / sum U; Pr@t over targeted samples (IoU >= t);
N-acc / T-acc in percent (DeRIS; ReLA reports fractions), both 0 when no sample is no-target.

RIS: IoU = I / U in float32 (0 when U is 0); mIoU, oIoU and MaskACC@0.5..0.9, in float32 as
the official code computes them.

Undefined results behave as the official code does: a ``ZeroDivisionError`` where it divides
Python integers by zero, NaN where numpy does, and ``MetricError`` for the RIS case where
every sample has an empty union (the official ``torch.mean`` on integers fails there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DerisError

PR_THRESHOLDS = (0.7, 0.8, 0.9)
ACC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


class MetricError(DerisError, ValueError):
    """A metric that is undefined for the given samples."""


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts of ``pred & gt`` and ``pred | gt`` for two binary masks of one shape."""
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


@dataclass
class GresAccumulator:
    """Streams samples and returns the GRES metrics (gIoU, cIoU, N-acc, T-acc, Pr@t)."""

    sum_iou: float = 0.0
    sum_i: int = 0
    sum_u: int = 0
    count: int = 0
    targeted: int = 0
    # A targeted sample makes the cumulative union a numpy integer in the official code, so
    # a zero union then yields NaN instead of ZeroDivisionError.
    union_is_numpy: bool = False
    nt: dict[str, int] = field(default_factory=lambda: {"TP": 0, "TN": 0, "FP": 0, "FN": 0})
    pr_counts: dict[float, int] = field(default_factory=lambda: {t: 0 for t in PR_THRESHOLDS})
    per_sample: list[dict] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray, gt_nt: bool, pred_nt: bool) -> float:
        """Add one sample (binary masks of one shape) and return its IoU."""
        inter, union = intersection_union(pred, gt)
        return self.add_counts(inter, union, gt_nt, pred_nt)

    def add_counts(self, inter: int, union: int, gt_nt: bool, pred_nt: bool) -> float:
        """Add one sample from its pixel counts (``union`` is ``|pred or gt|``)."""
        gt_nt, pred_nt = bool(gt_nt), bool(pred_nt)
        if gt_nt:
            if pred_nt:
                self.nt["TP"] += 1
                iou, inter, union = 1.0, 0, 0
            else:
                self.nt["FN"] += 1
                iou, inter = 0.0, 0
        else:
            self.targeted += 1
            self.union_is_numpy = True
            if pred_nt:
                self.nt["FP"] += 1
                inter = 0
            else:
                self.nt["TN"] += 1
            iou = 0.0 if union == 0 else inter / union
            for t in PR_THRESHOLDS:
                if iou >= t:
                    self.pr_counts[t] += 1
        self.sum_iou += iou
        self.sum_i += inter
        self.sum_u += union
        self.count += 1
        self.per_sample.append({"gt_nt": gt_nt, "pred_nt": pred_nt, "I": inter, "U": union, "iou": iou})
        return iou

    def result(self, fractions: bool = False) -> dict[str, float]:
        """The metrics; ``fractions=True`` reports N-acc/T-acc as ReLA does (0..1) instead of percent."""
        if self.count == 0:
            raise MetricError("no samples to evaluate")
        res: dict[str, float] = {"gIoU": 100.0 * (self.sum_iou / self.count)}
        if self.sum_u == 0:
            if not self.union_is_numpy:
                raise ZeroDivisionError("cIoU: the cumulative union is 0")
            res["cIoU"] = float("nan")
        else:
            res["cIoU"] = self.sum_i * 100.0 / self.sum_u
        scale = 1.0 if fractions else 100.0
        n_empty = self.nt["TP"] + self.nt["FN"]
        if n_empty > 0:
            res["T_acc"] = self.nt["TN"] / (self.nt["TN"] + self.nt["FP"]) * scale
            res["N_acc"] = self.nt["TP"] / n_empty * scale
        else:
            res["T_acc"] = res["N_acc"] = 0.0
        for t in PR_THRESHOLDS:
            res[f"Pr@{t:.1f}"] = self.pr_counts[t] * 100.0 / self.targeted
        return res

    def defined_result(self) -> tuple[dict[str, float | None], dict[str, str]]:
        """``(metrics, why undefined)``: every metric that these samples define, and None with a reason
        for the others, where :meth:`result` follows the official code and raises (e.g. cIoU when the
        cumulative union is 0: every sample no-target and predicted so). gIoU is defined for any sample."""
        if self.count == 0:
            raise MetricError("no samples to evaluate")
        why: dict[str, str] = {}
        res: dict[str, float | None] = {"gIoU": 100.0 * (self.sum_iou / self.count)}
        res["cIoU"] = self.sum_i * 100.0 / self.sum_u if self.sum_u else None
        if res["cIoU"] is None:
            why["cIoU"] = "the cumulative union is 0 (no target and no predicted pixel in any sample)"
        n_empty, n_target = self.nt["TP"] + self.nt["FN"], self.nt["TN"] + self.nt["FP"]
        if not n_empty:  # both 0 without no-target samples, as officially
            res["T_acc"] = res["N_acc"] = 0.0
        else:
            res["T_acc"] = self.nt["TN"] / n_target * 100.0 if n_target else None
            res["N_acc"] = self.nt["TP"] / n_empty * 100.0
        for t in PR_THRESHOLDS:
            res[f"Pr@{t:.1f}"] = self.pr_counts[t] * 100.0 / self.targeted if self.targeted else None
        if not self.targeted:
            why["T_acc"] = why["Pr@t"] = "no sample has a target"
        return res, why


@dataclass
class RisAccumulator:
    """Streams samples and returns the RIS metrics (mIoU, oIoU, MaskACC@t) in float32."""

    inters: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> float:
        inter, union = intersection_union(pred, gt)
        return self.add_counts(inter, union)

    def add_counts(self, inter: int, union: int) -> float:
        self.inters.append(int(inter))
        self.unions.append(int(union))
        return float(np.float32(inter) / np.float32(union)) if union >= 1 else 0.0

    def result(self) -> dict[str, float]:
        if not self.inters:
            raise MetricError("no samples to evaluate")
        inter = torch.tensor(self.inters, dtype=torch.int64)
        union = torch.tensor(self.unions, dtype=torch.int64)
        if bool((union < 1).all()):
            raise MetricError("every sample has an empty prediction and ground truth: IoU is undefined")
        iou = torch.where(union >= 1, inter / union.clamp(min=1), torch.zeros((), dtype=torch.float32)).float()
        res = {"mIoU": iou.mean().item() * 100.0}
        res["oIoU"] = 100.0 * inter.float().mean().item() / union.float().mean().item()
        for t in ACC_THRESHOLDS:
            res[f"MaskACC@{t:.1f}"] = ((iou >= t).float() * 100.0).mean().item()
        return res


def gres_metrics(samples, fractions: bool = False) -> dict[str, float]:
    """GRES metrics of ``(pred_mask, gt_mask, gt_nt, pred_nt)`` tuples."""
    acc = GresAccumulator()
    for pred, gt, gt_nt, pred_nt in samples:
        acc.add(pred, gt, gt_nt, pred_nt)
    return acc.result(fractions=fractions)


def ris_metrics(samples) -> dict[str, float]:
    """RIS metrics of ``(pred_mask, gt_mask)`` tuples."""
    acc = RisAccumulator()
    for pred, gt in samples:
        acc.add(pred, gt)
    return acc.result()
