"""Hard negatives: NSC (non-referent sample conversion, :mod:`deris_core.data.nsc`) as a curation tool.

For each image that has a ref with a target, up to ``per_image`` sentences people wrote for *other*
images are proposed, drawn at random (seeded) and kept only when they pass the training rule for a
non-referent sentence: longer than ``min_text_length`` words and less similar than ``threshold``
(the official character-bag similarity) to each sentence already asked of this image; a
sentence this image already has (in a ref, a prediction or an earlier proposal) is never proposed.
As in training, a draw that fails is retried up to ``max_tries`` times per proposal.

The model then answers each proposal on its image (the image encoded once). Its verdict is
stored with the proposal (table ``negatives``, and the prediction with ``origin = 'negatives'``):
one it calls *no target* becomes the model's predicted no-target ref, to verify; one where it finds
a target gets no ref, and is shown first in the verification queue (the model is wrong, or the
sentence really fits this image too). Images are committed a chunk at a time; a rerun proposes
only what is missing (the same seed draws the same sentences).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from deris_core import __version__
from deris_core.data.nsc import NSCConfig, similarity

from ..services.permissions import Actor
from ..services.refs import RefService
from ..store import DEFAULT_CATEGORY, RefStatus, Store
from ..store import predictions
from ..store.negatives import asked, proposed_counts, proposed_in, sources, targeted_images, write_negative
from .preannotate import PairResult, SentenceCheck, insert_prediction, predict_image, sentence_checker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    image_id: int
    sentence: str
    source_ref_id: int
    source_image_id: int


def passes(candidate: str, candidate_image: int, image_id: int, own: set[str], cfg: NSCConfig) -> bool:
    """The NSC rule for asking ``candidate`` (written for ``candidate_image``) of ``image_id``, whose
    sentences are ``own``: another image, long enough, dissimilar to each of them, not one of them."""
    if candidate_image == image_id or len(candidate.split()) <= cfg.min_text_length:
        return False
    folded = candidate.casefold()
    return all(s.casefold() != folded and similarity(candidate, s) < cfg.threshold for s in own)


def propose(store: Store, per_image: int = 3, cfg: NSCConfig = NSCConfig(), seed: int = 0,
            check: SentenceCheck | None = None) -> list[Proposal]:
    """The proposals still missing (each image up to ``per_image`` in all), image by image.

    ``check`` (the model's tokenizer rule) leaves out sentences the model cannot take."""
    if per_image < 1:
        raise ValueError(f"--per-image must be at least 1, got {per_image}")
    pool = [(r, i, s) for r, i, s in sources(store) if len(s.split()) > cfg.min_text_length and not (check and check(s))]
    if not pool:
        return []
    have = asked(store)
    counts = proposed_counts(store)
    out: list[Proposal] = []
    for image_id in targeted_images(store):
        own = set(have.get(image_id, ()))
        rng = np.random.default_rng([seed, image_id])  # the same draws on a rerun, whatever else changed
        for _ in range(per_image - counts.get(image_id, 0)):
            for _ in range(cfg.max_tries):
                ref_id, other_image, text = pool[int(rng.integers(len(pool)))]
                if passes(text, other_image, image_id, own, cfg):
                    out.append(Proposal(image_id, text, ref_id, other_image))
                    own.add(text)  # neither proposed twice nor a near-copy of a proposal
                    break
    return out


def why_none(store: Store, per_image: int) -> str:
    """Why nothing was proposed, in words the operator can act on."""
    if not sources(store):
        return "no sentence written by people in this store (refs not made by the model nor rejected): nothing to draw from"
    if not targeted_images(store):
        return "no image has a ref with a target (NSC converts only samples that have one)"
    return (f"every image has {per_image} proposals already, or no sentence of another image passes the rule "
            "(too short or too similar to the image's own sentences)")


def write_verdicts(store: Store, results: Sequence[PairResult], proposals: dict[tuple[int, str], Proposal],
                   key: str) -> dict[str, int]:
    """Store the model's verdicts on proposals in one transaction (a pair proposed meanwhile is skipped)."""
    model = Actor.tool("model:" + key.split("|")[0])
    service = RefService(store)
    store.category_id(DEFAULT_CATEGORY)
    counts = {"proposed": 0, "found_target": 0, "no_target_refs": 0}
    now = time.time()
    with store.transaction() as db:
        for r in results:
            prop = proposals[(r.image_id, r.sentence)]
            if proposed_in(db, r.image_id, r.sentence):
                continue
            found = bool(r.referred)
            top = max((s for _, s, _ in r.candidates), default=0.0)
            ref_id = None
            if not found:
                split = store.image_split_in(db, r.image_id) or "train"
                ref_id = service.save(model, r.image_id, [r.sentence], no_target=True, split=split, status=RefStatus.PREDICTED,
                                      db=db, source="model", action="predict",
                                      detail={"model": key, "code": f"deris_core {__version__}", "existence": r.existence,
                                              "origin": predictions.NEGATIVES, "from_ref": prop.source_ref_id}).ref_id
            if not predictions.has_pair(db, r.image_id, r.sentence, key):
                insert_prediction(db, ref_id, r, key, now, origin=predictions.NEGATIVES)
            write_negative(db, r.image_id, r.sentence, prop.source_ref_id, key, r.existence, found, top, ref_id)
            counts["proposed"] += 1
            counts["found_target"] += int(found)
            counts["no_target_refs"] += int(not found)
    return counts


def run_negatives(store: Store, predictor, key: str, *, per_image: int = 3, cfg: NSCConfig = NSCConfig(),
                  seed: int = 0, batch: int = 8, chunk: int = 8, progress: bool = True,
                  load: Callable[[int], np.ndarray | None] | None = None) -> dict:
    """Propose, ask the model, store; returns a summary (how many, the model's verdicts, skipped images)."""
    t0 = time.perf_counter()
    proposals = propose(store, per_image, cfg, seed, check=sentence_checker(predictor))
    by_pair = {(p.image_id, p.sentence): p for p in proposals}
    groups: dict[int, list[str]] = {}
    for p in proposals:
        groups.setdefault(p.image_id, []).append(p.sentence)
    images = sorted(groups)
    load = load or store.load_image
    totals = {"proposed": 0, "found_target": 0, "no_target_refs": 0}
    skipped: list[str] = []
    bar = tqdm(total=len(proposals), unit="sentence", desc="negatives", disable=not progress)
    for start in range(0, len(images), max(1, chunk)):
        results: list[PairResult] = []
        for image_id in images[start:start + chunk]:
            rgb = load(image_id)
            if rgb is None:
                skipped.append(f"image {image_id}: pixels not available")
                continue
            results += predict_image(predictor, rgb, image_id, groups[image_id], batch)
        for k, v in write_verdicts(store, results, by_pair, key).items():
            totals[k] += v
        bar.update(len(results))
    bar.close()
    note = why_none(store, per_image) if not proposals else ""
    log.info("hard negatives with %s on %d images: %s%s", key, len(images), dict(totals), f" ({note})" if note else "")
    return {"model": key, "images": len(images), **totals, **({"note": note} if note else {}), "per_image": per_image, "nsc_threshold": cfg.threshold,
            "min_words": cfg.min_text_length, "seed": seed, "skipped_images": skipped,
            "seconds": round(time.perf_counter() - t0, 2)}
