"""Copy a whole store into a new one, SQLite <-> PostgreSQL, and check the copy.

    python -m app.dataset migrate --from studio.sqlite --to postgresql://user@host:5432/studio
    python -m app.dataset migrate --from postgresql://user@host:5432/studio --to copy.sqlite

The source is only read: opened read-only, refused when it is no studio store, and read in one
snapshot (PostgreSQL ``REPEATABLE READ``, one SQLite read transaction), so a studio may keep saving
to it meanwhile. The target is looked at before anything is created in it: one holding another
application's tables is refused, one holding studio rows is refused unless they are an unfinished
migration of the same source (its marker), which is then cleared and copied again.

Before anything is written every row is checked: a value the target cannot store (a NUL character
in a sentence saved on SQLite, going into PostgreSQL) is listed by ref and sentence id, and nothing is
copied. Every table of :data:`app.store.schema.TABLES` (refs, sentences, instances, events,
predictions, qa, models, negatives, imports ...) is copied row for row with its ids, in one transaction
of the target, and the "ids ever given" of each table move with it (a deleted ref's id stays unused).
``locks`` is not: a lock belongs to a process working on the source. Image bytes follow the target:
into the database (``media``) for PostgreSQL, into ``<db>_media/`` for SQLite (each file written by
atomic rename; a file already there is kept only when its size and hash match). Afterwards every
table of the copy (all columns but the images' ``path``) and the bytes of every image must equal the
snapshot's, so an export of either is the same, else the copy is reported as failed and left marked
unfinished. Images whose pixels the source cannot read (a moved folder) are copied as records and
counted in the result (``images_without_pixels``, the first ids in ``without_pixels_e_g``).

All SQL is in :mod:`app.store.transfer`; this module decides the order.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from ..store import Store, StoreError
from ..store.location import parse_db
from ..store.transfer import (
    ReadOnlySnapshot,
    copied_tables,
    finish,
    media_count,
    pg_unstorable,
    row_counts,
    rows_digest,
    source_identity,
    table_columns,
    target_problem,
    unfinished_source,
    write_copy,
    write_media_file,
)

__all__ = ["MigrationRefused", "migrate", "table_columns"]

log = logging.getLogger(__name__)
MAX_LISTED = 20  # rows named in a refusal; the rest are counted


UNSTORABLE_ADVICE = ("what to do: in the source store, retype each sentence named here without the character (open "
                     "the ref in the studio), or delete the ref, then migrate again")


class MigrationRefused(StoreError):
    """A source with rows the target cannot store: ``problems`` names each (ref, sentence, what is wrong),
    ``advice`` what to do; raised before anything is created in the target."""

    def __init__(self, summary: str, problems: list[str], advice: str) -> None:
        self.summary, self.problems, self.advice = summary, problems, advice
        shown = "; ".join(problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{summary}: {shown}{more}. {advice[0].upper()}{advice[1:]}")


def _ext(data: bytes, name: str) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".img"


def migrate(source: str, target: str, check: bool = True) -> dict:
    """Copy ``source`` into the empty ``target`` (see the module docstring); returns the counts."""
    src_loc, dst_loc = parse_db(source), parse_db(target)
    if src_loc == dst_loc or source_identity(src_loc) == source_identity(dst_loc):
        raise StoreError("--from and --to name the same database")
    with ReadOnlySnapshot(src_loc) as snap:  # refuses a missing source or one that is no studio store, first
        problem = target_problem(dst_loc)
        if problem:
            raise StoreError(f"{problem}; nothing was created in it")
        tables = copied_tables()
        rows = {t: snap.rows(t, cols) for t, cols in tables.items()}
        if dst_loc.is_postgres:
            bad = pg_unstorable(rows)
            if bad:
                raise MigrationRefused(f"{len(bad)} value{'s' if len(bad) > 1 else ''} of {src_loc.shown} cannot be "
                                       "copied into PostgreSQL; nothing was copied", bad, UNSTORABLE_ADVICE)
        tops = {t: max([int(r[0]) for r in rows[t]] + [snap.last_id(t)]) for t, cols in tables.items()
                if cols[0] == "id"}
        dst = Store(dst_loc)
        try:
            return _copy(snap, dst, rows, tops, check)
        finally:
            dst.close()


def _copy(snap: ReadOnlySnapshot, dst: Store, rows: dict[str, list[tuple]], tops: dict[str, int], check: bool) -> dict:
    src_loc, dst_loc = snap.loc, dst.location
    src_id = source_identity(src_loc)
    tables = copied_tables()
    marker = unfinished_source(dst)
    counts = row_counts(dst, tables)
    if any(counts.values()):
        held = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
        if marker is None:
            raise StoreError(f"the target {dst_loc.shown} is not empty ({held}); migrate into a new database")
        if marker != src_id:
            raise StoreError(f"the target {dst_loc.shown} holds an unfinished migration of another store ({marker}): "
                             "finish that one by running its migrate again, or migrate into a new database")
        log.info("the target %s holds an unfinished migration of this source: copying again", dst_loc.shown)
    cols = tables["images"]
    at, name_at = cols.index("path"), cols.index("file_name")
    pixels: dict[int, str] = {}  # image id -> SHA-256 of its bytes, as read in the snapshot
    without: list[str] = []
    media = None
    if dst_loc.is_postgres:
        path_of = {int(r[0]): r[at] for r in rows["images"]}

        def media(image_id: int) -> bytes | None:
            data = snap.image_bytes(image_id, path_of[int(image_id)])
            if data is None:
                without.append(str(image_id))
            else:
                pixels[int(image_id)] = hashlib.sha256(data).hexdigest()
            return data
    else:  # into SQLite: the bytes become files of the media folder, written before the rows
        fixed = []
        for r in rows["images"]:
            data = snap.image_bytes(r[0], r[at])
            r = list(r)
            if data is not None:
                digest = hashlib.sha256(data).hexdigest()
                r[at] = str(write_media_file(dst.media_dir, f"{digest[:32]}{_ext(data, r[name_at])}", data))
                pixels[int(r[0])] = digest
            else:
                without.append(str(r[0]))
                if r[at] is not None and src_loc.is_postgres:
                    r[at] = None  # a path on another machine: only the record is known
            fixed.append(tuple(r))
        rows["images"] = fixed
    write_copy(dst, src_id, rows, tops, media, clear=marker is not None)
    result = {"from": src_loc.shown, "to": dst_loc.shown, "copied": {t: len(r) for t, r in rows.items()},
              "resumed": marker is not None, "media": media_count(dst),
              "images_without_pixels": len(without), "without_pixels_e_g": without[:5]}
    if check:
        _check(dst_loc, tables, rows, pixels)
        result["identical"] = result["identical_export"] = True
    finish(dst)
    return result


def _check(dst_loc, tables: dict[str, list[str]], rows: dict[str, list[tuple]], pixels: dict[int, str]) -> None:
    """The copy, read back in one snapshot, against the source's snapshot: every table's rows (all columns but
    where the files are) and every image's bytes. StoreError naming what differs, the copy left marked."""
    left = (f"; the target {dst_loc.shown} holds the copy as it is, marked unfinished: run the same migrate again "
            "to copy afresh, or drop that database (or delete the file)")
    with ReadOnlySnapshot(dst_loc) as copy:
        differ = [t for t, cols in tables.items() if rows_digest(cols, rows[t]) != rows_digest(cols, copy.rows(t, cols))]
        got = {}
        for image_id, path in copy.rows("images", ["id", "path"]):
            data = copy.image_bytes(image_id, path)
            if data is not None:
                got[int(image_id)] = hashlib.sha256(data).hexdigest()
    if differ:
        raise StoreError(f"the copy differs from the source in {', '.join(differ)}{left}")
    if len(got) != len(pixels):
        raise StoreError(f"the copy has pixels for {len(got)} images, the source for {len(pixels)}{left}")
    changed = sorted(i for i in pixels if got.get(i) != pixels[i])
    if changed:
        raise StoreError(f"the bytes of image {', '.join(map(str, changed[:5]))} differ in the copy{left}")
