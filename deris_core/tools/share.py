"""Save or push a DeRIS Studio model (:mod:`deris_core.sharing`).

    python -m deris_core.tools.share save runs/shapes/model.safetensors out/ [--tokenizer T]
    python -m deris_core.tools.share push runs/shapes/model.safetensors owner/name [--private]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..sharing import push_to_hub, run_info, save_pretrained


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deris_core.tools.share", description="save or push a DeRIS Studio model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, target in (("save", "out_dir"), ("push", "repo_id")):
        p = sub.add_parser(cmd)
        p.add_argument("weights", help="our .safetensors (or a saved folder / published name / checkpoint)")
        p.add_argument(target)
        p.add_argument("--tokenizer", default=None)
        if cmd == "push":
            p.add_argument("--private", action="store_true")
    args = ap.parse_args(argv)
    from ..weights import load_predictor

    try:
        predictor = load_predictor(args.weights, args.tokenizer, device="cpu")
        training, metrics = run_info(Path(args.weights)) if Path(args.weights).is_file() else ({}, {})
        if args.cmd == "save":
            print(save_pretrained(predictor, args.out_dir, training=training, metrics=metrics))
        else:
            print(push_to_hub(predictor, args.repo_id, private=args.private, training=training, metrics=metrics))
    except Exception as exc:  # noqa: BLE001 - one line for the command line
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
