"""``python -m app.bench refine``: clicks to 85% / 90% IoU and the per-click latency of a refiner.

(a) the synthetic evaluation set's single-target objects (``deris_core.synthetic``, seed 7), from
nothing and from the DeRIS candidate the bundled model scores best for the object's sentence;
(b) the hand-outlined photos of ``tests/data/refine_photos``; then the latency of one click and of
the per-image work (``set_image``: SAM's embedding) at 1024x768, on CPU, with the CPU named.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .build import build_refiner
from .clicks import simulate, summarize
from .data import photo_objects, synthetic_objects

log = logging.getLogger(__name__)


def _deris_priors(objs, weights: str) -> list[np.ndarray]:
    """The best-scoring DeRIS candidate's mask for each object's sentence."""
    from deris_core.weights import load_predictor

    predictor = load_predictor(weights, device="cpu")
    out, states = [], {}
    for o in objs:
        if o.image_key not in states:
            states[o.image_key] = predictor.set_image(o.image)
        pred = predictor.predict(o.sentence, image=states[o.image_key])
        out.append(pred.mask(pred.order[0]).astype(bool))
    return out


def _table(refiner, objs, priors=None, max_clicks: int = 20) -> dict:
    runs = []
    for i, o in enumerate(objs):
        state = refiner.set_image(o.image, o.image_key)
        runs.append(simulate(refiner, state, o.gt, None if priors is None else priors[i], max_clicks=max_clicks))
    return summarize(runs, max_clicks)


def latency(refiner, runs: int = 10) -> dict:
    """Median wall and CPU time of one click at 1024x768 (CPU time: the machine's other work barely
    counts), of a three-click prompt, and of the per-image work."""
    photo = cv2.cvtColor(cv2.imread(str(Path(__file__).resolve().parents[2] / "tests" / "data" / "refine_photos"
                                        / "camera.jpg")), cv2.COLOR_BGR2RGB)
    image = cv2.resize(photo, (1024, 768), interpolation=cv2.INTER_LINEAR)
    set_wall, t0, c0 = [], 0.0, 0.0
    for k in range(3):  # a new image each time: the key differs
        t0, c0 = time.perf_counter(), time.process_time()
        state = refiner.set_image(image, f"latency-{k}-{time.time()}")
        set_wall.append((time.perf_counter() - t0, time.process_time() - c0))
    spots = [(300, 450), (520, 300), (700, 600), (200, 200), (800, 150)]  # coat, face, grass, sky, buildings
    wall, cpu, wall3 = [], [], []
    for i in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        refiner.refine(state, [spots[i % len(spots)]], [1])  # one click: the goal's case
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    for _ in range(3):  # the third click of a sequence: two positives and a negative far apart
        t0 = time.perf_counter()
        refiner.refine(state, [(300, 450), (520, 300), (700, 600)], [1, 1, 0])
        wall3.append(time.perf_counter() - t0)
    return {"image": "1024x768 (camera.jpg resized)",
            "click_ms_wall": round(1000 * statistics.median(wall), 1),
            "click_ms_cpu": round(1000 * statistics.median(cpu), 1),
            "three_clicks_ms_wall": round(1000 * statistics.median(wall3), 1),
            "set_image_ms_wall": round(1000 * statistics.median(w for w, _ in set_wall), 1),
            "set_image_ms_cpu": round(1000 * statistics.median(c for _, c in set_wall), 1)}


def bench_refine(spec: str = "grabcut", objects: int = 40, weights: str = "bundled", threads: int | None = 2,
                 work: Path | None = None) -> dict:
    """Every figure of ``docs/refine.md`` for one refiner (``--refiner`` spec)."""
    from deris_core.hardware import cpu_info
    from deris_core.synthetic import generate

    if threads:
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    refiner = build_refiner(spec, device="cpu")
    res: dict = {"refiner": getattr(refiner, "name", spec), "spec": spec}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work or tmp) / "eval7"
        if not (root / "grefcoco" / "instances.json").is_file():
            generate(root, seed=7, images=150)  # testA + testB: 26 images, more than 40 single targets
        objs = synthetic_objects(root, objects)
        t0 = time.perf_counter()
        res["synthetic_from_nothing"] = _table(refiner, objs)
        priors = _deris_priors(objs, weights)
        res["synthetic_from_deris"] = _table(refiner, objs, priors)
        res["synthetic_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    res["photos"] = _table(refiner, photo_objects())
    res["photos_s"] = round(time.perf_counter() - t0, 1)
    res["latency"] = latency(refiner)
    res["cpu"] = cpu_info().summary()
    res["threads"] = threads
    res["load_average_1min"] = round(os.getloadavg()[0], 2)
    return res


def print_table(res: dict) -> None:
    """The Markdown table of docs/refine.md."""
    print(f"refiner: {res['refiner']} (--refiner {res['spec']}); CPU: {res['cpu']}; threads {res['threads']}; "
          f"load average {res['load_average_1min']}")
    print()
    print("| objects | start | n | NoC@85 | NoC@90 | >20 clicks @90 | IoU@1 | IoU@3 | IoU@5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, what, start in (("synthetic_from_nothing", "synthetic (seed 7, testA+testB)", "nothing"),
                             ("synthetic_from_deris", "synthetic (seed 7, testA+testB)", "best DeRIS candidate"),
                             ("photos", "photos (tests/data/refine_photos)", "nothing")):
        s = res[key]
        start_txt = start if start == "nothing" else f"{start} (IoU {s['start_IoU']:.3f})"
        print(f"| {what} | {start_txt} | {s['objects']} | {s['NoC@85']:.2f} | {s['NoC@90']:.2f} | {s['fail@90']} | "
              f"{s['IoU@1']:.3f} | {s['IoU@3']:.3f} | {s['IoU@5']:.3f} |")
    lat = res["latency"]
    print()
    print(f"one click at {lat['image']}: {lat['click_ms_wall']} ms wall, {lat['click_ms_cpu']} ms CPU time (median of "
          f"10, 5 places); three clicks far apart: {lat['three_clicks_ms_wall']} ms wall; per-image work (set_image, "
          f"SAM's embedding): {lat['set_image_ms_wall']} ms wall, {lat['set_image_ms_cpu']} ms CPU time")
