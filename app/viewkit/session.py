"""Per-browser-session annotation state (kept in ``gr.State``; nothing here knows Gradio).

A session holds the current image, its cached features, the last prediction and the
*target set* being edited: a list of instance masks at full image resolution, each
remembering whether it came from a candidate query or was drawn. Every change goes through
:meth:`Session.change`, which records an undo step.

Memory is bounded: undo steps keep the masks as compressed RLE (a few kB for a 4096² mask
instead of 16 MB), at most :data:`MAX_UNDO` steps and :data:`MAX_HISTORY_BYTES` in all; the
:class:`SessionRegistry` frees a session's image, features and history when its client leaves.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from deris_core.predictor import ImageState, Prediction

MAX_UNDO = 50
MAX_HISTORY_BYTES = 8 << 20


def _candidate_mask(pred: Prediction, k: int) -> np.ndarray:
    """A candidate's full-size mask as a bool *view* of the prediction's masks (no 16 MB copy at 4096²)."""
    m = pred.mask(k)
    return m.view(bool) if m.dtype == np.uint8 else m.astype(bool)


def same_sentence(a: str | None, b: str | None) -> bool:
    """Whether two sentences are the same expression (white space and case aside)."""
    return " ".join((a or "").split()).casefold() == " ".join((b or "").split()).casefold()


@dataclass
class Target:
    mask: np.ndarray  # bool HxW at the original image size
    candidate: int | None = None  # query index when it came from a prediction
    edited: bool = False
    # the canvas's prompts that made ``mask`` (``[{"kind": "point", "x", "y", "label"} | {"kind": "box",
    # "box"}]``, original pixels, checked by app.views.canvas) and ``prior``, the mask (COCO RLE string) it
    # had before the first prompt; kept in the session so that a re-render gives them back to the canvas,
    # never stored in the dataset (gRefCOCO has no place for them)
    prompts: tuple[dict, ...] | None = None
    prior: str | None = None


@dataclass(frozen=True)
class _Step:
    """One undo step. An unedited candidate is stored as (query, mask threshold): its pixels
    come back from the prediction's logits; drawn or edited masks are kept as compressed RLE."""

    items: tuple[tuple[dict | float, int | None, bool], ...]
    no_target: bool
    prompts: tuple[tuple[tuple[dict, ...] | None, str | None], ...] = ()  # per item: (prompts, prior), when any

    @property
    def nbytes(self) -> int:
        return (64 + sum(48 + (len(r["counts"]) if isinstance(r, dict) else 8) for r, _, _ in self.items)
                + sum(64 * len(p or ()) + len(prior or "") for p, prior in self.prompts))

    @classmethod
    def of(cls, targets: list[Target], no_target: bool, pred: Prediction | None) -> "_Step":
        items = []
        for t in targets:
            if t.candidate is not None and not t.edited and not t.prompts and pred is not None:
                items.append((pred.mask_threshold, t.candidate, False))
            else:
                items.append((mask_utils.encode(np.asfortranarray(t.mask.astype(np.uint8))), t.candidate, t.edited))
        prompts = tuple((t.prompts, t.prior) for t in targets) if any(t.prompts for t in targets) else ()
        return cls(tuple(items), no_target, prompts)

    def restore(self, pred: Prediction | None) -> tuple[list[Target], bool]:
        out = self._targets(pred)
        for t, (p, prior) in zip(out, self.prompts):
            t.prompts, t.prior = p, prior
        return out, self.no_target

    def _targets(self, pred: Prediction | None) -> list[Target]:
        out = []
        for r, c, e in self.items:
            if isinstance(r, dict):
                out.append(Target(mask_utils.decode(r).astype(bool), c, e))
            elif pred is not None and r == pred.mask_threshold:
                out.append(Target(_candidate_mask(pred, c), c, False))
            else:  # another mask threshold: this candidate's mask under it, as its own array
                assert pred is not None
                out.append(Target(pred.with_thresholds(mask_threshold=float(r)).mask(c).astype(bool), c, False))
        return out


@dataclass
class Session:
    image: np.ndarray | None = None  # RGB uint8, after the app's size limit
    image_state: ImageState | None = None
    image_id: int | None = None  # store id once saved
    features_key: str | None = None  # which model and picture ``image_state`` was computed for (ModelHolder.features_key)
    digest: str | None = None  # content hash of ``image``
    expression: str = ""
    prediction: Prediction | None = None
    targets: list[Target] = field(default_factory=list)
    no_target: bool = False
    ref_id: int | None = None  # editing a saved ref ...
    ref_version: int | None = None  # ... opened at this version
    editing: bool = False  # a saved ref was opened: re-running the model on its sentence keeps editing it
    fixing: bool = False  # ... a rejected one, to fix: any run keeps editing it (its sentence may be the fault)
    selected: int = 0  # target index shown in the editor
    domain_note: str = ""  # the verdict's warning when the model runs out of its domain (app.services.scene_domain)
    undo_stack: list[_Step] = field(default_factory=list)
    redo_stack: list[_Step] = field(default_factory=list)
    # names this session's save attempts (with their content): a save whose outcome was lost and is tried
    # again with the same content carries the same key, so it is never stored twice; new after each save
    save_nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    # names this session to its own page only (the canvas asks for the prefetched next picture by it,
    # :meth:`SessionRegistry.client_of`); unguessable, so no page can ask for another session's
    ticket: str = field(default_factory=lambda: uuid.uuid4().hex)

    def save_key(self, *content: object) -> str:
        """The key of a save of ``content`` (plus the targets and the ref being edited) in this session."""
        import hashlib

        h = hashlib.sha256(f"{self.save_nonce}|{self.image_id}|{self.ref_id}|{self.ref_version}|{self.no_target}|"
                           f"{content!r}".encode())
        for t in self.targets:
            h.update(np.packbits(np.asarray(t.mask, bool)).tobytes())
        return h.hexdigest()[:32]

    def _snapshot(self) -> _Step:
        return _Step.of(self.targets, self.no_target, self.prediction)

    @staticmethod
    def _cap(stack: list[_Step]) -> None:
        del stack[:-MAX_UNDO]
        while len(stack) > 1 and sum(s.nbytes for s in stack) > MAX_HISTORY_BYTES:
            del stack[0]

    def change(self) -> None:
        """Call before modifying ``targets`` / ``no_target``: records an undo step."""
        self.undo_stack.append(self._snapshot())
        self._cap(self.undo_stack)
        self.redo_stack.clear()

    def _restore(self, source: list[_Step], other: list[_Step]) -> bool:
        """Pop a state from ``source``, pushing the current one on ``other``."""
        if not source:
            return False
        other.append(self._snapshot())
        self._cap(other)
        self.targets, self.no_target = source.pop().restore(self.prediction)
        return True

    def undo(self) -> bool:
        return self._restore(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._restore(self.redo_stack, self.undo_stack)

    def history_bytes(self) -> int:
        return sum(s.nbytes for s in self.undo_stack) + sum(s.nbytes for s in self.redo_stack)

    def reset_targets(self) -> None:
        self.targets, self.no_target = [], False
        self.undo_stack.clear()
        self.redo_stack.clear()
        self.selected = 0

    def start_new_ref(self) -> None:
        """Leave the ref being worked on (saved or not): no expression, prediction or targets, and the
        next save makes a new ref (Alt+N, a new upload)."""
        self.expression, self.prediction, self.ref_id, self.ref_version, self.editing = "", None, None, None, False
        self.fixing = False
        self.reset_targets()

    def selected_candidates(self) -> list[int]:
        return [t.candidate for t in self.targets if t.candidate is not None]

    def toggle_candidates(self, wanted: list[int]) -> None:
        """Make the candidate part of the target set equal ``wanted`` (drawn targets stay)."""
        assert self.prediction is not None
        wanted = list(dict.fromkeys(int(k) for k in wanted if 0 <= int(k) < self.prediction.num_candidates))
        current = set(self.selected_candidates())
        if current == set(wanted):
            return
        self.change()
        self.targets = [t for t in self.targets if t.candidate is None or t.candidate in wanted]
        for k in wanted:
            if k not in current:
                self.targets.append(Target(_candidate_mask(self.prediction, k), candidate=k))
        if self.targets:
            self.no_target = False

    def apply_prediction(self, pred: Prediction) -> None:
        """A new expression's result: the referred candidates become the target set (history restarts).

        It starts a new ref, unless a saved ref was opened for editing and this is a run of its own
        sentence (then saving updates that ref). A run of another sentence leaves the reopened ref as it
        is saved: the session edits it no more, and the next save makes a new ref (rewording a ref without
        running the model, then saving, still rewrites it). A rejected ref opened to be fixed stays the
        ref being edited whatever sentence runs: the rejection may be about the sentence itself."""
        if self.editing and not self.fixing and not same_sentence(pred.expression, self.expression):
            self.editing = False
        self.expression, self.prediction = pred.expression, pred
        if not self.editing:
            self.ref_id, self.ref_version = None, None
        self.reset_targets()
        self.targets = [Target(_candidate_mask(pred, k), candidate=k) for k in pred.referred]
        self.no_target = pred.no_target

    def rethreshold(self, score_threshold: float, mask_threshold: float) -> None:
        """Re-threshold the cached prediction (no network call); edited and drawn targets stay."""
        if self.prediction is None:
            return
        self.change()
        pred = self.prediction.with_thresholds(score_threshold, mask_threshold)
        self.prediction = pred
        kept = [t for t in self.targets if t.candidate is None or t.edited]
        taken = {t.candidate for t in kept}
        self.targets = kept + [Target(_candidate_mask(pred, k), candidate=k) for k in pred.referred if k not in taken]
        self.no_target = not self.targets and pred.no_target

    def release(self) -> None:
        """Drop everything heavy (the client has left)."""
        self.image = self.image_state = self.prediction = None
        self.targets = []
        self.undo_stack, self.redo_stack = [], []


class SessionRegistry:
    """The live session of each connected client, so that leaving frees its memory at once
    (Gradio itself deletes a closed client's state only an hour later)."""

    def __init__(self) -> None:
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()

    def track(self, client: str | None, sess: Session) -> Session:
        if client:
            with self._lock:
                self._live[client] = sess
        return sess

    def release(self, client: str | None) -> bool:
        with self._lock:
            sess = self._live.pop(client or "", None)
        if sess is None:
            return False
        sess.release()
        return True

    def client_of(self, ticket: str | None) -> str | None:
        """The client whose live session carries ``ticket`` (:attr:`Session.ticket`), or None."""
        if not ticket:
            return None
        with self._lock:
            return next((c for c, s in self._live.items() if s.ticket == ticket), None)

    def image(self, digest: str | None) -> "np.ndarray | None":
        """The open picture whose content hash is ``digest`` in any live session (the canvas's
        prompt tools name the picture they show by it), or None."""
        if not digest:
            return None
        with self._lock:
            live = list(self._live.values())
        for sess in live:
            img = sess.image
            if img is not None and sess.digest == digest:
                return img
        return None

    def __len__(self) -> int:
        return len(self._live)
