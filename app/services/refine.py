"""The promptable refiner every session shares (``launch.py --refiner``), and the one call the
canvas's prompt tools make: the prompts of an instance (points, a box) and its starting mask in,
a mask out.

The mask is a function of the instance's prompts (all of them travel with each call), so the
server keeps no per-instance state: undo happens in the browser, and a reload, another server
behind the same database or a stale reply cannot mix two instances. The per-image work (SAM's
embedding, GrabCut's working copies) is cached by the refiner under the image's content hash.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..refine import RefineError, Refiner, RefineSession, build_refiner
from .errors import BadInput

log = logging.getLogger(__name__)

MAX_PROMPTS = 200  # prompts of one instance (more is a stuck key, not annotation)


@dataclass(frozen=True)
class Refined:
    """What one refine call gives: the mask at the image's size, the refiner's score and the time it took."""

    mask: np.ndarray
    score: float
    seconds: float


def parse_prompts(prompts: object) -> list[dict]:
    """Prompts as the canvas sends them (``{"kind": "point", "x", "y", "label"}`` / ``{"kind": "box",
    "box": [x1, y1, x2, y2]}``, original pixels), checked for shape; :class:`BadInput` otherwise."""
    if not isinstance(prompts, list) or not prompts:
        raise BadInput("No prompts: click on the object (or drag a box around it) first.")
    if len(prompts) > MAX_PROMPTS:
        raise BadInput(f"{len(prompts)} prompts on one instance: at most {MAX_PROMPTS}; start a new instance (N).")
    out = []
    for p in prompts:
        kind = p.get("kind") if isinstance(p, dict) else None
        try:
            if kind == "point":
                out.append({"kind": "point", "x": float(p["x"]), "y": float(p["y"]), "label": 1 if int(p["label"]) else 0})
            elif kind == "box":
                box = [float(v) for v in p["box"]]
                if len(box) != 4:
                    raise ValueError
                out.append({"kind": "box", "box": box})
            else:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"A prompt from the canvas cannot be used ({str(p)[:60]}): reload the page.") from None
    return out


class RefinerHolder:
    """The refiner chosen at launch, built once (lazily when none was given: GrabCut, offline)."""

    def __init__(self, refiner: Refiner | None = None, spec: str = "grabcut") -> None:
        self._refiner = refiner
        self.spec = spec
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str | None, device: str = "auto") -> "RefinerHolder":
        """``grabcut``, ``sam:<hub repo>`` or ``sam:<folder>``; a SAM that cannot load says so in one
        logged line and GrabCut is used (:func:`app.refine.build_refiner`)."""
        return cls(build_refiner(spec or "grabcut", device=device), spec or "grabcut")

    @property
    def refiner(self) -> Refiner:
        with self._lock:
            if self._refiner is None:
                self._refiner = build_refiner(self.spec)
            return self._refiner

    @property
    def name(self) -> str:
        return getattr(self.refiner, "name", type(self.refiner).__name__)

    def refine(self, image: np.ndarray, image_key: str | None, prompts: list[dict],
               prior: np.ndarray | None = None) -> Refined:
        """The mask of ``prompts`` (see :func:`parse_prompts`) on ``image``, starting from ``prior``
        (a candidate's or a drawn mask: "refine this candidate"), or :class:`BadInput` with one line."""
        prompts = parse_prompts(prompts)
        t0 = time.perf_counter()
        refiner = self.refiner
        try:
            with self._lock:  # one refine at a time: the refiners' per-image caches are not thread-safe
                session = RefineSession(refiner, image, prior=prior, image_key=image_key)
                mask = session.replay(prompts)
        except RefineError as exc:
            raise BadInput(str(exc)) from None
        seconds = time.perf_counter() - t0
        score = session.result.score if session.result is not None else 0.0
        log.debug("refined %d prompt(s) with %s in %.0f ms", len(prompts), self.name, seconds * 1000)
        return Refined(np.asarray(mask, bool), float(score), seconds)
