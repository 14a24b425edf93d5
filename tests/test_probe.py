"""The word-swap probe (``python -m deris_core.tools.probe``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deris_core.data.refer import load_grefcoco
from deris_core.tools.probe import parse_swap, swap_word, top2_change, word_swap_probe
from deris_core.weights import load_predictor


def test_parse_swap() -> None:
    assert parse_swap("leftmost=rightmost") == ("leftmost", "rightmost")
    assert parse_swap("  Left   of = right of ") == ("left of", "right of")
    for bad in ("leftmost", "a=b=c", "=right", "left=", "top=top"):
        with pytest.raises(ValueError):
            parse_swap(bad)


def test_swap_word_is_whole_word() -> None:
    assert swap_word("the top star", "top", "bottom") == "the bottom star"
    assert swap_word("the topmost star", "top", "bottom") is None
    assert swap_word("the star on top", "top", "bottom") == "the star on bottom"
    assert swap_word("the circle left  of the square", "left of", "right of") == "the circle right of the square"
    assert swap_word("the circle left of the square left of it", "left of", "right of") == \
        "the circle right of the square right of it"
    assert swap_word("the leftmost circle", "left", "right") is None


def test_top2_change_hand_case() -> None:
    a = np.array([0.9, 0.1, 0.8, 0.3])
    b = np.array([0.7, 0.9, 0.85, 0.3])
    # top-2 of the original are candidates 0 and 2: changes 0.2 and 0.05; candidate 1's 0.8 is not counted
    assert top2_change(a, b) == pytest.approx(0.2)
    assert top2_change(a, a) == 0.0


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from deris_core.synthetic import generate

    root = tmp_path_factory.mktemp("probe_shapes")
    generate(root, seed=5, images=16)
    return root


def test_probe_counts_and_ranges(shapes: Path, studio_weights) -> None:
    weights, tok = studio_weights
    predictor = load_predictor(weights, tok, device="cpu", dtype="fp32")  # exact: batching must not change figures
    swaps = [("left of", "right of"), ("largest", "smallest")]
    results = word_swap_probe(predictor, str(shapes), "train", swaps, limit=6)
    assert [(r.original, r.replacement) for r in results] == [
        ("left of", "right of"), ("right of", "left of"), ("largest", "smallest"), ("smallest", "largest")]
    data = load_grefcoco(shapes, "train")
    for r in results:
        have = sum(1 for s in data.samples if not s.no_target and swap_word(s.sentence, r.original, r.replacement))
        assert r.samples == min(6, have)
        if r.samples:
            assert 0.0 <= r.score_change <= 1.0 and 0.0 <= r.same_best <= 1.0
        else:
            assert r.score_change is None and r.same_best is None
    # pairs are run in bounded batches; the batch size must not change the figures
    one_by_one = word_swap_probe(predictor, str(shapes), "train", swaps, limit=6, batch=1)
    for r, q in zip(results, one_by_one):
        assert (r.samples, r.same_best) == (q.samples, q.same_best)
        assert r.score_change == pytest.approx(q.score_change, abs=1e-5)
    with pytest.raises(ValueError):
        word_swap_probe(predictor, str(shapes), "train", [("top", "bottom")], batch=0)


def test_probe_cli(shapes: Path, studio_weights) -> None:
    weights, tok = studio_weights
    base = [sys.executable, "-m", "deris_core.tools.probe", "--weights", str(weights), "--tokenizer", str(tok),
            "--data", str(shapes), "--split", "val", "--device", "cpu"]
    r = subprocess.run(base + ["--swap", "largest=smallest", "--swap", "zzz=yyy", "--limit", "3", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [s["original"] for s in out["swaps"]] == ["largest", "smallest", "zzz", "yyy"]
    assert out["swaps"][2] == {"original": "zzz", "replacement": "yyy", "samples": 0, "score_change": None,
                               "same_best": None}
    for bad in (["--swap", "leftmost"], ["--swap", "a=b", "--limit", "0"], ["--swap", "a=b", "--split", "nope"]):
        r = subprocess.run(base + bad, capture_output=True, text=True, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(lines) == 1, r.stderr
