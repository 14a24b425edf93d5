"""Command line: segment what an expression refers to in an image.

    python -m deris_core.tools.predict IMAGE "the two dogs on the left" [--weights NAME|PATH] [--out overlay.png] [--json]

Bad input ends with exit status 2 and a one-line error on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import cv2

from ..hardware import DTYPE_CHOICES, DTYPE_HELP
from ..runtime import add_log_level, configure_from_env, configure_logging
from ..visualize import banner, color, overlay

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deris_core.tools.predict", description=__doc__.splitlines()[0])
    p.add_argument("image", help="image file")
    p.add_argument("expression", nargs="+", help="referring expression(s); several are run as one batch")
    p.add_argument("--weights", default=None, help="published name (deris-l-grefcoco ...), a .pth/.safetensors file or saved folder, a Hub repository "
                   "owner/name, or 'bundled' (default)")
    p.add_argument("--tokenizer", default=None, help="sentencepiece model (beit3.spm for official weights; found automatically when omitted, see docs/weights.md)")
    p.add_argument("--config", default=None, help="config name when it cannot be inferred from the weights")
    p.add_argument("--device", default="auto", help="auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda or mps")
    p.add_argument("--dtype", default=None, choices=list(DTYPE_CHOICES),
                   help="default: $DERIS_DTYPE, else auto. " + DTYPE_HELP)
    p.add_argument("--score-threshold", type=float, default=None)
    p.add_argument("--mask-threshold", type=float, default=None)
    p.add_argument("--out", default=None, help="write the overlay image here (first expression)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_log_level(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, default="WARNING", fmt="note: %(message)s")
    configure_from_env()
    try:
        from ..weights import load_predictor  # the predictor runs under inference_mode itself

        predictor = load_predictor(args.weights, args.tokenizer, config=args.config, device=args.device, dtype=args.dtype)
        state = predictor.set_image(args.image)
        preds = predictor.predict_batch(args.expression, image=state, score_threshold=args.score_threshold, mask_threshold=args.mask_threshold)
        if args.out:
            p = preds[0]
            masks = [p.mask(i) for i in p.referred]
            img = overlay(state.image, masks, [color(k) for k in range(len(masks))])
            verdict = "NO TARGET" if p.no_target else f"{len(masks)} referred"
            img = banner(img, f"{verdict} | existence {p.existence:.2f}", (200, 30, 30) if p.no_target else (30, 120, 30))
            if not cv2.imwrite(args.out, img[:, :, ::-1]):
                raise OSError(f"cannot write {args.out}")
    except Exception as exc:  # noqa: BLE001 - the command's last resort: one line on stderr, the traceback at DEBUG (-v)
        log.debug("failed", exc_info=True)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    if args.json:
        result = {"image": args.image, "weights": getattr(predictor, "description", ""),
                  "precision": predictor.precision.as_dict(), "predictions": [p.to_dict() for p in preds]}
        if args.out:
            result["overlay"] = args.out
        print(json.dumps(result))
    else:
        print(f"precision: {predictor.precision.describe()}")
        for p in preds:
            print(f"{p.expression!r}: {'NO TARGET' if p.no_target else f'{len(p.referred)} referred'} "
                  f"(existence {p.existence:.3f}, score threshold {p.score_threshold})")
            areas = p.areas()
            for i in p.order:
                mark = "*" if p.scores[i] > p.score_threshold else " "
                print(f"  {mark} query {i:2d}  score {p.scores[i]:.4f}  area {int(areas[i])}")
        if args.out:
            print(f"overlay written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
