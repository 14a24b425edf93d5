"""One instance's prompts on the canvas: add a point or a box, undo, and the mask they give.

The canvas (issue 37, point 1) keeps a :class:`RefineSession` per instance being refined. The
mask is a function of the prompts (every point so far, the last box, the starting candidate's
mask), so undo is "drop the last prompt and refine again", and the same prompts always give the
same mask. Handlers call these methods directly; nothing here knows about Gradio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import RefineError, RefineResult, Refiner, check_prompts


@dataclass(frozen=True)
class Prompt:
    """``kind``: ``"point"`` (``xy``, ``label`` 1/0) or ``"box"`` (``box`` x1, y1, x2, y2), original pixels."""

    kind: str
    xy: tuple[float, float] | None = None
    label: int | None = None
    box: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict:
        if self.kind == "point":
            return {"kind": "point", "x": self.xy[0], "y": self.xy[1], "label": self.label}
        return {"kind": "box", "box": list(self.box)}


@dataclass
class RefineSession:
    """Prompts of one instance on one image, and the refined mask they give.

    ``prior``: the mask the refinement starts from ("refine this candidate"), or None for a new instance.
    """

    refiner: Refiner
    image: np.ndarray
    prior: np.ndarray | None = None
    image_key: str | None = None
    prompts: list[Prompt] = field(default_factory=list)
    result: RefineResult | None = None
    _state: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._state = self.refiner.set_image(self.image, self.image_key)
        h, w = np.asarray(self.image).shape[:2]
        self.size = (h, w)
        if self.prior is not None:
            check_prompts(self.size, prior_mask=self.prior)  # a wrong-sized prior is refused now, not later
            self.prior = np.asarray(self.prior, bool)

    # --- prompts ------------------------------------------------------------------------------

    def add_point(self, x: float, y: float, positive: bool = True) -> np.ndarray:
        """A positive (part of the object) or negative click; returns the new mask."""
        p = Prompt("point", (float(x), float(y)), 1 if positive else 0)
        return self._push(p)

    def set_box(self, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
        """A dragged box (replaces an earlier box; undo brings that one back); returns the new mask."""
        return self._push(Prompt("box", box=(float(x1), float(y1), float(x2), float(y2))))

    def undo(self) -> np.ndarray:
        """Take back the last prompt; returns the mask of the prompts left (the prior, or empty, with none)."""
        if not self.prompts:
            raise RefineError("nothing to undo: this instance has no prompts")
        last = self.prompts.pop()
        try:
            return self._run()
        except Exception:
            self.prompts.append(last)
            raise

    def replay(self, prompts: list[dict]) -> np.ndarray:
        """Replace the prompts by ``prompts`` (as :meth:`to_dict` writes them) and refine once: the
        mask of a whole prompt list, as a stateless server computes it for each canvas call."""
        old = self.prompts
        try:
            self.prompts = [Prompt("point", (float(p["x"]), float(p["y"])), 1 if p["label"] else 0)
                            if p["kind"] == "point" else Prompt("box", box=tuple(float(v) for v in p["box"]))
                            for p in prompts]
            return self._run()
        except Exception:
            self.prompts = old
            raise

    def clear(self) -> np.ndarray:
        self.prompts.clear()
        return self._run()

    # --- the mask -----------------------------------------------------------------------------

    @property
    def mask(self) -> np.ndarray:
        """The current mask: the last result, else the prior, else empty (``[H, W]`` bool)."""
        if self.result is not None:
            return self.result.mask
        return self.prior.copy() if self.prior is not None else np.zeros(self.size, bool)

    def arguments(self) -> dict:
        """The refiner's arguments for the current prompts."""
        pts = [p for p in self.prompts if p.kind == "point"]
        boxes = [p.box for p in self.prompts if p.kind == "box"]
        return {"points": [p.xy for p in pts] or None, "labels": [p.label for p in pts] or None,
                "box": boxes[-1] if boxes else None, "prior_mask": self.prior}

    def to_dict(self) -> dict:
        """The prompts as plain data (kept with the instance)."""
        return {"prompts": [p.to_dict() for p in self.prompts], "refiner": getattr(self.refiner, "name", "?")}

    def _push(self, prompt: Prompt) -> np.ndarray:
        self.prompts.append(prompt)
        try:
            return self._run()
        except Exception:
            self.prompts.pop()  # a refused prompt leaves the session as it was
            raise

    def _run(self) -> np.ndarray:
        if not self.prompts:
            self.result = None
            return self.mask
        self.result = self.refiner.refine(self._state, **self.arguments())
        return self.mask
