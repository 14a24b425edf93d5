"""Per-browser-session annotation state (kept in ``gr.State``; nothing here knows Gradio).

A session holds the current image, its cached features, the last prediction and the
*target set* being edited: a list of instance masks at full image resolution, each
remembering whether it came from a candidate query or was drawn. Every change goes through
:meth:`Session.change`, which records an undo step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from deris_core.predictor import ImageState, Prediction

MAX_UNDO = 50


@dataclass
class Target:
    mask: np.ndarray  # bool HxW at the original image size
    candidate: int | None = None  # query index when it came from a prediction
    edited: bool = False


@dataclass
class Session:
    image: np.ndarray | None = None  # RGB uint8, after the app's size limit
    image_state: ImageState | None = None
    image_id: int | None = None  # store id once saved
    file_name: str | None = None
    expression: str = ""
    prediction: Prediction | None = None
    targets: list[Target] = field(default_factory=list)
    no_target: bool = False
    ref_id: int | None = None  # editing a saved ref
    selected: int = 0  # target index shown in the editor
    undo_stack: list[tuple[list[Target], bool]] = field(default_factory=list)
    redo_stack: list[tuple[list[Target], bool]] = field(default_factory=list)

    def _snapshot(self) -> tuple[list[Target], bool]:
        return copy.deepcopy(self.targets), self.no_target

    def change(self) -> None:
        """Call before modifying ``targets`` / ``no_target``: records an undo step."""
        self.undo_stack.append(self._snapshot())
        del self.undo_stack[:-MAX_UNDO]
        self.redo_stack.clear()

    def _restore(self, source: list, other: list) -> bool:
        """Pop a state from ``source``, pushing the current one on ``other``."""
        if not source:
            return False
        other.append(self._snapshot())
        self.targets, self.no_target = source.pop()
        return True

    def undo(self) -> bool:
        return self._restore(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._restore(self.redo_stack, self.undo_stack)

    def reset_targets(self) -> None:
        self.targets, self.no_target = [], False
        self.undo_stack.clear()
        self.redo_stack.clear()
        self.selected = 0

    def selected_candidates(self) -> list[int]:
        return [t.candidate for t in self.targets if t.candidate is not None]

    def toggle_candidates(self, wanted: list[int]) -> None:
        """Make the candidate part of the target set equal ``wanted`` (drawn targets stay)."""
        assert self.prediction is not None
        current = set(self.selected_candidates())
        if current == set(wanted):
            return
        self.change()
        self.targets = [t for t in self.targets if t.candidate is None or t.candidate in wanted]
        for k in wanted:
            if k not in current:
                self.targets.append(Target(self.prediction.mask(k).astype(bool), candidate=k))
        if self.targets:
            self.no_target = False

    def union(self) -> np.ndarray | None:
        if self.image is None:
            return None
        out = np.zeros(self.image.shape[:2], bool)
        for t in self.targets:
            out |= t.mask
        return out
