"""Start DeRIS Studio: ``python launch.py`` (also the Hugging Face Space entry point).

Weights: ``--weights`` (a published name, a checkpoint path, or ``bundled``); without it,
official weights already in the local Hugging Face cache are used, on a Space they are
downloaded at start-up, and otherwise the small model bundled in ``assets/`` runs. Any
failure to load falls back to the bundled model and the reason is shown in the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_OFFICIAL = os.environ.get("DERIS_DEFAULT_MODEL", "deris-l-grefcoco")


def _cached_official() -> str | None:
    """A published model whose checkpoint and tokenizer are already in the local HF cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        from deris_core.weights import HF_REPO, HF_TOKENIZER_FILE, hf_filename
    except ImportError:
        return None
    for name in (DEFAULT_OFFICIAL, "deris-l-grefcoco", "deris-b-grefcoco", "deris-l-refcoco", "deris-b-refcoco"):
        ckpt = try_to_load_from_cache(HF_REPO, hf_filename(name))
        tok = try_to_load_from_cache(HF_REPO, HF_TOKENIZER_FILE)
        if isinstance(ckpt, str) and isinstance(tok, str):
            return name
    return None


def load_model(weights: str | None, device: str, dtype: str = "fp32"):
    """``(ModelHolder)``: the requested/official weights, else the bundled model with the reason."""
    from app.ui import ModelHolder
    from deris_core.weights import load_predictor

    on_space = bool(os.environ.get("SPACE_ID"))
    wanted = weights or _cached_official() or (DEFAULT_OFFICIAL if on_space else None)
    note = ""
    if wanted and wanted != "bundled":
        try:
            p = load_predictor(wanted, device=device, dtype=dtype)
            return ModelHolder(p, getattr(p, "description", wanted))
        except Exception as exc:  # noqa: BLE001 - report and fall back
            note = f"could not load {wanted!r} ({exc}); using the bundled model instead"
            print(f"warning: {note}", file=sys.stderr)
    try:
        p = load_predictor("bundled", device=device, dtype=dtype)
        desc = getattr(p, "description", "bundled model")
        if not note:
            note = "trained on synthetic shapes only; pass --weights deris-l-grefcoco for real photos"
        return ModelHolder(p, desc, note)
    except Exception as exc:  # noqa: BLE001
        return ModelHolder(None, "no model", f"the bundled model could not be loaded either: {exc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="DeRIS Studio: referring segmentation and annotation")
    p.add_argument("--weights", default=os.environ.get("DERIS_WEIGHTS"), help="published name, checkpoint path or 'bundled'")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default=os.environ.get("DERIS_DTYPE", "fp32"), choices=["fp32", "bf16"],
                   help="fp32 (default) or bf16: faster and half the memory, on CPU and CUDA (see README, bf16)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="create a public Gradio link")
    p.add_argument("--db", default=os.environ.get("DERIS_DB"), help="annotation database (SQLite file)")
    p.add_argument("--auth", default=None, help="user:password required to open the app")
    p.add_argument("--max-image-side", type=int, default=4096, help="larger images are scaled down to this side")
    args = p.parse_args(argv)
    if args.auth and ":" not in args.auth:
        p.error("--auth must be user:password")
    if args.max_image_side < 32:
        p.error("--max-image-side must be at least 32")
    db = args.db or str(Path("/data/deris_studio.sqlite") if Path("/data").is_dir() and os.environ.get("SPACE_ID")
                        else Path.cwd() / "deris_studio.sqlite")

    from deris_core.runtime import configure_from_env

    configure_from_env()
    from app.store import Store, StoreError
    from app.ui import CSS, SHORTCUTS_JS, build_app

    try:
        store = Store(db)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = load_model(args.weights, args.device, args.dtype)
    print(f"model: {model.description}{(' — ' + model.note) if model.note else ''}\ndatabase: {db}", flush=True)
    demo = build_app(model, store, max_image_side=args.max_image_side, device=args.device)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, share=args.share, auth=auth, show_error=True, js=SHORTCUTS_JS, css=CSS,
        allowed_paths=[str(Path(__file__).resolve().parent / "assets")],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
