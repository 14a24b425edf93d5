"""Evaluate a DeRIS model on a gRefCOCO-format split with the official metrics.

    python -m deris_core.evaluate [--weights NAME|PATH] --data DIR --split val [--dtype fp32|bf16] [--json]

Weights default to the bundled model. Every (image, sentence) pair is one sample, as in the
official evaluation: the prediction is "no target" when no candidate's referring score
exceeds the score threshold, and its mask is the union of the referred candidates' masks
at the original image size. GRES metrics (gIoU, cIoU, N-acc, T-acc, Pr@t) are computed over
all samples; the RIS metrics (mIoU, oIoU, MaskACC@t) over the samples that have a target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import torch

from .data.refer import DataError, ReferDataset, ReferSample, load_grefcoco
from .hardware import DTYPE_CHOICES, DTYPE_HELP
from .metrics import GresAccumulator, MetricError, RisAccumulator
from .model.deris import DeRIS
from .predictor import Predictor
from .runtime import configure_from_env
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deris_core.evaluate", description="Official GRES/RIS metrics on a gRefCOCO-format split.")
    p.add_argument("--weights", default=None, help="published name, checkpoint path, owner/name on the Hub, or 'bundled' (default)")
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--data", required=True, help="folder in the gRefCOCO layout (grefcoco/, images/train2014/)")
    p.add_argument("--split", default="val")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPE_CHOICES),
                   help="default: fp32, as the official figures. " + DTYPE_HELP)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--score-threshold", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    configure_from_env()
    from .weights import WeightsError, load_predictor

    try:
        predictor = load_predictor(args.weights, args.tokenizer, config=args.config, device=args.device,
                                   dtype=args.dtype)
        res = evaluate_predictor(predictor, args.data, args.split, limit=args.limit,
                                 score_threshold=args.score_threshold, progress=not args.json)
    except (WeightsError, DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res["weights"] = getattr(predictor, "description", str(args.weights))
    res["dtype"] = predictor.precision.name
    res["precision"] = predictor.precision.as_dict()
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['weights']} on {args.data} [{args.split}]: {res['samples']} samples, {res['images']} images")
        for group in ("gres", "ris"):
            print(f"  {group.upper()}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in res[group].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
