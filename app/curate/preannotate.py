"""Batch pre-annotation: the model proposes a ref for every (image, sentence) pair of a collection.

Each image is encoded once and its sentences run in batches. Every result becomes a ref with
status ``predicted``, made by ``model:<name>``, with the model's verdict (the referred candidates
as instances, or no target) and, in ``predictions``, the model key, thresholds, existence and
every kept candidate (query, score, exact mask as RLE), so that the app or :func:`rethreshold`
can change the score threshold without running the model. A pair already predicted by the same
model is skipped, and so is a pair a person already answered (:func:`answered_by_people`); results are committed a chunk of images at a time, so a run killed at any
point loses nothing committed and a rerun finishes the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from deris_core import __version__

from ..services.permissions import Actor
from ..services.refs import RefService
from ..store import ConflictError, RefStatus, Store, StoreError, clean_sentences, decode_mask, encode_mask
from ..store import predictions
from ..store.queue import ImageFilter, image_ids
from .uncertainty import uncertainty

MAX_CANDIDATES = 10  # kept per pair (best scores), enough to re-threshold
MIN_KEPT_SCORE = 0.05  # candidates below are never worth re-thresholding to


@dataclass(frozen=True)
class Pair:
    image_id: int
    sentence: str


@dataclass
class PairResult:
    image_id: int
    sentence: str
    existence: float
    score_threshold: float
    mask_threshold: float
    candidates: list[tuple[int, float, dict]] = field(default_factory=list)  # (query, score, RLE), best first

    @property
    def referred(self) -> list[int]:
        """Positions in ``candidates`` above the score threshold (the official verdict)."""
        return [i for i, (_, s, _) in enumerate(self.candidates) if s > self.score_threshold]


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a weights file, cached by resolved path, size and modification time (a retrained file
    at the same path, or the same file under another name, is told apart by its bytes; the hash is
    computed once per file version). For an official ``.pth`` it is the ``.pth`` itself, not the
    safetensors copy the weight cache derives from it."""
    from deris_core.weight_cache import cache_dir

    real = Path(path).resolve()
    st = real.stat()
    tag = hashlib.sha1(f"{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache_dir() / "weight_digests" / f"{tag}.sha256"
    try:
        text = memo.read_text().strip()
        if len(text) == 64:
            return text
    except OSError:
        pass
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    digest = h.hexdigest()
    try:  # a read-only cache only costs the hashing next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def model_key(predictor, weights: str) -> str:
    """What identifies the model that made a prediction: the weights' name, config, content hash and
    the precision that ran (``name|config|sha256:<16 hex>|int8``: ``--dtype auto`` runs bf16, int8 or
    fp32 by machine, and their answers differ slightly, so a run resumed elsewhere never mixes them
    under one key). The code version goes into each ref's history, so upgrading the package does not
    predict every pair again. Without a known weights file: name, config and precision."""
    cfg = getattr(predictor, "cfg", None)
    key = f"{Path(str(weights)).name}|{getattr(cfg, 'name', type(cfg).__name__)}"
    path = getattr(predictor, "weights_file", None)
    if path is None and Path(str(weights)).is_file():
        path = weights
    if path is not None:
        key += f"|sha256:{weights_digest(path)[:16]}"
    precision = getattr(predictor, "precision", None)
    return f"{key}|{precision.name}" if precision is not None else key


def _name_index(store: Store) -> dict[str, set[int]]:
    """Image ids by stored name, original name and its last path component (built once)."""
    index: dict[str, set[int]] = {}
    for iid, name, original in store.image_names():
        for key in {name, original, original.rsplit("/", 1)[-1]}:
            if key:
                index.setdefault(key, set()).add(int(iid))
    return index


def _image_for(index: dict[str, set[int]], store: Store, image: object, where: str) -> int:
    if isinstance(image, int) and not isinstance(image, bool):
        if not store.has_image(image):
            raise StoreError(f"{where}: no image {image} in the collection")
        return image
    if not isinstance(image, str) or not image:
        raise StoreError(f"{where}: 'image' must be an image id or a file name, got {type(image).__name__}")
    ids = index.get(image, set())
    if not ids:
        raise StoreError(f"{where}: no image {image[:200]!r} in the collection")
    if len(ids) > 1:
        raise StoreError(f"{where}: {image!r} names {len(ids)} images ({', '.join(map(str, sorted(ids)[:5]))}); "
                         "give the path relative to the imported folder or the image id")
    return next(iter(ids))


SentenceCheck = Callable[[str], "str | None"]


def sentence_checker(predictor) -> SentenceCheck:
    """Why the model cannot take a sentence (None when it can), from its tokenizer's own rules."""
    tok = getattr(predictor, "tokenizer", None)

    def check(sentence: str) -> str | None:
        if tok is None:
            return None
        try:
            tok.encode(sentence)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def _sentence(raw: object, where: str, check: SentenceCheck | None) -> str:
    """A stored-form sentence, or StoreError saying why the input is not one (never coerced to text)."""
    if not isinstance(raw, str):
        raise StoreError(f"{where}: the sentence must be text, got {type(raw).__name__}")
    if not raw.strip():
        raise StoreError(f"{where}: the sentence is empty")
    try:
        text = clean_sentences([raw])[0]
    except StoreError as exc:
        raise StoreError(f"{where}: {exc}") from None
    why = check(text) if check else None
    if why:
        raise StoreError(f"{where}: {why}")
    return text


def _fail(message: str):
    raise StoreError(message)


def _collect(out: list, problems: list[str] | None, make) -> None:
    """Append ``make()``; a StoreError is listed in ``problems`` (or raised when no list is given)."""
    try:
        out.append(make())
    except StoreError as exc:
        if problems is None:
            raise
        problems.append(str(exc))


def _lines(path: str | Path) -> Iterable[tuple[int, str | None]]:
    """``(line number, text)`` of a UTF-8 file; a line that is not UTF-8 comes as None (one bad line
    does not make the rest unreadable)."""
    for n, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            yield n, raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            yield n, None


def read_sentences(path: str | Path, check: SentenceCheck | None = None,
                   problems: list[str] | None = None) -> list[str]:
    """The sentences of a ``--sentences`` file (one a line; blank lines ignored, bad ones listed)."""
    name = Path(path).name
    out: list[str] = []
    for n, text in _lines(path):
        if text is not None and not text.strip():
            continue
        where = f"{name} line {n}"
        _collect(out, problems, lambda: _sentence(text, where, check) if text is not None
                 else _fail(f"{where}: not UTF-8 text"))
    return list(dict.fromkeys(out))


def pairs_from_sentences(store: Store, sentences: Iterable[str], flt: ImageFilter = ImageFilter(),
                         check: SentenceCheck | None = None, problems: list[str] | None = None) -> list[Pair]:
    """Every sentence on every image of the (filtered) collection, by image id (blank ones ignored,
    unusable ones listed in ``problems`` or refused)."""
    sents: list[str] = []
    for n, s in enumerate(sentences, 1):
        if isinstance(s, str) and not s.strip():
            continue
        _collect(sents, problems, lambda: _sentence(s, f"sentence {n}", check))
    sents = list(dict.fromkeys(sents))
    ids = image_ids(store, flt)
    return [Pair(i, s) for i in ids for s in sents]


def pairs_from_jsonl(store: Store, path: str | Path, check: SentenceCheck | None = None,
                     problems: list[str] | None = None) -> list[Pair]:
    """Pairs from a JSONL file: one ``{"image": <id or file name>, "sentence": "..."}`` per line.

    With ``problems``, a bad line (not JSON, wrong fields or types, unknown image, unusable
    sentence) is listed there with its number and the others are read; without, it is refused."""
    index = _name_index(store)
    out: list[Pair] = []
    name = Path(path).name
    for n, line in _lines(path):
        if line is not None and not line.strip():
            continue
        where = f"{name} line {n}"

        def pair() -> Pair:
            if line is None:
                raise StoreError(f"{where}: not UTF-8 text")
            try:
                rec = json.loads(line)
                image, sentence = rec["image"], rec["sentence"]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError):
                raise StoreError(f"{where}: expected {{\"image\": ..., \"sentence\": ...}}") from None
            text = _sentence(sentence, where, check)
            return Pair(_image_for(index, store, image, where), text)

        _collect(out, problems, pair)
    return list(dict.fromkeys(out))


def pairs_from_refs_file(store: Store, path: str | Path, check: SentenceCheck | None = None,
                         problems: list[str] | None = None) -> list[Pair]:
    """Pairs from the sentences of a refs file without masks (gRefCOCO-style ``grefs(unc).json``:
    a list of refs with ``file_name`` or ``image_id`` and ``sentences`` of ``raw``/``sent``),
    matched to the collection by file name (or id); ``ann_id`` is ignored. Bad refs or sentences
    are listed in ``problems`` (or refused without it)."""
    name = Path(path).name
    try:
        refs = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{name}: not a readable JSON list of refs ({type(exc).__name__})") from None
    if not isinstance(refs, list):
        raise StoreError(f"{name}: expected a list of refs")
    index = _name_index(store)
    out: list[Pair] = []
    for n, r in enumerate(refs):
        where = f"{name}: refs[{n}]"
        if not isinstance(r, dict) or not isinstance(r.get("sentences"), list):
            _collect(out, problems, lambda: _fail(f"{where} needs a 'sentences' list"))
            continue
        image_ids: list[int] = []
        _collect(image_ids, problems, lambda: _image_for(index, store, r.get("file_name", r.get("image_id")), where))
        if not image_ids:
            continue
        for k, sent in enumerate(r["sentences"]):
            text = (sent.get("raw") or sent.get("sent")) if isinstance(sent, dict) else sent
            if isinstance(text, str) and not text.strip():
                continue
            _collect(out, problems, lambda: Pair(image_ids[0], _sentence(text, f"{where}.sentences[{k}]", check)))
    return list(dict.fromkeys(out))


def pending(store: Store, pairs: Sequence[Pair], key: str) -> list[Pair]:
    """The pairs this model has not predicted yet."""
    done = predictions.predicted_pairs(store, key)
    return [p for p in pairs if (p.image_id, p.sentence) not in done]


def answered_by_people(store: Store, pairs: Sequence[Pair]) -> tuple[list[Pair], int]:
    """``(pairs left, how many were dropped)``: a pair whose image already has a person's ref with the
    same sentence (compared as agreement compares them: NFKC, case-folded, single spaces) is not
    pre-annotated; the model would only ask people to redo their own work."""
    from ..store.coverage import person_sentences, sentence_key

    done = {(i, sentence_key(raw)) for i, raw in person_sentences(store, {p.image_id for p in pairs})}
    if not done:
        return list(pairs), 0
    left = [p for p in pairs if (p.image_id, sentence_key(p.sentence)) not in done]
    return left, len(pairs) - len(left)


def predict_image(predictor, rgb: np.ndarray, image_id: int, sentences: Sequence[str], batch: int = 8) -> list[PairResult]:
    """The model's answer for every sentence on one image (encoded once, sentences in batches)."""
    state = predictor.set_image(rgb)
    out = []
    for start in range(0, len(sentences), max(1, batch)):
        chunk = list(sentences[start:start + batch])
        for sentence, pred in zip(chunk, predictor.predict_batch(chunk, image=state)):
            out.append(_pair_result(image_id, sentence, pred))
    return out


def predict_images(predictor, items: Sequence[tuple[np.ndarray, int, Sequence[str]]], batch: int = 8) -> list[PairResult]:
    """The model's answers for several images at once: ``(pixels, image id, sentences)`` each; the
    images encoded in one batched pass, then their (image, sentence) pairs in batches of ``batch``
    across images (more work per pass than :func:`predict_image`; same answers)."""
    states = predictor.set_images([rgb for rgb, _, _ in items])
    pairs = [(state, image_id, s) for state, (_, image_id, sentences) in zip(states, items) for s in sentences]
    out = []
    for start in range(0, len(pairs), max(1, batch)):
        chunk = pairs[start:start + batch]
        preds = predictor.predict_pairs([(state, s) for state, _, s in chunk])
        out += [_pair_result(image_id, s, pred) for (_, image_id, s), pred in zip(chunk, preds)]
    return out


def _pair_result(image_id: int, sentence: str, pred) -> PairResult:
    """What is stored of one prediction: the referred candidates (however many: the verdict must
    survive) and the best few others above a floor, as RLE."""
    referred = set(pred.referred)
    kept = [k for i, k in enumerate(pred.order)
            if k in referred or (i < MAX_CANDIDATES and pred.scores[k] >= MIN_KEPT_SCORE)]
    cands = []
    for k in kept:
        mask = pred.mask(k).astype(bool)
        if mask.any():
            cands.append((int(k), float(pred.scores[k]), encode_mask(mask)))
    return PairResult(image_id, sentence, float(pred.existence), float(pred.score_threshold),
                      float(pred.mask_threshold), cands)


def write_results(store: Store, results: Sequence[PairResult], key: str, category: str = "object") -> int:
    """Store results in one transaction (pairs already there are skipped); returns how many were new.

    Each result is saved as the model's ``predicted`` ref through the studio's own save
    (:class:`~app.services.RefService`: the same checks and history as a save in the app), with
    its uncertainty (:mod:`.uncertainty`) for the "most uncertain first" queues."""
    if not results:
        return 0
    model = Actor.tool("model:" + key.split("|")[0])
    service = RefService(store)
    store.category_id(category)
    written = 0
    now = time.time()
    with store.transaction() as db:
        for r in results:
            if predictions.has_pair(db, r.image_id, r.sentence, key):
                continue
            referred = r.referred
            split = store.image_split_in(db, r.image_id) or "train"
            saved = service.save(model, r.image_id, [r.sentence], rles=[r.candidates[i][2] for i in referred],
                                 no_target=not referred, split=split, status=RefStatus.PREDICTED, db=db, source="model",
                                 action="predict", detail={"model": key, "code": f"deris_core {__version__}",
                                                           "existence": r.existence})
            insert_prediction(db, saved.ref_id, r, key, now)
            written += 1
    return written


def insert_prediction(db, ref_id: int | None, r: PairResult, key: str, now: float,
                      origin: str = predictions.PREANNOTATE) -> None:
    """The ``predictions`` row of one result (candidates, verdict numbers and uncertainty), inside ``db``."""
    cands = [{"query": q, "score": round(s, 6), "rle": m} for q, s, m in r.candidates]
    doubt = uncertainty(r.existence, [c["score"] for c in cands], r.score_threshold)
    predictions.write_prediction(db, ref_id, r.image_id, r.sentence, key, score_threshold=r.score_threshold,
                                 mask_threshold=r.mask_threshold, existence=r.existence, candidates=cands,
                                 uncertainty=doubt, origin=origin, at=now)


def fill_uncertainty(store: Store) -> int:
    """Compute the uncertainty of predictions stored without one (made before schema 4) from their
    stored candidates; returns how many were filled."""
    rows = predictions.without_uncertainty(store)
    with store.transaction() as db:
        for p in rows:
            predictions.write_uncertainty(db, p.id, uncertainty(p.existence, [c["score"] for c in p.candidates],
                                                                  p.score_threshold))
    return len(rows)


def group_by_image(pairs: Sequence[Pair]) -> list[tuple[int, list[str]]]:
    groups: dict[int, list[str]] = {}
    for p in pairs:
        groups.setdefault(p.image_id, []).append(p.sentence)
    return sorted(groups.items())


def score_threshold_problem(value: object) -> str | None:
    """Why ``value`` is not a usable score threshold (a finite number from 0 to 1), None when it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return f"the score threshold must be a number from 0 to 1, got {type(value).__name__}"
    if not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        return f"the score threshold must be a number from 0 to 1, got {value}"
    return None


def _threshold(value: object) -> float:
    why = score_threshold_problem(value)
    if why:
        raise StoreError(why)
    return float(value)  # type: ignore[arg-type]


def rethreshold(store: Store, ref_id: int, score_threshold: float) -> tuple[bool, list[np.ndarray]]:
    """A predicted ref's verdict under another score threshold, from the stored candidates (no model)."""
    score_threshold = _threshold(score_threshold)
    pred = predictions.of_ref(store, ref_id)
    if pred is None:
        raise StoreError(f"ref {ref_id} was not made by the model")
    masks = [decode_mask(c["rle"]) for c in pred.referred(score_threshold)]
    return (not masks), masks


def apply_threshold(store: Store, key: str, score_threshold: float) -> int:
    """Re-threshold every still-``predicted`` ref of a model (no model needed); returns how many changed.

    A ref verified or edited meanwhile (its version moved since it was listed) is left alone. The
    threshold is checked (a finite number from 0 to 1) before any ref is touched."""
    score_threshold = _threshold(score_threshold)
    rows = predictions.still_predicted(store, key)
    changed = 0
    for rid, version in rows:
        no_target, masks = rethreshold(store, rid, score_threshold)
        rec = store.ref(rid)
        try:
            with store.transaction() as db:
                RefService(store).save(Actor.tool(rec.author), rec.image_id, rec.sentences, masks=masks,
                                       no_target=no_target, split=rec.split, status=RefStatus.PREDICTED, ref_id=rid,
                                       expected_version=version, db=db, source="model")
                pred = predictions.of_ref_in(db, rid)
                predictions.write_threshold(db, rid, score_threshold, uncertainty(
                    pred.existence, [c["score"] for c in pred.candidates], score_threshold))
        except ConflictError:
            continue
        changed += 1
    return changed
