"""Save or push a DeRIS Studio model (:mod:`deris_core.sharing`).

    python -m deris_core.tools.share save runs/shapes/model.safetensors out/ [--tokenizer T]
    python -m deris_core.tools.share push runs/shapes/model.safetensors owner/name [--private]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..sharing import push_to_hub, run_info, save_pretrained


def _save(predictor, args: argparse.Namespace, training: dict, metrics: dict) -> str:
    return str(save_pretrained(predictor, args.out_dir, training=training, metrics=metrics))


def _push(predictor, args: argparse.Namespace, training: dict, metrics: dict) -> str:
    return str(push_to_hub(predictor, args.repo_id, private=args.private, training=training, metrics=metrics))


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--private", action="store_true")


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, the positional its target goes in, its own options and its run
    (which returns the line to print)."""

    name: str
    target: str
    run: Callable[..., str]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None


COMMANDS: tuple[Command, ...] = (Command("save", "out_dir", _save), Command("push", "repo_id", _push, _push_arguments))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deris_core.tools.share", description="save or push a DeRIS Studio model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name)
        p.add_argument("weights", help="our .safetensors (or a saved folder / published name / checkpoint)")
        p.add_argument(command.target)
        p.add_argument("--tokenizer", default=None)
        command.add_arguments(p)
        p.set_defaults(command=command)
    args = ap.parse_args(argv)
    from ..weights import load_predictor

    try:
        predictor = load_predictor(args.weights, args.tokenizer, device="cpu")
        training, metrics = run_info(Path(args.weights)) if Path(args.weights).is_file() else ({}, {})
        print(args.command.run(predictor, args, training, metrics))
    except Exception as exc:  # noqa: BLE001 - one line for the command line
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
