"""Quality checks: the model against the people (qa) and people against each other (agreement).

qa: for every ref made by a person, the model runs on each of its sentences; per sentence the
official GRES sample (``deris_core.metrics``: gIoU, cIoU, N-acc, T-acc) and per ref the agreement
that ``qa`` stores: the IoU of the merged masks (the lowest over its sentences; two no-target
answers agree with IoU 1) and whether the no-target verdicts agree. The review view can then
show the refs where model and annotator disagree most first.

agreement: refs of the same image and sentence by two or more annotators: the IoU of their
merged masks and their no-target agreement per pair and overall; ``merge`` adds a consensus ref
(the answer closest to all the others) where at least ``quorum`` annotators agree with it at
``min_iou`` or more.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from deris_core.metrics import GresAccumulator

from ..services.permissions import Actor
from ..services.refs import RefService
from ..store import RefFilter, RefStatus, Store, clean_sentences
from ..store.coverage import sentence_key  # what makes two answers "the same sentence"
from ..store.predictions import QaResult, write_qa
from ..store.queue import ref_ids
from ..store.status import PEOPLE_MADE

log = logging.getLogger(__name__)
NOT_CHECKED = "not checked, no sentence the model can take"


def merged_mask(store: Store, ref_id: int, shape: tuple[int, int], cache: dict[int, np.ndarray]) -> np.ndarray:
    """The union of a ref's target masks (instances decoded once per image through ``cache``)."""
    out = np.zeros(shape, bool)
    for iid in store.ref(ref_id).instance_ids:
        if iid not in cache:
            cache[iid] = store.instance(iid).mask
        out |= cache[iid]
    return out


def mask_iou(a: np.ndarray, b: np.ndarray, a_nt: bool, b_nt: bool) -> float:
    """IoU of two answers; two no-target answers agree fully, one alone not at all."""
    if a_nt or b_nt:
        return 1.0 if a_nt and b_nt else 0.0
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def qa(store: Store, predictor, key: str, *, statuses: tuple[str, ...] = PEOPLE_MADE, split: str | None = None,
       annotator: str | None = None, batch: int = 8) -> dict:
    """Run the model on people's refs; store per-ref agreement in ``qa``; GRES metrics overall and per group.

    A sentence the model cannot take (one that cleans to nothing, say) is left out and listed in
    ``skipped_sentences``; a ref left without any sentence is not checked (listed too). An image
    whose pixels cannot be read (file gone, unreadable, changed) is listed in ``skipped_images``
    with its number of refs; ``refs_not_checked`` counts every ref left out (see :func:`qa_incomplete`)."""
    from .preannotate import sentence_checker

    check = sentence_checker(predictor)
    skipped: list[str] = []
    ids = ref_ids(store, RefFilter.of(statuses, split, annotator or None, people_only=True))
    overall = GresAccumulator()
    groups: dict[str, GresAccumulator] = defaultdict(GresAccumulator)
    rows = []
    by_image: dict[int, list] = defaultdict(list)
    for rec in store.refs(ref_ids=ids):
        by_image[rec.image_id].append(rec)
    skipped_images: list[dict] = []
    for image_id, recs in sorted(by_image.items()):
        rgb = store.load_image(image_id)
        if rgb is None:  # listed, never left out silently: the report must not read as if all was checked
            skipped_images.append({"image_id": image_id, "file_name": store.image(image_id).file_name,
                                   "refs": len(recs), "why": "the image file is gone, unreadable or changed"})
            log.warning("qa: image %d not checked (%d refs): its pixels are not available", image_id, len(recs))
            continue
        state = predictor.set_image(rgb)
        cache: dict[int, np.ndarray] = {}
        for rec in recs:
            usable = []
            for text in rec.sentences:
                why = check(text)
                if why:
                    skipped.append(f"ref {rec.id} sentence {text[:80]!r}: {why}")
                else:
                    usable.append(text)
            if not usable:
                skipped.append(f"ref {rec.id}: {NOT_CHECKED}")
                continue
            gt = merged_mask(store, rec.id, rgb.shape[:2], cache)
            worst, nt_agree, model_nt = 1.0, True, False
            for start in range(0, len(usable), batch):
                for pred in predictor.predict_batch(usable[start:start + batch], image=state):
                    pm = pred.union_mask.astype(bool)
                    for acc in (overall, groups[f"annotator={rec.author}"], groups[f"split={rec.split}"]):
                        acc.add(pm, gt, rec.no_target, pred.no_target)
                    worst = min(worst, mask_iou(pm, gt, pred.no_target, rec.no_target))
                    nt_agree &= pred.no_target == rec.no_target
                    model_nt |= pred.no_target
            rows.append(QaResult(rec.id, key, worst, nt_agree, model_nt, time.time()))
    with store.transaction() as db:
        write_qa(db, rows)
    return {"model": key, "refs": len(rows), "overall": _metrics(overall) if rows else {},
            "groups": {g: _metrics(acc) for g, acc in sorted(groups.items())},
            "disagreements": [{"ref_id": r.ref_id, "iou": round(r.iou, 4), "no_target_agree": bool(r.no_target_agree)}
                              for r in sorted(rows, key=lambda r: (r.iou, r.no_target_agree))[:20]],
            "skipped_sentences": skipped, "skipped_images": skipped_images,
            "refs_not_checked": sum(i["refs"] for i in skipped_images) + sum(x.endswith(NOT_CHECKED) for x in skipped)}


def qa_incomplete(res: dict) -> bool:
    """Whether a :func:`qa` report left something out (an image without pixels, a ref or a sentence the
    model could not take): ``python -m app.curate qa`` then exits with status 3 after printing it."""
    return bool(res.get("skipped_images") or res.get("skipped_sentences"))


def _metrics(acc: GresAccumulator) -> dict:
    """The official metrics of a group, with its size; a group of no-target samples only has no cIoU,
    T-acc or Pr@ (the official code divides by zero there), so those are reported as None."""
    try:
        return {"samples": acc.count, **acc.result()}
    except ZeroDivisionError:
        n_empty = acc.nt["TP"] + acc.nt["FN"]
        return {"samples": acc.count, "gIoU": 100.0 * acc.sum_iou / acc.count, "cIoU": None,
                "N_acc": 100.0 * acc.nt["TP"] / n_empty if n_empty else None, "T_acc": None,
                "note": "only no-target samples: cIoU, T-acc and Pr@ are undefined"}


@dataclass
class PairAgreement:
    image_id: int
    sentence: str
    ref_a: int
    ref_b: int
    annotator_a: str
    annotator_b: str
    iou: float
    no_target_agree: bool


def _groups(store: Store) -> dict[tuple[int, str], list]:
    groups: dict[tuple[int, str], list] = defaultdict(list)
    for rec in store.refs():
        if rec.author.startswith("model:") or rec.author.startswith("consensus") or not rec.sentences:
            continue
        groups[(rec.image_id, sentence_key(rec.sentences[0]))].append(rec)
    return {k: v for k, v in groups.items() if len({r.author for r in v}) >= 2}


def agreement(store: Store, merge: bool = False, min_iou: float = 0.7, quorum: int = 2) -> dict:
    """Pairwise agreement of annotators on the same (image, sentence); optionally add consensus refs."""
    pairs: list[PairAgreement] = []
    merged = 0
    for (image_id, sentence), recs in sorted(_groups(store).items()):
        im = store.image(image_id)
        cache: dict[int, np.ndarray] = {}
        masks = {r.id: merged_mask(store, r.id, (im.height, im.width), cache) for r in recs}
        ious = {}
        for a, b in itertools.combinations(recs, 2):
            if a.author == b.author:
                continue
            iou = mask_iou(masks[a.id], masks[b.id], a.no_target, b.no_target)
            ious[(a.id, b.id)] = ious[(b.id, a.id)] = iou
            pairs.append(PairAgreement(image_id, sentence, a.id, b.id, a.author, b.author, iou,
                                       a.no_target == b.no_target))
        if merge:
            medoid = max(recs, key=lambda r: sum(ious.get((r.id, o.id), 0.0) for o in recs if o.id != r.id))
            agree = {medoid.author} | {o.author for o in recs if ious.get((medoid.id, o.id), 0.0) >= min_iou}
            if len(agree) >= quorum and _add_consensus(store, medoid, sentence, "consensus(" + ",".join(sorted(agree))[:80] + ")"):
                merged += 1
    n = len(pairs)
    return {"groups": len({(p.image_id, p.sentence) for p in pairs}), "pairs": n,
            "mean_iou": round(sum(p.iou for p in pairs) / n, 4) if n else None,
            "no_target_agreement": round(sum(p.no_target_agree for p in pairs) / n, 4) if n else None,
            "merged": merged,
            "per_pair": [{"image_id": p.image_id, "sentence": p.sentence, "refs": [p.ref_a, p.ref_b],
                          "annotators": [p.annotator_a, p.annotator_b], "iou": round(p.iou, 4),
                          "no_target_agree": p.no_target_agree} for p in pairs]}


def _add_consensus(store: Store, medoid, key: str, annotator: str) -> bool:
    """Copy ``medoid`` as a consensus ref unless the image already has one for this sentence; the check and
    the insert are one ``BEGIN IMMEDIATE`` transaction, so merges running at once never add it twice."""
    sents = clean_sentences(medoid.sentences)
    targets = [] if medoid.no_target else list(medoid.instance_ids)
    with store.transaction() as db:
        for raw in store.first_sentences_in(db, medoid.image_id, "consensus"):
            if sentence_key(raw) == key:
                return False
        if not all(store.instance_on_image_in(db, i, medoid.image_id) for i in targets):
            return False  # the answer changed meanwhile; the next merge looks again
        RefService(store).save(Actor.tool("agreement"), medoid.image_id, sents, instance_ids=targets,
                               no_target=medoid.no_target, split=medoid.split, status=RefStatus.DONE, author=annotator, db=db,
                               detail={"copied_from": medoid.id})
    return True
