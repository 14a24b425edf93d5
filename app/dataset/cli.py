"""Scripted curation of a DeRIS Studio database: imports, export and counts.

    python -m app.dataset import-images DIR [--db DB] [--split S]
    python -m app.dataset import-grefcoco DIR --db DB
    python -m app.dataset import-coco INSTANCES_JSON IMAGE_DIR --db DB
    python -m app.dataset export --db DB --out dataset.zip [--status reviewed] [--split val] [--annotator NAME]
    python -m app.dataset stats --db DB
    python -m app.dataset migrate --from studio.sqlite --to postgresql://user@host:5432/studio   (and back)

``--db`` is a SQLite file or a ``postgresql://`` URL (default: as ``launch.py``: ``$DERIS_DB``, ``$DERIS_DB_URL``,
else ``./deris_studio.sqlite``); see
:mod:`app.store.location`.

A refused import or export prints one ``error:`` line and exits with status 2; the database is
then unchanged. The functions live in :mod:`app.dataset.export` and :mod:`app.dataset.imports`.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass

from deris_core.data.refer import DataError
from deris_core.runtime import add_log_level, configure_logging

from .collection import import_images
from .export import (export_zip, mask_to_polygons, normalise_sentence, polygons_to_mask, read_zip, to_grefcoco,
                     validate_grefcoco)
from .imports import ImportRefused, import_coco, import_grefcoco, import_grefcoco_data
from .migrate import MigrationRefused
from ..services import studio_cache
from ..settings import studio_db
from ..store import SPLITS, STATUSES, Store, StoreError
from ..store.location import DB_HELP, parse_db
from ..store.names import display_name
from ..store.timeouts import DbTimeouts

__all__ = ["ImportRefused", "export_zip", "import_coco", "import_grefcoco", "import_grefcoco_data", "main",
           "mask_to_polygons", "normalise_sentence", "polygons_to_mask", "read_zip", "to_grefcoco", "validate_grefcoco"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help line, its options, and what it does.

    ``run`` gets the parsed options and the store of ``--db`` (None where ``opens_store`` is false:
    ``migrate`` opens its own two) and returns the report printed on standard output as JSON.
    ``existing_store``: a SQLite file that is not there is an error instead of a new, empty store."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Store | None], dict]
    opens_store: bool = True
    existing_store: bool = False


def _db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help=DB_HELP)


def _import_images_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir")
    _db_argument(p)
    p.add_argument("--split", default="", choices=["", *SPLITS], help="the split these images belong to")
    p.add_argument("--max-side", type=int, default=4096, help="larger images are scaled down and copied")


def _import_images(args: argparse.Namespace, store: Store) -> dict:
    return import_images(store, args.dir, args.split, args.max_side).summary()


def _import_grefcoco_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir")
    _db_argument(p)


def _import_grefcoco(args: argparse.Namespace, store: Store) -> dict:
    return import_grefcoco(store, args.dir)


def _import_coco_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances_json")
    p.add_argument("image_dir")
    _db_argument(p)


def _import_coco(args: argparse.Namespace, store: Store) -> dict:
    return import_coco(store, args.instances_json, args.image_dir)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    _db_argument(p)
    p.add_argument("--out", required=True, help="the zip to write (.zip is added when the name has no suffix)")
    p.add_argument("--no-images", action="store_true", help="annotations only")
    p.add_argument("--status", choices=STATUSES, help="only refs with this review status (default: every ref)")
    p.add_argument("--split", choices=SPLITS, help="only refs of this split")
    p.add_argument("--annotator", help="only refs by this annotator")


def _export(args: argparse.Namespace, store: Store) -> dict:
    out = Path(args.out)
    if not out.suffix and not out.is_dir():  # "--out earlier" meant a zip, not a file with no suffix
        out = out.with_name(out.name + ".zip")
    return export_zip(store, out, include_images=not args.no_images, status=args.status, split=args.split,
                      annotator=args.annotator)


def _stats(args: argparse.Namespace, store: Store) -> dict:
    return store.stats()


def _migrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, help="the store to copy (a SQLite file or a postgresql:// URL)")
    p.add_argument("--to", dest="target", required=True,
                   help="an empty store (a new SQLite file or an empty database), or the target of an unfinished "
                        "migration of the same source (run the same command again: see docs/migrate.md)")


def _migrate(args: argparse.Namespace, store: None) -> dict:
    from .migrate import migrate

    return migrate(args.source, args.target)


COMMANDS: tuple[Command, ...] = (  # in the order --help lists them
    Command("import-images", "add a folder of images (recursive) to the collection", _import_images_arguments,
            _import_images),
    Command("import-grefcoco", "import a dataset in the official gRefCOCO layout", _import_grefcoco_arguments,
            _import_grefcoco),
    Command("import-coco", "import a COCO instances.json and its image folder", _import_coco_arguments, _import_coco),
    Command("export", "export the database as a gRefCOCO zip", _export_arguments, _export, existing_store=True),
    Command("stats", "print counts", _db_argument, _stats, existing_store=True),
    Command("migrate", "copy a whole store to an empty one (SQLite <-> PostgreSQL), then compare", _migrate_arguments,
            _migrate, opens_store=False),
)


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The command line: one subparser per command, with the options it declares."""
    p = argparse.ArgumentParser(prog="python -m app.dataset", description="Scripted curation of a DeRIS Studio database.")
    add_log_level(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in commands:
        sp = sub.add_parser(command.name, help=command.help)
        command.add_arguments(sp)
        sp.set_defaults(command=command)
    return p


def _open_store(db: str | None, existing: bool) -> Store:
    """The store of ``--db`` (else the one launch.py opens) for a batch job."""
    loc = parse_db(db or studio_db())  # the database launch.py opens when --db is not given
    if existing and not loc.is_postgres and not loc.path.is_file():
        raise StoreError(f"database not found: {db}")
    return Store(loc, timeouts=DbTimeouts.from_env(batch=True), cache_root=studio_cache())  # nobody waits at a screen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)  # on stderr: standard output is the result's
    command: Command = args.command
    try:
        store = _open_store(args.db, command.existing_store) if command.opens_store else None
        res = command.run(args, store)
    except MigrationRefused as exc:  # every row it cannot copy, one a line
        print(f"error: {display_name(exc.summary)}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {display_name(problem)}", file=sys.stderr)
        print(exc.advice, file=sys.stderr)
        return 2
    except ImportRefused as exc:
        n = len(exc.problems)
        print(f"error: import refused, the database was not changed ({n} problem{'s' if n > 1 else ''}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {display_name(problem)}", file=sys.stderr)
        return 2
    except (DataError, StoreError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {display_name(str(exc))}", file=sys.stderr)  # a name that is not UTF-8 is printed escaped
        return 2
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
