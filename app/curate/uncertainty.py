"""How unsure the model was of one verdict, as one number from 0 (sure) to 1 (a coin toss), so that
the queues can show people the model's least certain answers first ("hardest first").

Three signs of doubt, each from 0 to 1; the score is the largest (the verdict is as weak as its
weakest part):

- **existence**: how close the existence probability ``p`` is to 0.5: ``1 - |2p - 1|``;
- **boundary**: how close the referred candidates' scores are to the score threshold ``t`` (the
  lowest referred one decides; with no referred candidate, the best rejected one, which
  nearly made it): ``1 - |s - t| / d``, where ``d`` is the distance from ``t`` to the end of the
  scale on that side (``1 - t`` above, ``t`` below), so a score halfway between the threshold
  and 0 or 1 counts 0.5 on either side;
- **margin**: the gap between the last accepted and the first rejected candidate: ``1 - gap``
  (two candidates of nearly the same score, one taken and one left, is a verdict that a small
  change of the threshold flips). Without a candidate on both sides there is no such gap: 0.

Pure functions of numbers the store keeps (``predictions``: existence, threshold, candidates'
scores), so a score is recomputed without the model when the threshold changes.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

EXISTENCE_THRESHOLD = 0.5


def closeness(score: float, threshold: float) -> float:
    """1 at the threshold, 0 at the end of the scale on the score's side (0 or 1)."""
    side = (1.0 - threshold) if score > threshold else threshold
    if side <= 0:
        return 1.0 if score == threshold else 0.0
    return max(0.0, 1.0 - abs(score - threshold) / side)


def parts(existence: float, scores: Iterable[float], threshold: float) -> dict[str, float]:
    """The three signs of doubt (see the module docstring) of one verdict."""
    ranked = sorted((float(s) for s in scores), reverse=True)
    accepted = [s for s in ranked if s > threshold]
    rejected = [s for s in ranked if s <= threshold]
    e = 1.0 - abs(2.0 * float(existence) - 1.0)
    edge = accepted[-1] if accepted else (rejected[0] if rejected else None)
    b = closeness(edge, threshold) if edge is not None else 0.0
    m = 1.0 - (accepted[-1] - rejected[0]) if accepted and rejected else 0.0
    return {"existence": max(0.0, min(1.0, e)), "boundary": b, "margin": max(0.0, min(1.0, m))}


def uncertainty(existence: float, scores: Sequence[float], threshold: float) -> float:
    """How unsure the verdict is: the largest of :func:`parts`, rounded to 6 digits."""
    return round(max(parts(existence, scores, threshold).values()), 6)


def of_stored(existence: float, candidates_json: str, threshold: float) -> float:
    """:func:`uncertainty` of a ``predictions`` row (its candidates as stored: JSON with ``score``)."""
    return uncertainty(existence, [c["score"] for c in json.loads(candidates_json)], threshold)
