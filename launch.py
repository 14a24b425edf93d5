"""Start DeRIS Studio: ``python launch.py`` (also the Hugging Face Space entry point).

Weights: ``--weights`` (a published name, a checkpoint path, a Hub repository ``owner/name``,
or ``bundled``); without it, official weights already in the local Hugging Face cache are used,
on a Space they are downloaded at start-up, and otherwise the small model bundled in
``assets/`` runs. Any failure to load falls back to the bundled model and the reason is shown
in the UI.

On a ZeroGPU Space (``SPACE_ID`` set, ``spaces`` installed) the model is loaded onto ``cuda``
when this module is imported, as ZeroGPU asks; the functions that run the network are wrapped
in ``spaces.GPU(duration=...)`` (:mod:`app.zerogpu`). Elsewhere nothing happens at import.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from pathlib import Path

from app.settings import Settings, install

log = logging.getLogger("launch")
SETTINGS = install(Settings.from_env())  # read once, when the entry point is imported; passed down from here
DEFAULT_OFFICIAL = SETTINGS.default_model


def _cached_official() -> str | None:
    """A published model whose checkpoint is already in the local HF cache (the tokenizer is then
    found as ``deris_core.tokenizer_source`` says; if it cannot be, the bundled model runs and says why)."""
    try:
        from deris_core.hub import cached_file
        from deris_core.weights import HF_REPO, hf_filename
    except ImportError:
        return None
    for name in (DEFAULT_OFFICIAL, "deris-l-grefcoco", "deris-b-grefcoco", "deris-l-refcoco", "deris-b-refcoco"):
        if cached_file(HF_REPO, hf_filename(name)) is not None:
            return name
    return None


def _public_name(weights: str) -> str:
    """What visitors may read of a weights spec: a published name or owner/name as is, a path's file name only."""
    w = weights.replace("\\", "/")
    hub_repo = w.count("/") == 1 and not w.startswith((".", "/", "~")) and not Path(w).suffix
    return weights if "/" not in w or hub_repo else Path(w).name


def load_model(weights: str | None, device: str, dtype: str | None = None, settings: Settings = SETTINGS):
    """``(ModelHolder)``: the requested/official weights, else the bundled model with the reason."""
    from app.services import ModelHolder
    from deris_core.weights import load_predictor

    on_space = bool(settings.space_id)
    wanted = weights or _cached_official() or (DEFAULT_OFFICIAL if on_space else None)
    note = ""
    if wanted and wanted != "bundled":
        try:
            p = load_predictor(wanted, device=device, dtype=dtype)
            return ModelHolder(p, getattr(p, "description", wanted))
        except Exception as exc:  # noqa: BLE001 - any loading failure (file, Hub, format, memory): report, fall back
            log.warning("could not load %r: %s", wanted, exc, exc_info=True)  # details (paths) stay in the log
            shown = _public_name(wanted)
            note = f"could not load {shown} ({type(exc).__name__}, see the server log); using the bundled model instead"
    try:
        p = load_predictor("bundled", device=device, dtype=dtype)
        desc = getattr(p, "description", "bundled model")
        if not note:
            note = "trained on synthetic shapes only; pass --weights deris-l-grefcoco for real photos"
        return ModelHolder(p, desc, note)
    except Exception as exc:  # noqa: BLE001 - any loading failure: the studio still starts and says why
        log.exception("the bundled model could not be loaded: %s", exc)
        return ModelHolder(None, "no model", f"the bundled model could not be loaded either ({type(exc).__name__})")


# ZeroGPU: the model goes to cuda at import time (GPU work then runs inside @spaces.GPU functions).
from app.zerogpu import on_zerogpu  # noqa: E402 - after load_model, which it decides about

MODEL = load_model(SETTINGS.weights, "cuda") if on_zerogpu(SETTINGS) else None


def no_run_history(demo) -> dict:
    """``run_history=False`` where this Gradio has a run history (6.x releases since it came): it would copy
    every event's inputs and outputs (masks, sentences) into the browser's localStorage, re-writing up to
    100 of them on each message: slow on every key, and a team's data left in the browser."""
    return {"run_history": False} if "run_history" in inspect.signature(demo.launch).parameters else {}


def main(argv: list[str] | None = None) -> int:
    from deris_core.dtypes import DTYPE_CHOICES, DTYPE_HELP
    from deris_core.runtime import add_log_level, configure_logging

    env = SETTINGS
    p = argparse.ArgumentParser(description="DeRIS Studio: referring segmentation and annotation")
    p.add_argument("--weights", default=env.weights, help="published name, checkpoint path, owner/name on the Hub, or 'bundled'")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: CUDA, then Apple's MPS, then the CPU")
    p.add_argument("--dtype", default=env.dtype, choices=list(DTYPE_CHOICES), help="default: $DERIS_DTYPE, else auto. " + DTYPE_HELP)
    p.add_argument("--refiner", default=env.refiner, metavar="grabcut|sam2:REPO|sam:REPO|FOLDER",
                   help="what turns the canvas's click and box prompts into masks: grabcut (default, offline, no "
                        "weights), sam2:facebook/sam2.1-hiera-tiny (the faster on a CPU), sam:facebook/sam-vit-base "
                        "(downloaded once) or sam:/a/local/folder; a SAM that cannot load says so in one line and "
                        "GrabCut is used (docs/refine.md; also $DERIS_REFINER)")
    p.add_argument("--host", default=env.host)
    p.add_argument("--port", type=int, default=env.port)
    p.add_argument("--share", action="store_true", help="create a public Gradio link")
    p.add_argument("--db", default=env.db or env.db_url,
                   help="annotation database: a SQLite file (default ./deris_studio.sqlite), or a PostgreSQL URL "
                        "postgresql://user@host:5432/name shared by several studio servers (also $DERIS_DB_URL)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD[:ROLES]",
                   help="an account (repeatable); ROLES is annotator, reviewer, operator or several comma-separated "
                        "(default annotator,reviewer)")
    p.add_argument("--auth-file", default=env.auth_file,
                   help="a file of USER:PASSWORD[:ROLES] lines (# comments allowed)")
    p.add_argument("--max-image-side", type=int, default=4096, help="larger images are scaled down to this side")
    p.add_argument("--feature-cache-mb", type=int, default=1024,
                   help="memory for the server's cache of image features (opened and prefetched images, least "
                        "recently used evicted first; 0 turns it, the prefetch of the next image and the expression run "
                        "while typing off; docs/performance.md, \"Prefetch\")")
    p.add_argument("--allow-weights", action="append", default=[], metavar="NAME_OR_PATH",
                   help="weights visitors may load for everyone from the Model panel, or the name of a model registered in "
                        "the database by python -m app.curate promote (repeatable; without it the "
                        "panel is hidden and the model cannot be switched from the UI)")
    p.add_argument("--import-root", action="append", default=[], metavar="DIR",
                   help="a folder of this server whose sub-folders operators may import from the app's Add images "
                        "(repeatable; without it only uploads are offered)")
    add_log_level(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, fmt="%(message)s", stream=sys.stdout)  # the server's log
    bad_roots = [r for r in args.import_root if not Path(r).is_dir()]
    if bad_roots:
        p.error(f"--import-root {bad_roots[0]}: not a folder")
    from app.auth import AuthError, Users

    try:
        users = Users.parse(args.auth, args.auth_file)
    except AuthError as exc:
        p.error(str(exc))
    if args.feature_cache_mb < 0:
        p.error("--feature-cache-mb must be 0 or more")
    if args.max_image_side < 32:
        p.error("--max-image-side must be at least 32")
    from app.settings import studio_db

    db = args.db or studio_db(env)

    from deris_core.runtime import configure_from_env

    configure_from_env()
    from app.store import Store, StoreError
    from app.store.location import parse_db
    from app.services import export_folder, studio_cache, thumbnail_folder
    from app.ui import CSS, SHORTCUTS_JS, build_app

    try:
        loc = parse_db(db)
        store = Store(loc, cache_root=studio_cache())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if users is not None:
        users.share_with(store)  # one wrong-password lock-out for every server on this database
    from app.zerogpu import model_device

    device = model_device(args.device, SETTINGS)
    reuse = MODEL is not None and args.weights == env.weights and args.dtype == "auto"
    model = MODEL if reuse else load_model(args.weights, device, args.dtype, SETTINGS)
    log.info("model: %s%s", model.description, (" — " + model.note) if model.note else "")
    log.info("database: %s", loc.path if loc.path is not None else loc.shown)
    if model.predictor is not None:
        pr = model.predictor.precision
        log.info("precision: %s, asked %s: %s%s", pr.describe(), pr.requested, pr.reason, f" — {pr.note}" if pr.note else "")
    from app.services.model import allowed_weights

    try:  # a model registered in the store is allowed by its name
        switchable = allowed_weights(store, args.allow_weights)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from app.services import RefinerHolder

    try:
        refiner = RefinerHolder.from_spec(args.refiner, device=device)
    except ValueError as exc:  # an unknown spec
        print(f"error: --refiner: {exc}", file=sys.stderr)
        return 2
    log.info("refiner: %s", refiner.name)
    # ZeroGPU runs the model only inside its GPU calls: no background encoder there
    model.cache.resize(0 if on_zerogpu() else args.feature_cache_mb << 20)
    demo = build_app(model, store, max_image_side=args.max_image_side, device=device, switchable=switchable or None,
                     users=users, import_roots=[Path(r).resolve() for r in args.import_root], refiner=refiner)
    from app.auth import gradio_auth_kwargs

    if users is not None:
        log.info("accounts: %s", ", ".join(users.names()))
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, share=args.share, **gradio_auth_kwargs(users), show_error=True, js=SHORTCUTS_JS, css=CSS,
        **no_run_history(demo),
        allowed_paths=[str(Path(__file__).resolve().parent / "assets"), str(export_folder(store)),
                       str(thumbnail_folder(store))],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
