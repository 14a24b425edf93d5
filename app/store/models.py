"""Models the team made (``models``) and named locks that outlive a transaction (``locks``).

Mixed into :class:`app.store.Store`. A model record is written once, in one transaction, after
its weights are complete on disk; its name never changes meaning: registering a name that exists
is refused, and so is deleting a model whose predictions are in the store. Locks are one row per
name (``INSERT`` that fails on the primary key): one fine-tune per store at a time, across
processes and machines that share the database; a holder that died is recognised by the caller's
``stale`` test and replaced in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import StoreError
from .predictions import model_use_counts_sql

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class ModelRecord:
    id: int
    name: str
    weights: str  # where the weights file is (the run folder's model.safetensors)
    config: str  # the config's name
    parent: str  # the weights it was fine-tuned from (as given) and their hash
    snapshot: dict = field(default_factory=dict)  # the data it was trained on (counts, hash of ids + versions)
    metrics_before: dict = field(default_factory=dict)  # held-out GRES metrics of the parent
    metrics_after: dict = field(default_factory=dict)  # ... and of this model
    created_by: str = ""
    created_at: float = 0.0

    @property
    def weights_sha256(self) -> str:
        """The SHA-256 of the weights that were checked at promotion ("" for a model promoted before
        weights were pinned); kept with the snapshot of what the model is."""
        return str(self.snapshot.get("weights_sha256", ""))


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pin_problem(rec: ModelRecord, digest: str) -> str | None:
    """Why the weights file of registered model ``rec``, whose bytes hash to ``digest``, is not the model
    that was promoted (None when it is, or when nothing was pinned): one line that says what to do."""
    pinned = rec.weights_sha256
    if not pinned or pinned == digest:
        return None
    return (f"registered model {rec.name!r}: its weights file changed since it was promoted (sha256:{pinned[:12]} "
            f"then, sha256:{digest[:12]} now), so these weights were never checked; promote the run again under a new "
            "name (python -m app.curate promote --run DIR --name NEW), or give the file's path to load it unchecked")


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model (None when it can): 1-64 letters, digits, ``.``, ``_``, ``-``,
    starting with a letter or digit, so it is never a path nor a Hub repository ``owner/name``."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        return (f"a model name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                f"(got {str(name)[:80]!r})")
    return None


def _record(row: tuple) -> ModelRecord:
    return ModelRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5] or "{}"), json.loads(row[6] or "{}"),
                       json.loads(row[7] or "{}"), row[8], row[9])


_COLUMNS = "id, name, weights, config, parent, snapshot, metrics_before, metrics_after, created_by, created_at"


class ModelsMixin:
    """The model and lock operations of :class:`~app.store.Store`."""

    def models(self) -> list[ModelRecord]:
        """Every registered model, oldest first."""
        return [_record(r) for r in self._query(f"SELECT {_COLUMNS} FROM models ORDER BY id")]

    def model(self, name: str) -> ModelRecord | None:
        """The registered model of this name, or None."""
        rows = self._query(f"SELECT {_COLUMNS} FROM models WHERE name = ?", (str(name),))
        return _record(rows[0]) if rows else None

    def model_uses(self, name: str, digest: str = "") -> int:
        """How many predictions and qa rows a model made: model keys are ``name|config|sha256:<16 hex>|...``
        (:func:`app.curate.preannotate.model_key`), matched by name or by the weights' hash."""
        prefix = f"{name}|"  # compared exactly: '_' in a name is no wildcard, and case counts on both backends
        like = [f"%|sha256:{digest[:16]}|%", f"%|sha256:{digest[:16]}"] if digest else []  # hex: no wildcard in it
        cond = " OR ".join(["SUBSTR(model, 1, ?) = ?"] + ["model LIKE ?" for _ in like])
        n = 0
        for query in model_use_counts_sql(cond):
            n += int(self._query(query, [len(prefix), prefix, *like])[0][0])
        return n

    def register_model(self, rec: ModelRecord, in_use: Callable[[str], int] | None = None) -> ModelRecord:
        """Add ``rec`` (its ``id`` and ``created_at`` are set here) in one transaction. A name that exists
        is refused, saying whether that model is in use (``in_use(name)``: how many predictions it made)."""
        why = model_name_problem(rec.name)
        if why:
            raise StoreError(why)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM models WHERE name = ?", (rec.name,)).fetchone():
                uses = in_use(rec.name) if in_use else 0
                if uses:
                    raise StoreError(f"a model named {rec.name!r} is already registered and in use ({uses} predictions "
                                     "were made with it); promote under another name (--name)")
                raise StoreError(f"a model named {rec.name!r} is already registered; promote under another name (--name) "
                                 "or delete it first (python -m app.curate models --delete NAME)")
            now = time.time()
            cur = db.execute(
                "INSERT INTO models (name, weights, config, parent, snapshot, metrics_before, metrics_after, created_by, "
                "created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (rec.name, rec.weights, rec.config, rec.parent, json.dumps(rec.snapshot), json.dumps(rec.metrics_before),
                 json.dumps(rec.metrics_after), rec.created_by, now))
            rec.id, rec.created_at = int(cur.lastrowid), now
        log.info("model %r registered by %s (weights %s)", rec.name, rec.created_by or "-", rec.weights)
        return rec

    def delete_model(self, name: str, uses: int) -> None:
        """Remove a model's record (its files stay); refused while ``uses`` predictions of it exist."""
        if uses:
            raise StoreError(f"model {name!r} is in use ({uses} predictions were made with it); it stays registered")
        with self._tx() as db:
            if db.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount == 0:
                raise StoreError(f"no registered model named {name!r}")
        log.info("model %r unregistered", name)

    # --- locks --------------------------------------------------------------------------------

    def take_lock(self, name: str, holder: str, stale: Callable[[str, float], bool] | None = None) -> str | None:
        """Take the lock ``name`` for ``holder``; returns None when taken, else who holds it (and since when).
        A holder for which ``stale(holder, at)`` is true (a dead process) is replaced."""
        with self._tx() as db:
            row = db.execute("SELECT holder, at FROM locks WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute("INSERT INTO locks (name, holder, at) VALUES (?,?,?)", (name, holder, time.time()))
                return None
            if row[0] == holder or (stale is not None and stale(row[0], float(row[1]))):
                db.execute("UPDATE locks SET holder = ?, at = ? WHERE name = ?", (holder, time.time(), name))
                return None
            return f"{row[0]} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(row[1])))}"

    def release_lock(self, name: str, holder: str) -> None:
        """Give the lock back (only its holder's row is removed)."""
        with self._tx() as db:
            db.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder))
