"""``python -m app.curate``: pre-annotate, check and compare at dataset scale.

    python -m app.curate preannotate --db DB (--sentences FILE | --pairs FILE.jsonl | --refs GREFS.json) [--weights W]
    torchrun --nproc_per_node N -m app.curate preannotate ...      (shards images over N processes / GPUs)
    python -m app.curate rethreshold --db DB --model WEIGHTS --score 0.8
    python -m app.curate qa --db DB [--weights W] [--split S] [--annotator A] [--json]
    python -m app.curate agreement --db DB [--merge --min-iou 0.7 --quorum 2] [--json]
    python -m app.curate negatives --db DB [--per-image K] [--weights W]     (hard negatives by the NSC rule)

Errors print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from deris_core.train.nsc import NSCConfig

from ..store import SPLITS, Store, StoreError
from ..store.location import DB_HELP, parse_db
from ..store.queue import ImageFilter


def _predictor(args, device: str):
    from deris_core.weights import load_predictor

    return load_predictor(args.weights, device=device, dtype=args.dtype)  # auto: bf16, int8 or fp32 by hardware


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.curate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("preannotate", help="the model proposes a ref for every (image, sentence) pair")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--sentences", help="a text file, one sentence per line, applied to every image")
    src.add_argument("--pairs", help='a JSONL file of {"image": id or file name, "sentence": "..."}')
    src.add_argument("--refs", help="a refs file with sentences but no masks (gRefCOCO-style grefs json)")
    a.add_argument("--split", default="", choices=["", *SPLITS], help="only images of this split (with --sentences)")
    a.add_argument("--name", default="", help="only images whose file name contains this (with --sentences)")
    a.add_argument("--batch", type=int, default=8, help="sentences per forward pass")
    a.add_argument("--chunk", type=int, default=8, help="images per commit (and per gather under torchrun)")
    b = sub.add_parser("rethreshold", help="re-threshold the still-predicted refs of a model (no model needed)")
    b.add_argument("--model", required=True, help="the weights name (e.g. bundled) or the full model key of the predictions")
    b.add_argument("--score", type=float, required=True)
    q = sub.add_parser("qa", help="run the model on people's refs: agreement per ref and GRES metrics")
    q.add_argument("--split", default=None, choices=SPLITS)
    q.add_argument("--annotator", default=None)
    g = sub.add_parser("agreement", help="agreement of annotators who answered the same (image, sentence)")
    g.add_argument("--merge", action="store_true", help="add consensus refs where enough annotators agree")
    g.add_argument("--min-iou", type=float, default=0.7)
    g.add_argument("--quorum", type=int, default=2)
    n = sub.add_parser("negatives", help="propose sentences of other images as hard negatives; the model answers each")
    n.add_argument("--per-image", type=int, default=3, help="proposals per image (in all, over reruns)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--nsc-threshold", type=float, default=NSCConfig.threshold,
                   help="the most similar a proposal may be to the image's sentences (as in training)")
    n.add_argument("--min-words", type=int, default=NSCConfig.min_text_length,
                   help="a proposal has more words than this (as in training)")
    n.add_argument("--batch", type=int, default=8, help="sentences per forward pass")
    n.add_argument("--chunk", type=int, default=8, help="images per commit")
    for sp in (a, b, q, g, n):
        sp.add_argument("--db", default=None, help=DB_HELP)
        sp.add_argument("--json", action="store_true", help="one JSON object on stdout")
    for sp in (a, q, n):
        sp.add_argument("--weights", default="bundled", help="a published name, a checkpoint, or bundled")
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                        help="auto: bf16 on a GPU that offers it, else fp32")
        sp.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: torch's default)")
    args = p.parse_args(argv)
    try:
        loc = parse_db(args.db)
        if not loc.is_postgres and not loc.path.is_file():
            raise StoreError(f"database not found: {args.db}")
        store = Store(loc)
        if getattr(args, "threads", 0):
            torch.set_num_threads(args.threads)
        if args.cmd == "preannotate":
            from .preannotate import (model_key, pairs_from_jsonl, pairs_from_refs_file, pairs_from_sentences,
                                      read_sentences, sentence_checker)
            from .runner import init_distributed, run

            rank, world, device = init_distributed(args.device)
            predictor = _predictor(args, device)
            key = model_key(predictor, args.weights)
            check, bad = sentence_checker(predictor), []  # bad lines are listed and skipped, the rest runs
            if args.sentences:
                sentences = read_sentences(args.sentences, check, bad)
                pairs = pairs_from_sentences(store, sentences, ImageFilter(name=args.name, split=args.split), check)
            elif args.pairs:
                pairs = pairs_from_jsonl(store, args.pairs, check, bad)
            else:
                pairs = pairs_from_refs_file(store, args.refs, check, bad)
            if bad and not pairs:
                raise StoreError(f"no usable pair ({len(bad)} bad line{'s' if len(bad) > 1 else ''}): " + "; ".join(bad[:5]))
            for line in bad if rank == 0 else ():
                print(f"skipped: {line}", file=sys.stderr)
            summary = run(store, predictor, pairs, key, batch=args.batch, chunk=args.chunk, progress=not args.json,
                          check=check)
            if rank != 0:
                return 0
            from .preannotate import fill_uncertainty

            res = {"model": key, "ranks": world, **summary.as_dict(), "bad_lines": bad,
                   "uncertainty_filled": fill_uncertainty(store)}  # predictions made before schema 4
        elif args.cmd == "negatives":
            from .negatives import run_negatives
            from .preannotate import model_key

            if args.per_image < 1:
                raise StoreError(f"--per-image must be at least 1, got {args.per_image}")
            if not 0.0 < args.nsc_threshold <= 1.0:
                raise StoreError(f"--nsc-threshold must be in (0, 1], got {args.nsc_threshold}")
            predictor = _predictor(args, "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
            cfg = NSCConfig(threshold=args.nsc_threshold, min_text_length=max(0, args.min_words))
            res = run_negatives(store, predictor, model_key(predictor, args.weights), per_image=args.per_image, cfg=cfg,
                                seed=args.seed, batch=args.batch, chunk=args.chunk, progress=not args.json)
        elif args.cmd == "rethreshold":
            from .preannotate import apply_threshold

            keys = [r[0] for r in store.read("SELECT DISTINCT model FROM predictions")]
            found = [k for k in keys if args.model in (k, k.split("|")[0])]
            if len(found) != 1:
                raise StoreError(f"--model {args.model!r} matches {len(found)} of the stored models: " + "; ".join(keys))
            res = {"model": found[0], "score_threshold": args.score, "refs": apply_threshold(store, found[0], args.score)}
        elif args.cmd == "qa":
            from .preannotate import model_key
            from .quality import qa

            predictor = _predictor(args, "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
            res = qa(store, predictor, model_key(predictor, args.weights), split=args.split, annotator=args.annotator)
        else:
            from .quality import agreement

            res = agreement(store, merge=args.merge, min_iou=args.min_iou, quorum=args.quorum)
            if not args.json:
                res = {k: v for k, v in res.items() if k != "per_pair"}
    except (StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
