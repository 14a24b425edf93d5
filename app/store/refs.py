"""Refs: save (create or versioned update), read, list a page at a time, delete, change status.

Mixed into :class:`app.store.Store`; every write is one transaction of the store and leaves an
event in the ref's history.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ConflictError, StoreError
from .masks import encode_mask
from .names import control_character, not_utf8
from .records import Event, RefRecord, RefRow
from .filters import RefFilter
from .status import RefStatus, ref_status
from .versions import write_rejected_version

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "testA", "testB")
DEFAULT_CATEGORY = "object"
MAX_SENTENCES = 20  # per ref (the expression and its paraphrases)
MAX_SENTENCE_CHARS = 500
MAX_NAME_CHARS = 100  # annotator / category names
PAGE_MAX = 500


def clean_sentences(sentences: Sequence[str]) -> list[str]:
    """Stripped, non-empty, de-duplicated sentences within the limits (StoreError otherwise)."""
    out: list[str] = []
    for s in sentences:
        if not isinstance(s, str):
            raise StoreError(f"a sentence must be text, got {type(s).__name__}")
        s = " ".join(s.split())
        if not s:
            continue
        if not_utf8(s):
            raise StoreError("a sentence contains text that is not valid Unicode (a lone surrogate)")
        if (bad := control_character(s)) is not None:
            raise StoreError(f"a sentence contains the control character {bad}, which cannot be stored; remove it")
        if len(s) > MAX_SENTENCE_CHARS:
            raise StoreError(f"a sentence is {len(s)} characters long; the limit is {MAX_SENTENCE_CHARS}")
        if s not in out:
            out.append(s)
    if not out:
        raise StoreError("a ref needs at least one non-empty sentence")
    if len(out) > MAX_SENTENCES:
        raise StoreError(f"a ref has {len(out)} sentences; the limit is {MAX_SENTENCES}")
    return out


IDS_PER_QUERY = 900  # ids per IN (...) list


@dataclass(frozen=True)
class Written:
    """What a ref write did: the ref, its new version, who wrote its current content, and whether it changed."""

    ref_id: int
    version: int
    editor: str
    content_changed: bool


class RefsMixin:
    """The ref operations of :class:`~app.store.Store` (see there for the transactions)."""

    def save_ref(self, image_id: int, sentences: Sequence[str], *, masks: Sequence[np.ndarray] = (),
                 instance_ids: Sequence[int] = (), no_target: bool = False, split: str = "train",
                 author: str = "", status: str = RefStatus.DONE, category: str = DEFAULT_CATEGORY,
                 ref_id: int | None = None, expected_version: int | None = None, actor: str | None = None) -> int:
        """Create a ref, or (``ref_id`` + ``expected_version``) update one, in one transaction.

        Targets are existing ``instance_ids`` and/or new ``masks`` (stored as new instances;
        the same pixels already stored for this image are reused). A no-target ref has no
        targets, a targeted ref at least one. An update whose ``expected_version`` is not the
        stored one raises :class:`ConflictError`. ``author`` is the ref's author of record (its
        ``annotator``); ``actor`` (default: the author), who saves it, is recorded in the ref's
        history and becomes the ref's ``editor`` when the content changes.
        """
        cat = self.category_id(category)
        with self._tx() as db:
            return self.write_ref(db, image_id, sentences, masks=masks, instance_ids=instance_ids, no_target=no_target,
                                  split=split, author=author, status=status, category_id=cat, ref_id=ref_id,
                                  expected_version=expected_version, actor=actor).ref_id

    def write_ref(self, db, image_id: int, sentences: Sequence[str], *, masks: Sequence[np.ndarray] = (),
                  rles: Sequence[dict] = (), instance_ids: Sequence[int] = (), no_target: bool = False,
                  split: str = "train", author: str = "", status: str = RefStatus.DONE, category_id: int | None = None,
                  ref_id: int | None = None, expected_version: int | None = None, actor: str | None = None,
                  source: str = "annotator", action: str | None = None, detail: dict | None = None) -> "Written":
        """:meth:`save_ref` inside a caller's :meth:`transaction` (batch jobs write many refs in one).

        ``author``: the ref's author of record (the ``annotator`` column); ``actor``: who writes now
        (default: the author), recorded in the history and as the ``editor`` when the content changes.
        ``rles`` are exact compressed RLEs of new targets (no decoding); ``source`` is the new
        instances' origin; ``action``/``detail`` name the history event (default create/edit).
        Returns the ref's id, new version, editor (who wrote its current content) and whether the
        content (sentences, targets, no-target flag) changed."""
        sents = clean_sentences(sentences)
        if split not in SPLITS:
            raise StoreError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        status = ref_status(status).value
        author = " ".join(str(author or "").split())
        if (bad := control_character(author)) is not None:
            raise StoreError(f"the annotator name contains the control character {bad}")
        if len(author) > MAX_NAME_CHARS:
            raise StoreError(f"the annotator name is longer than {MAX_NAME_CHARS} characters")
        actor = author if actor is None else actor
        ids = [int(i) for i in instance_ids]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise StoreError(f"instance {min(dup)} is listed twice in the target set")
        new_targets = len(masks) + len(rles)
        if no_target and (new_targets or ids):
            raise StoreError("a no-target ref cannot have target instances")
        if not no_target and not new_targets and not ids:
            raise StoreError("select or draw at least one target instance, or mark the expression as no-target")
        if ref_id is not None and expected_version is None:
            raise StoreError("an edit must say which version of the ref it started from (expected_version)")
        if category_id is None:
            row = db.execute("SELECT id FROM categories WHERE name = ?", (DEFAULT_CATEGORY,)).fetchone()
            category_id = int(row[0]) if row else int(db.execute(
                "INSERT INTO categories (name) VALUES (?)", (DEFAULT_CATEGORY,)).lastrowid)
        now = time.time()
        if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise StoreError(f"no image with id {image_id}")
        old_targets: list[int] = []
        old_content, editor, version = None, actor, 1
        if ref_id is not None:
            row = db.execute("SELECT image_id, version, no_target, editor FROM refs WHERE id = ?", (ref_id,)).fetchone()
            if row is None:
                raise ConflictError(f"ref {ref_id} was deleted meanwhile; save it as a new ref instead")
            if row[0] != image_id:
                raise StoreError(f"ref {ref_id} belongs to image {row[0]}, not to image {image_id}")
            if row[1] != expected_version:
                raise ConflictError(f"ref {ref_id} was changed by someone else meanwhile (now version {row[1]}, "
                                    f"you edited version {expected_version}); reopen it to see their changes")
            old_targets = [r[0] for r in db.execute(
                "SELECT instance_id FROM ref_instances WHERE ref_id = ? ORDER BY position", (ref_id,))]
            old_sents = [r[0] for r in db.execute("SELECT raw FROM sentences WHERE ref_id = ? ORDER BY position", (ref_id,))]
            old_content, editor, version = (old_sents, old_targets, bool(row[2])), row[3], row[1] + 1
        for iid in ids:
            row = db.execute("SELECT image_id FROM instances WHERE id = ?", (iid,)).fetchone()
            if row is None or row[0] != image_id:
                raise StoreError(f"instance {iid} does not belong to image {image_id}")
        if new_targets:
            existing = {r[1]: r[0] for r in db.execute("SELECT id, rle FROM instances WHERE image_id = ?", (image_id,))}
            news = [(encode_mask(m), m) for m in masks] + [(r, None) for r in rles]
            for n, (rle, m) in enumerate(news):
                key = json.dumps(rle)
                label = f"target {n + 1} of {len(news)}"
                new = existing.get(key) or self._insert_instance(db, image_id, m, category_id, source, label=label,
                                                                 rle=rle if m is None else None)
                existing[key] = new
                ids.append(new)
        ids = list(dict.fromkeys(ids))
        changed = old_content != (sents, ids, bool(no_target))
        if changed:
            editor = actor
        if ref_id is None:
            cur = db.execute(
                "INSERT INTO refs (image_id, split, no_target, annotator, status, created_at, updated_at, version, editor) "
                "VALUES (?,?,?,?,?,?,?,1,?)", (image_id, split, int(no_target), author, status, now, now, editor))
            ref_id = int(cur.lastrowid)
            action = action or "create"
        else:
            db.execute("UPDATE refs SET split=?, no_target=?, annotator=?, status=?, updated_at=?, version=version+1, "
                       "editor=? WHERE id=?", (split, int(no_target), author, status, now, editor, ref_id))
            db.execute("DELETE FROM sentences WHERE ref_id = ?", (ref_id,))
            db.execute("DELETE FROM ref_instances WHERE ref_id = ?", (ref_id,))
            action = action or "edit"
        db.executemany("INSERT INTO sentences (ref_id, raw, position) VALUES (?,?,?)",
                       [(ref_id, s, pos) for pos, s in enumerate(sents)])
        db.executemany("INSERT INTO ref_instances (ref_id, instance_id, position) VALUES (?,?,?)",
                       [(ref_id, iid, pos) for pos, iid in enumerate(ids)])
        self._drop_orphans(db, [i for i in old_targets if i not in ids])
        self._event(db, ref_id, actor, action, {"sentences": sents, "targets": ids, "no_target": bool(no_target),
                                                "split": split, "status": status, "annotator": author,
                                               **({"content_changed": False} if not changed else {}), **(detail or {})})
        log.debug("ref %s v%s %s by %s (author %s): %s, %d sentence(s), %s", ref_id, version, action, actor or "-",
                  author or "-", status, len(sents), "no target" if no_target else f"{len(ids)} target(s)")
        return Written(ref_id, version, editor, changed)

    def ref(self, ref_id: int) -> RefRecord:
        refs = self.refs(ref_ids=[ref_id])
        if not refs:
            raise StoreError(f"no ref with id {ref_id}")
        return refs[0]

    def refs(self, image_id: int | None = None, ref_ids: Sequence[int] | None = None) -> list[RefRecord]:
        """Full ref records (sentences and targets), by image, by ids, or all."""
        sql = "SELECT id, image_id, split, no_target, annotator, status, created_at, updated_at, version, editor FROM refs"
        args: list = []
        if image_id is not None:
            sql += " WHERE image_id = ?"
            args.append(image_id)
        elif ref_ids is not None:
            ids = sorted({int(r) for r in ref_ids})
            if not ids:
                return []
            if len(ids) > IDS_PER_QUERY:  # bound the query's parameters (PostgreSQL: 65 535, old SQLite: 999)
                return [rec for k in range(0, len(ids), IDS_PER_QUERY) for rec in self.refs(ref_ids=ids[k : k + IDS_PER_QUERY])]
            sql += f" WHERE id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        sql += " ORDER BY id"
        with self._rlock:
            rows = self._rdb.execute(sql, args).fetchall()
            sents: dict[int, list[tuple[int, str]]] = {r[0]: [] for r in rows}
            targets: dict[int, list[int]] = {r[0]: [] for r in rows}
            scope = "" if image_id is None and ref_ids is None else f" WHERE ref_id IN (SELECT id FROM ({sql}) AS chosen)"
            for rid, sid, raw in self._rdb.execute(f"SELECT ref_id, id, raw FROM sentences{scope} ORDER BY ref_id, position",
                                                  args):
                if rid in sents:
                    sents[rid].append((sid, raw))
            for rid, iid in self._rdb.execute(f"SELECT ref_id, instance_id FROM ref_instances{scope} ORDER BY ref_id, position",
                                             args):
                if rid in targets:
                    targets[rid].append(iid)
        return [RefRecord(r[0], r[1], [s[1] for s in sents[r[0]]], targets[r[0]], bool(r[3]), r[2], r[4], r[5], r[6], r[7],
                          [s[0] for s in sents[r[0]]], r[8], r[9]) for r in rows]

    def refs_page(self, offset: int = 0, limit: int = 50, flt: RefFilter | None = None, *, image_id: int | None = None,
                  status: str | None = None, split: str | None = None, annotator: str | None = None,
                  newest_first: bool = True) -> tuple[list[RefRow], int]:
        """One page of the ref list that passes ``flt`` (or the filter the keywords make; ``""``: no
        filter) and the number of matching refs (fast at 100 000 refs)."""
        if flt is None:
            flt = RefFilter.of(status, split, annotator or None, image_id)
        return self.ref_rows(flt, offset, limit, "r.id DESC" if newest_first else "r.id ASC")

    def ref_rows(self, flt: RefFilter, offset: int = 0, limit: int = 50, order: str = "r.id DESC",
                 joins: str = "") -> tuple[list[RefRow], int]:
        """The one query of the ref lists: the page of ``flt`` in ``order`` (SQL over ``r``, the refs, and
        ``joins``: tables the order needs) and the number of matching refs."""
        limit = max(1, min(int(limit), PAGE_MAX))
        cond, args = flt.where("r")
        with self._rlock:
            total = int(self._rdb.execute(f"SELECT COUNT(*) FROM refs r{cond}", args).fetchone()[0])
            rows = self._rdb.execute(
                f"""SELECT r.id, r.image_id, i.file_name, {self.dialect.joined_sentences("r.id")},
                       (SELECT COUNT(*) FROM ref_instances WHERE ref_id = r.id),
                       r.no_target, r.split, r.status, r.annotator, r.updated_at, r.version
                    FROM refs r JOIN images i ON i.id = r.image_id{joins}{cond}
                    ORDER BY {order} LIMIT ? OFFSET ?""", [*args, limit, max(0, int(offset))]).fetchall()
        return [RefRow(r[0], r[1], r[2], r[3] or "", r[4], bool(r[5]), r[6], r[7], r[8], r[9], r[10]) for r in rows], total

    def delete_ref(self, ref_id: int, expected_version: int | None = None, actor: str = "") -> None:
        """Delete a ref (refused if it changed since ``expected_version``); its drawn instances go with it."""
        with self._tx() as db:
            self.write_delete(db, ref_id, expected_version, actor)

    def write_delete(self, db, ref_id: int, expected_version: int | None = None, actor: str = "") -> None:
        """:meth:`delete_ref` inside a caller's :meth:`transaction`."""
        row = db.execute("SELECT version FROM refs WHERE id = ?", (ref_id,)).fetchone()
        if row is None:
            raise StoreError(f"no ref with id {ref_id}")
        if expected_version is not None and row[0] != expected_version:
            raise ConflictError(f"ref {ref_id} was changed by someone else meanwhile (now version {row[0]}); "
                                "reopen it before deleting")
        inst = [r[0] for r in db.execute("SELECT instance_id FROM ref_instances WHERE ref_id = ?", (ref_id,))]
        db.execute("DELETE FROM refs WHERE id = ?", (ref_id,))
        self._drop_orphans(db, inst)
        self._event(db, ref_id, actor, "delete", {})
        log.info("ref %s deleted by %s", ref_id, actor or "-")

    def set_status(self, ref_id: int, status: str, actor: str = "", expected_version: int | None = None,
                   detail: dict | None = None, action: str = "status") -> int:
        """Change a ref's status (as :func:`~app.store.status.next_status` decided), recorded in its history
        as ``action`` by ``actor`` with ``detail``, the old and new status and the ref's author; returns the
        new version."""
        with self._tx() as db:
            return self.write_status(db, ref_id, status, actor, expected_version, detail, action)

    def write_status(self, db, ref_id: int, status: str, actor: str = "", expected_version: int | None = None,
                     detail: dict | None = None, action: str = "status") -> int:
        """:meth:`set_status` inside a caller's :meth:`transaction`."""
        status = ref_status(status).value
        row = db.execute("SELECT version, status, annotator FROM refs WHERE id = ?", (ref_id,)).fetchone()
        if row is None:
            raise StoreError(f"no ref with id {ref_id}")
        if expected_version is not None and row[0] != expected_version:
            raise ConflictError(f"ref {ref_id} was changed by someone else meanwhile (now version {row[0]})")
        now = time.time()
        db.execute("UPDATE refs SET status=?, updated_at=?, version=version+1 WHERE id=?", (status, now, ref_id))
        event_id = self._event(db, ref_id, actor, action, {**(detail or {}), "from": row[1], "to": status, "author": row[2]})
        if status == RefStatus.REJECTED:  # kept for Review's before / after, whatever the fix removes later
            write_rejected_version(db, ref_id, event_id, row[0], now)
        log.debug("ref %s v%s %s by %s: %s -> %s", ref_id, row[0] + 1, action, actor or "-", row[1], status)
        return row[0] + 1

    def ref_in(self, db, ref_id: int) -> RefRecord | None:
        """The ref as a caller's transaction sees it (None when it does not exist)."""
        r = db.execute("SELECT id, image_id, split, no_target, annotator, status, created_at, updated_at, version, editor "
                       "FROM refs WHERE id = ?", (ref_id,)).fetchone()
        if r is None:
            return None
        sents = db.execute("SELECT id, raw FROM sentences WHERE ref_id = ? ORDER BY position", (ref_id,)).fetchall()
        targets = [t[0] for t in db.execute("SELECT instance_id FROM ref_instances WHERE ref_id = ? ORDER BY position",
                                            (ref_id,))]
        return RefRecord(r[0], r[1], [s[1] for s in sents], targets, bool(r[3]), r[2], r[4], r[5], r[6], r[7],
                         [s[0] for s in sents], r[8], r[9])

    @staticmethod
    def first_sentences_in(db, image_id: int, author_prefix: str) -> list[str]:
        """The first sentence of every ref of an image whose author's name starts with ``author_prefix``
        (``consensus``: the merged refs), as a caller's transaction sees it."""
        like = author_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return [r[0] for r in db.execute("SELECT s.raw FROM refs r JOIN sentences s ON s.ref_id = r.id AND s.position = 0 "
                                         "WHERE r.image_id = ? AND r.annotator LIKE ? ESCAPE '\\'", (int(image_id), like))]

    def events(self, ref_id: int) -> list[Event]:
        """The history of a ref, oldest first (kept after the ref is deleted)."""
        rows = self._query('SELECT id, ref_id, at, "user", action, detail FROM events WHERE ref_id = ? ORDER BY id', (ref_id,))
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

