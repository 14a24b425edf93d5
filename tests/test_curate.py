"""The model at dataset scale: pre-annotation (sharded over 2 gloo processes = one process,
resume, SIGKILL mid-way), re-thresholding without the model, qa against deris_core.metrics,
annotator agreement and consensus merging."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.curate import agreement, apply_threshold, pairs_from_jsonl, pairs_from_sentences, qa, rethreshold, run
from app.dataset.collection import import_images
from app.store import Store, StoreError, decode_mask
from deris_core.metrics import GresAccumulator
from deris_core.predictor import Prediction

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["the red circle", "all blue shapes", "the largest star"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    from deris_core.synthetic import generate

    root = tmp_path_factory.mktemp("curate")
    generate(root / "syn", seed=6, images=6)
    db = root / "base.sqlite"
    import_images(Store(db), root / "syn" / "images" / "train2014", progress=False)
    (root / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    return root


def _fresh(collection: Path, name: str) -> Path:
    db = collection / f"{name}.sqlite"
    src = sqlite3.connect(collection / "base.sqlite")
    dst = sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    return db


def _cli(*args: str, env: dict | None = None, torchrun: int = 0) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m",
            "app.curate"] if torchrun else [sys.executable, "-m", "app.curate"]
    return subprocess.run([*head, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _content(db: Path) -> list:
    """Everything a pre-annotation stored, independent of ids and write order."""
    s = Store(db)
    out = []
    for rec in s.refs():
        row = s.read("SELECT model, existence, candidates FROM predictions WHERE ref_id = ?", (rec.id,))[0]
        masks = sorted(json.dumps(i.rle) for i in s.instances(rec.image_id) if i.id in rec.instance_ids)
        cands = [(c["query"], round(c["score"], 5), json.dumps(c["rle"])) for c in json.loads(row[2])]
        out.append((rec.image_id, rec.sentences, rec.no_target, rec.status, rec.author, masks, row[0],
                    round(row[1], 5), cands))
    return sorted(out, key=lambda r: (r[0], r[1]))


def test_two_gloo_processes_store_exactly_what_one_process_stores(collection: Path) -> None:
    one, two = _fresh(collection, "one"), _fresh(collection, "two")
    sentences = str(collection / "sentences.txt")
    r1 = _cli("preannotate", "--db", str(one), "--sentences", sentences, "--threads", "1", "--json")
    assert r1.returncode == 0, r1.stderr
    r2 = _cli("preannotate", "--db", str(two), "--sentences", sentences, "--threads", "1", "--json", "--chunk", "2",
              torchrun=2)
    assert r2.returncode == 0, r2.stderr
    s1, s2 = json.loads(r1.stdout), json.loads(r2.stdout.strip().splitlines()[-1])
    assert s1["written"] == s2["written"] == 18 and s2["ranks"] == 2
    a, b = _content(one), _content(two)
    assert len(a) == 18 and a == b
    assert {r[3] for r in a} == {"predicted"} and {r[4] for r in a} == {"model:bundled"}


def test_a_rerun_skips_pairs_already_predicted(collection: Path) -> None:
    db = _fresh(collection, "resume")
    s = Store(db)
    first = pairs_from_jsonl(s, _jsonl(collection, [(1, "the red circle"), ("synthetic_000002.png", "all blue shapes")]))
    from deris_core.weights import load_predictor

    p = load_predictor("bundled")
    assert run(s, p, first, "k", progress=False).written == 2
    everything = pairs_from_sentences(s, SENTENCES)
    summary = run(s, p, everything, "k", progress=False)
    assert summary.already_done == 2 and summary.written == 16
    assert run(s, p, everything, "k", progress=False).written == 0
    assert run(s, p, everything, "another model", progress=False).written == 18  # another model predicts again
    with pytest.raises(StoreError, match="line 1"):
        pairs_from_jsonl(s, _jsonl(collection, [("nope.png", "x")]))
    # the sentences of a dataset that has no masks
    from app.curate.preannotate import pairs_from_refs_file

    refs = collection / "sentence_only.json"
    refs.write_text(json.dumps([{"file_name": "synthetic_000003.png", "ann_id": [], "sentences": [
        {"raw": "The red circle.", "sent": "the red circle"}, {"sent": "a red round thing"}]}]))
    got = pairs_from_refs_file(s, refs)
    assert [(p.image_id, p.sentence) for p in got] == [(3, "The red circle."), (3, "a red round thing")]


def _jsonl(collection: Path, pairs: list) -> Path:
    path = collection / f"pairs_{len(pairs)}_{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps({"image": i, "sentence": t}) + "\n" for i, t in pairs))
    return path


def test_a_run_killed_mid_way_leaves_a_consistent_store_and_the_rerun_completes(collection: Path) -> None:
    db = _fresh(collection, "killed")
    many = collection / "many.txt"
    many.write_text("\n".join(f"the {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "star")) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "app.curate", "preannotate", "--db", str(db), "--sentences", str(many),
                             "--chunk", "1", "--batch", "2", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:
        con = sqlite3.connect(db, timeout=30)
        n = con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        con.close()
        if n >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = Store(db)
    assert s.integrity_check() == "ok"
    done = s.read("SELECT COUNT(*) FROM predictions")[0][0]
    assert 8 <= done < 48
    # every stored pair is whole: a predicted ref with its sentence, prediction row and targets
    assert s.read("SELECT COUNT(*) FROM refs")[0][0] == done
    assert s.read("SELECT COUNT(*) FROM refs r WHERE NOT EXISTS (SELECT 1 FROM sentences WHERE ref_id = r.id)")[0][0] == 0
    s.close()
    r = _cli("preannotate", "--db", str(db), "--sentences", str(many), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["already_done"] == done and out["written"] == 48 - done
    assert Store(db).read("SELECT COUNT(*) FROM predictions")[0][0] == 48


def test_predicted_refs_rethreshold_without_the_model(collection: Path, monkeypatch) -> None:
    db = _fresh(collection, "rethreshold")
    s = Store(db)
    from deris_core.weights import load_predictor

    p = load_predictor("bundled")
    run(s, p, pairs_from_sentences(s, SENTENCES), "k", progress=False)
    monkeypatch.setattr("deris_core.predictor.Predictor.predict_batch", lambda *a, **k: pytest.fail("the model ran"))
    monkeypatch.setattr("deris_core.predictor.Predictor.set_image", lambda *a, **k: pytest.fail("the model ran"))
    rid = next(r.id for r in s.refs() if not r.no_target)
    cands = json.loads(s.read("SELECT candidates FROM predictions WHERE ref_id = ?", (rid,))[0][0])
    low = min(c["score"] for c in cands) - 1e-6
    nt, masks = rethreshold(s, rid, low)
    assert not nt and len(masks) == len(cands)
    np.testing.assert_array_equal(masks[0], decode_mask(cands[0]["rle"]))
    assert rethreshold(s, rid, 1.0) == (True, [])
    changed = apply_threshold(s, "k", 0.999999)
    assert changed == 18 and all(r.no_target for r in s.refs())
    assert {e.action for e in s.events(rid)} == {"predict", "edit"}


class _Scripted:
    """A stand-in for the predictor in qa tests: answers each sentence with a hand-built mask
    (given as the network's 96x96 logits) and keeps what it answered."""

    def __init__(self, answers: dict[str, np.ndarray | None]) -> None:
        self.answers = answers
        self.given: dict[str, Prediction] = {}

    def set_image(self, rgb):
        return rgb.shape[:2]

    def predict_batch(self, sentences, image):
        import cv2

        out = []
        for s in sentences:
            m = self.answers[s]
            h, w = image
            small = np.zeros((96, 96), np.float32) if m is None else cv2.resize(m.astype(np.uint8), (96, 96), interpolation=cv2.INTER_NEAREST)
            logits = torch.tensor(np.where(small > 0, 10.0, -10.0)[None], dtype=torch.float32)
            score = np.array([0.1 if m is None else 0.9], np.float32)
            out.append(Prediction(s, score, 0.5, np.zeros((1, 4), np.float32), (h, w), 0.5, 0.5, logits))
            self.given[s] = out[-1]
        return out


def _box(y0, x0, y1, x1, h=20, w=20) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_qa_equals_deris_core_metrics_on_hand_built_cases(tmp_path: Path) -> None:
    s = Store(tmp_path / "qa.sqlite")
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    gt_a, gt_b = _box(0, 0, 10, 10), _box(5, 5, 15, 15)
    ra = s.save_ref(img, ["a"], masks=[gt_a], author="ann", split="val")
    rb = s.save_ref(img, ["b", "b again"], masks=[gt_b], author="bob")
    rc = s.save_ref(img, ["c"], no_target=True, author="ann")
    rd = s.save_ref(img, ["d"], no_target=True, author="bob")
    s.save_ref(img, ["draft"], no_target=True, author="ann", status="draft")  # not checked
    answers = {"a": _box(0, 0, 10, 5), "b": _box(5, 5, 15, 15), "b again": None, "c": None, "d": _box(0, 0, 2, 2)}
    model = _Scripted(answers)
    res = qa(s, model, "scripted")
    ref = GresAccumulator()
    ann = GresAccumulator()
    for text, gt, gt_nt, who in (("a", gt_a, False, "ann"), ("b", gt_b, False, "bob"), ("b again", gt_b, False, "bob"),
                                 ("c", np.zeros((20, 20), bool), True, "ann"), ("d", np.zeros((20, 20), bool), True, "bob")):
        pred = model.given[text]  # what the model answered, as the predictor renders it at 20x20
        ref.add(pred.union_mask.astype(bool), gt, gt_nt, pred.no_target)
        if who == "ann":
            ann.add(pred.union_mask.astype(bool), gt, gt_nt, pred.no_target)
    assert res["refs"] == 4 and res["overall"] == {"samples": 5, **ref.result()}
    assert res["groups"]["annotator=ann"] == {"samples": 2, **ann.result()}
    stored = {r[0]: r[1:] for r in s.read("SELECT ref_id, iou, no_target_agree, model_no_target FROM qa")}
    assert stored[ra][1:] == (1, 0) and abs(stored[ra][0] - 0.5) < 0.1  # about half the box
    assert stored[rb] == (0.0, 0, 1)  # the worst sentence: the model said no target for "b again"
    assert stored[rc] == (1.0, 1, 1) and stored[rd] == (0.0, 0, 0)
    assert {d["ref_id"] for d in res["disagreements"][:2]} == {rb, rd}  # worst first


def test_qa_of_a_group_without_any_target(tmp_path: Path) -> None:
    s = Store(tmp_path / "nt.sqlite")
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    s.save_ref(img, ["x"], no_target=True, author="ann")
    s.save_ref(img, ["y"], no_target=True, author="ann")
    res = qa(s, _Scripted({"x": None, "y": _box(0, 0, 2, 2)}), "scripted")
    assert res["overall"]["cIoU"] is None and res["overall"]["N_acc"] == 50.0 and res["overall"]["gIoU"] == 50.0


def test_agreement_on_hand_built_masks_and_consensus(tmp_path: Path) -> None:
    s = Store(tmp_path / "ag.sqlite")
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    ann_dog = s.save_ref(img, ["The dog"], masks=[_box(0, 0, 10, 10)], author="ann")
    bob_dog = s.save_ref(img, ["the dog"], masks=[_box(0, 0, 10, 8)], author="bob")  # IoU 0.8 with ann
    s.save_ref(img, ["the dog"], masks=[_box(10, 10, 20, 20)], author="cat")  # disagrees
    s.save_ref(img, ["a unicorn"], no_target=True, author="ann")
    s.save_ref(img, ["a unicorn"], no_target=True, author="bob")
    s.save_ref(img, ["only one person"], no_target=True, author="ann")
    res = agreement(s)
    ious = {tuple(p["annotators"]) + (p["sentence"],): p["iou"] for p in res["per_pair"]}
    assert res["groups"] == 2 and res["pairs"] == 4
    assert ious[("ann", "bob", "the dog")] == 0.8 and ious[("ann", "cat", "the dog")] == 0.0
    assert ious[("ann", "bob", "a unicorn")] == 1.0
    assert res["mean_iou"] == round((0.8 + 0 + 0 + 1) / 4, 4) and res["no_target_agreement"] == 1.0
    merged = agreement(s, merge=True, min_iou=0.75, quorum=2)
    assert merged["merged"] == 2
    cons = [r for r in s.refs() if r.author.startswith("consensus")]
    assert {r.author for r in cons} == {"consensus(ann,bob)"}
    dog = next(r for r in cons if not r.no_target)
    # the consensus copies the answer closest to the others (ann's or bob's, never cat's)
    assert dog.instance_ids in (s.ref(ann_dog).instance_ids, s.ref(bob_dog).instance_ids)
    assert agreement(s, merge=True, min_iou=0.75, quorum=2)["merged"] == 0  # idempotent
    assert agreement(s, merge=True, min_iou=0.75, quorum=3)["merged"] == 0


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    r = _cli("qa", "--db", str(tmp_path / "missing.sqlite"))
    assert r.returncode == 2 and "database not found" in r.stderr
    Store(tmp_path / "x.sqlite").close()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = _cli("preannotate", "--db", str(tmp_path / "x.sqlite"), "--pairs", str(bad))
    assert r.returncode == 2 and "bad.jsonl line 1" in r.stderr and "Traceback" not in r.stderr


def test_the_review_queue_can_show_the_biggest_disagreements_first(tmp_path: Path) -> None:
    from app.store.review import review_queue

    s = Store(tmp_path / "q.sqlite")
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    good = s.save_ref(img, ["a"], masks=[_box(0, 0, 10, 10)], author="ann")
    bad = s.save_ref(img, ["b"], masks=[_box(5, 5, 15, 15)], author="ann")
    qa(s, _Scripted({"a": _box(0, 0, 10, 10), "b": _box(0, 0, 3, 3)}), "scripted")
    unchecked = s.save_ref(img, ["c"], no_target=True, author="ann")  # saved after the qa run
    assert [r.id for r in review_queue(s)[0]] == [good, bad, unchecked]  # oldest first
    assert [r.id for r in review_queue(s, by_disagreement=True)[0]] == [bad, good, unchecked]


def test_deleted_predictions_stay_deleted_and_unreadable_images_are_skipped(collection: Path) -> None:
    db = _fresh(collection, "tombstones")
    s = Store(db)
    from deris_core.weights import load_predictor

    p = load_predictor("bundled")
    pairs = pairs_from_sentences(s, SENTENCES)
    missing = pairs[-1].image_id
    summary = run(s, p, pairs, "k", progress=False, load=lambda i: None if i == missing else s.load_image(i))
    assert summary.written == 15 and summary.skipped == [f"image {missing}: pixels not available"]
    victim = next(r for r in s.refs() if not r.no_target)
    s.delete_ref(victim.id, actor="ann")
    assert not set(victim.instance_ids) & {i.id for i in s.instances(victim.image_id)}  # no model orphans
    again = run(s, p, pairs, "k", progress=False)
    assert again.already_done == 15 and again.written == 3  # the deleted pair is not predicted again
    assert victim.id not in {r.id for r in s.refs()}


def test_qa_lists_images_it_could_not_read_and_exits_3(tmp_path: Path, monkeypatch, capsys) -> None:
    """An image whose file is gone is not checked: qa lists it with its refs, and the CLI exits 3."""
    from app.curate import __main__ as cli

    s = Store(tmp_path / "gone.sqlite")
    kept = s.add_image(np.zeros((20, 20, 3), np.uint8))
    gone = s.add_image(np.full((20, 20, 3), 200, np.uint8))
    s.save_ref(kept, ["a"], masks=[_box(0, 0, 10, 10)], author="ann")
    for text in ("b", "c"):
        s.save_ref(gone, [text], no_target=True, author="ann")
    Path(s.image(gone).path).unlink()
    model = _Scripted({"a": _box(0, 0, 10, 10), "b": None, "c": None})
    res = qa(s, model, "scripted")
    assert res["refs"] == 1 and res["refs_not_checked"] == 2
    assert res["skipped_images"] == [{"image_id": gone, "file_name": s.image(gone).file_name, "refs": 2,
                                      "why": "the image file is gone, unreadable or changed"}]
    monkeypatch.setattr(cli, "_predictor", lambda *a: model)
    assert cli.main(["qa", "--db", str(tmp_path / "gone.sqlite"), "--json"]) == 3
    out = capsys.readouterr()
    assert json.loads(out.out)["skipped_images"][0]["refs"] == 2
    assert f"skipped: image {gone} " in out.err and "(2 refs)" in out.err
    # with every image readable, the same command exits 0
    s.delete_ref(s.refs(image_id=gone)[0].id)
    s.delete_ref(s.refs(image_id=gone)[0].id)
    assert cli.main(["qa", "--db", str(tmp_path / "gone.sqlite"), "--json"]) == 0


def test_images_batched_together_get_the_answers_of_one_image_at_a_time(studio_weights) -> None:
    """Pre-annotation batched across images (several images in one encoder pass, pairs of several
    images in one decoder pass) stores what image by image would, for images of different sizes."""
    from app.curate.preannotate import predict_image, predict_images
    from deris_core.weights import load_predictor

    predictor = load_predictor(str(studio_weights[0]), dtype="fp32")
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 255, (40 + 16 * k, 64 - 8 * k, 3), dtype=np.uint8) for k in range(3)]
    sentences = [["the red circle", "all blue squares"], ["the star"], ["the largest yellow shape", "the red circle"]]
    together = predict_images(predictor, [(p, k + 1, s) for k, (p, s) in enumerate(zip(pictures, sentences))], batch=3)
    alone = [r for k, (p, s) in enumerate(zip(pictures, sentences)) for r in predict_image(predictor, p, k + 1, s, batch=1)]
    assert [(r.image_id, r.sentence) for r in together] == [(r.image_id, r.sentence) for r in alone]
    for a, b in zip(together, alone):
        assert abs(a.existence - b.existence) < 1e-4
        assert [c[0] for c in a.candidates] == [c[0] for c in b.candidates]
        assert all(abs(x[1] - y[1]) < 1e-4 for x, y in zip(a.candidates, b.candidates))


def test_pairs_a_person_already_answered_are_skipped_and_counted(collection: Path) -> None:
    """Image 1 has alice's ref for "The  Red circle" (another case and spacing): the model does not
    propose "the red circle" there again, but still does on the other images and for other sentences."""
    from app.services.permissions import Actor
    from app.services.refs import RefService
    from deris_core.weights import load_predictor

    db = _fresh(collection, "people")
    s = Store(db)
    RefService(s).save(Actor("alice"), 1, ["The  Red CIRCLE"], no_target=True)
    RefService(s).save(Actor.tool("model:other"), 2, ["the red circle"], no_target=True, status="predicted")
    summary = run(s, load_predictor("bundled"), pairs_from_sentences(s, SENTENCES), "k", progress=False)
    assert summary.answered_by_people == 1 and summary.written == 17
    assert summary.as_dict()["skipped_answered_by_people"] == 1
    made = [(r.image_id, r.sentences[0]) for r in s.refs() if r.author == "model:k"]
    assert (1, "the red circle") not in made and (2, "the red circle") in made and (1, "all blue shapes") in made
