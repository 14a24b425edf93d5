"""Benchmarks of the studio's server side (prints figures; never a timed test).

    python -m app.bench store [--refs 100000] [--db PATH | --db postgresql://user@host:5432/bench]
    python -m app.bench team [--db PATH_OR_URL] [--servers 2] [--clients 8] [--seconds 60] [--think 0]   (app.bench.team)
    python -m app.bench annotate [--weights bundled] [--actions 50]
    python -m app.bench preannotate [--model deris-b-grefcoco --model bundled] [--images 3] [--sentences 8]
    python -m app.bench latency [--config deris-b-grefcoco|bundled] [--device cpu] [--dtype fp32|bf16]
    python -m app.bench loop [--refs 400] [--minutes 15] [--work DIR] [--store DB [--replay DIR]]   (fine-tune from reviewed refs, measured)
    python -m app.bench refine [--refiner grabcut|sam2:facebook/sam2.1-hiera-tiny|sam:facebook/sam-vit-base] [--objects 40]   (app.refine.bench)

``store``: a database with N refs and R review decisions (made once in bulk), then the median
time of what an annotator waits for: saving a new ref (a drawn 640x480 mask), saving an edit
(versioned), loading the Dataset view (counts + the first page of 50 refs, and a deep page), and
opening the Dataset view whole: progress, per-person review statistics and the first page.
``latency``: the Enter and threshold-change paths of the Annotate view (:mod:`app.bench.latency`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from deris_core.dtypes import DTYPE_CHOICES

from ..services import Actor, RefService
from ..store import RefStatus, Store


def _median_ms(fn, n: int, p95: list | None = None) -> float:
    """Median of ``n`` calls in ms (the 95th percentile appended to ``p95`` when given)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if p95 is not None:
        p95.append(round(1000 * sorted(times)[min(n - 1, int(0.95 * n))], 2))
    return 1000 * statistics.median(times)


def fill(store: Store, refs: int, images: int = 2000, seed: int = 0, reviews: int | None = None) -> None:
    """Add ``refs`` refs over ``images`` 640x480 images (1-3 sentences, 0-2 targets each, in turn a
    draft, done, accepted, rejected) with ``reviews`` review decisions among them (default: every
    accepted and rejected one, half the refs), through the studio's own operations
    (:class:`~app.services.RefService`: the same rows, checks and events as the app), in one
    transaction (about 15 s for 100 000 refs and 50 000 decisions on a 2-core machine)."""
    rng = np.random.default_rng(seed)
    service = RefService(store)
    reviews = refs // 2 if reviews is None else reviews
    category = store.category_id("object")
    decided = 0
    with store.transaction() as db:
        first = [store.write_image_record(db, f"img{i}.jpg", 640, 480, sha256=f"bench{i}") for i in range(images)]
        targets: dict[int, list[int]] = {}
        for image_id in first:
            for _ in range(3):
                m = np.zeros((480, 640), bool)
                x, y = rng.integers(0, 500), rng.integers(0, 350)
                m[y:y + 100, x:x + 120] = True
                targets.setdefault(image_id, []).append(store.insert_instance(db, image_id, m, category, "import"))
        for r in range(1, refs + 1):
            image_id = first[int(rng.integers(0, images))]
            n_t = int(rng.integers(0, 3))
            sentences = [f"the object number {r} seen from side {pos}" for pos in range(int(rng.integers(1, 4)))]
            status = [RefStatus.DRAFT, RefStatus.DONE, RefStatus.REVIEWED, RefStatus.REJECTED][r % 4]
            saved = service.save(Actor(f"annotator{r % 7}"), image_id, sentences, instance_ids=targets[image_id][:n_t],
                                 no_target=n_t == 0, status=status if status is RefStatus.DRAFT else RefStatus.DONE, db=db)
            if status in (RefStatus.REVIEWED, RefStatus.REJECTED) and decided < reviews:
                accept = status is RefStatus.REVIEWED
                service.review(Actor(f"reviewer{r % 3}"), saved.ref_id, "accept" if accept else "reject",
                               None if accept else "wrong_mask", expected_version=saved.version, db=db)
                decided += 1


def bench_store(refs: int, db: str | Path | None, repeats: int = 50, reviews: int = 50_000) -> dict:
    folder = tempfile.TemporaryDirectory(prefix="deris_bench_")
    path = db or Path(folder.name) / "bench.sqlite"
    store = Store(path)
    path = store.location  # reopened below as the same database (a URL or a file)
    t0 = time.perf_counter()
    if store.stats()["refs"] < refs:
        fill(store, refs, reviews=min(reviews, refs // 2))
    fill_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(repeats):
        m = np.zeros((480, 640), bool)
        x, y = rng.integers(0, 500), rng.integers(0, 350)
        m[y:y + 90, x:x + 110] = True
        masks.append(m)
    it = iter(masks)
    new_ids: list[int] = []
    bench, refs_service = Actor("bench"), RefService(store)  # the app's save, permission table included
    p95: list[float] = []
    save_ms = _median_ms(lambda: new_ids.append(refs_service.save(bench, 17, ["the thing on the left"],
                                                                  masks=[next(it)]).ref_id), repeats, p95)
    rid, version = new_ids[-1], 1
    state = {"v": version}

    def edit() -> None:
        refs_service.save(bench, 17, ["the thing on the left", f"edit {state['v']}"], instance_ids=store.ref(rid).instance_ids,
                          ref_id=rid, expected_version=state["v"])
        state["v"] += 1

    edit_ms = _median_ms(edit, 20, p95)
    assert store.ref(rid).version == 21, "the edits were not saved"
    first_page_ms = _median_ms(lambda: (store.stats(), store.refs_page(0, 50)), 20)
    deep_page_ms = _median_ms(lambda: store.refs_page(50 * 1500, 50), 20)
    filtered_ms = _median_ms(lambda: store.refs_page(0, 50, status=RefStatus.REVIEWED, annotator="annotator3"), 20)
    from ..store.queue import ImageFilter, image_page, neighbour, position

    todo = ImageFilter(status="todo")
    queue_ms = _median_ms(lambda: (neighbour(store, todo, 1000, 1), position(store, todo, 1000),
                                   image_page(store, todo, 0, 24), store.refs_page(0, 200, image_id=1000)), 20)
    from ..store.queue import progress
    from ..store.review import person_stats

    reviewer, service = Actor("bench-reviewer"), RefService(store)

    cold = Store(path)  # a fresh handle: the first open after a start counts every decision
    t0 = time.perf_counter()
    person_stats(cold)
    stats_cold_ms = 1000 * (time.perf_counter() - t0)
    cold.close()
    view_times, stats_times = [], []
    for k in range(20):  # between two opens a teammate reviews a ref (its decision must show)
        service.review(reviewer, 1000 + k, "accept")
        t0 = time.perf_counter()
        progress(store), person_stats(store), store.refs_page(0, 50)
        view_times.append(time.perf_counter() - t0)
        service.review(reviewer, 2000 + k, "reject", "wrong_mask")
        t0 = time.perf_counter()
        person_stats(store)
        stats_times.append(time.perf_counter() - t0)
    view_ms, stats_ms = 1000 * statistics.median(view_times), 1000 * statistics.median(stats_times)
    n_reviews = store.event_count("review")
    out = {"refs": store.stats()["refs"], "review_decisions": n_reviews, "fill_s": round(fill_s, 1), "save_new_ref_ms": round(save_ms, 2),
           "save_new_ref_p95_ms": p95[0], "save_edit_ms": round(edit_ms, 2), "save_edit_p95_ms": p95[1],
           "backend": store.location.kind, "first_page_with_counts_ms": round(first_page_ms, 2),
           "page_1500_ms": round(deep_page_ms, 2), "filtered_first_page_ms": round(filtered_ms, 2),
           "queue_step_with_filter_ms": round(queue_ms, 2), "person_stats_first_open_ms": round(stats_cold_ms, 2),
           "person_stats_ms": round(stats_ms, 2),
           "dataset_view_open_ms": round(view_ms, 2), "images": store.stats()["images"]}
    store.close()
    folder.cleanup()
    return out


def bench_annotate(weights: str, actions: int = 50, threads: int = 2) -> dict:
    """Server-side latency of the annotator's actions on a collection of synthetic scenes."""
    import torch

    from deris_core.synthetic import generate
    from deris_core.weights import load_predictor

    from ..dataset.collection import import_images
    from ..viewkit.picking import hit
    from ..viewkit.session import Session
    from ..store.queue import ImageFilter, neighbour, position

    from .latency import render_and_encode

    torch.set_num_threads(threads)
    folder = tempfile.TemporaryDirectory(prefix="deris_bench_")
    root = Path(folder.name)
    cache = str(root / "gradio_cache")
    generate(root / "syn", seed=3, images=actions + 1)
    store = Store(root / "b.sqlite")
    import_images(store, root / "syn" / "images" / "train2014", progress=False)
    grefs = json.loads((root / "syn" / "grefcoco" / "grefs(unc).json").read_text())
    sentences = [r["sentences"][0]["raw"] for r in grefs]
    predictor = load_predictor(weights, device="cpu")
    enter, click, nxt = [], [], []
    image_id = None
    for k in range(actions + 3):  # the first 3 are warm-up
        t0 = time.perf_counter()
        image_id = neighbour(store, ImageFilter(), image_id, 1, wrap=True)
        rgb = store.load_image(image_id)
        sess = Session(image=rgb, image_state=predictor.set_image(rgb), image_id=image_id)
        position(store, ImageFilter(), image_id)
        store.refs_page(0, 200, image_id=image_id)
        render_and_encode(sess, cache)
        t1 = time.perf_counter()
        sess.apply_prediction(predictor.predict(sentences[k % len(sentences)], image=sess.image_state))
        render_and_encode(sess, cache)
        t2 = time.perf_counter()
        p = sess.prediction
        best = p.order[0]
        ys, xs = np.nonzero(p.mask(best))
        x, y = (int(xs[len(xs) // 2]), int(ys[len(ys) // 2])) if len(xs) else (0, 0)
        action = hit(p, [t.mask for t in sess.targets], x, y)
        if action.action == "remove":
            sess.change()
            del sess.targets[action.target]
        elif action.action == "add":
            sess.toggle_candidates(sess.selected_candidates() + [action.candidate])
        render_and_encode(sess, cache)
        t3 = time.perf_counter()
        if k >= 3:
            nxt.append(t1 - t0)
            enter.append(t2 - t1)
            click.append(t3 - t2)
    folder.cleanup()
    ms = lambda v: round(1000 * statistics.median(v), 1)  # noqa: E731
    return {"model": getattr(predictor, "description", weights), "image": "128x128 synthetic scene", "actions": actions,
            "next_image_ready_ms": ms(nxt), "enter_to_overlay_ms": ms(enter), "click_to_overlay_ms": ms(click),
            "keys_per_ref_when_the_model_is_right": "the sentence + Enter + Ctrl+Enter (then PgDn for the next image)"}


def bench_preannotate(model: str, images: int = 3, sentences: int = 8, threads: int = 2, dtype: str = "auto") -> dict:
    """Pre-annotation throughput in images and sentences per hour, three ways: the images encoded
    together and their (image, sentence) pairs decoded in batches across images
    (:func:`~app.curate.preannotate.predict_images`), each image encoded once with its sentences
    batched (:func:`~app.curate.preannotate.predict_image`, what ``python -m app.curate preannotate``
    runs), and one pair at a time (encode + predict per pair; timed on the first image only, to keep
    the run short). ``model``: ``bundled`` (128x96 scenes) or a config name (random weights, 1024x768
    photo-like pictures: speed does not depend on the weights; any tokenizer's ids fit the vocabulary)."""
    import torch

    from deris_core.tokenizer import BEiT3Tokenizer
    from deris_core.weights import load_predictor

    from ..curate.preannotate import predict_image, predict_images, write_results
    from .latency import synthetic_photo

    torch.set_num_threads(threads)
    if model == "bundled":
        predictor = load_predictor("bundled", device="cpu", dtype=dtype)
        rng = np.random.default_rng(0)
        pictures = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(images)]
    else:
        from deris_core.tools.bench_setup import build

        predictor, _ = build(model, "cpu", dtype)
        predictor.tokenizer = BEiT3Tokenizer(Path(__file__).resolve().parents[2] / "assets" / "bundled" / "tokenizer.spm",
                                             predictor.cfg.max_token)
        pictures = [synthetic_photo(768, 1024, seed=k) for k in range(images)]
    words = ["the red circle", "all blue shapes", "the largest star", "the two green triangles", "the dog on the left",
             "a person holding an umbrella", "the car behind the bus", "nothing like a unicorn"]
    sents = [words[k % len(words)] + (f" number {k // len(words)}" if k >= len(words) else "") for k in range(sentences)]
    folder = tempfile.TemporaryDirectory(prefix="deris_bench_")
    store = Store(Path(folder.name) / "p.sqlite")
    ids = [store.add_image(p) for p in pictures]
    predict_image(predictor, pictures[0], ids[0], sents, batch=sentences)  # warm-up of the shapes
    predict_image(predictor, pictures[0], ids[0], sents[:1], batch=1)
    if images > 1:
        predict_images(predictor, [(pictures[0], ids[0], sents), (pictures[0], ids[0], sents)], batch=sentences)
    t0 = time.perf_counter()
    write_results(store, predict_images(predictor, [(p, i, sents) for i, p in zip(ids, pictures)], batch=sentences),
                  "across")
    across = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, rgb in zip(ids, pictures):
        write_results(store, predict_image(predictor, rgb, i, sents, batch=sentences), "batched")
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in sents:
        write_results(store, predict_image(predictor, pictures[0], ids[0], [s], batch=1), "single")
    single = (time.perf_counter() - t0) * images  # per image, as if for every image
    folder.cleanup()
    n = images * sentences

    def rates(seconds: float) -> dict:
        return {"images_per_hour": round(3600 * images / seconds), "sentences_per_hour": round(3600 * n / seconds)}

    return {"model": predictor.description or model, "dtype": str(predictor.precision.dtype).replace("torch.", ""),
            "image": f"{pictures[0].shape[1]}x{pictures[0].shape[0]}", "images": images, "sentences_per_image": sentences,
            "batched_across_images": rates(across), "batched_per_image": rates(batched),
            "one_pair_at_a_time": rates(single), "speed_up_across_images": round(single / across, 2),
            "batched_pairs_per_s": round(n / batched, 2), "threads": threads}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# --- the subcommands: each its options and its run, one table ---------------------------------------


def _store_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--refs", type=int, default=100_000)
    s.add_argument("--reviews", type=int, default=50_000, help="review decisions among the refs")
    s.add_argument("--db", help="reuse (or create) this database (a SQLite file or a postgresql:// URL) instead of "
                                "a temporary SQLite file")
    s.add_argument("--json", action="store_true")


def _store(args: argparse.Namespace) -> dict:
    return bench_store(args.refs, args.db, reviews=args.reviews)


def _annotate_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("--weights", default="bundled")
    a.add_argument("--actions", type=int, default=50)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--json", action="store_true")


def _annotate(args: argparse.Namespace) -> dict:
    return bench_annotate(args.weights, args.actions, args.threads)


def _preannotate_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--model", action="append", default=None,
                   help="bundled, or a config name such as deris-b-grefcoco (random weights); repeatable "
                        "(default: deris-b-grefcoco and bundled)")
    b.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="as launch.py --dtype")
    b.add_argument("--images", type=int, default=3)
    b.add_argument("--sentences", type=int, default=8)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", action="store_true")


def _preannotate(args: argparse.Namespace) -> int:
    """Each model's images and sentences per hour, three ways; prints its own table."""
    from deris_core.hardware import cpu_info

    cpu = cpu_info().summary()
    runs = [bench_preannotate(m, args.images, args.sentences, args.threads, args.dtype)
            for m in (args.model or ["deris-b-grefcoco", "bundled"])]
    if args.json:
        print(json.dumps({"cpu": cpu, "load_average_1min": round(os.getloadavg()[0], 2), "runs": runs}))
        return 0
    print(f"pre-annotation on {cpu}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}")
    for r in runs:
        print(f"{r['model']} ({r['dtype']}), {r['images']} images of {r['image']} x {r['sentences_per_image']} "
              "sentences:")
        for way in ("batched_across_images", "batched_per_image", "one_pair_at_a_time"):
            v = r[way]
            print(f"  {way.replace('_', ' '):24s} {v['images_per_hour']:>9,} images/hour  "
                  f"{v['sentences_per_hour']:>10,} sentences/hour")
    return 0


def _latency_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--config", default="deris-b-grefcoco", help="a published config (random weights) or bundled")
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES, help="as deris_core.tools.bench --dtype")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--json", action="store_true")


def _latency(args: argparse.Namespace) -> dict | int:
    """The Annotate view's latency: a table of its own, or the figures for ``--json``."""
    import torch

    from .latency import app_latency

    if args.threads:
        torch.set_num_threads(args.threads)
    res = app_latency(args.config, args.device, args.dtype)
    if args.json:
        return res
    print(f"{res['config']} app latency ({res['dtype']} on {res['device']}, image {res['image_size'][1]}x"
          f"{res['image_size'][0]}, {res['candidates']} candidates, {res['image_format']} images), "
          "median of 20 after 3 warm-up, seconds [min, max]:")
    for k in ("enter", "threshold_change"):
        v = res[k]
        print(f"  {k:<34} {v['median_s']:.4f}  [{v['min_s']:.4f}, {v['max_s']:.4f}]")
    return 0


def _team_arguments(m: argparse.ArgumentParser) -> None:
    m.add_argument("--db", help="a postgresql:// URL or a SQLite file (default: a temporary SQLite file)")
    m.add_argument("--servers", type=int, default=2)
    m.add_argument("--clients", type=int, default=8, help="annotators per server")
    m.add_argument("--seconds", type=float, default=60)
    m.add_argument("--images", type=int, default=40)
    m.add_argument("--weights", default="bundled")
    m.add_argument("--think", type=float, default=0.0,
                   help="mean pause before each action, seconds (0: a saturation test, clients fire back to back)")
    m.add_argument("--json", action="store_true")


def _team(args: argparse.Namespace) -> dict:
    from .team import bench_team

    return bench_team(args.db, args.servers, args.clients, args.seconds, args.images, args.weights, args.think)


def _loop_arguments(lp: argparse.ArgumentParser) -> None:
    lp.add_argument("--refs", type=int, default=400)
    lp.add_argument("--minutes", type=float, default=12.0, help="fine-tuning time (the runs of docs/learning-loop.md: 12)")
    lp.add_argument("--seed", type=int, default=21, help="the synthetic set the reviewed refs come from")
    lp.add_argument("--images", type=int, default=1000, help="images of that set (its testB split is 6%% of them)")
    lp.add_argument("--eval-seed", type=int, default=7, help="the independent evaluation set (docs/learning-loop.md: 7)")
    lp.add_argument("--eval-images", type=int, default=1000)
    lp.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the fine-tuning recipe's)")
    lp.add_argument("--replay-share", type=float, default=0.85,
                    help="share of each epoch's sentences replayed from the set's train split, its images taking "
                         "turns (0: none)")
    lp.add_argument("--replay", default=None, metavar="DIR",
                    help="replay this gRefCOCO folder's train split instead of the synthetic set's (e.g. a team's "
                         "own earlier reviewed refs, exported with python -m app.dataset export)")
    lp.add_argument("--threads", type=int, default=1, help="the runs of docs/learning-loop.md: 1, two at a time on 2 cores")
    lp.add_argument("--store", default=None, help="fine-tune from this store's reviewed refs (a SQLite file or a "
                    "postgresql:// URL) instead of a store the bench makes from testB refs; nothing is imported into it")
    lp.add_argument("--work", type=Path, default=None, help="keep the sets, the store and the run here (default: a "
                    "temporary folder); the same folder again resumes the run")
    lp.add_argument("--json", action="store_true")


def _loop(args: argparse.Namespace) -> dict | int:
    """The learning loop's figures; a store that cannot be fine-tuned from is one ``error:`` line (exit 2)."""
    from ..store import StoreError
    from .loop import bench_loop

    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # training's log lines
            return bench_loop(args.work or Path(tmp), args.refs, args.minutes, args.seed, args.images,
                              args.eval_seed, args.eval_images, args.threads, args.lr, args.replay_share, args.store,
                              args.replay)
    except StoreError as exc:  # a store that is not there or cannot be fine-tuned from: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _refine_arguments(rf: argparse.ArgumentParser) -> None:
    rf.add_argument("--refiner", default="grabcut", help="grabcut, sam2:facebook/sam2.1-hiera-tiny, sam:facebook/sam-vit-base or "
                                                                "sam:/local/folder")
    rf.add_argument("--objects", type=int, default=40, help="synthetic objects (testA + testB of seed 7)")
    rf.add_argument("--weights", default="bundled", help="the DeRIS model whose best candidate is the start")
    rf.add_argument("--threads", type=int, default=2)
    rf.add_argument("--json", action="store_true")


def _refine(args: argparse.Namespace) -> int:
    """Clicks and latency of a refiner, printed as its own table (or JSON, without the CPU fields)."""
    from ..refine.bench import bench_refine, print_table

    res = bench_refine(args.refiner, args.objects, args.weights, args.threads)
    if args.json:
        print(json.dumps(res))
    else:
        print_table(res)
    return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, its options, and its run. A run returns an exit status (it
    printed its own output) or the figures, printed by :func:`main` with the load average and CPU."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict | int]


COMMANDS: tuple[Command, ...] = (  # in the order --help lists them
    Command("store", "save and page-load times with many refs", _store_arguments, _store),
    Command("annotate", "server-side latency of Enter, a click and the next image", _annotate_arguments, _annotate),
    Command("preannotate", "images and sentences per hour of pre-annotation: batched across images, per image, one "
            "pair at a time", _preannotate_arguments, _preannotate),
    Command("latency", "the Annotate view's Enter and threshold change (median of 20 after 3 warm-up)",
            _latency_arguments, _latency),
    Command("team", "N studio servers x M gradio_client annotators on one database (app.bench.team)",
            _team_arguments, _team),
    Command("loop", "the learning loop: reviewed refs of unseen colour-shape pairs -> fine-tune -> testB/testA before "
            "and after (app/bench/loop.py)", _loop_arguments, _loop),
    Command("refine", "clicks to 85/90%% IoU and per-click latency of a refiner (app/refine/bench.py)",
            _refine_arguments, _refine),
)


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The command line: one subparser per command of the table."""
    p = argparse.ArgumentParser(prog="python -m app.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in commands:
        sp = sub.add_parser(command.name, help=command.help)
        command.add_arguments(sp)
        sp.set_defaults(command=command)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = args.command.run(args)
    if isinstance(res, int):
        return res
    res["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    res["cpu"] = _cpu_model()
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
