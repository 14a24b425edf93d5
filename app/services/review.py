"""Review's before / after: a fixed ref's last rejected version against the ref as it is now.

:func:`last_rejection` gives what the store kept when the ref was last rejected (sentences, the
no-target flag, every target's mask, who rejected it and why; :mod:`app.store.versions`), or None for
a ref never rejected. :func:`compare` says what the fix changed, in the words the reviewer needs:
which targets were reshaped (pixels added and removed), added or removed, and which sentences came
or went. Nothing here knows Gradio.

Targets are numbered 1..N by their position in each version, as the canvas labels them. A target of
the rejected version and one of now are the same object when they are the same pixels, else when
they overlap enough (:data:`MATCH_IOU`; the best pairs first): an outline redrawn is "reshaped", a
different object is "removed" and "added".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..store import Store, decode_mask
from ..store.review import REASONS
from ..store.versions import last_rejected_version

log = logging.getLogger(__name__)
MATCH_IOU = 0.1  # a rejected target and a target of now with at least this IoU are one object, reshaped


@dataclass(frozen=True)
class Rejection:
    """A ref's last rejection: the version rejected (sentences, flag, masks) and who rejected it why."""

    ref_id: int
    version: int
    at: float
    reviewer: str
    reason: str | None  # a key of REASONS (None: a plain status change)
    comment: str
    sentences: list[str]
    no_target: bool
    masks: list[np.ndarray | None]  # per target, in order; None: not kept (rejected before schema 6)

    @property
    def masks_kept(self) -> bool:
        """Whether every target's mask of the rejected version is known."""
        return all(m is not None for m in self.masks)

    @property
    def reason_label(self) -> str:
        """The reason in a few words ("wrong mask"), or "" without one."""
        return REASONS.get(self.reason or "", self.reason or "").split(" (")[0]


def last_rejection(store: Store, ref_id: int) -> Rejection | None:
    """The ref's last rejected version with its masks decoded; None when it was never rejected."""
    v = last_rejected_version(store, ref_id)
    if v is None:
        return None
    masks = [decode_mask(r) if r is not None else None for r in v.rles]
    log.debug("ref %d: last rejected at v%d by %s (%s)", ref_id, v.version, v.reviewer or "-", v.reason or "no reason")
    return Rejection(v.ref_id, v.version, v.at, v.reviewer, v.reason, v.comment, v.sentences, v.no_target, masks)


@dataclass(frozen=True)
class TargetChange:
    """One object across the two versions: its number in each (None: not there) and the pixels the fix
    added to it and removed from it."""

    before: int | None
    after: int | None
    added_px: int = 0
    removed_px: int = 0

    @property
    def changed_px(self) -> int:
        return self.added_px + self.removed_px


@dataclass(frozen=True)
class Changes:
    """What changed from the rejected version to now."""

    targets: tuple[TargetChange, ...]  # empty when the rejected masks were not kept
    sentences_added: tuple[str, ...]
    sentences_removed: tuple[str, ...]
    no_target_before: bool
    no_target_after: bool
    masks_kept: bool = True
    counts: tuple[int, int] = (0, 0)  # targets then, targets now

    @property
    def nothing(self) -> bool:
        """True when the fix changed nothing the reviewer could see."""
        return (self.masks_kept and not self.sentences_added and not self.sentences_removed
                and self.no_target_before == self.no_target_after
                and all(t.before is not None and t.after is not None and not t.changed_px for t in self.targets))

    def summary(self) -> str:
        """One line: the targets' changes, then the sentences' ("nothing changed" when nothing did)."""
        if self.nothing:
            return "nothing changed since the rejection"
        return "; ".join(_target_parts(self) + [_sentence_part(self)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 for two empty ones)."""
    union = int(np.logical_or(a, b).sum())
    return int(np.logical_and(a, b).sum()) / union if union else 0.0


def match(before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of the same object (0-based positions): the highest IoU first (ties: the same
    position), each target in at most one pair, none below :data:`MATCH_IOU`."""
    pairs = sorted(((_iou(a, b), i, j) for i, a in enumerate(before) for j, b in enumerate(after)),
                   key=lambda p: (-p[0], abs(p[1] - p[2]), p[1]))
    taken_before: set[int] = set()
    taken_after: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou >= MATCH_IOU and i not in taken_before and j not in taken_after:
            taken_before.add(i)
            taken_after.add(j)
            out.append((i, j))
    return out


def target_changes(before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> tuple[TargetChange, ...]:
    """Every object of either version: matched ones with their pixel changes (in the order of now),
    then those added, then those removed."""
    pairs = match(before, after)
    out = [TargetChange(i + 1, j + 1, int((after[j] & ~before[i]).sum()), int((before[i] & ~after[j]).sum()))
           for i, j in sorted(pairs, key=lambda p: p[1])]
    out += [TargetChange(None, j + 1) for j in range(len(after)) if j not in {p[1] for p in pairs}]
    out += [TargetChange(i + 1, None) for i in range(len(before)) if i not in {p[0] for p in pairs}]
    return tuple(out)


def compare(rejected: Rejection, sentences: Sequence[str], masks: Sequence[np.ndarray], no_target: bool) -> Changes:
    """What changed from ``rejected`` to the ref now (its ``sentences``, target ``masks`` and flag)."""
    added = tuple(s for s in sentences if s not in rejected.sentences)
    removed = tuple(s for s in rejected.sentences if s not in sentences)
    counts = (len(rejected.masks), len(masks))
    if not rejected.masks_kept:
        changes = Changes((), added, removed, rejected.no_target, bool(no_target), False, counts)
    else:
        before = [np.asarray(m, bool) for m in rejected.masks if m is not None]
        after = [np.asarray(m, bool) for m in masks]
        changes = Changes(target_changes(before, after), added, removed, rejected.no_target, bool(no_target), True, counts)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("ref %d against its rejected v%d: %s", rejected.ref_id, rejected.version, changes.summary())
    return changes


def _n(k: int, word: str) -> str:
    """``1 target``, ``2 targets``."""
    return f"{k} {word}{'' if k == 1 else 's'}"


def _target_parts(c: Changes) -> list[str]:
    """The targets' part of :meth:`Changes.summary`."""
    parts = []
    if c.no_target_before != c.no_target_after:
        parts.append(f"was no target, now {_n(c.counts[1], 'target')}" if c.no_target_before
                     else f"was {_n(c.counts[0], 'target')}, now no target")
    if not c.masks_kept:  # nothing to compare pixel by pixel (said only when there are targets now)
        kept = [] if c.no_target_after else [f"the rejected masks were not kept ({_n(c.counts[0], 'target')} then, "
                                             f"{c.counts[1]} now)"]
        return parts + kept
    same = 0
    for t in c.targets:
        if t.before is None and not c.no_target_before:  # after a no-target version every target is new: said above
            parts.append(f"target {t.after} added")
        elif t.after is None and not c.no_target_after:
            parts.append(f"rejected target {t.before} removed")
        elif t.before is not None and t.after is not None and t.changed_px:
            was = f" (was {t.before})" if t.before != t.after else ""
            parts.append(f"target {t.after}{was}: {t.changed_px:,} px changed (+{t.added_px:,} / −{t.removed_px:,})")
        elif t.before is not None and t.after is not None:
            same += 1
    if same:
        parts.append("targets unchanged" if same == len(c.targets) else f"{_n(same, 'target')} unchanged")
    return parts


def _sentence_part(c: Changes) -> str:
    """The sentences' part of :meth:`Changes.summary`."""
    what = [f"{len(x)} {verb}" for x, verb in ((c.sentences_added, "added"), (c.sentences_removed, "removed")) if x]
    return "sentences: " + ", ".join(what) if what else "sentences unchanged"
