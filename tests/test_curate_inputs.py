"""Batch tools that survive one bad input: preannotate skips and lists bad lines and refuses wrong
types, identifies weights by content; rethreshold validates before touching anything; qa skips a
sentence the model cannot take; agreement --merge is idempotent for any Unicode and safe when two
merges run at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.curate import agreement, apply_threshold, pairs_from_jsonl, pairs_from_sentences, qa, rethreshold, run
from app.curate.preannotate import (PairResult, model_key, pairs_from_refs_file, read_sentences, sentence_checker,
                                    weights_digest, write_results)
from app.store import Store, StoreError, encode_mask

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "bundled"


@pytest.fixture(scope="module")
def predictor():
    from deris_core.weights import load_predictor

    return load_predictor("bundled", device="cpu")


def _store(tmp_path: Path, n: int = 2) -> tuple[Store, list[int]]:
    s = Store(tmp_path / "c.sqlite")
    rng = np.random.default_rng(0)
    ids = [s.add_image(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), file_name=f"img{k}.png") for k in range(n)]
    return s, ids


BAD_SENTENCES = ["?", "...", "!!! ,,", "\u200b", "a" * 600, "\t \u3000"]


def test_sentences_file_bad_lines_are_listed_and_the_rest_runs(tmp_path: Path, predictor) -> None:
    s, ids = _store(tmp_path)
    f = tmp_path / "sentences.txt"
    lines = [b"the red circle", b"?", b"", b"   ", b"...", b"\xff\xfe broken", "a".encode() * 600,
             "the red circle".encode(), "\u200b".encode(), "all blue shapes\r".encode()]
    f.write_bytes(b"\n".join(lines) + b"\n")
    bad: list[str] = []
    sents = read_sentences(f, sentence_checker(predictor), bad)
    assert sents == ["the red circle", "all blue shapes"]
    assert [b.split(":")[0] for b in bad] == [f"sentences.txt line {n}" for n in (2, 5, 6, 7, 9)]
    r = subprocess.run([sys.executable, "-m", "app.curate", "preannotate", "--db", str(s.path), "--sentences", str(f),
                        "--json", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["written"] == 2 * len(ids) and len(res["bad_lines"]) == 5 and "Traceback" not in r.stderr
    assert "line 2" in r.stderr
    assert sorted({tuple(x.sentences) for x in Store(s.location).refs()}) == [("all blue shapes",), ("the red circle",)]


def test_only_bad_lines_is_an_error(tmp_path: Path, capsys) -> None:
    from app.curate.__main__ import main

    s, _ = _store(tmp_path, 1)
    f = tmp_path / "bad.txt"
    f.write_text("?\n...\n")
    assert main(["preannotate", "--db", str(s.path), "--sentences", str(f), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no usable pair" in err and "bad.txt line 1" in err
    assert Store(s.location).stats()["refs"] == 0


def test_run_skips_sentences_the_model_cannot_take(tmp_path: Path, predictor) -> None:
    s, ids = _store(tmp_path)
    pairs = pairs_from_sentences(s, ["the red circle"]) + [p for b in BAD_SENTENCES[:4]
                                                             for p in _raw_pairs(ids, b)]
    summary = run(s, predictor, pairs, "k", progress=False)
    assert summary.written == len(ids)
    assert len(summary.skipped_sentences) == 4 and summary.skipped == []
    assert all(x.startswith("sentence ") and "empty after cleaning" in x for x in summary.skipped_sentences)
    assert all(r.sentences == ["the red circle"] for r in s.refs())


def _raw_pairs(ids, sentence):
    from app.curate import Pair

    return [Pair(i, sentence) for i in ids]


@pytest.mark.parametrize("value", [None, ["the", "cat"], 7, 3.5, True, {"raw": "x"}, "", "   ", "?", "a" * 600])
def test_jsonl_wrong_types_and_bad_sentences_are_refused_never_stored_as_text(tmp_path: Path, predictor, value) -> None:
    s, ids = _store(tmp_path, 1)
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"image": ids[0], "sentence": "the red circle"}) + "\n"
                 + json.dumps({"image": ids[0], "sentence": value}) + "\n")
    bad: list[str] = []
    pairs = pairs_from_jsonl(s, f, sentence_checker(predictor), bad)
    assert [p.sentence for p in pairs] == ["the red circle"] and len(bad) == 1 and bad[0].startswith("pairs.jsonl line 2")
    with pytest.raises(StoreError, match="line 2"):
        pairs_from_jsonl(s, f, sentence_checker(predictor))


def test_jsonl_bad_records_are_listed_by_line(tmp_path: Path) -> None:
    s, ids = _store(tmp_path, 1)
    f = tmp_path / "p.jsonl"
    good = json.dumps({"image": ids[0], "sentence": "ok"})
    rows = [good, "not json", "[1, 2]", json.dumps({"image": ids[0]}), json.dumps({"image": True, "sentence": "x"}),
            json.dumps({"image": 1.5, "sentence": "x"}), json.dumps({"image": [1], "sentence": "x"}),
            json.dumps({"image": "nope.png", "sentence": "x"}), json.dumps({"image": 999, "sentence": "x"}),
            json.dumps({"image": "img0.png", "sentence": "by name"})]
    f.write_bytes("\n".join(rows).encode() + b"\n\xff\xff\n")
    bad: list[str] = []
    pairs = pairs_from_jsonl(s, f, None, bad)
    assert [p.sentence for p in pairs] == ["ok", "by name"]
    assert [b.split(":")[0] for b in bad] == [f"p.jsonl line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 11)]


def test_refs_file_bad_sentences_are_listed(tmp_path: Path) -> None:
    s, ids = _store(tmp_path, 1)
    f = tmp_path / "grefs.json"
    f.write_text(json.dumps([{"image_id": ids[0], "sentences": [{"raw": "good one"}, {"raw": None, "sent": 5}, 7, ["x"]]},
                             {"file_name": "missing.png", "sentences": [{"raw": "x"}]}, "junk"]))
    bad: list[str] = []
    assert [p.sentence for p in pairs_from_refs_file(s, f, None, bad)] == ["good one"]
    assert len(bad) == 5 and "refs[1]" in bad[3] and "refs[2]" in bad[4]


def test_model_key_is_the_weights_content(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    cfg = SimpleNamespace(name="deris-small")
    v1 = tmp_path / "runs" / "v1" / "model.safetensors"
    v2 = tmp_path / "runs" / "v2" / "model.safetensors"
    same = tmp_path / "elsewhere" / "renamed.safetensors"
    for p in (v1, v2, same):
        p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUNDLED / "model.safetensors", v1)
    shutil.copy(BUNDLED / "model.safetensors", same)
    tensors = load_file(str(v1))
    with safe_open(str(v1), framework="pt") as fh:
        meta = fh.metadata()
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1e-3  # "retrained"
    save_file(tensors, str(v2), metadata=meta)
    k1 = model_key(SimpleNamespace(cfg=cfg, weights_file=v1), "runs/v1/model.safetensors")
    k2 = model_key(SimpleNamespace(cfg=cfg, weights_file=v2), "runs/v2/model.safetensors")
    k3 = model_key(SimpleNamespace(cfg=cfg, weights_file=same), str(same))
    assert k1 != k2 and k1.split("|sha256:")[1] == k3.split("|sha256:")[1]
    assert k1.startswith("model.safetensors|deris-small|sha256:")
    # cached by path, size and mtime: no re-hash while unchanged, a new hash when the file changes
    memo = list((Path(os.environ["DERIS_CACHE"]) / "weight_digests").glob("*.sha256"))
    assert memo
    t0 = time.perf_counter()
    for _ in range(50):
        weights_digest(v1)
    assert time.perf_counter() - t0 < 1.0
    d_before = weights_digest(v1)
    shutil.copy(v2, v1)
    os.utime(v1, ns=(time.time_ns(), time.time_ns() + 5_000_000))
    assert weights_digest(v1) == weights_digest(v2) != d_before
    # a resumed run with other weights does not take the first one's pairs as done
    s, ids = _store(tmp_path, 1)
    write_results(s, [_result(ids[0], "x")], k1)
    from app.curate.preannotate import pending

    assert pending(s, _raw_pairs(ids, "x"), k1) == [] and len(pending(s, _raw_pairs(ids, "x"), k2)) == 1


def test_load_predictor_names_its_weights_file() -> None:
    from deris_core.weights import load_predictor

    p = load_predictor("bundled", device="cpu")
    assert Path(p.weights_file).resolve() == (BUNDLED / "model.safetensors").resolve()
    assert model_key(p, "bundled").startswith("bundled|")
    # the precision that ran is part of the key: bf16, int8 and fp32 answers are never mixed
    assert model_key(p, "bundled").endswith(f"|{p.precision.name}")
    q = load_predictor("bundled", device="cpu", dtype="fp32")
    assert model_key(q, "bundled").endswith("|fp32")
    assert model_key(p, "bundled") != model_key(q, "bundled") or p.precision.name == "fp32"


def _result(image_id: int, sentence: str, h: int = 24, w: int = 24) -> PairResult:
    m1 = np.zeros((h, w), bool)
    m1[2:8, 2:8] = True
    m2 = np.zeros((h, w), bool)
    m2[10:20, 10:20] = True
    return PairResult(image_id, sentence, 0.9, 0.5, 0.5, [(0, 0.9, encode_mask(m1)), (1, 0.3, encode_mask(m2))])


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf"), -1, -1e-9, 7, 1.0000001, "0.5", None, True,
                                   [0.5]])
def test_rethreshold_refuses_bad_scores_before_touching_anything(tmp_path: Path, score) -> None:
    s, ids = _store(tmp_path)
    write_results(s, [_result(i, t) for i in ids for t in ("a", "b")], "k")
    before = [(r.id, r.version, r.no_target, r.instance_ids) for r in s.refs()]
    with pytest.raises(StoreError, match="from 0 to 1"):
        apply_threshold(s, "k", score)
    with pytest.raises(StoreError, match="from 0 to 1"):
        rethreshold(s, before[0][0], score)
    assert [(r.id, r.version, r.no_target, r.instance_ids) for r in s.refs()] == before
    assert {r[0] for r in s.read("SELECT score_threshold FROM predictions")} == {0.5}


def test_rethreshold_cli_nan_changes_nothing(tmp_path: Path, capsys) -> None:
    from app.curate.__main__ import main

    s, ids = _store(tmp_path)
    write_results(s, [_result(i, "a") for i in ids], "k")
    before = [(r.id, r.version) for r in s.refs()]
    r = subprocess.run([sys.executable, "-m", "app.curate", "rethreshold", "--db", str(s.path), "--model", "k",
                        "--score", "nan"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "from 0 to 1" in r.stderr and "Traceback" not in r.stderr
    for score in ("inf", "-1", "7", "-inf", "1e400"):
        assert main(["rethreshold", "--db", str(s.path), "--model", "k", f"--score={score}"]) == 2
        assert "from 0 to 1" in capsys.readouterr().err
    assert [(r.id, r.version) for r in Store(s.location).refs()] == before
    # the edges are fine
    assert apply_threshold(s, "k", 0.0) == 2 and apply_threshold(s, "k", 1.0) == 2


def test_qa_skips_a_paraphrase_that_cleans_to_nothing(tmp_path: Path, predictor) -> None:
    s, ids = _store(tmp_path, 1)
    m = np.zeros((24, 24), bool)
    m[2:10, 2:10] = True
    good = s.save_ref(ids[0], ["the square", "?"], masks=[m], author="ann")
    only_bad = s.save_ref(ids[0], ["...", "!!"], no_target=True, author="bob")
    other = s.save_ref(ids[0], ["a cat"], no_target=True, author="bob")
    res = qa(s, predictor, "bundled")
    assert res["refs"] == 2
    assert {r[0] for r in s.read("SELECT ref_id FROM qa")} == {good, other}
    assert any(f"ref {good} sentence '?'" in x for x in res["skipped_sentences"])
    assert any(f"ref {only_bad}: not checked" in x for x in res["skipped_sentences"])


NON_ASCII = [("Der Ärger", "DER ÄRGER"), ("ﬁsh on the left", "FISH on the left"), ("the  ÉCOLE", "the école"),
             ("Straße", "STRASSE"), ("东边的猫", "东边的猫 ")]


def _agree_store(path: Path) -> Store:
    s = Store(path)
    img = s.add_image(np.zeros((20, 20, 3), np.uint8))
    m = np.zeros((20, 20), bool)
    m[0:10, 0:10] = True
    for a, b in NON_ASCII:
        s.save_ref(img, [a], masks=[m], author="ann")
        s.save_ref(img, [b], masks=[m], author="bob")
    return s


def test_agreement_merge_is_idempotent_for_non_ascii(db_at, tmp_path: Path) -> None:
    s = _agree_store(db_at("a.sqlite"))
    assert agreement(s)["groups"] == len(NON_ASCII)
    assert agreement(s, merge=True)["merged"] == len(NON_ASCII)
    assert agreement(s, merge=True)["merged"] == 0
    assert agreement(s, merge=True)["merged"] == 0
    assert sum(r.author.startswith("consensus") for r in s.refs()) == len(NON_ASCII)


def test_two_merges_at_once_add_each_consensus_once(db_at, tmp_path: Path) -> None:
    path = db_at("race.sqlite")
    s = _agree_store(path)
    img = s.refs()[0].image_id
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    for k in range(20):
        s.save_ref(img, [f"thing {k}"], masks=[m], author="ann")
        s.save_ref(img, [f"Thing {k}"], masks=[m], author="bob")
    barrier = threading.Barrier(4)
    merged: list[int] = []

    def merge() -> None:
        store = Store(path)
        barrier.wait()
        merged.append(agreement(store, merge=True)["merged"])

    threads = [threading.Thread(target=merge) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    groups = len(NON_ASCII) + 20
    assert sum(merged) == groups
    cons = [r for r in Store(path).refs() if r.author.startswith("consensus")]
    assert len(cons) == groups


def test_a_nul_line_is_listed_and_skipped_the_same_on_both_backends(db_at, tmp_path: Path) -> None:
    """One sentence holding NUL among three: listed by file and line, skipped, the others stored,
    exit 0, on SQLite and on PostgreSQL alike (it used to stop the whole job on PostgreSQL)."""
    s = Store(db_at("c.sqlite"))
    rng = np.random.default_rng(0)
    ids = [s.add_image(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), file_name=f"img{k}.png") for k in range(2)]
    f = tmp_path / "nul.txt"
    f.write_bytes(b"the red circle\nall blue\x00 shapes\nthe green square\n")
    r = subprocess.run([sys.executable, "-m", "app.curate", "preannotate", "--db", str(db_at("c.sqlite")), "--sentences",
                        str(f), "--json", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["written"] == 2 * len(ids) and len(res["bad_lines"]) == 1
    assert res["bad_lines"][0].startswith("nul.txt line 2:") and "U+0000 (NUL)" in res["bad_lines"][0]
    assert sorted({tuple(x.sentences) for x in Store(s.location).refs()}) == [("the green square",), ("the red circle",)]
