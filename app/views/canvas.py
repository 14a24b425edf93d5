"""The annotation canvas: the picture, drawn in the browser on a ``<canvas>`` (one ``gr.HTML`` with a
static template, ``js_on_load`` and a few ``server_functions``; no build step, nothing to install).

What travels, and when:

- the picture, once per image: the browser asks :func:`canvas_image` for it by its content hash
  and gets a data URI from server memory (no cache file exists that another request could rewrite);
- the candidates' masks, once per prediction (:func:`canvas_masks`, COCO RLE strings, under the
  prediction's content key, :func:`content_key`);
- ahead of time, by the page's session ticket: the picture PgDn will open once the prefetch has
  prepared it (``canvas_upcoming``, :func:`upcoming_picture`) and the masks of the expression's
  answer computed while the annotator typed (``canvas_typed``, :func:`typed_answer`), so that PgDn and
  Enter draw without a request;
- the target set, as the component's value (:func:`canvas_value`): unedited candidates by number,
  drawn or edited masks as COCO RLE. The browser edits it (pick, brush, eraser, polygon, outline
  vertices, new, delete, no-target, undo/redo) without the server and writes the new set back into the value,
  which the server reads with :func:`apply_canvas` (the save, and a light ``edit`` event that
  refreshes the verdict).

The rasterising rules are the browser's, repeated here (:func:`stroke_mask`, :func:`polygon_mask`,
:func:`outline_edit_mask`) so tests can compute, pixel for pixel, the mask that a stroke, an outline or
a dragged vertex must give.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import cv2
import gradio as gr
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from deris_core.predictor import Prediction

from ..errors import UserError
from ..viewkit.overlay import COLOURS
from ..viewkit.session import Session, Target, _candidate_mask

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_PAYLOADS = 48  # pictures and mask sets kept in memory for the browsers (least recently used goes)
PNG_MAX_PIXELS = 1 << 20  # smaller pictures travel as PNG (exact pixels), larger as JPEG q92
TINY_PART_PX = 16  # a part smaller than this (or than TINY_PART_SHARE of its target) is "tiny"
TINY_PART_SHARE = 0.02
_seq = itertools.count(1)


class CanvasError(UserError, ValueError):
    """What the canvas sent cannot be used (one line, says what to do): a :class:`~app.errors.UserError`
    the views show as it is; ``ValueError`` kept for older callers."""


class _Payloads:
    """A small, thread-safe LRU of what the browsers fetch by key (pictures, candidate masks)."""

    def __init__(self, limit: int = MAX_PAYLOADS) -> None:
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def put(self, key: str, make) -> None:
        """``make()`` under ``key`` unless it is there already."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
        self.replace(key, make())  # made outside the lock: encoding a picture takes a while

    def replace(self, key: str, value: object) -> None:
        """Set ``key`` to ``value`` even when it is there already (a pointer that moves on)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, key: str):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value


PAYLOADS = _Payloads()


def encode_mask(mask: np.ndarray) -> str:
    """A bool HxW mask as a COCO compressed RLE string (column-major, as pycocotools writes it)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def _rle_counts(s: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString), None if cut short."""
    cnts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                return None
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


def decode_mask(counts: str, h: int, w: int) -> np.ndarray:
    """The inverse of :func:`encode_mask`; a clear :class:`CanvasError` for anything malformed."""
    if not isinstance(counts, str) or not counts.isascii():
        raise CanvasError("A mask from the canvas is not an RLE string: reload the page.")
    runs = _rle_counts(counts)
    if runs is None or sum(runs) != h * w or min(runs, default=0) < 0:
        raise CanvasError(f"A mask from the canvas cannot be decoded (its runs do not cover {w}x{h} pixels): "
                          "reload the page.")
    try:
        m = mask_utils.decode({"size": [h, w], "counts": counts.encode("ascii")})
    except Exception as exc:  # noqa: BLE001 - pycocotools raises bare errors on garbage: one line for the person
        raise CanvasError(f"A mask from the canvas cannot be decoded ({exc}): reload the page.") from None
    if m.shape != (h, w):
        raise CanvasError("A mask from the canvas has the wrong size: reload the page.")
    return m.astype(bool)


def _picture_uri(rgb: np.ndarray) -> str:
    h, w = rgb.shape[:2]
    buf = io.BytesIO()
    if h * w <= PNG_MAX_PIXELS:
        Image.fromarray(rgb).save(buf, "PNG", compress_level=1)
        kind = "png"
    else:
        Image.fromarray(rgb).save(buf, "JPEG", quality=92)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def prepare_picture(image_id: int, rgb: np.ndarray) -> None:
    """Encode a picture the page is about to be sent (the prefetched next image), under the key that
    :func:`canvas_value` looks it up by: opening it then costs no encoding."""
    from ..services import image_digest

    key = image_digest(rgb)
    PAYLOADS.put("img:" + key, lambda: _picture_uri(rgb))
    PAYLOADS.put(f"id:{int(image_id)}", lambda: {"image": key, "w": int(rgb.shape[1]), "h": int(rgb.shape[0])})


def upcoming_picture(image_id: int | None) -> dict | None:
    """``{"image": key, "w", "h"}`` of a prepared picture (:func:`prepare_picture`) whose encoding is
    still in memory, or None: the page fetches and decodes it ahead of PgDn, which then draws at once."""
    if image_id is None:
        return None
    item = PAYLOADS.get(f"id:{int(image_id)}")
    if not isinstance(item, dict) or PAYLOADS.get("img:" + item["image"]) is None:
        return None
    return dict(item)


def prediction_key(sess: Session) -> str | None:
    """A key naming the open prediction (its masks are sent once under it): see :func:`content_key`."""
    return content_key(sess.prediction) if sess.prediction is not None else None


def content_key(p: Prediction) -> str:
    """A key naming what a prediction shows (its candidates' scores, masks and thresholds): two runs
    that give the same answer share it, so the answer of the run made while the annotator typed,
    prepared in the background (:func:`prepare_typed`), is what Enter's value names."""
    key = p._cache.get("canvas_key")
    if key is None:
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((tuple(p.original_size), float(p.score_threshold), float(p.mask_threshold))).encode())
        h.update(np.ascontiguousarray(p.scores, dtype=np.float32).tobytes())
        h.update(p.low_res_logits.detach().to("cpu").contiguous().numpy().tobytes())
        key = p._cache["canvas_key"] = h.hexdigest()
    return key


def _candidate_rows(p: Prediction) -> list[dict]:
    rows = []
    for rank, k in enumerate(p.order):
        rows.append({"id": int(k), "label": str(rank + 1), "score": round(float(p.scores[k]), 3),
                     "colour": list(COLOURS[rank % len(COLOURS)].tolist()), "referred": bool(p.scores[k] > p.score_threshold),
                     "rle": encode_mask(_candidate_mask(p, k))})
    return rows


def prepare_typed(client: str, pred: Prediction) -> None:
    """The answer of the run made while ``client`` typed (:meth:`app.services.speculate.Speculator.on_result`):
    its candidates' masks encoded for the page under the prediction's key, its referred candidates'
    parts judged (on ``pred``, the copy the client's Enter takes), and that key noted as the client's
    latest, which its page asks for (:func:`typed_answer`) and loads ahead of Enter."""
    key = content_key(pred)
    PAYLOADS.put("pred:" + key, lambda: _candidate_rows(pred))
    known = pred._cache.setdefault("part_problems", {})  # as session_part_warnings keeps them
    for k in pred.referred:
        if k not in known:
            known[k] = _part_problem(_candidate_mask(pred, k))
    PAYLOADS.replace(f"typed:{client}", key)


def typed_answer(client: str | None) -> dict | None:
    """``{"pred": key}`` of the latest run made while ``client`` typed whose masks are in memory, or None."""
    key = PAYLOADS.get(f"typed:{client}") if client else None
    if not isinstance(key, str) or PAYLOADS.get("pred:" + key) is None:
        return None
    return {"pred": key}


def _numbered(masks: list[np.ndarray]) -> list[dict]:
    """Fixed targets numbered 1..N in order (read-only pictures: Review, Negatives)."""
    return [{"rle": encode_mask(m), "candidate": None, "edited": False, "label": str(n + 1)} for n, m in enumerate(masks)]


def canvas_value(sess: Session, *, readonly: bool = False, masks: list[np.ndarray] | None = None,
                 no_target: bool | None = None, image: np.ndarray | None = None, doc: str | None = None,
                 before: tuple[list[np.ndarray], bool] | None = None) -> dict | None:
    """The component's value for a session (or, read-only, for given ``image`` / ``masks``).

    ``before``: another version's ``(masks, no_target)`` (Review: the ref as it was rejected); the
    read-only canvas then switches between it and ``masks`` in the browser (B, or its two buttons)."""
    rgb = image if image is not None else sess.image
    if rgb is None:
        return None
    h, w = rgb.shape[:2]
    key = sess.digest if image is None and sess.digest else None
    if key is None:
        from ..services import image_digest

        key = image_digest(rgb)
    PAYLOADS.put("img:" + key, lambda: _picture_uri(rgb))
    pred_key = None
    if image is None and sess.prediction is not None:
        pred_key = prediction_key(sess)
        pred = sess.prediction
        PAYLOADS.put("pred:" + pred_key, lambda: _candidate_rows(pred))
    if masks is not None:
        targets = _numbered(masks)
        nt = bool(no_target)
    else:
        targets = []
        for t in sess.targets:
            if t.candidate is not None and not t.edited and not t.prompts and pred_key is not None:
                targets.append({"candidate": int(t.candidate), "edited": False})
            else:
                targets.append({"rle": encode_mask(t.mask), "candidate": t.candidate, "edited": bool(t.edited)})
                if t.prompts:  # the canvas restores them (prompts.js replays them with the prior on the next prompt)
                    targets[-1].update(prompts=[dict(p) for p in t.prompts], prior=t.prior)
        nt = sess.no_target
    value = {"seq": next(_seq), "doc": doc or f"{key}:{pred_key}:{sess.ref_id}", "image": key, "w": int(w), "h": int(h),
             "pred": pred_key, "targets": targets, "no_target": bool(nt), "readonly": readonly,
             "palette": COLOURS.tolist()}
    if image is None and not readonly:  # the page asks by it for what is prepared meanwhile (next picture, typed answer)
        value["ticket"] = sess.ticket
    if before is not None:
        value["before"] = {"targets": _numbered(before[0]), "no_target": bool(before[1])}
    return value


def target_prompts(item: dict, h: int, w: int) -> tuple[tuple[dict, ...] | None, str | None]:
    """The prompts (and the prior mask, RLE) a canvas target carries, checked: a list of at most
    ``MAX_PROMPTS`` points and boxes whose numbers are finite and lie in the ``w`` x ``h`` picture;
    ``(None, None)`` when it has none; :class:`CanvasError` with one line otherwise."""
    import math

    from ..services.errors import BadInput
    from ..services.refine import MAX_PROMPTS, parse_prompts

    raw, prior = item.get("prompts"), item.get("prior")
    if raw is None or raw == []:
        return None, None
    if not isinstance(raw, list):
        raise CanvasError("An instance's prompts from the canvas are not a list: reload the page.")
    if len(raw) > MAX_PROMPTS:
        raise CanvasError(f"An instance from the canvas has {len(raw)} prompts: at most {MAX_PROMPTS}; reload the page.")
    try:
        prompts = parse_prompts(raw)
    except BadInput as exc:
        raise CanvasError(str(exc)) from None
    for p in prompts:
        xs, ys = ([p["x"]], [p["y"]]) if p["kind"] == "point" else (p["box"][0::2], p["box"][1::2])
        if not all(math.isfinite(v) and 0 <= v <= w for v in xs) or not all(math.isfinite(v) and 0 <= v <= h for v in ys):
            where = f"({p['x']:g}, {p['y']:g})" if p["kind"] == "point" else "(" + ", ".join(f"{v:g}" for v in p["box"]) + ")"
            raise CanvasError(f"A {p['kind']} prompt from the canvas at {where} lies outside the {w}x{h} picture: reload the page.")
    if prior is not None:
        decode_mask(prior, h, w)  # a clear CanvasError when it is not a mask of this picture
    return tuple(prompts), prior


def apply_canvas(value: dict | None, sess: Session) -> bool:
    """Take the target set the browser edited (``value["edit"]``) into the session.

    Returns whether anything was taken. A value for another picture (a stale page) is refused
    with a clear error and the session is left as it was."""
    if not isinstance(value, dict) or not isinstance(value.get("edit"), dict) or sess.image is None:
        return False
    edit = value["edit"]
    h, w = sess.image.shape[:2]
    if value.get("image") != sess.digest or (int(value.get("w", -1)), int(value.get("h", -1))) != (w, h):
        raise CanvasError("The picture on the page is not the open image (another tab changed it): reopen the image.")
    targets = []
    n = sess.prediction.num_candidates if sess.prediction is not None else 0
    for item in edit.get("targets") or []:
        cand = item.get("candidate")
        cand = int(cand) if cand is not None and 0 <= int(cand) < n else None
        if item.get("rle") is None:
            if cand is None:
                raise CanvasError("A target from the canvas names no candidate and has no mask: reload the page.")
            targets.append(Target(_candidate_mask(sess.prediction, cand), cand, False))
            continue
        mask = decode_mask(item["rle"], h, w)
        prompts, prior = target_prompts(item, h, w)
        if mask.any():
            targets.append(Target(mask, cand, bool(item.get("edited", True)), prompts, prior))
    sess.targets = targets
    sess.no_target = bool(edit.get("no_target")) and not targets
    sess.editing = sess.editing or bool(edit.get("ops"))
    return True


# --- the browser's rasterising rules, for tests and API callers ------------------------------------

def stroke_mask(shape: tuple[int, int], points: list[tuple[float, float]], radius: float) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` (image pixels) of the polyline through ``points``
    (image coordinates): what one brush or eraser stroke covers."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = xx + 0.5, yy + 0.5
    out = np.zeros((h, w), bool)
    pts = list(points) if len(points) > 1 else list(points) * 2
    r2 = radius * radius
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        ll = dx * dx + dy * dy
        t = np.zeros_like(cx) if ll == 0 else np.clip(((cx - x0) * dx + (cy - y0) * dy) / ll, 0, 1)
        px, py = x0 + t * dx - cx, y0 + t * dy - cy
        out |= px * px + py * py <= r2
    return out


def polygon_mask(shape: tuple[int, int], points: list[tuple[float, float]]) -> np.ndarray:
    """Pixels whose centre is inside the polygon (even-odd rule), as the canvas fills an outline."""
    h, w = shape
    out = np.zeros((h, w), bool)
    n = len(points)
    if n < 3:
        return out
    for y in range(h):
        yc = y + 0.5
        xs = []
        for i in range(n):
            x0, y0 = points[i]
            x1, y1 = points[(i + 1) % n]
            if (y0 <= yc < y1) or (y1 <= yc < y0):
                xs.append(x0 + (yc - y0) * (x1 - x0) / (y1 - y0))
        xs.sort()
        for a, b in zip(xs[0::2], xs[1::2]):
            lo, hi = max(0, int(np.ceil(a - 0.5))), min(w, int(np.ceil(b - 0.5)))
            if hi > lo:
                out[y, lo:hi] = True
    return out


def outline_edit_mask(mask: np.ndarray, before: list[tuple[float, float]],
                      after: list[tuple[float, float]]) -> np.ndarray:
    """The mask after a vertex of its outline is dragged (the outline tool, ``static/outline.js``).

    Only the pixels between the outline ``before`` and the outline ``after`` change (both filled by
    :func:`polygon_mask`, the polygon tool's rule): ``(mask AND NOT old) OR (new AND (mask OR NOT old))``.
    So an untouched outline changes nothing, and holes and other parts of the target stay."""
    old = polygon_mask(mask.shape, before)
    new = polygon_mask(mask.shape, after)
    return (mask & ~old) | (new & (mask | ~old))


# --- parts of a target --------------------------------------------------------------------------

def part_warnings(masks: list[np.ndarray], labels: list[str]) -> list[str]:
    """One line per target whose connected parts (8-connected) look like an accident.

    The rule: a part is *tiny* when it has fewer than ``TINY_PART_PX`` pixels or less than
    ``TINY_PART_SHARE`` (2%) of its target; parts are *far apart* when the gap between the
    bounding box of a smaller part and that of the largest part is wider than the largest part's
    own bounding-box diagonal. Saving still goes ahead; the annotator is told."""
    return [f"target {label} has {problem}: check it is one object"
            for label, m in zip(labels, masks) if (problem := _part_problem(m))]


def _part_problem(mask: np.ndarray) -> str:
    """What looks accidental about one mask's parts (:func:`part_warnings`' rule), "" when nothing.
    Counted on the mask's bounding box only (the same parts, a fraction of the pixels)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return ""
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    n, _, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    if n <= 2:
        return ""
    parts = stats[1:]
    total = int(parts[:, cv2.CC_STAT_AREA].sum())
    big = parts[int(parts[:, cv2.CC_STAT_AREA].argmax())]
    bx, by, bw, bh = (int(v) for v in big[:4])
    diag = float(np.hypot(bw, bh))
    tiny = far = 0
    for part in parts:
        if part is big:
            continue
        x, y, pw, ph, area = (int(v) for v in part[:5])
        if area < TINY_PART_PX or area < TINY_PART_SHARE * total:
            tiny += 1
        gap_x = max(0, max(bx, x) - min(bx + bw, x + pw))
        gap_y = max(0, max(by, y) - min(by + bh, y + ph))
        if np.hypot(gap_x, gap_y) > diag:
            far += 1
    what = []
    if tiny:
        what.append(f"{tiny} tiny part{'s' if tiny > 1 else ''}")
    if far:
        what.append(f"{far} part{'s' if far > 1 else ''} far from the rest")
    return f"{n - 1} parts ({', '.join(what)})" if what else ""


def session_part_warnings(sess: Session, labels: list[str]) -> list[str]:
    """:func:`part_warnings` for the session's targets; a candidate taken as the model gave it is
    judged once per prediction (a click or an edit elsewhere does not count its parts again)."""
    known = sess.prediction._cache.setdefault("part_problems", {}) if sess.prediction is not None else {}
    out = []
    for label, t in zip(labels, sess.targets):
        if t.candidate is not None and not t.edited and sess.prediction is not None:
            if t.candidate not in known:
                known[t.candidate] = _part_problem(t.mask)
            problem = known[t.candidate]
        else:
            problem = _part_problem(t.mask)
        if problem:
            out.append(f"target {label} has {problem}: check it is one object")
    return out


def parts_html(sess: Session, labels: list[str]) -> str:
    """The per-target parts line under the picture (server side, refreshed after each edit)."""
    if sess.image is None or not sess.targets:
        return "<div id='canvas-parts' class='canvas-parts'></div>"
    warn = session_part_warnings(sess, labels)
    text = " · ".join(warn) if warn else "every target is one connected part or its parts are close together"
    cls = "canvas-parts warn" if warn else "canvas-parts"
    return f"<div id='canvas-parts' class='{cls}'>{text}</div>"


def _from_api(args, kwargs) -> bool:
    for a in (*args, *kwargs.values()):
        if isinstance(a, gr.Request):
            try:
                return (a.headers or {}).get("x-gradio-user") == "api"
            except (AttributeError, TypeError):  # a request without headers (tests)
                return False
    return False


def keep_on_error(n_outputs: int):
    """A decorator for handlers whose outputs include the canvas: a refusal or a bad input shows as a
    warning and every output keeps its value (the picture is never blanked, its tools never blocked).
    Callers of the API (gradio_client, which marks its requests ``x-gradio-user: api``) still get the
    error itself when the handler takes the request."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (gr.Error, UserError, CanvasError) as exc:
                if _from_api(args, kwargs):
                    raise
                gr.Warning(getattr(exc, "message", None) or str(exc))
                return tuple(gr.update() for _ in range(n_outputs)) if n_outputs > 1 else gr.update()
        return handler
    return wrap


# --- the component ------------------------------------------------------------------------------

def canvas_image(key: str) -> str | None:
    """Server function: the picture ``key`` as a data URI (from memory), or None when it is gone."""
    return PAYLOADS.get("img:" + str(key))


def canvas_masks(key: str) -> list | None:
    """Server function: the candidate rows (with RLE masks) of prediction ``key``."""
    return PAYLOADS.get("pred:" + str(key))


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


TEMPLATE = """
<div class="dc-root" tabindex="-1">
  <div class="dc-bar">
    <span class="dc-tools"></span>
    <span class="dc-sep"></span>
    <label class="dc-op">opacity <input class="dc-opacity" type="range" min="0" max="100" value="45"></label>
    <button class="dc-btn dc-zoom-out" title="zoom out (-)">−</button>
    <button class="dc-btn dc-fit" title="fit (0)">fit</button>
    <button class="dc-btn dc-zoom-in" title="zoom in (+)">+</button>
    <span class="dc-help">?</span>
  </div>
  <div class="dc-stage"><canvas class="dc-canvas"></canvas><div class="dc-empty">No image open</div></div>
  <div class="dc-list"></div>
  <div class="dc-status" role="status"></div>
</div>
"""


def make_canvas(elem_id: str, *, readonly: bool = False, height: int = 520,
                refine: Callable[[dict], dict] | None = None,
                upcoming: Callable[[str], dict | None] | None = None,
                typed: Callable[[str], dict | None] | None = None) -> gr.HTML:
    """The canvas component (``readonly``: no editing tools, per-instance toggles only; otherwise the
    outline tool of ``static/outline.js`` comes with it). ``refine``:
    the prompt tools' server call (``payload -> {"rle", ...} | {"error"}``, see
    :func:`app.views.prompts.refine_on_canvas`); with it the canvas gets the click, box and
    refine-candidate tools of ``static/prompts.js``. ``upcoming``: ``ticket -> {"image", "w", "h"} | None``,
    the picture PgDn will open, prepared on the server (:func:`upcoming_picture`); with it the page
    fetches and decodes that picture while the annotator works, and PgDn draws it without waiting.
    ``typed``: ``ticket -> {"pred"} | None``, the answer of the run made while the annotator typed
    (:func:`typed_answer`); with it the page loads that answer's masks after the typing pause, and
    Enter draws them without fetching."""
    js = _static("canvas.js").replace("__READONLY__", "true" if readonly else "false")
    css = _static("canvas.css").replace("__HEIGHT__", str(int(height)))
    functions = [canvas_image, canvas_masks]
    if refine is not None and not readonly:
        def canvas_refine(payload: dict) -> dict:
            """Server function: the mask of an instance's prompts (runs the studio's refiner)."""
            return refine(payload)

        functions.append(canvas_refine)
        js += "\n" + _static("prompts.js")
    if upcoming is not None and not readonly:
        def canvas_upcoming(ticket: str) -> dict | None:
            """Server function: the next picture prepared for the session named by ``ticket``, or None."""
            return upcoming(str(ticket or ""))

        functions.append(canvas_upcoming)
    if typed is not None and not readonly:
        def canvas_typed(ticket: str) -> dict | None:
            """Server function: the latest answer of the typed expression for the session of ``ticket``."""
            return typed(str(ticket or ""))

        functions.append(canvas_typed)
    if not readonly:
        js += "\n" + _static("outline.js")
    return gr.HTML(value=None, html_template=TEMPLATE, css_template=css, js_on_load=js, elem_id=elem_id,
                   elem_classes="deris-canvas", server_functions=functions, padding=False)
