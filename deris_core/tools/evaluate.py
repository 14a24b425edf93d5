"""Evaluate a DeRIS model on a gRefCOCO-format split with the official metrics (:mod:`deris_core.evaluation`).

    python -m deris_core.tools.evaluate [--weights NAME|PATH] --data DIR --split val [--dtype fp32|bf16] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from ..data.refer import DataError
from ..evaluation import evaluate_predictor
from ..hardware import DTYPE_CHOICES, DTYPE_HELP
from ..runtime import configure_from_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deris_core.tools.evaluate", description="Official GRES/RIS metrics on a gRefCOCO-format split.")
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
    from ..weights import WeightsError, load_predictor

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
