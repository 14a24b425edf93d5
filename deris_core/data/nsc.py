"""Non-referent sample conversion (NSC).

With probability ``rate`` a sample that has a target takes an expression from a different
image, longer than ``min_text_length`` words and less similar than ``threshold`` to its
own expression, and becomes a no-target sample. The similarity is the official one: the
mean of the Jaccard and cosine similarities of the two raw strings seen as bags (multisets)
of characters, which are the ``textdistance`` defaults (``qval=1``, ``as_set=False``):

- Jaccard = sum_c min(a_c, b_c) / sum_c max(a_c, b_c)
- cosine  = sum_c min(a_c, b_c) / sqrt(len(a) * len(b))
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np


def char_jaccard(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    ca, cb = Counter(a), Counter(b)
    inter = sum((ca & cb).values())
    union = sum((ca | cb).values())
    return inter / union


def char_cosine(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    inter = sum((Counter(a) & Counter(b)).values())
    return inter / math.sqrt(len(a) * len(b))


def similarity(a: str, b: str) -> float:
    """The official NSC similarity: mean of character-bag Jaccard and cosine."""
    return (char_jaccard(a, b) + char_cosine(a, b)) / 2


@dataclass
class NSCConfig:
    rate: float = 0.15
    threshold: float = 0.6
    min_text_length: int = 0  # words; the swapped-in expression must be strictly longer
    max_tries: int = 50  # the official loop gives up after 50 candidates as well


class NonReferentConversion:
    """Draws replacement expressions from a pool of ``(image_id, sentence)`` pairs."""

    def __init__(self, pool: list[tuple[int, str]], cfg: NSCConfig) -> None:
        if not 0.0 <= cfg.rate <= 1.0:
            raise ValueError(f"NSC rate must be in [0, 1], got {cfg.rate}")
        self.cfg = cfg
        self.pool = [(i, s) for i, s in pool if len(s.split()) > cfg.min_text_length]
        self.images = sorted({i for i, _ in self.pool})

    def __call__(self, image_id: int, sentence: str, has_target: bool, rng: np.random.Generator) -> str | None:
        """A replacement expression (the sample becomes no-target), or None to keep the sample."""
        if not has_target or not self.pool or rng.random() >= self.cfg.rate:
            return None
        for _ in range(self.cfg.max_tries):
            other_image, other = self.pool[int(rng.integers(len(self.pool)))]
            if other_image == image_id:
                continue
            if similarity(other, sentence) < self.cfg.threshold:
                return other
        return None
