"""``python -m app.curate``: pre-annotate, check and compare at dataset scale.

    python -m app.curate preannotate --db DB (--sentences FILE | --pairs FILE.jsonl | --refs GREFS.json) [--weights W]
    torchrun --nproc_per_node N -m app.curate preannotate ...      (shards images over N processes / GPUs)
    python -m app.curate rethreshold --db DB --model WEIGHTS --score 0.8
    python -m app.curate qa --db DB [--weights W] [--split S] [--annotator A] [--json]
    python -m app.curate agreement --db DB [--merge --min-iou 0.7 --quorum 2] [--json]
    python -m app.curate negatives --db DB [--per-image K] [--weights W]     (hard negatives by the NSC rule)
    python -m app.curate finetune --db DB --from WEIGHTS --out RUN [--status reviewed] [--holdout-split val |
        --holdout-fraction 0.1 --seed S] [--minutes M | --steps N] [--replay DIR [--replay-share 0.85]]
        [--promote [--name NAME]]   (also under torchrun)
    python -m app.curate promote --db DB --run RUN [--name NAME]
    python -m app.curate models --db DB [--delete NAME]

``--weights`` (and ``--from``) also take the name of a model registered in the store by ``promote``.

Errors print one ``error:`` line and exit with status 2. ``qa`` exits with status 3 after its report
when it left something out (``skipped_images``: images whose file is gone or unreadable, with their
refs; ``skipped_sentences``): the figures then do not cover the whole store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deris_core.dtypes import DTYPE_CHOICES, DTYPE_HELP
from deris_core.runtime import add_log_level, configure_logging
from deris_core.data.nsc import NSCConfig

from ..store import SPLITS, STATUSES, RefStatus, Store, StoreError
from ..services import studio_cache
from ..settings import Settings, install
from ..store.location import DB_HELP, parse_db
from ..store.timeouts import DbTimeouts
from ..store.queue import ImageFilter

OK, REFUSED, INCOMPLETE = 0, 2, 3  # the exit statuses (see the module's docstring)


def _done(report: dict) -> int:
    """The exit status after a complete report."""
    return OK


@dataclass(frozen=True)
class Context:
    """What every subcommand runs against: the open store and the settings read once at start."""

    store: Store
    settings: Settings


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help line, the options of its own, and what it does.

    ``run`` returns the report printed on standard output (one JSON object), or None where this
    process has nothing to report (a torchrun rank other than 0). ``uses_model`` adds the model's
    options (``--weights --device --dtype --threads``); ``--db`` and ``--json`` every subcommand has.
    ``status`` gives the exit status after a printed report."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Context], dict | None]
    uses_model: bool = False
    status: Callable[[dict], int] = _done


# -- shared parts ------------------------------------------------------------------------------------

def _predictor(args, device: str, store: Store):
    from deris_core.weights import load_predictor

    from .finetune import registered_weights

    predictor = load_predictor(registered_weights(store, args.weights), device=device, dtype=args.dtype)  # auto: by hardware
    return predictor


def _local_predictor(args, store: Store):
    """The predictor of ``--weights`` on this process's device (no torchrun sharding)."""
    return _predictor(args, "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu", store)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="bundled", help="a published name, a checkpoint, or bundled")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=list(DTYPE_CHOICES), help="default: auto. " + DTYPE_HELP)
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: torch's default)")


def _store_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _model_name_arguments(p: argparse.ArgumentParser) -> None:
    """The registered model's name and maker (``finetune --promote`` and ``promote``)."""
    p.add_argument("--name", default=None, help="the model's name (default: the run folder's name)")
    p.add_argument("--by", default="", help="who made it (default: this system's user name)")


def _open_store(db: str | None) -> Store:
    """The store of ``--db`` for a batch job; a SQLite file that is not there is an error, not a new store."""
    loc = parse_db(db)
    if not loc.is_postgres and not loc.path.is_file():
        raise StoreError(f"database not found: {db}")
    return Store(loc, timeouts=DbTimeouts.from_env(batch=True), cache_root=studio_cache())  # nobody waits at a screen


# -- preannotate --------------------------------------------------------------------------------------

def _preannotate_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sentences", help="a text file, one sentence per line, applied to every image")
    src.add_argument("--pairs", help='a JSONL file of {"image": id or file name, "sentence": "..."}')
    src.add_argument("--refs", help="a refs file with sentences but no masks (gRefCOCO-style grefs json)")
    p.add_argument("--split", default="", choices=["", *SPLITS], help="only images of this split (with --sentences)")
    p.add_argument("--name", default="", help="only images whose file name contains this (with --sentences)")
    p.add_argument("--batch", type=int, default=8, help="sentences per forward pass")
    p.add_argument("--chunk", type=int, default=8, help="images per commit (and per gather under torchrun)")


def _preannotate(args: argparse.Namespace, ctx: Context) -> dict | None:
    from .preannotate import (fill_uncertainty, model_key, pairs_from_jsonl, pairs_from_refs_file,
                              pairs_from_sentences, read_sentences, sentence_checker)
    from .runner import init_distributed, run

    store = ctx.store
    rank, world, device = init_distributed(args.device, ctx.settings)
    predictor = _predictor(args, device, store)
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
    summary = run(store, predictor, pairs, key, batch=args.batch, chunk=args.chunk, progress=not args.json, check=check)
    if rank != 0:
        return None
    return {"model": key, "ranks": world, **summary.as_dict(), "bad_lines": bad,
            "uncertainty_filled": fill_uncertainty(store)}  # predictions made before schema 4


# -- rethreshold --------------------------------------------------------------------------------------

def _rethreshold_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the weights name (e.g. bundled) or the full model key of the predictions")
    p.add_argument("--score", type=float, required=True)


def _rethreshold(args: argparse.Namespace, ctx: Context) -> dict:
    from .preannotate import apply_threshold

    from ..store.predictions import model_keys

    keys = model_keys(ctx.store)
    found = [k for k in keys if args.model in (k, k.split("|")[0])]
    if len(found) != 1:
        raise StoreError(f"--model {args.model!r} matches {len(found)} of the stored models: " + "; ".join(keys))
    return {"model": found[0], "score_threshold": args.score, "refs": apply_threshold(ctx.store, found[0], args.score)}


# -- qa -----------------------------------------------------------------------------------------------

def _qa_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default=None, choices=SPLITS)
    p.add_argument("--annotator", default=None)


def _qa(args: argparse.Namespace, ctx: Context) -> dict:
    from .preannotate import model_key
    from .quality import qa

    predictor = _local_predictor(args, ctx.store)
    res = qa(ctx.store, predictor, model_key(predictor, args.weights), split=args.split, annotator=args.annotator)
    for im in res["skipped_images"]:
        print(f"skipped: image {im['image_id']} {im['file_name']} ({im['refs']} refs): {im['why']}", file=sys.stderr)
    return res


def _qa_status(report: dict) -> int:
    """Part of the store could not be checked: the figures do not cover it all (after the report)."""
    from .quality import qa_incomplete

    return INCOMPLETE if qa_incomplete(report) else OK


# -- agreement ----------------------------------------------------------------------------------------

def _agreement_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--merge", action="store_true", help="add consensus refs where enough annotators agree")
    p.add_argument("--min-iou", type=float, default=0.7)
    p.add_argument("--quorum", type=int, default=2)


def _agreement(args: argparse.Namespace, ctx: Context) -> dict:
    from .quality import agreement

    res = agreement(ctx.store, merge=args.merge, min_iou=args.min_iou, quorum=args.quorum)
    if not args.json:
        res = {k: v for k, v in res.items() if k != "per_pair"}
    return res


# -- negatives ----------------------------------------------------------------------------------------

def _negatives_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--per-image", type=int, default=3, help="proposals per image (in all, over reruns)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nsc-threshold", type=float, default=NSCConfig.threshold,
                   help="the most similar a proposal may be to the image's sentences (as in training)")
    p.add_argument("--min-words", type=int, default=NSCConfig.min_text_length,
                   help="a proposal has more words than this (as in training)")
    p.add_argument("--batch", type=int, default=8, help="sentences per forward pass")
    p.add_argument("--chunk", type=int, default=8, help="images per commit")


def _negatives(args: argparse.Namespace, ctx: Context) -> dict:
    from .negatives import run_negatives
    from .preannotate import model_key

    if args.per_image < 1:
        raise StoreError(f"--per-image must be at least 1, got {args.per_image}")
    if not 0.0 < args.nsc_threshold <= 1.0:
        raise StoreError(f"--nsc-threshold must be in (0, 1], got {args.nsc_threshold}")
    predictor = _local_predictor(args, ctx.store)
    cfg = NSCConfig(threshold=args.nsc_threshold, min_text_length=max(0, args.min_words))
    return run_negatives(ctx.store, predictor, model_key(predictor, args.weights), per_image=args.per_image, cfg=cfg,
                         seed=args.seed, batch=args.batch, chunk=args.chunk, progress=not args.json)


# -- finetune -----------------------------------------------------------------------------------------

def _finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="weights", default="bundled",
                   help="the weights to start from: a published name, a checkpoint, a folder, owner/name, bundled, or a "
                        "registered model's name")
    p.add_argument("--out", required=True, help="the run folder (the same again resumes a killed run)")
    p.add_argument("--status", action="append", default=None, choices=STATUSES,
                   help="the refs to learn from (repeatable; default reviewed)")
    ho = p.add_mutually_exclusive_group()
    ho.add_argument("--holdout-split", default=None, choices=SPLITS, help="hold out every image that has a ref of this split")
    ho.add_argument("--holdout-fraction", type=float, default=0.1, help="hold out this share of the images (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="which images are held out (with --holdout-fraction) and training's seed")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="training time (default 15)")
    budget.add_argument("--steps", type=int, default=None, help="optimisation steps instead of a time")
    p.add_argument("--replay", default=None, metavar="DIR",
                   help="a gRefCOCO-format folder of the distribution the model learnt (e.g. its training set): refs of "
                        "it are mixed in so the model does not forget what it could do")
    p.add_argument("--replay-share", type=float, default=0.85,
                   help="the share of each epoch's sentences that come from --replay, its images taking turns (default 0.85)")
    p.add_argument("--replay-split", default="train", choices=SPLITS, help="the split of --replay used (default train)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's, 5e-5)")
    p.add_argument("--promote", action="store_true", help="register the model in the store if its held-out metrics allow")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: torch's default)")
    p.add_argument("--break-lock", action="store_true",
                   help="take the store's fine-tune lock from a holder that is gone (a run killed on another machine)")
    _model_name_arguments(p)


def _finetune(args: argparse.Namespace, ctx: Context) -> dict | None:
    import dataclasses

    from .finetune import RECIPE, Options, finetune, promote

    recipe = dataclasses.replace(RECIPE, batch_size=args.batch_size, **({"lr": args.lr} if args.lr else {}))
    opts = Options(db=args.db, weights=args.weights, out=args.out, statuses=tuple(args.status or (RefStatus.REVIEWED.value,)),
                   holdout_split=args.holdout_split, holdout_fraction=args.holdout_fraction, seed=args.seed,
                   minutes=args.minutes if args.minutes or args.steps else 15.0, steps=args.steps,
                   recipe=recipe, replay=args.replay, replay_split=args.replay_split,
                   replay_share=args.replay_share, device=args.device, threads=args.threads or None,
                   progress=not args.json, break_lock=args.break_lock)
    with contextlib.redirect_stdout(sys.stderr):  # training's log lines: standard output is the result's
        res = finetune(ctx.store, opts)
    if not res:  # another torchrun rank: rank 0 reports
        return None
    if res.get("caveat"):
        print(f"note: {res['caveat']}", file=sys.stderr)
    if args.promote:
        if res["promotion_problem"]:
            res["promoted"] = None
            print(f"not promoted: {res['promotion_problem']}", file=sys.stderr)
        else:
            try:
                res["promoted"] = promote(ctx.store, args.out, args.name, args.by).name
            except StoreError as exc:
                res["promoted"] = None
                print(f"not promoted: {exc}", file=sys.stderr)
    return res


# -- promote and models -------------------------------------------------------------------------------

def _promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True)
    _model_name_arguments(p)


def _promote(args: argparse.Namespace, ctx: Context) -> dict:
    from .finetune import promote

    rec = promote(ctx.store, args.run, args.name, args.by)
    return {"promoted": rec.name, "weights": rec.weights, "before": rec.metrics_before, "after": rec.metrics_after}


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--delete", default=None, metavar="NAME", help="remove a registered model that made no predictions")


def _models(args: argparse.Namespace, ctx: Context) -> dict:
    from .finetune import model_in_use, registry_check

    store = ctx.store
    if args.delete:
        rec = store.model(args.delete)
        if rec is None:
            raise StoreError(f"no registered model named {args.delete!r}")
        store.delete_model(rec.name, model_in_use(store, rec))
    return {"models": [{"name": r.name, "weights": r.weights, "config": r.config, "parent": r.parent,
                        "created_by": r.created_by, "created_at": r.created_at, "refs": r.snapshot.get("refs"),
                        "gIoU": [r.metrics_before.get("gIoU"), r.metrics_after.get("gIoU")],
                        "N_acc": [r.metrics_before.get("N_acc"), r.metrics_after.get("N_acc")],
                        "uses": model_in_use(store, r), **registry_check(r)} for r in store.models()]}


COMMANDS: tuple[Command, ...] = (  # in the order --help lists them
    Command("preannotate", "the model proposes a ref for every (image, sentence) pair",
            _preannotate_arguments, _preannotate, uses_model=True),
    Command("rethreshold", "re-threshold the still-predicted refs of a model (no model needed)",
            _rethreshold_arguments, _rethreshold),
    Command("qa", "run the model on people's refs: agreement per ref and GRES metrics",
            _qa_arguments, _qa, uses_model=True, status=_qa_status),
    Command("agreement", "agreement of annotators who answered the same (image, sentence)",
            _agreement_arguments, _agreement),
    Command("negatives", "propose sentences of other images as hard negatives; the model answers each",
            _negatives_arguments, _negatives, uses_model=True),
    Command("finetune", "fine-tune from the store's refs, measured on held-out images", _finetune_arguments, _finetune),
    Command("promote", "register a finished fine-tune run as a model of the store", _promote_arguments, _promote),
    Command("models", "the models registered in the store", _models_arguments, _models),
)


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The command line: one subparser per command, each with its own options, then the shared ones."""
    p = argparse.ArgumentParser(prog="python -m app.curate", description=__doc__.splitlines()[0])
    add_log_level(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in commands:
        sp = sub.add_parser(command.name, help=command.help)
        command.add_arguments(sp)
        _store_arguments(sp)
        if command.uses_model:
            _model_arguments(sp)
        sp.set_defaults(command=command)
    return p


def main(argv: list[str] | None = None) -> int:
    from .runner import close_distributed

    try:
        return _main(argv)
    finally:
        close_distributed()


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)  # on stderr: standard output is the result's
    settings = install(Settings.from_env())  # read once; torchrun's ranks for init_distributed
    command: Command = args.command
    try:
        store = _open_store(args.db)
        if getattr(args, "threads", 0):
            torch.set_num_threads(args.threads)
        report = command.run(args, Context(store, settings))
    except (StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    if report is None:  # another torchrun rank: rank 0 reports
        return OK
    print(json.dumps(report, indent=None if args.json else 2))
    return command.status(report)


if __name__ == "__main__":
    raise SystemExit(main())
