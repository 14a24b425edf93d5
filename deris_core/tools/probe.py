"""Word-swap probe: does a model listen to a given word?

    python -m deris_core.tools.probe --data DIR --split val --swap leftmost=rightmost --swap "left of=right of"

For every sample of the split that has a target and contains word (or phrase) A, the
expression is run twice on the same cached image: as written, and with A replaced by B
(each pair is also tried the other way round). Two figures per direction:

- ``score_change``: the mean, over samples, of the largest absolute change of the referring
  score among the two candidates the original expression scores highest. A model that
  ignores the word gives ~0; one that understands "leftmost" vs "rightmost" moves them a lot.
- ``same_best``: the fraction of samples whose highest-scoring candidate stays the same.
  Swapping to the opposite word should change it whenever there are several candidates.

This is the measurement behind docs/training.md's "the model ignores spatial words"; it needs no
labels beyond which samples have a target.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..data.refer import DataError, load_grefcoco
from ..predictor import Predictor
from ..runtime import configure_from_env


@dataclass(frozen=True)
class SwapResult:
    original: str  # the word or phrase found in the expressions
    replacement: str
    samples: int
    score_change: float | None  # mean of max |score(original) - score(swapped)| over the top-2 candidates
    same_best: float | None  # fraction of samples whose best candidate stays the same (None: no samples)

    def to_dict(self) -> dict:
        return {"original": self.original, "replacement": self.replacement, "samples": self.samples,
                "score_change": self.score_change, "same_best": self.same_best}


def parse_swap(spec: str) -> tuple[str, str]:
    """``"left of=right of"`` -> ``("left of", "right of")``; both sides non-empty, different."""
    if spec.count("=") != 1:
        raise ValueError(f"a swap is written A=B (one '='), got {spec!r}")
    a, b = (" ".join(part.split()).lower() for part in spec.split("="))
    if not a or not b or a == b:
        raise ValueError(f"a swap needs two different non-empty words, got {spec!r}")
    return a, b


def _pattern(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])" + r"\s+".join(map(re.escape, word.split())) + r"(?![\w])", re.IGNORECASE)


def swap_word(expression: str, original: str, replacement: str) -> str | None:
    """Replace every whole-word occurrence of ``original``; ``None`` when there is none."""
    new, count = _pattern(original).subn(replacement, expression)
    return new if count else None


def top2_change(scores: np.ndarray, swapped: np.ndarray) -> float:
    """Largest |change| among the two candidates the original scores highest."""
    top = np.argsort(-scores, kind="stable")[:2]
    return float(np.abs(scores[top] - swapped[top]).max())


def word_swap_probe(predictor: Predictor, data_dir: str, split: str, swaps: list[tuple[str, str]], *,
                    limit: int | None = None, batch: int = 8) -> list[SwapResult]:
    """Run every swap in both directions on the split's samples that have a target.

    ``limit`` caps the samples per direction (the first ones in dataset order); ``batch`` is the
    number of (original, swapped) pairs run in one forward pass."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    data = load_grefcoco(data_dir, split)
    directions = [d for a, b in swaps for d in ((a, b), (b, a))]
    jobs: dict[int, list[tuple[int, str, str]]] = defaultdict(list)  # image -> (direction, original, swapped)
    counts = [0] * len(directions)
    for s in data.samples:
        if s.no_target:
            continue
        for k, (a, b) in enumerate(directions):
            if limit is not None and counts[k] >= limit:
                continue
            swapped = swap_word(s.sentence, a, b)
            if swapped is not None:
                jobs[s.image_id].append((k, s.sentence, swapped))
                counts[k] += 1
    changes: list[list[float]] = [[] for _ in directions]
    same: list[list[bool]] = [[] for _ in directions]
    for image_id, items in jobs.items():
        state = predictor.set_image(data.image_path(image_id))
        for start in range(0, len(items), batch):  # bounded batches: full-size models on small machines
            chunk = items[start : start + batch]
            preds = predictor.predict_batch([t for _, orig, swp in chunk for t in (orig, swp)], image=state)
            for i, (k, _, _) in enumerate(chunk):
                a = np.asarray(preds[2 * i].scores, dtype=np.float64)
                b = np.asarray(preds[2 * i + 1].scores, dtype=np.float64)
                changes[k].append(top2_change(a, b))
                same[k].append(int(np.argmax(a)) == int(np.argmax(b)))
    return [SwapResult(a, b, len(changes[k]), float(np.mean(changes[k])) if changes[k] else None,
                       float(np.mean(same[k])) if same[k] else None)
            for k, (a, b) in enumerate(directions)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deris_core.tools.probe", description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="published name, checkpoint path, owner/name on the Hub, or 'bundled' (default)")
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--data", required=True, help="folder in the gRefCOCO layout")
    p.add_argument("--split", default="val")
    p.add_argument("--swap", action="append", required=True, metavar="A=B",
                   help="word or phrase A and its replacement B (repeatable; each is tried both ways)")
    p.add_argument("--limit", type=int, default=None, help="at most N samples per direction")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    configure_from_env()
    from ..weights import WeightsError, load_predictor

    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        swaps = [parse_swap(s) for s in args.swap]
        predictor = load_predictor(args.weights, args.tokenizer, config=args.config, device=args.device)
        results = word_swap_probe(predictor, args.data, args.split, swaps, limit=args.limit)
    except (WeightsError, DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    weights = getattr(predictor, "description", str(args.weights))
    if args.json:
        print(json.dumps({"weights": weights, "data": args.data, "split": args.split,
                          "swaps": [r.to_dict() for r in results]}))
        return 0
    print(f"{weights} on {args.data} [{args.split}]")
    for r in results:
        head = f"  {r.original!r:>14} -> {r.replacement!r:<14} samples {r.samples:5d}"
        if r.score_change is None or r.same_best is None:
            print(f"{head}  (no expression with a target contains {r.original!r})")
        else:
            print(f"{head}  score change {r.score_change:.3f}  same best candidate {100 * r.same_best:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
