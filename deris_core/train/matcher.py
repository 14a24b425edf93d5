"""Hungarian matching of candidate queries to target instances (Mask2Former style).

Cost of assigning query ``q`` to target ``k``:
``w_cls * (-p_q(referred)) + w_bce * BCE(mask_q, target_k) + w_dice * Dice(mask_q, target_k)``,
the BCE and Dice averaged over pixels, solved with scipy's ``linear_sum_assignment``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def pairwise_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE of every (query, target) pair: ``[Q, P] x [K, P] -> [Q, K]``."""
    n = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / n


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """``1 - Dice`` of every (query, target) pair, with the +1 smoothing of DETR/Mask2Former."""
    p = logits.sigmoid()
    num = 2 * (p @ targets.T)
    den = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


@torch.no_grad()
def hungarian_match(refer_logits: Tensor, mask_logits: Tensor, targets: Tensor, w_cls: float = 2.0,
                    w_bce: float = 5.0, w_dice: float = 5.0) -> tuple[Tensor, Tensor]:
    """Match one sample: ``refer_logits [Q, 2]``, ``mask_logits [Q, H, W]``, ``targets [K, H, W]``.

    Returns ``(query_indices, target_indices)``, each of length ``min(Q, K)``; empty for K = 0.
    """
    k = targets.shape[0]
    if k == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    prob = refer_logits.float().softmax(-1)[:, 0]
    logits = mask_logits.float().flatten(1)
    tgt = targets.float().flatten(1)
    cost = w_cls * -prob[:, None] + w_bce * pairwise_bce(logits, tgt) + w_dice * pairwise_dice(logits, tgt)
    cost = cost.cpu().numpy()
    if not np.isfinite(cost).all():
        raise ValueError("matching cost is not finite (diverged predictions?)")
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
