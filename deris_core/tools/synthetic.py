"""Write a synthetic referring dataset in the gRefCOCO layout (:mod:`deris_core.synthetic`).

    python -m deris_core.tools.synthetic --out DIR --seed N --images K
"""

from __future__ import annotations

import argparse
import json

from ..synthetic import generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deris_core.tools.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (gRefCOCO layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=1000, help="images in all, spread over the four splits")
    p.add_argument("--refs-per-image", type=int, default=8)
    p.add_argument("--no-target-rate", type=float, default=0.09, help="share of natural no-target expressions")
    args = p.parse_args(argv)
    if args.images < 4:
        p.error("--images must be at least 4 (one per split)")
    counts = generate(args.out, args.seed, args.images, args.refs_per_image, args.no_target_rate)
    print(json.dumps({"out": str(args.out), "images": args.images, "refs": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
