"""DeRIS training losses.

Per decoder stage, after Hungarian matching (:mod:`.matcher`):
- referring classification: cross-entropy over all queries, matched ones labelled
  "referred" (class 0), the rest "not referred" (class 1) with weight ``eos_coef``;
- masks of matched queries: sigmoid BCE + Dice at the target resolution;
- boxes of matched queries: L1 + generalised IoU (a small weight, as the official head);
- existence: BCE of the existence logit against "the sample has a target".
- perception supervision: the objectness head and the masks matched to every instance;
- appearance labels (training only, :mod:`.attributes`) of the queries matched to instances and
  of the pixel-decoder maps pooled inside each instance;
- masked language modelling on the cognition encoder (training only, :mod:`.mlm`, added by the
  training step).
The last stage has weight 1 and the intermediate ones ``aux_weight`` (0.2). Mask and box
losses are normalised by the number of target instances in the batch (at least 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.decoder import upsample_masks
from ..model.deris import DeRISOutput
from .matcher import hungarian_match

if TYPE_CHECKING:
    from ..data.attributes import AttributeHead


@dataclass
class LossConfig:
    cls: float = 2.0
    bce: float = 5.0
    dice: float = 5.0
    box_l1: float = 0.1  # official: bbox 0.05 x L1 2.0
    box_giou: float = 0.1  # official: bbox 0.05 x GIoU 2.0
    existence: float = 1.0
    eos_coef: float = 0.1  # weight of the "not referred" class
    aux_weight: float = 0.2
    # Perception supervision (the official "additional detection supervision"): the
    # perception head (``class_logits``, objectness) and the masks are matched to *every*
    # instance of the image, referred or not, so the queries learn to segment all objects.
    perception: float = 1.0
    # Training-only appearance labels (category + annotated attributes) of the queries matched
    # by the perception matching, see :mod:`.attributes`; 0 disables.
    attributes: float = 1.0
    # Training-only masked language modelling on the cognition encoder (:mod:`.mlm`); 0 disables.
    mlm: float = 1.0
    mlm_rate: float = 0.3


def sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-mask mean BCE: ``[N, P], [N, P] -> [N]``."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-mask ``1 - (2|p t| + 1) / (|p| + |t| + 1)``: ``[N, P] -> [N]``."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def box_cxcywh_to_xyxy(b: Tensor) -> Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise GIoU of two ``[N, 4]`` xyxy box sets."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-7)
    enclose = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return iou - (enclose - union) / enclose.clamp(min=1e-7)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Normalised cx, cy, w, h boxes of binary masks ``[K, H, W]`` (zeros for an empty mask)."""
    k, h, w = masks.shape
    out = torch.zeros(k, 4, device=masks.device)
    for i in range(k):
        ys, xs = torch.nonzero(masks[i] > 0.5, as_tuple=True)
        if len(xs):
            x0, x1 = xs.min().float(), xs.max().float() + 1
            y0, y1 = ys.min().float(), ys.max().float() + 1
            out[i] = torch.stack(((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h))
    return out


def stage_loss(refer_logits: Tensor, mask_logits: Tensor, boxes: Tensor, targets: list[Tensor],
               targets_small: list[Tensor], target_boxes: list[Tensor], num_instances: float,
               class_norm: float, cfg: LossConfig,
               matches: list[tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
    """Losses of one decoder stage for a batch (``matches``, if given, receives the assignment).

    Matching uses ``mask_logits`` (the decoder's 1/4 resolution) against ``targets_small``;
    the mask losses compare the x4 upsampled logits of the matched queries (exactly what
    inference thresholds) with the full-resolution ``targets``.
    """
    b, q, _ = refer_logits.shape
    labels = torch.ones(b, q, dtype=torch.long, device=refer_logits.device)  # 1 = not referred
    pred_masks, tgt_masks, pred_boxes, tgt_boxes = [], [], [], []
    for i in range(b):
        qi, ti = hungarian_match(refer_logits[i], mask_logits[i], targets_small[i], cfg.cls, cfg.bce, cfg.dice)
        qi, ti = qi.to(labels.device), ti.to(labels.device)
        if matches is not None:
            matches.append((qi, ti))
        labels[i, qi] = 0
        if len(qi):
            pred_masks.append(upsample_masks(mask_logits[i, qi][None])[0].flatten(1))
            tgt_masks.append(targets[i][ti].flatten(1).to(mask_logits.dtype))
        pred_boxes.append(boxes[i, qi])
        tgt_boxes.append(target_boxes[i][ti])
    weight = torch.tensor([1.0, cfg.eos_coef], device=refer_logits.device)
    # Weighted mean over queries; the normaliser (sum of the weights) is passed in so that it
    # can be the global one under DDP.
    ce = F.cross_entropy(refer_logits.float().flatten(0, 1), labels.flatten(), weight, reduction="sum")
    losses = {"cls": ce / class_norm * cfg.cls}
    pm = torch.cat(pred_masks) if pred_masks else mask_logits.new_zeros(0, 1)
    tm = torch.cat(tgt_masks) if tgt_masks else pm
    pb, tb = torch.cat(pred_boxes).float(), torch.cat(tgt_boxes).float()
    if len(pm):
        losses["bce"] = sigmoid_bce(pm.float(), tm.float()).sum() / num_instances * cfg.bce
        losses["dice"] = dice_loss(pm.float(), tm.float()).sum() / num_instances * cfg.dice
        losses["box_l1"] = F.l1_loss(pb, tb, reduction="none").sum() / num_instances * cfg.box_l1
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pb), box_cxcywh_to_xyxy(tb))
        losses["box_giou"] = (1 - giou).sum() / num_instances * cfg.box_giou
    else:  # keep the graph connected so DDP sees every parameter used
        zero = mask_logits.sum() * 0.0 + boxes.sum() * 0.0
        losses.update(bce=zero, dice=zero, box_l1=zero, box_giou=zero)
    return losses


def class_weight_sum(num_targets: list[int], num_queries: int, eos_coef: float) -> float:
    """Sum of the classification weights of a batch: matched queries weigh 1, the rest ``eos_coef``."""
    matched = sum(min(k, num_queries) for k in num_targets)
    return matched + eos_coef * (len(num_targets) * num_queries - matched)


def deris_loss(out: DeRISOutput, targets: list[Tensor], has_target: Tensor, cfg: LossConfig,
               num_instances: float | None = None, class_norm: float | None = None,
               instances: list[Tensor] | None = None,
               instance_norms: tuple[float, float] | None = None, instance_labels: list[Tensor] | None = None,
               attribute_head: "AttributeHead | None" = None,
               num_samples: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Total loss and its parts. ``targets[i]``: ``[K_i, S, S]`` float masks at the network's input size.

    ``num_instances`` normalises the mask/box terms; pass the global count under DDP so every
    process scales its share as a single process would; likewise ``class_norm`` (the sum of
    the classification weights, :func:`class_weight_sum`, global / world size).
    ``instance_labels[i]`` (``[N_i, A]``) with ``attribute_head`` adds the appearance term.
    ``num_samples`` normalises the existence term (default: this batch's size, i.e. a mean).
    """
    if class_norm is None:
        class_norm = class_weight_sum([t.shape[0] for t in targets], out.refer_logits.shape[1], cfg.eos_coef)
    if num_instances is None:
        num_instances = max(float(sum(t.shape[0] for t in targets)), 1.0)
    target_boxes = [masks_to_boxes(t) for t in targets]
    dec = out.decoder
    small = dec.mask_logits[0].shape[-2:]
    targets_small = [F.adaptive_avg_pool2d(t[None].float(), small)[0] if len(t) else t.new_zeros(0, *small) for t in targets]
    stages = len(dec.mask_logits)
    total = torch.zeros((), device=has_target.device)
    logs: dict[str, float] = {}
    for s in range(stages):
        w = 1.0 if s == stages - 1 else cfg.aux_weight
        parts = stage_loss(dec.refer_logits[s], dec.mask_logits[s], dec.boxes[s], targets, targets_small,
                           target_boxes, num_instances, class_norm, cfg)
        for name, value in parts.items():
            total = total + w * value
            key = name if s == stages - 1 else "aux_" + name
            logs[key] = logs.get(key, 0.0) + float(value.detach())
    if instances is not None and cfg.perception > 0:
        q = out.refer_logits.shape[1]
        if instance_norms is None:
            counts = [t.shape[0] for t in instances]
            instance_norms = (max(float(sum(counts)), 1.0), class_weight_sum(counts, q, cfg.eos_coef))
        inst_small = [F.adaptive_avg_pool2d(t[None].float(), small)[0] if len(t) else t.new_zeros(0, *small) for t in instances]
        inst_boxes = [masks_to_boxes(t) for t in instances]
        use_attributes = attribute_head is not None and instance_labels is not None and cfg.attributes > 0
        for s in range(stages):
            w = cfg.perception * (1.0 if s == stages - 1 else cfg.aux_weight)
            matches: list[tuple[Tensor, Tensor]] = []
            parts = stage_loss(dec.class_logits[s], dec.mask_logits[s], dec.boxes[s], instances, inst_small,
                               inst_boxes, instance_norms[0], instance_norms[1], cfg, matches)
            if use_attributes:
                q_feats = torch.cat([dec.stage_queries[s][i, qi] for i, (qi, _) in enumerate(matches)])
                q_labels = torch.cat([instance_labels[i][ti] for i, (_, ti) in enumerate(matches)])
                parts["attr"] = attribute_head.loss(q_feats, q_labels, instance_norms[0]) * cfg.attributes
            for name, value in parts.items():
                total = total + w * value
                key = "perc_" + name if s == stages - 1 else "perc_aux_" + name
                logs[key] = logs.get(key, 0.0) + float(value.detach())
        if use_attributes:
            per = out.features.perception
            pooled = attribute_head.pooled_loss([*per.multi_scale, per.mask_features], instances, instance_labels,
                                                instance_norms[0])
            total = total + cfg.attributes * pooled
            logs["pooled_attr"] = float(pooled.detach())
    if num_samples is None:
        num_samples = float(has_target.numel())
    logit, label = out.existence_logit.float().reshape(-1), has_target.float().reshape(-1)
    existence = F.binary_cross_entropy_with_logits(logit, label, reduction="sum") / num_samples
    total = total + cfg.existence * existence
    logs["existence"] = float(existence.detach())
    # The cognition post-step's per-query head is not supervised by the official recipe; keep it in the graph.
    total = total + out.cognition_logits.sum() * 0.0 + out.class_logits.sum() * 0.0
    logs["total"] = float(total.detach())
    return total, logs
