"""Fine-tuning from the store (app/curate/finetune.py): a few steps on a tiny store change the
weights and write a loadable model whose card carries the data snapshot; held-out refs never reach
training (by ids); promotion refused when the held-out metrics fall (hand-made run folders); the bad
inputs (too few refs, an empty held-out set, images gone, weights of another config, two fine-tunes
at once, a run killed mid-way and resumed, replacing a model in use) and registered models by name
in preannotate and the Model panel."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.curate import finetune as ft
from app.curate.__main__ import main as curate_main
from app.store import Store, StoreError

ROOT = Path(__file__).resolve().parents[1]
FAST = ft.Recipe(batch_size=4, expressions_per_image=2, warmup_steps=1)


def _make_store(root: Path, images: int, seed: int = 11, status: str = "reviewed", name: str = "s.sqlite") -> Path:
    from app.dataset.imports import import_grefcoco_data, read_json
    from deris_core.synthetic import generate

    syn = root / f"syn{seed}_{images}"
    if not syn.is_dir():
        generate(syn, seed=seed, images=images)
    coco, _ = read_json(syn / "grefcoco" / "instances.json")
    grefs, _ = read_json(syn / "grefcoco" / "grefs(unc).json")
    for r in grefs:
        r.update(status=status, annotator="synthetic")
    db = root / name
    import_grefcoco_data(Store(db), coco, grefs, syn / "images" / "train2014")
    return db


def _copy(db: Path, name: str) -> Path:
    out = db.with_name(name)
    src, dst = sqlite3.connect(db), sqlite3.connect(out)
    src.backup(dst)
    src.close()
    dst.close()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A store of 8 synthetic scenes, every ref reviewed."""
    return _make_store(tmp_path_factory.mktemp("finetune"), 8)


@pytest.fixture(scope="module")
def finished(tiny: Path):
    """One fine-tune of 2 steps that records which refs the training set served and NSC could draw."""
    from deris_core.data import training
    from deris_core.train import trainer

    served: set[int] = set()
    pools: list[set[int]] = []

    class Recording(training.TrainingSet):
        def sample(self, index: int) -> dict:
            served.add(self.data.samples[index].ref_id)
            return super().sample(index)

    class RecordingNSC(trainer.NonReferentConversion):
        def __init__(self, pool, cfg):
            super().__init__(pool, cfg)
            pools.append({image for image, _ in pool})

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer, "TrainingSet", Recording)
    mp.setattr(trainer, "NonReferentConversion", RecordingNSC)
    db = _copy(tiny, "finished.sqlite")
    store = Store(db)
    run = db.parent / "run_ok"
    try:
        res = ft.finetune(store, ft.Options(str(db), "bundled", str(run), steps=2, recipe=FAST, threads=2, progress=False))
    finally:
        mp.undo()
    return store, run, res, served, pools


def test_finetune_changes_weights_and_writes_a_loadable_model_with_its_snapshot(finished):
    from deris_core.checkpoint import read_safetensors
    from deris_core.weights import BUNDLED_DIR, load_predictor

    store, run, res, _, _ = finished
    new, _ = read_safetensors(run / "model.safetensors")
    old, _ = read_safetensors(BUNDLED_DIR / "model.safetensors")
    assert set(new) == set(old)
    assert any(not (new[k] == old[k]).all() for k in old)  # the weights moved
    for f in ("model.safetensors", "config.json", "tokenizer.spm", "README.md", "log.jsonl", "finetune.json"):
        assert (run / f).is_file(), f
    pred = load_predictor(str(run), device="cpu", dtype="fp32")  # the folder, as --weights takes it
    assert pred.predict("the red circle", image=pred.set_image(np.zeros((64, 64, 3), np.uint8))) is not None
    snap = res["snapshot"]
    n = len(store.refs())
    assert snap["refs"] == n and snap["by_status"] == {"reviewed": n}
    assert snap["train"]["refs"] + snap["held_out"]["refs"] == n
    card = (run / "README.md").read_text()
    assert snap["hash"] in card and f"reviewed {n}" in card and "Held-out metrics" in card
    plan = json.loads((run / "finetune.json").read_text())
    assert plan["metrics_before"]["gIoU"] == res["before"]["gIoU"] and plan["metrics_after"]["gIoU"] == res["after"]["gIoU"]
    assert plan["parent"].startswith("bundled (sha256:")
    assert store.read("SELECT COUNT(*) FROM locks")[0][0] == 0  # the lock was given back
    assert store.models() == []  # nothing registered without --promote


def test_held_out_refs_never_reach_training(finished):
    store, run, _, served, pools = finished
    plan = json.loads((run / "finetune.json").read_text())
    train, held = set(plan["train_refs"]), set(plan["held_out_refs"])
    assert held and served and not served & held
    assert served <= train
    images = lambda ids: {r.image_id for r in store.refs(ref_ids=sorted(ids))}  # noqa: E731
    assert not images(train) & images(held)  # no image on both sides
    assert pools and all(not p & images(held) for p in pools)  # NSC draws only training sentences


def _finished_run(root: Path, name: str, before: dict, after: dict, db_name: str) -> Path:
    """A hand-made finished run folder (the promotion decision reads only its plan and weights)."""
    from deris_core.weights import BUNDLED_DIR

    run = root / name
    run.mkdir()
    shutil.copyfile(BUNDLED_DIR / "model.safetensors", run / "model.safetensors")
    plan = {"name": name, "parent": "bundled (sha256:0)", "config": "deris-small-trained",
            "snapshot": {"database": db_name, "refs": 3}, "metrics_before": before, "metrics_after": after}
    (run / "finetune.json").write_text(json.dumps(plan))
    return run


def test_promotion_refused_when_metrics_fall_and_names_are_kept(tmp_path):
    store = Store(tmp_path / "p.sqlite")
    worse = _finished_run(tmp_path, "worse", {"gIoU": 50.0, "N_acc": 90.0}, {"gIoU": 49.0, "N_acc": 95.0}, "p.sqlite")
    with pytest.raises(StoreError, match=r"not promoted: held-out gIoU did not improve \(50.00 -> 49.00\)"):
        ft.promote(store, worse)
    nacc = _finished_run(tmp_path, "nacc", {"gIoU": 50.0, "N_acc": 90.0}, {"gIoU": 60.0, "N_acc": 88.5}, "p.sqlite")
    with pytest.raises(StoreError, match=r"N-acc fell by 1.50 points"):
        ft.promote(store, nacc)
    assert store.models() == []
    # on a small held-out set the reason says what one no-target ref weighs
    assert ft.promotion_problem({"gIoU": 50.0, "N_acc": 95.0}, {"gIoU": 51.0, "N_acc": 92.5}, no_target_refs=40).endswith(
        "at most 1 allowed; one of the 40 held-out no-target refs weighs 2.50 points: hold out more images to judge it finer)")
    # without replay the held-out figures cannot see what the parent knew beyond the store: said, in the card too
    assert "no replay" in ft.held_out_caveat({"replay": None}) and ft.held_out_caveat({"replay": {"share": 0.85}}) is None
    good = _finished_run(tmp_path, "good", {"gIoU": 50.0, "N_acc": 90.0}, {"gIoU": 60.0, "N_acc": 89.5}, "p.sqlite")
    rec = ft.promote(store, good, user="ann")
    assert rec.name == "good" and rec.created_by == "ann" and store.model("good").metrics_after["gIoU"] == 60.0
    with pytest.raises(StoreError, match="already registered; promote under another name"):
        ft.promote(store, good)
    with pytest.raises(StoreError, match="published or bundled"):
        ft.promote(store, good, name="bundled")
    with pytest.raises(StoreError, match="a model name is"):
        ft.promote(store, good, name="../x")
    other = _finished_run(tmp_path, "other", {"gIoU": 50.0, "N_acc": 90.0}, {"gIoU": 60.0, "N_acc": 90.0}, "q.sqlite")
    with pytest.raises(StoreError, match="refs of q.sqlite, not of p.sqlite"):
        ft.promote(store, other)
    # a model in use: its predictions are in the store, so the name is never replaced nor deleted
    with store.transaction() as db:
        db.execute("INSERT INTO images (sha256, file_name, width, height, created_at) VALUES ('x', 'x.png', 4, 4, 0)")
        db.execute("INSERT INTO predictions (image_id, sentence, model, score_threshold, mask_threshold, existence, "
                   "candidates, created_at) VALUES (1, 'the cat', 'good|deris-small-trained|sha256:00|fp32', 0.7, 0.5, "
                   "0.9, '[]', 0)")
    with pytest.raises(StoreError, match=r"already registered and in use \(1 predictions"):
        ft.promote(store, good)
    with pytest.raises(StoreError, match="in use"):
        store.delete_model("good", ft.model_in_use(store, store.model("good")))
    assert [m.name for m in store.models()] == ["good"]


def test_bad_inputs_say_what_is_wrong_and_write_nothing(tiny, tmp_path):
    store = Store(_copy(tiny, "bad.sqlite"))
    def opts(**kw) -> ft.Options:
        return ft.Options(**{"db": str(store.path), "weights": "bundled", "out": str(tmp_path / "r"), "steps": 1,
                             "recipe": FAST, "progress": False, **kw})

    with store.transaction() as db:  # a store without val refs
        db.execute("UPDATE refs SET split = 'train' WHERE split = 'val'")
    with pytest.raises(StoreError, match="has no done refs"):
        ft.finetune(store, opts(statuses=("done",)))
    with pytest.raises(StoreError, match=r"held-out set would be empty: none of the \d+ reviewed refs has split 'val'"):
        ft.finetune(store, opts(holdout_split="val"))
    with pytest.raises(StoreError, match="at least 16 are needed"):
        ft.finetune(store, opts(recipe=ft.Recipe(batch_size=16), holdout_fraction=0.9))
    with pytest.raises(StoreError, match="--minutes must be a positive number"):
        ft.finetune(store, opts(steps=None, minutes=0))
    with pytest.raises(StoreError, match="--holdout-fraction must be between 0 and 1"):
        ft.finetune(store, opts(holdout_fraction=1.5))
    # two fine-tunes at once: a live holder (this test's parent process) keeps the lock
    live = f"{socket.gethostname()}:{os.getppid()}:someone:other_run"
    assert store.take_lock(ft.LOCK, live) is None
    with pytest.raises(StoreError, match="another fine-tune is running on bad.sqlite"):
        ft.finetune(store, opts())
    assert store.read("SELECT holder FROM locks")[0][0] == live  # not taken over, not removed
    # --break-lock is for a holder that is gone: one provably alive on this machine keeps its lock
    with pytest.raises(StoreError, match=r"--break-lock refused: .* is running on this machine .*stop that process"):
        ft.finetune(store, opts(break_lock=True))
    assert store.read("SELECT holder FROM locks")[0][0] == live
    store.release_lock(ft.LOCK, live)
    # a pid that now names a later process (another start time) is no holder: taken without --break-lock
    reused = f"{socket.gethostname()}:{os.getppid()}/1:someone:other_run"
    assert ft.holder_alive(reused) is False and ft.holder_alive(ft._holder(tmp_path)) is True
    assert store.take_lock(ft.LOCK, reused) is None
    assert store.take_lock(ft.LOCK, "me", ft._stale) is None
    store.release_lock(ft.LOCK, "me")
    # a holder on another machine cannot be checked from here: --break-lock takes its lock
    far = "otherhost:4242:someone:other_run"
    assert store.take_lock(ft.LOCK, far) is None
    with pytest.raises(StoreError, match="if that process is gone .*give --break-lock"):
        ft.finetune(store, opts(out=str(tmp_path / "r_lock")))
    ft.finetune(store, opts(out=str(tmp_path / "r_lock"), break_lock=True))
    assert store.read("SELECT COUNT(*) FROM locks")[0][0] == 0
    # weights of another config than the run being resumed
    from deris_core.checkpoint import save_weights
    from deris_core.config import deris_tiny
    from deris_core.model import build_deris

    other = tmp_path / "other_cfg"
    other.mkdir()
    save_weights(build_deris(deris_tiny()), other / "last.safetensors", deris_tiny())
    with pytest.raises(StoreError, match="was being fine-tuned from weights of config 'deris-tiny'"):
        ft.finetune(store, opts(out=str(other)))
    # a run resumed with other held-out images: its weights have seen images that would now be held out
    ft.finetune(store, opts(out=str(tmp_path / "r_seed")))
    with pytest.raises(StoreError, match="was started with other held-out images"):
        ft.finetune(store, opts(out=str(tmp_path / "r_seed"), seed=5))
    # images gone
    gone = store.image(1)
    Path(gone.path).rename(Path(gone.path).with_suffix(".moved"))
    try:
        with pytest.raises(StoreError, match=r"1 image of the chosen refs cannot be read .*\(image 1\)"):
            ft.finetune(store, opts(out=str(tmp_path / "r2")))
    finally:
        Path(gone.path).with_suffix(".moved").rename(gone.path)
    assert store.models() == [] and store.read("SELECT COUNT(*) FROM locks")[0][0] == 0
    assert not (tmp_path / "r2").exists()  # nothing half-written in a run folder either


def test_replay_mixes_in_the_parents_distribution_and_is_part_of_the_plan(tiny, tmp_path):
    """``--replay``: another dataset's train split joins the training set as a pool whose images take
    turns, the asked share of each epoch's sentences; never the held-out metrics; the plan and the card
    record it; another replay cannot resume the run, and a folder that is not a dataset is one clear line."""
    from deris_core.data import training
    from deris_core.data.refer import load_grefcoco
    from deris_core.synthetic import generate
    from deris_core.train import trainer

    generate(tmp_path / "parent_data", seed=12, images=24)
    store = Store(_copy(tiny, "replay.sqlite"))
    seen: list = []

    class Recording(training.TrainingSet):
        def __init__(self, data, *a, **kw):
            super().__init__(data, *a, **kw)
            seen.append(self)

    run = tmp_path / "run_replay"
    def opts(**kw) -> ft.Options:
        return ft.Options(**{"db": str(store.path), "weights": "bundled", "out": str(run), "steps": 1, "recipe": FAST,
                             "threads": 2, "progress": False, "replay": str(tmp_path / "parent_data"), "replay_share": 0.5,
                             **kw})

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer, "TrainingSet", Recording)
    try:
        res = ft.finetune(store, opts())
    finally:
        mp.undo()
    plan = json.loads((run / "finetune.json").read_text())
    n_store = sum(len(r.sentences) for r in store.refs(ref_ids=plan["train_refs"]))
    replay, parent = plan["replay"], load_grefcoco(tmp_path / "parent_data", "train")
    assert replay["split"] == "train" and replay["sentences"] == len(parent.samples) > n_store
    assert replay["images"] == len({s.image_id for s in parent.samples})
    ds = seen[0]
    assert len(ds.data) == n_store + replay["sentences"]  # the store's refs and the whole pool
    replayed = ds.data.samples[n_store:]
    assert {s.split for s in replayed} == {"train"}
    assert not {s.image_id for s in replayed} & {s.image_id for s in ds.data.samples[:n_store]}
    assert ds.rotation is not None and ds.rotation.images == {s.image_id for s in replayed}
    for epoch in range(3):  # each epoch: every store sentence, and about as many replayed ones (share 0.5)
        ds.set_epoch(epoch)
        flat = [i for g in ds.groups for i in g]
        own = [i for i in flat if i < n_store]
        assert sorted(own) == list(range(n_store))
        assert abs((len(flat) - len(own)) - n_store) <= ds.per_image * 2
    assert res["before"]["samples"] == sum(len(r.sentences) for r in store.refs(ref_ids=plan["held_out_refs"]))
    assert (f"50% of each epoch's sentences, in turns from {replay['sentences']} sentences on {replay['images']} "
            "images of parent_data/") in (run / "README.md").read_text()
    with pytest.raises(StoreError, match="was started with other replayed refs"):
        ft.finetune(store, opts(replay_share=0.25))
    with pytest.raises(StoreError, match="not a gRefCOCO-format folder"):
        ft.finetune(store, opts(out=str(tmp_path / "r3"), replay=str(tmp_path)))
    with pytest.raises(StoreError, match="--replay-share must be between 0 and 1"):
        ft.finetune(store, opts(out=str(tmp_path / "r3"), replay_share=1.0))
    assert not (tmp_path / "r3").exists()


def test_a_killed_run_resumes_and_a_dead_holder_does_not_block(tmp_path):
    db = _make_store(tmp_path, 4, seed=12)
    run = tmp_path / "run_kill"
    args = [sys.executable, "-m", "app.curate", "finetune", "--db", str(db), "--out", str(run), "--batch-size", "4",
            "--threads", "1", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "--steps", "400"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (run / "trainer_state.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (run / "trainer_state.pt").is_file(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(db)
    assert store.read("SELECT COUNT(*) FROM locks")[0][0] == 1  # the killed run's lock stays behind ...
    started = json.loads((run / "finetune.json").read_text())["started_at"]
    done = subprocess.run([*args, "--steps", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr  # ... and does not block the rerun (its process is gone)
    res = json.loads(done.stdout)  # --json: the result alone on standard output, training's log on standard error
    assert res["after"]["samples"] == res["before"]["samples"] > 0
    assert json.loads((run / "finetune.json").read_text())["started_at"] == started  # the plan was kept
    assert store.read("SELECT COUNT(*) FROM locks")[0][0] == 0
    # the store's refs changed since the run started: a resume is refused
    rid = store.refs()[0]
    store.set_status(rid.id, "rejected", actor="x")
    refused = subprocess.run([*args, "--steps", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "was started on other refs" in refused.stderr


def test_registered_model_by_name_in_preannotate_and_the_model_panel(finished, tmp_path, capsys):
    from app.services.model import allowed_weights

    store, run, res, _, _ = finished
    db = str(store.path)
    plan = json.loads((run / "finetune.json").read_text())
    plan["metrics_after"] = {**plan["metrics_after"], "gIoU": plan["metrics_before"]["gIoU"] + 1,
                             "N_acc": plan["metrics_before"]["N_acc"]}  # so that this run may be promoted
    (run / "finetune.json").write_text(json.dumps(plan))
    assert curate_main(["promote", "--db", db, "--run", str(run), "--name", "shapes-v2", "--by", "lead", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["promoted"] == "shapes-v2"
    (tmp_path / "s.txt").write_text("the red circle\n")
    assert curate_main(["preannotate", "--db", db, "--sentences", str(tmp_path / "s.txt"), "--weights", "shapes-v2",
                        "--dtype", "fp32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"].startswith("shapes-v2|") and out["written"] > 0
    assert curate_main(["models", "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert listed[0]["name"] == "shapes-v2" and listed[0]["uses"] == out["written"]
    assert curate_main(["models", "--db", db, "--delete", "shapes-v2"]) == 2
    assert "in use" in capsys.readouterr().err
    assert allowed_weights(store, ["shapes-v2", "bundled"]) == {
        "shapes-v2 (fine-tuned here)": str((run / "model.safetensors").resolve()), "bundled": "bundled"}


@pytest.mark.slow
def test_finetune_under_torchrun_two_gloo_processes(tmp_path):
    db = _make_store(tmp_path, 4, seed=12)
    run = tmp_path / "run_ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "app.curate",
           "finetune", "--db", str(db), "--out", str(run), "--batch-size", "4", "--steps", "2", "--threads", "1", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith('{"run"')]
    assert len(printed) == 1  # rank 0 reports, once
    res = json.loads(printed[0])
    assert res["after"]["samples"] == res["before"]["samples"] > 0
    assert "2 process(es)" in json.loads((run / "finetune.json").read_text())["training"]
    assert Store(db).read("SELECT COUNT(*) FROM locks")[0][0] == 0


def test_a_held_out_set_that_cannot_judge_is_refused_before_training(tiny, tmp_path):
    """Every held-out ref no-target (what the Negatives view's Y answers make): the run could not be
    judged, so it does not train; the message says what to change, and nothing is written."""
    store = Store(_copy(tiny, "notarget.sqlite"))
    _, held = ft.hold_out(ft.select_refs(store, ("reviewed",)), None, 0.1, 0)
    with store.transaction() as db:
        for r in held:
            db.execute("UPDATE refs SET no_target = 1 WHERE id = ?", (r.id,))
            db.execute("DELETE FROM ref_instances WHERE ref_id = ?", (r.id,))
    run = tmp_path / "r"
    with pytest.raises(StoreError, match=r"the held-out images have no targets .*hold out more, or more varied, images"):
        ft.finetune(store, ft.Options(str(store.path), "bundled", str(run), steps=1, recipe=FAST, progress=False))
    assert not run.exists() and store.read("SELECT COUNT(*) FROM locks")[0][0] == 0


def test_metrics_that_no_target_refs_leave_undefined_are_said_not_crashed():
    from deris_core.metrics import GresAccumulator

    acc = GresAccumulator()
    empty = np.zeros((4, 4), bool)
    acc.add(empty, empty, gt_nt=True, pred_nt=True)
    with pytest.raises(ZeroDivisionError):  # the official behaviour stays where it is asked for
        acc.result()
    res, why = acc.defined_result()
    assert res["gIoU"] == 100.0 and res["N_acc"] == 100.0  # gIoU is defined for no-target answers
    assert res["cIoU"] is None and "cumulative union is 0" in why["cIoU"]
    assert res["T_acc"] is None and res["Pr@0.7"] is None
    plan = {"name": "x", "parent": "p", "config": "c", "replay": None, "training": "t",
            "snapshot": {"statuses": ["reviewed"], "database": "d", "refs": 1, "by_status": {"reviewed": 1}, "hash": "h",
                         "train": {"refs": 1, "sentences": 1, "images": 1, "no_target_refs": 0},
                         "held_out": {"refs": 1, "sentences": 1, "images": 1, "rule": "r"}},
            "metrics_before": {**res, "undefined": why}, "metrics_after": {**res, "undefined": why}}
    card = ft.model_card(plan)
    assert "| cIoU | not defined | not defined |" in card and "cumulative union is 0" in card


def test_the_terminal_shows_a_bar_and_the_log_keeps_the_epochs(tiny, tmp_path, capsys):
    db = _copy(tiny, "bar.sqlite")
    run = tmp_path / "run_bar"
    assert curate_main(["finetune", "--db", str(db), "--out", str(run), "--steps", "2", "--batch-size", "4",
                        "--threads", "2"]) == 0
    err = capsys.readouterr().err
    assert "training" in err and "2/2" in err and "<" in err  # tqdm: steps done of planned, elapsed<remaining
    assert "/100000" not in err and '{"epoch"' not in err  # no per-epoch JSON nor "epoch 1/100000" on the terminal
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("samples_per_s" in r for r in records)  # ... it is in the log file
    card = (run / "README.md").read_text()
    assert "- time: planned 2 steps, used " in card


def test_the_registry_pins_the_weights_it_checked(finished, tmp_path, capsys):
    from app.services.model import allowed_weights

    store, run, res, _, _ = finished
    db = str(store.path)
    plan = json.loads((run / "finetune.json").read_text())
    assert plan["weights_sha256"]  # the weights whose held-out metrics were measured
    plan["metrics_after"] = {**plan["metrics_after"], "gIoU": plan["metrics_before"]["gIoU"] + 1,
                             "N_acc": plan["metrics_before"]["N_acc"]}
    (run / "finetune.json").write_text(json.dumps(plan))
    rec = ft.promote(store, run, "pinned-v1")
    assert rec.weights_sha256 == plan["weights_sha256"]
    assert ft.registered_weights(store, "pinned-v1") == rec.weights
    weights = run / "model.safetensors"
    saved = weights.read_bytes()
    try:
        weights.write_bytes(saved[:-8] + b"\0" * 8)  # trained further, or replaced: other bytes
        with pytest.raises(StoreError, match=r"registered model 'pinned-v1': its weights file changed since it was "
                                             r"promoted \(sha256:\w{12} then, sha256:\w{12} now\)"):
            ft.registered_weights(store, "pinned-v1")
        (tmp_path / "s.txt").write_text("the red circle\n")
        assert curate_main(["preannotate", "--db", db, "--sentences", str(tmp_path / "s.txt"), "--weights",
                            "pinned-v1", "--json"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "changed since it was promoted" in err
        assert curate_main(["models", "--db", db, "--json"]) == 0
        shown = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}["pinned-v1"]
        assert shown["weights_ok"] is False and "changed since it was promoted" in shown["problem"]
        with pytest.raises(StoreError, match="changed since it was promoted"):
            allowed_weights(store, ["pinned-v1"])
        with pytest.raises(StoreError, match="changed since its held-out metrics were measured"):
            ft.promote(store, run, "pinned-v2")  # not re-registered on metrics of other weights
    finally:
        weights.write_bytes(saved)
    assert curate_main(["models", "--db", db, "--json"]) == 0
    shown = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}["pinned-v1"]
    assert shown["weights_ok"] is True and shown["weights_sha256"] == plan["weights_sha256"]
