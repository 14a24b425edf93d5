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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.dataset", description="Scripted curation of a DeRIS Studio database.")
    add_log_level(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("import-images", help="add a folder of images (recursive) to the collection")
    i.add_argument("dir")
    i.add_argument("--db", default=None, help=DB_HELP)
    i.add_argument("--split", default="", choices=["", *SPLITS], help="the split these images belong to")
    i.add_argument("--max-side", type=int, default=4096, help="larger images are scaled down and copied")
    a = sub.add_parser("import-grefcoco", help="import a dataset in the official gRefCOCO layout")
    a.add_argument("dir")
    a.add_argument("--db", default=None, help=DB_HELP)
    b = sub.add_parser("import-coco", help="import a COCO instances.json and its image folder")
    b.add_argument("instances_json")
    b.add_argument("image_dir")
    b.add_argument("--db", default=None, help=DB_HELP)
    c = sub.add_parser("export", help="export the database as a gRefCOCO zip")
    c.add_argument("--db", default=None, help=DB_HELP)
    c.add_argument("--out", required=True)
    c.add_argument("--no-images", action="store_true", help="annotations only")
    c.add_argument("--status", choices=STATUSES, help="only refs with this review status (default: every ref)")
    c.add_argument("--split", choices=SPLITS, help="only refs of this split")
    c.add_argument("--annotator", help="only refs by this annotator")
    d = sub.add_parser("stats", help="print counts")
    d.add_argument("--db", default=None, help=DB_HELP)
    m = sub.add_parser("migrate", help="copy a whole store to an empty one (SQLite <-> PostgreSQL), then compare")
    m.add_argument("--from", dest="source", required=True, help="the store to copy (a SQLite file or a postgresql:// URL)")
    m.add_argument("--to", dest="target", required=True,
                   help="an empty store (a new SQLite file or an empty database), or the target of an unfinished "
                        "migration of the same source (run the same command again: see docs/migrate.md)")
    args = p.parse_args(argv)
    configure_logging(args.log_level)  # on stderr: standard output is the result's
    try:
        if args.cmd == "migrate":
            from .migrate import migrate

            print(json.dumps(migrate(args.source, args.target), indent=2))
            return 0
        loc = parse_db(args.db or studio_db())  # the database launch.py opens when --db is not given
        if args.cmd in ("stats", "export") and not loc.is_postgres and not loc.path.is_file():
            raise StoreError(f"database not found: {args.db}")
        store = Store(loc, timeouts=DbTimeouts.from_env(batch=True), cache_root=studio_cache())  # nobody waits at a screen
        if args.cmd == "import-images":
            res = import_images(store, args.dir, args.split, args.max_side).summary()
        elif args.cmd == "import-grefcoco":
            res = import_grefcoco(store, args.dir)
        elif args.cmd == "import-coco":
            res = import_coco(store, args.instances_json, args.image_dir)
        elif args.cmd == "export":
            res = export_zip(store, args.out, include_images=not args.no_images, status=args.status, split=args.split,
                             annotator=args.annotator)
        else:
            res = store.stats()
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
