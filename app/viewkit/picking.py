"""Click-to-pick: what a click on the result image does to the target set (pure, no Gradio).

A click inside a target already in the set removes it (the topmost one: the last drawn);
otherwise it adds the best-scoring candidate whose mask contains the point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from deris_core.predictor import Prediction


@dataclass(frozen=True)
class Pick:
    action: str  # "add", "remove" or "none"
    candidate: int | None = None  # query index to add
    target: int | None = None  # index in the target set to remove


def hit(prediction: Prediction | None, target_masks: Sequence[np.ndarray], x: int, y: int) -> Pick:
    """The effect of a click at pixel ``(x, y)`` of the original image."""
    for i in range(len(target_masks) - 1, -1, -1):
        m = target_masks[i]
        if 0 <= y < m.shape[0] and 0 <= x < m.shape[1] and m[y, x]:
            return Pick("remove", target=i)
    if prediction is None:
        return Pick("none")
    h, w = prediction.original_size
    if not (0 <= x < w and 0 <= y < h):
        return Pick("none")
    for k in prediction.order:  # best score first
        if prediction.mask(k)[y, x]:
            return Pick("add", candidate=int(k))
    return Pick("none")
