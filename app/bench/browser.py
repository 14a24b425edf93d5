"""The annotator's round trip as a browser feels it: key or click -> the canvas painted.

    python -m app.bench.browser [--model bundled|deris-b|deris-l] [--pictures scenes|photos|large] [--runs 10] [--think 3]
        [--enter-pause 1] [--score-threshold V] [--keep] [--json]

Starts the studio (``launch.py``) on 127.0.0.1 with a collection imported from a folder (the
synthetic scenes for the bundled model; 1024x768 photo-like pictures for DeRIS-B with random
weights, written to a temporary safetensors file; ``--pictures`` chooses: ``scenes``, the synthetic
128x128 scenes, ``photos``, 1024x768 photo-like pictures, ``large``, 4096x3072 ones for zoom and pan),
drives Debian's chromium through Playwright
and times, in the page itself (``performance.now()``, from the key or mouse event to the canvas's next
paint, :mod:`app.views.canvas`), these actions:

* *next image*: PgDn -> the next picture painted on the canvas (with ``--keep``, and the kept
  expression's targets);
* *Enter*: Enter in the expression box right after the text was put there (no pause: the model runs on
  Enter) -> the model's targets painted;
* *Enter after a pause*: another expression typed key by key, ``--enter-pause`` seconds between the last
  key and Enter (the time the page's expression run while typing has, :mod:`app.services.speculate`)
  -> painted;
* *click*: a click on the picture (pick or un-pick a candidate; no server round trip) -> painted;
* *opacity*: the opacity slider moved -> painted;
* *brush move*: one mouse move of a brush stroke -> the stroke painted under the cursor;
* *zoom*: frames per second while zooming step by step (``zoom_fps``).

The server's own handler times are those of ``python -m app.bench annotate``. Medians over
``--runs`` actions of each kind after one warm-up; the CPU and load average are printed, and the
server's counts of its background work (:func:`background_stats`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deris_core.dtypes import DTYPE_CHOICES

from .. import settings

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = settings.get("DERIS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ENTER_PAUSE_S = 1.0  # the last key -> Enter of --enter-pause: a sentence read over before it is run
KEY_DELAY_MS = 60  # between the keys of the typed expression (a quick typist; the page waits 350 ms)

# In-page instrumentation: the time of the last key/mouse press; the canvas records its paints.
_PROBE = """
() => {
  if (window.__rt) return;
  window.__rt = {t0: 0};
  const mark = () => { window.__rt.t0 = performance.now(); };
  for (const kind of ['keydown', 'mousedown', 'mousemove', 'input']) document.addEventListener(kind, mark, true);
}
"""
CV = "[...document.querySelectorAll('#canvas, #canvas *')].find(e => e.__canvas).__canvas"
_STATE = f"() => {{ const S = {CV}; return [S.seq, S.frames || 0]; }}"
_PAINTED_AFTER = f"""
([seq, frames, needSeq]) => {{ const S = {CV}; return S.frames > frames && S.painted > window.__rt.t0
  && (!needSeq || S.seq !== seq); }}
"""
_MEASURE = f"() => {{ const S = {CV}; return {{total: S.painted - window.__rt.t0, targets: S.targets.length}}; }}"
_ZOOM_FPS = f"""
async () => {{
  const S = {CV}; const steps = 60; const t = performance.now();
  for (let i = 0; i < steps; i++) {{
    S.api.zoomAt(i < steps / 2 ? 1.04 : 1 / 1.04, 200, 200);
    await new Promise((r) => requestAnimationFrame(r));  // the canvas paints in the frame before
  }}
  return steps / ((performance.now() - t) / 1000);
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PICTURES = {"scenes": None, "photos": (768, 1024), "large": (3072, 4096)}  # (height, width) of photo-like ones


def prepare(model: str, folder: Path, pictures: str | None = None) -> tuple[str, int]:
    """Pictures for the collection and the weights to serve; returns (weights, number of pictures).
    ``pictures`` defaults to the model's own kind: scenes for the bundled model, photos for DeRIS-B / L
    (random weights of that size)."""
    import cv2

    from .latency import synthetic_photo

    images = folder / "pictures"
    images.mkdir(parents=True)
    pictures = pictures or ("scenes" if model == "bundled" else "photos")
    if pictures == "scenes":
        from deris_core.synthetic import generate

        generate(folder / "syn", seed=5, images=24)
        for p in sorted((folder / "syn" / "images" / "train2014").iterdir()):
            shutil.copy(p, images / p.name)
    else:
        h, w = PICTURES[pictures]
        for i in range(16 if pictures == "photos" else 6):
            cv2.imwrite(str(images / f"photo_{i:02d}.jpg"), synthetic_photo(h, w, seed=i)[:, :, ::-1])
    count = len(list(images.iterdir()))
    if model == "bundled":
        return "bundled", count
    import torch

    from deris_core.checkpoint import save_weights
    from deris_core.config import get_config
    from deris_core.model import build_deris
    from deris_core.weights import BUNDLED_DIR

    torch.manual_seed(0)
    cfg = get_config(f"{model}-grefcoco")
    weights = folder / f"{model}-random" / "model.safetensors"
    weights.parent.mkdir()
    save_weights(build_deris(cfg), weights, cfg)
    shutil.copy(BUNDLED_DIR / "tokenizer.spm", weights.parent / "tokenizer.spm")
    return str(weights), count


def serve(weights: str, db: Path, dtype: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = settings.child_env({"GRADIO_ANALYTICS_ENABLED": "False"})
    cmd = [sys.executable, "launch.py", "--weights", weights, "--db", str(db), "--port", str(port), "--device", "cpu",
           "--dtype", dtype]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    lines: list[str] = []
    while time.time() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        lines.append(line)
        if "Running on local URL" in line:
            return proc, f"http://127.0.0.1:{port}/"
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the studio did not start:\n" + "".join(lines[-20:]))


def background_stats(url: str) -> dict:
    """The studio's counts of its background work (its undocumented ``background_stats`` endpoint):
    ``{"prefetch": {...}, "speculation": {...}}``."""
    import urllib.request

    base = url.rstrip("/") + "/gradio_api/call/background_stats"
    req = urllib.request.Request(base, data=b'{"data": []}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{base}/{event}", timeout=30) as r:
        lines = r.read().decode().splitlines()
    data = [ln[len("data:"):].strip() for ln in lines if ln.startswith("data:")]
    return json.loads(data[-1])[0]


def _timed(page, action, server: bool = True) -> dict:
    """Run ``action`` and time it to the canvas's next paint (after a new server value if ``server``)."""
    seq, frames = page.evaluate(_STATE)
    action()
    page.wait_for_function(_PAINTED_AFTER, arg=[seq, frames, server], timeout=120_000)
    return page.evaluate(_MEASURE)


def _inside(mask) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its border and from the image's (a click there cannot miss;
    a mask over the whole picture, as random weights give, is clicked in the middle, not on the edge
    where a rounded mouse position falls outside the canvas)."""
    import cv2
    import numpy as np

    framed = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(framed, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the centre of image pixel (x, y) on the canvas, the window scrolled first when
    that point is outside it (a mouse event outside the window is lost: the canvas reaches below the fold)."""
    canvas = page.locator("#canvas canvas").first
    sx, sy = page.evaluate(f"{CV}.api.toScreen({x + 0.5}, {y + 0.5})")
    box = canvas.bounding_box()
    height = page.viewport_size["height"]
    if not 0 <= box["y"] + sy < height:
        page.evaluate(f"window.scrollBy(0, {box['y'] + sy - height / 2})")
        box = canvas.bounding_box()
    return box["x"] + sx, box["y"] + sy


def _set_score_threshold(page, value: float) -> None:
    """Move the score threshold slider to ``value`` (its number box, in the Thresholds accordion)."""
    page.get_by_text("Thresholds", exact=True).first.click()
    box = page.locator("#score-thr input[type=number]").first
    box.fill(f"{value:g}")
    box.press("Tab")
    page.wait_for_function(f"Number(document.querySelector('#score-thr input[type=range]')?.value) === {value}",
                           timeout=10_000)


def drive(url: str, runs: int, expression: str, where, think: float = 0.0, other: str = "the thing on the right",
          enter_pause: float = ENTER_PAUSE_S, key_delay_ms: float = KEY_DELAY_MS,
          score_threshold: float | None = None, keep: bool = False) -> dict[str, list[dict]]:
    """Open the studio in chromium and time ``runs`` actions of each kind (after one warm-up each),
    ``think`` seconds spent on each image before PgDn (the time the next image is prefetched in).
    On each image Enter is timed twice: ``other`` put in the box and Enter at once (the model runs on
    Enter), then ``expression`` typed key by key (``key_delay_ms`` apart) and Enter ``enter_pause``
    seconds after the last key.

    ``where(position)`` gives the image pixel to click on the queue's ``position``-th image (inside
    the best candidate that covers pixels, so that the click adds or removes it) and the display scale,
    or None when none does (that image's click is not timed). ``keep``: the *keep the expression* box is
    ticked, so PgDn also runs the last typed ``expression`` on the next image."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[dict]] = {"next_image": [], "enter": [], "enter_after_pause": [], "click": [], "opacity": [],
                                  "brush_move": [], "zoom_fps": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.wait_for_function("document.querySelector('#queue-pos')?.innerText.includes('in the queue')",
                               timeout=120_000)
        page.evaluate(_PROBE)
        if score_threshold is not None:
            _set_score_threshold(page, score_threshold)
        if keep:
            page.locator("#keep-expr input").check()
        page.locator("body").click(position={"x": 5, "y": 5})
        _timed(page, lambda: page.keyboard.press("d"))  # the first image
        box = page.locator("#expression textarea, #expression input").first
        for i in range(runs + 1):
            page.locator("body").click(position={"x": 5, "y": 5})  # the queue wraps after the last image
            time.sleep(think)
            r = _timed(page, lambda: page.keyboard.press("PageDown"))
            if i:
                out["next_image"].append(r)
            box.fill(other)
            r = _timed(page, lambda: box.press("Enter"))
            if i:
                out["enter"].append(r)
            box.fill("")
            box.press_sequentially(expression, delay=key_delay_ms)
            time.sleep(enter_pause)
            r = _timed(page, lambda: box.press("Enter"))
            if i:
                out["enter_after_pause"].append(r)
            pos = int(page.locator("#queue-pos").inner_text().split("/")[0].split()[-1])
            spot = where(pos)
            page.keyboard.press("Escape")
            page.evaluate("window.scrollTo(0, 0)")
            if spot is not None:
                x, y, _ = spot
                r = _timed(page, lambda: page.mouse.click(*_screen(page, x, y)), server=False)
                if i:
                    out["click"].append(r)
            slider = page.locator("#canvas .dc-opacity")
            r = _timed(page, lambda: slider.fill(str(30 + 10 * (i % 5))), server=False)
            if i:
                out["opacity"].append(r)
            page.keyboard.press("n")
            page.keyboard.press("b")
            w, h = page.evaluate(f"[{CV}.W, {CV}.H]")
            page.mouse.move(*_screen(page, w * 0.2, h * 0.2))
            page.mouse.down()
            for k in range(1, 9):
                r = _timed(page, lambda: page.mouse.move(*_screen(page, w * (0.2 + 0.07 * k), h * (0.2 + 0.05 * k))),
                           server=False)
                if i:
                    out["brush_move"].append(r)
            page.mouse.up()
            page.keyboard.press("v")
            fps = page.evaluate(_ZOOM_FPS)
            page.evaluate(f"{CV}.api.fit()")
            if i:
                out["zoom_fps"].append({"total": fps})
        browser.close()
    return out


def _click_targets(weights: str, db: Path, expression: str, dtype: str):
    """What the server's model will answer on each picture, to know where a click picks something
    (a fresh collection: the queue's n-th image has id n)."""
    from deris_core.weights import load_predictor

    from ..viewkit.overlay import view_scale
    from ..store import Store

    predictor = load_predictor(weights, device="cpu", dtype=dtype)
    store = Store(str(db))
    cache: dict[int, tuple[int, int, float]] = {}

    def where(position: int) -> tuple[int, int, float] | None:
        """None when no candidate covers a pixel (a model out of its domain): no click to time there."""
        if position not in cache:
            rgb = store.load_image(position)
            pred = predictor.predict(expression, image=predictor.set_image(rgb))
            masks = [m for m in (pred.mask(int(k)) > 0 for k in pred.order) if m.sum() >= 9]
            cache[position] = (*_inside(masks[0]), view_scale(rgb.shape)) if masks else None
        return cache[position]

    return where


def _median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def run(model: str = "bundled", runs: int = 10, dtype: str = "auto", think: float = 0.0,
        enter_pause: float = ENTER_PAUSE_S, score_threshold: float | None = None, pictures: str | None = None,
        keep: bool = False) -> dict:
    from deris_core.hardware import choose_precision, cpu_info

    from ..dataset.collection import import_images
    from ..store import Store

    with tempfile.TemporaryDirectory(prefix="deris_browser_bench_") as tmp:
        folder = Path(tmp)
        weights, total = prepare(model, folder, pictures)
        db = folder / "studio.sqlite"
        store = Store(str(db))
        import_images(store, folder / "pictures")
        store.close()
        pictures = pictures or ("scenes" if model == "bundled" else "photos")
        expression = "the red circle" if pictures == "scenes" else "the cat on the left"
        other = "all blue squares" if pictures == "scenes" else "the dog on the right"
        where = _click_targets(weights, db, expression, dtype)
        proc, url = serve(weights, db, dtype)
        try:
            rows = drive(url, runs, expression, where, think, other, enter_pause, score_threshold=score_threshold,
                         keep=keep)
            background = background_stats(url)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    info = cpu_info()
    result: dict = {"model": model, "pictures": pictures, "runs": runs, "cpu": info.summary(),
                    "precision": choose_precision(dtype).describe(),
                    "loadavg": list(os.getloadavg()), "think_s": think, "enter_pause_s": enter_pause,
                    "score_threshold": score_threshold, "keep": keep,
                    "background": background}
    for kind, rs in rows.items():
        unit = "fps" if kind == "zoom_fps" else "ms"
        result[kind] = {f"median_{unit}": _median(rs, "total"), f"all_{unit}": [round(r["total"], 1) for r in rs],
                        "median_targets": _median(rs, "targets")}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.bench.browser", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", choices=["bundled", "deris-b", "deris-l"])
    ap.add_argument("--pictures", default=None, choices=list(PICTURES),
                    help="scenes (128x128), photos (1024x768) or large (4096x3072); default: scenes for the bundled "
                         "model, photos for DeRIS-B")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="as launch.py --dtype")
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds spent on each image before PgDn (3: the next image was prefetched meanwhile)")
    ap.add_argument("--enter-pause", type=float, default=ENTER_PAUSE_S,
                    help="seconds between the last key of the typed expression and Enter, for the second Enter "
                         f"on each image (default {ENTER_PAUSE_S:g}: a person who reads the sentence over; the "
                         "first Enter follows the text at once)")
    ap.add_argument("--score-threshold", type=float, default=None,
                    help="move the score threshold slider here first (default: the model's own; random DeRIS-B "
                         "weights refer to 19 of 20 candidates at it, 0.84 to a few: what Enter draws)")
    ap.add_argument("--keep", action="store_true",
                    help="tick 'keep the expression for the next image': PgDn also runs the typed expression there")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.enter_pause < 0:
        ap.error("--enter-pause must be 0 or more")
    if not Path(CHROMIUM).is_file():
        print(f"error: chromium not found at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    r = run(args.model, args.runs, args.dtype, args.think, args.enter_pause, args.score_threshold, args.pictures,
            args.keep)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"CPU: {r['cpu']}; load average {' '.join(f'{x:.2f}' for x in r['loadavg'])}")
    print(f"{r['model']} model on {r['pictures']}, {r['precision']}; medians of {r['runs']} after one warm-up, in chromium"
          f"{f', {args.think:g} s on each image before PgDn' if args.think else ''}"
          f"{', the expression kept for the next image' if args.keep else ''}"
          f"{f', score threshold {args.score_threshold:g}' if args.score_threshold is not None else ''}:")
    for kind, label in (("next_image", "PgDn -> next image painted"), ("enter", "Enter at once -> painted"),
                        ("enter_after_pause", f"Enter {args.enter_pause:g} s after the last key -> painted"),
                        ("click", "click (toggle) -> painted"), ("opacity", "opacity -> painted"),
                        ("brush_move", "brush move -> painted")):
        targets = f" ({r[kind]['median_targets']:g} targets drawn)" if kind.startswith("enter") else ""
        print(f"  {label:<38} {r[kind]['median_ms'] or 0:7.1f} ms{targets}")
    print(f"  {'zoom':<38} {r['zoom_fps']['median_fps'] or 0:7.1f} frames/s")
    spec = r["background"]["speculation"]
    print(f"  expression run while typing: {spec['hits']} Enters answered from it, {spec['waited']} waited for it, "
          f"{spec['misses']} ran the model ({spec['ran']} runs, {spec['cancelled']} cancelled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
