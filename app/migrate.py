"""Copy a whole store to an empty one, SQLite <-> PostgreSQL, and check the copy.

    python -m app.dataset migrate --from studio.sqlite --to postgresql://user@host:5432/studio
    python -m app.dataset migrate --from postgresql://user@host:5432/studio --to copy.sqlite

Every table of :data:`app.store.schema.TABLES` (refs, sentences, instances, events, predictions,
qa, models, negatives, imports ...) is copied row for row with its ids, in one transaction of
the target, and the "ids ever given" of each table move with it (a deleted ref's id stays unused).
``locks`` is not: a lock belongs to a process working on the source. Image bytes follow the target:
into the database (``media``) for PostgreSQL, into ``<db>_media/`` for SQLite. Afterwards the counts
of every table, the number of images with pixels and an export of both stores (annotations and image
files) must be identical, else the copy is reported as failed. Images whose pixels the source cannot
read (a moved folder) are copied as records and counted in the result (``images_without_pixels``, the
first ids in ``without_pixels_e_g``).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import zipfile
from pathlib import Path

from .store import Store, StoreError
from .store.location import parse_db
from .store.schema import TABLES


def table_columns(ddl: str = TABLES) -> dict[str, list[str]]:
    """``{table: [column, ...]}`` of the schema's ``CREATE TABLE`` statements, in their order (parents first)."""
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", ddl, re.S):
        cols = []
        for line in body.strip().splitlines():
            word = line.strip().split(" ", 1)[0]
            if word and word.upper() not in ("PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT"):
                cols.append(word)
        out[name] = cols
    return out


def _ext(data: bytes, name: str) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".img"


def _export_digest(store: Store, folder: Path, name: str) -> dict:
    """What an export of ``store`` contains: its annotations and the hash of every image file."""
    from .export import export_zip

    out = folder / name
    export_zip(store, out)
    with zipfile.ZipFile(out) as zf:
        return {n: (json.loads(zf.read(n)) if n.endswith(".json") and not n.endswith("export.json")
                    else hashlib.sha256(zf.read(n)).hexdigest())
                for n in sorted(zf.namelist()) if n != "export.json"}


NOT_COPIED = ("locks",)  # held by processes working on the source


def migrate(source: str, target: str, check: bool = True) -> dict:
    """Copy ``source`` into the empty ``target`` (see the module docstring); returns the counts."""
    src_loc, dst_loc = parse_db(source), parse_db(target)
    if src_loc == dst_loc:
        raise StoreError("--from and --to name the same database")
    if not src_loc.is_postgres and not src_loc.path.is_file():
        raise StoreError(f"database not found: {src_loc.shown}")
    src = Store(src_loc)
    try:
        dst = Store(dst_loc)
    except BaseException:
        src.close()
        raise
    try:
        return _copy(src, dst, check)
    finally:
        src.close()
        dst.close()


def _pixels_in(store: Store) -> int:
    """How many images of ``store`` have readable pixels."""
    return sum(1 for (image_id,) in store.read("SELECT id FROM images") if store.image_bytes(image_id) is not None)


def _copy(src: Store, dst: Store, check: bool) -> dict:
    src_loc, dst_loc = src.location, dst.location
    tables = {t: c for t, c in table_columns().items() if t not in NOT_COPIED}
    without: list[str] = []
    counts = {t: int(dst.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}
    if any(counts.values()):
        raise StoreError(f"the target {dst_loc.shown} is not empty ({', '.join(f'{n} {t}' for t, n in counts.items() if n)}); "
                         "migrate into a new database")
    copied: dict[str, int] = {}
    with dst.transaction() as db:
        for table, cols in tables.items():
            names = ", ".join(f'"{c}"' for c in cols)
            rows = src.read(f"SELECT {names} FROM {table} ORDER BY 1")
            if table == "images" and dst_loc.is_postgres:
                rows = [tuple(r) for r in rows]
            elif table == "images":  # into SQLite: the bytes become files of the media folder
                fixed = []
                pos = cols.index("path")
                for r in rows:
                    data = src.image_bytes(r[0])
                    r = list(r)
                    if data is not None:
                        dst.media_dir.mkdir(parents=True, exist_ok=True)
                        f = dst.media_dir / f"{hashlib.sha256(data).hexdigest()[:32]}{_ext(data, r[cols.index('file_name')])}"
                        if not f.exists():
                            f.write_bytes(data)
                        r[pos] = str(f)
                    else:
                        without.append(str(r[0]))
                        if r[pos] is not None and src_loc.is_postgres:
                            r[pos] = None  # a path on another machine: only the record is known
                    fixed.append(tuple(r))
                rows = fixed
            db.executemany(f"INSERT INTO {table} ({names}) VALUES ({','.join('?' * len(cols))})", rows)
            copied[table] = len(rows)
            if table == "images" and dst_loc.is_postgres:
                for (image_id,) in src.read("SELECT id FROM images ORDER BY id"):
                    data = src.image_bytes(image_id)
                    if data is not None:
                        dst.write_media(db, image_id, data)
                    else:
                        without.append(str(image_id))
        for table, cols in tables.items():  # the ids each table ever gave move with the data
            if cols[0] != "id":
                continue
            top = max([int(dst_row[0]) for dst_row in db.execute(f"SELECT MAX(id) FROM {table}").fetchall()
                       if dst_row[0] is not None] + [src.dialect.last_id(src._rdb, table) or 0
                                                     if _autoincrement(src, table) else 0])
            if not top:
                continue
            if dst_loc.is_postgres:
                db.execute(f"SELECT setval('{table}_id_seq', ?)", (top,))
            elif _autoincrement(dst, table):
                if db.execute("SELECT 1 FROM sqlite_sequence WHERE name = ?", (table,)).fetchone():
                    db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (top, table))
                else:
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, top))
    result = {"from": src_loc.shown, "to": dst_loc.shown, "copied": copied,
              "media": int(dst.read("SELECT COUNT(*) FROM media")[0][0]) if dst_loc.is_postgres
              else sum(1 for r in dst.read("SELECT path FROM images") if r[0]),
              "images_without_pixels": len(without), "without_pixels_e_g": without[:5]}
    if check:
        left = (f"; the target {dst_loc.shown} holds the copy as it is: drop that database (or delete the file) "
                "before migrating again")
        after = {t: int(dst.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}
        before = {t: int(src.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}
        if after != before:
            raise StoreError(f"the copy differs in counts: {before} vs {after}{left}")
        pixels_src, pixels_dst = _pixels_in(src), _pixels_in(dst)
        if pixels_src != pixels_dst:
            raise StoreError(f"the copy has pixels for {pixels_dst} images, the source for {pixels_src}{left}")
        with tempfile.TemporaryDirectory(prefix="deris_migrate_") as tmp:
            same = _export_digest(src, Path(tmp), "a.zip") == _export_digest(dst, Path(tmp), "b.zip")
        if not same:
            raise StoreError(f"the copy's export differs from the source's{left}")
        result["identical_export"] = True
    return result


def _autoincrement(store: Store, table: str) -> bool:
    """Whether ``table`` keeps the ids it ever gave (AUTOINCREMENT in SQLite; every id table on PostgreSQL)."""
    if store.location.is_postgres:
        return True
    return bool(store.read("SELECT 1 FROM sqlite_master WHERE name = ? AND sql LIKE '%AUTOINCREMENT%'", (table,)))
