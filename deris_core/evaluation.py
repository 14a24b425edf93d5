"""Evaluate a DeRIS model on a gRefCOCO-format split with the official metrics.

The command line is ``python -m deris_core.tools.evaluate`` (:mod:`deris_core.tools.evaluate`).

Weights default to the bundled model. Every (image, sentence) pair is one sample, as in the
official evaluation: the prediction is "no target" when no candidate's referring score
exceeds the score threshold, and its mask is the union of the referred candidates' masks
at the original image size. GRES metrics (gIoU, cIoU, N-acc, T-acc, Pr@t) are computed over
all samples; the RIS metrics (mIoU, oIoU, MaskACC@t) over the samples that have a target.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch

from .data.refer import DataError, ReferDataset, ReferSample, load_grefcoco
from .metrics import GresAccumulator, MetricError, RisAccumulator
from .model.deris import DeRIS
from .predictor import Predictor
from .tokenizer import BEiT3Tokenizer


def evaluate_predictor(predictor: Predictor, data_dir: str, split: str, *, limit: int | None = None,
                       score_threshold: float | None = None, batch: int = 16, progress: bool = False) -> dict:
    data = load_grefcoco(data_dir, split)
    samples = data.samples[:limit] if limit else data.samples
    if not samples:
        raise DataError(f"no samples in split {split!r} of {data_dir}")
    return {"split": split, **evaluate_dataset(predictor, data, samples, score_threshold=score_threshold, batch=batch,
                                               progress=progress, desc=f"evaluating {split}")}


def evaluate_dataset(predictor: Predictor, data: ReferDataset, samples: list[ReferSample] | None = None, *,
                     score_threshold: float | None = None, batch: int = 16, progress: bool = False,
                     desc: str = "evaluating", defined: bool = False) -> dict:
    """The GRES and RIS metrics of ``samples`` (default: all) of a loaded dataset (a folder's, or
    one built in memory from a store); each image is encoded once. ``defined``: GRES metrics that
    these samples leave undefined are None (reasons under ``gres_undefined``) instead of an error."""
    samples = data.samples if samples is None else samples
    by_image: dict[int, list] = defaultdict(list)
    for s in samples:
        by_image[s.image_id].append(s)
    gres, ris = GresAccumulator(), RisAccumulator()
    t0 = time.perf_counter()
    items = list(by_image.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=desc, file=sys.stderr)
    for image_id, group in items:
        state = predictor.set_image(data.image_rgb(image_id))
        for i in range(0, len(group), batch):
            chunk = group[i : i + batch]
            preds = predictor.predict_batch([s.sentence for s in chunk], image=state, score_threshold=score_threshold)
            for s, p in zip(chunk, preds):
                gt = data.target_mask(s)
                pred = p.union_mask
                gres.add(pred, gt, s.no_target, p.no_target)
                if not s.no_target:
                    ris.add(pred, gt)
    out = {"samples": len(samples), "images": len(by_image), "seconds": time.perf_counter() - t0}
    try:
        if defined:
            out["gres"], out["gres_undefined"] = gres.defined_result()
        else:
            out["gres"] = gres.result()
    except (ZeroDivisionError, MetricError) as exc:
        out["gres"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        out["ris"] = ris.result()
    except MetricError as exc:
        out["ris"] = {"error": str(exc)}
    return out


def evaluate_model(model: DeRIS, tokenizer: BEiT3Tokenizer, data_dir: str, split: str, *,
                   device: torch.device | str = "cpu", limit: int | None = None) -> dict:
    """Evaluate an in-memory model (used between training epochs)."""
    was_training = model.training
    predictor = Predictor(model, tokenizer, device=device)
    try:
        return evaluate_predictor(predictor, data_dir, split, limit=limit)
    finally:
        model.train(was_training)
