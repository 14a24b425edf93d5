"""The measured learning loop (``python -m app.bench loop``): reviewed refs of scenes the bundled
model is weak on make a better model, on this machine.

The bundled model never saw four colour-shape pairs (``deris_core.synthetic.HELD_OUT``: its testB
split asks about them). This bench draws a synthetic set (``--seed``), imports ``--refs`` of its
testB refs into a new store as if people had reviewed them (status ``reviewed``), fine-tunes the
bundled model from the store for ``--minutes`` with ``python -m app.curate finetune``'s code
(:func:`app.curate.finetune.finetune`, 10% of the images held out) with ``--replay-share`` of each
epoch's sentences replayed from the same set's train split, its images taking turns (the distribution
the bundled model learnt, without the four pairs; 0: no replay), and evaluates the bundled model
and the fine-tuned one on the testB and testA splits of a second, independent synthetic set
(``--eval-seed``, default 7: the evaluation set of docs/training.md), whose scenes were never trained on.
Goal (issue 31): testB gIoU +15 points or more, testA -2 at most.

``--store DB`` measures the loop on a store the bench did not make (a team's, or one drawn by
another seed and reviewed across every split): the bench fine-tunes from that store's reviewed refs
as they are (nothing imported, nothing changed but the fine-tune's lock while it runs), replays the
synthetic set's train split when ``--replay-share`` is above 0, and evaluates on the same independent
set; the result also carries the store's held-out figures and whether the run would be promoted.
``--replay DIR`` replays another gRefCOCO folder's train split instead (a team without the parent's
training data replaying its own earlier reviewed refs, exported from its store).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def import_reviewed(store, root: Path, refs: int, split: str = "testB") -> dict:
    """Import the first ``refs`` refs of ``split`` from a synthetic set at ``root`` (with their
    images and instances only) as reviewed refs of the annotator ``synthetic``."""
    from ..dataset.imports import import_grefcoco_data, read_json
    from ..store import RefStatus

    coco, _ = read_json(root / "grefcoco" / "instances.json")
    grefs, _ = read_json(root / "grefcoco" / "grefs(unc).json")
    chosen = [r for r in grefs if r["split"] == split][:refs]
    if len(chosen) < refs:
        raise ValueError(f"the synthetic set has only {len(chosen)} {split} refs; draw more images")
    images = {r["image_id"] for r in chosen}
    coco = {**coco, "images": [i for i in coco["images"] if i["id"] in images],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in images]}
    for r in chosen:
        r.update(status=RefStatus.REVIEWED.value, annotator="synthetic")
    return import_grefcoco_data(store, coco, chosen, root / "images" / "train2014", source=f"synthetic {split}")


def bench_loop(work: Path, refs: int = 400, minutes: float = 12.0, seed: int = 21, images: int = 1000,
               eval_seed: int = 7, eval_images: int = 1000, threads: int = 1, lr: float | None = None,
               replay_share: float = 0.85, store_db: str | None = None, replay_dir: str | None = None) -> dict:
    import dataclasses

    import torch

    from deris_core.evaluation import evaluate_predictor
    from deris_core.synthetic import generate
    from deris_core.weights import load_predictor

    from ..curate.finetune import RECIPE, Options, finetune
    from ..store import Store, StoreError
    from ..store.location import parse_db

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    source, evalset = work / f"synthetic_seed{seed}", work / f"eval_seed{eval_seed}"
    if store_db is not None:  # a store the bench did not make: checked before anything is drawn
        loc = parse_db(store_db)
        if not loc.is_postgres and not loc.path.is_file():
            raise StoreError(f"store not found: {loc.shown}")
    if replay_dir is not None and not (Path(replay_dir) / "grefcoco" / "grefs(unc).json").is_file():
        raise StoreError(f"--replay {replay_dir}: not a gRefCOCO folder (no grefcoco/grefs(unc).json)")
    if (store_db is None or (replay_share and replay_dir is None)) and not (source / "grefcoco" / "grefs(unc).json").is_file():
        generate(source, seed=seed, images=images)
    if not (evalset / "grefcoco" / "grefs(unc).json").is_file():
        generate(evalset, seed=eval_seed, images=eval_images)
    if store_db is None:
        db = work / "loop.sqlite"
        store = Store(db)
        if not store.stats()["refs"]:
            import_reviewed(store, source, refs)
        run = work / "run"
    else:
        store, db = Store(loc), store_db
        run = work / (f"run_store_replay{replay_share:g}" + (f"_{Path(replay_dir).name}" if replay_dir and replay_share else ""))
    recipe = dataclasses.replace(RECIPE, **({"lr": lr} if lr else {}))
    t0 = time.perf_counter()
    replay_from = Path(replay_dir) if replay_dir else source
    replay = {"replay": str(replay_from), "replay_share": replay_share} if replay_share else {}
    res = finetune(store, Options(str(db), "bundled", str(run), minutes=minutes, recipe=recipe, threads=threads, **replay))
    train_s = time.perf_counter() - t0
    out = {"store": store.location.shown if store_db else "made by the bench", "refs": res["snapshot"]["refs"],
           "minutes": minutes, "promotion_problem": res["promotion_problem"], "caveat": res.get("caveat"), "replay_share": replay_share or 0,
           "replay": str(replay_from) if replay_share else None, "source_seed": seed, "eval_seed": eval_seed, "fine_tune_s": round(train_s, 1),
           "store_held_out": {"before": res["before"], "after": res["after"]}, "snapshot": res["snapshot"]}
    keys = ("gIoU", "cIoU", "N_acc", "T_acc")
    for split in ("testB", "testA"):
        for label, weights in (("before", "bundled"), ("after", str(run))):
            pred = load_predictor(weights, device="cpu", dtype="fp32")
            r = evaluate_predictor(pred, str(evalset), split)
            out.setdefault(split, {"samples": r["samples"]})[label] = {k: round(r["gres"][k], 2) for k in keys}
        b, a = out[split]["before"]["gIoU"], out[split]["after"]["gIoU"]
        out[split]["gIoU_change"] = round(a - b, 2)
    out["goal_met"] = out["testB"]["gIoU_change"] >= 15 and out["testA"]["gIoU_change"] >= -2
    out["trained_steps"] = _last_step(run / "log.jsonl")
    return out


def _last_step(log: Path) -> int | None:
    step = None
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                step = json.loads(line).get("step", step)
            except ValueError:
                continue
    return step
