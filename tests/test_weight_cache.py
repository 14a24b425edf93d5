"""Fast starts: the official layout written back, the safetensors copy in the cache, memory-mapped loads."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from deris_core.checkpoint import CheckpointError, official_key_to_ours, ours_to_official_key
from deris_core.config import OFFICIAL_NAMES, get_config
from deris_core.model import build_deris
from deris_core.predictor import Predictor
from deris_core.tokenizer import BEiT3Tokenizer
from deris_core.weight_cache import converted_path, load_official
from deris_core.weights import infer_official_config
from tests.conftest import REFERENCE


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))
def test_official_layout_round_trip(name):
    keys = list(build_deris(get_config(name), device="meta").state_dict())
    assert all(official_key_to_ours(ours_to_official_key(k)) == k for k in keys)
    manifest = REFERENCE / "manifests" / f"{OFFICIAL_NAMES[name]}.json"
    if manifest.is_file():  # every key we write is one the authors' checkpoints hold
        official = set(json.loads(manifest.read_text())["tensors"])
        assert {ours_to_official_key(k) for k in keys} <= official


def _outputs(model, tokenizer, image):
    p = Predictor(model, BEiT3Tokenizer(tokenizer, model.cfg.max_token), device=torch.device("cpu"))
    pred = p.predict("the orange cat", image=p.set_image(image))
    return pred.scores, pred.masks


def test_first_load_writes_a_copy_later_loads_map_it(tiny_official, tmp_path, monkeypatch):
    monkeypatch.setenv("DERIS_CACHE", str(tmp_path / "cache"))
    cfg = tiny_official.config()
    cached = converted_path(tiny_official.pth)
    assert not cached.exists()
    first, _, from_cache = load_official(tiny_official.pth, cfg, infer_official_config)
    assert not from_cache and cached.is_file()
    second, cfg2, from_cache = load_official(tiny_official.pth, None, infer_official_config)
    assert from_cache and cfg2.to_dict() == cfg.to_dict()
    reference = build_deris(cfg)
    reference.load_state_dict(tiny_official.state)
    for model in (first, second):
        for k, v in reference.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k
        rpi = [b for n, b in model.named_buffers() if n.endswith("relative_position_index")]
        assert rpi and not any(b.is_meta for b in rpi)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    want = _outputs(reference, tiny_official.tokenizer, image)
    got = _outputs(second, tiny_official.tokenizer, image)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_array_equal(got[1], want[1])


def test_changed_checkpoint_gets_a_new_copy(tiny_official, tmp_path, monkeypatch):
    monkeypatch.setenv("DERIS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "ckpt.pth"
    path.write_bytes(tiny_official.pth_bytes)
    before = converted_path(path)
    os.utime(path, ns=(1, 1))
    assert converted_path(path) != before


def test_broken_cache_file_is_rebuilt(tiny_official, tmp_path, monkeypatch):
    monkeypatch.setenv("DERIS_CACHE", str(tmp_path / "cache"))
    cached = converted_path(tiny_official.pth)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    _, _, from_cache = load_official(tiny_official.pth, tiny_official.config(), infer_official_config)
    assert not from_cache and cached.stat().st_size > 1000


class _Boom:
    def __reduce__(self):
        return (print, ("PICKLED CODE RAN",))


def test_loading_never_runs_pickled_code(tmp_path, capsys, tiny_official):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _Boom()}, path)
    with pytest.raises(CheckpointError, match="cannot load .* safely"):
        load_official(path, tiny_official.config(), infer_official_config)
    assert "PICKLED CODE RAN" not in capsys.readouterr().out


def test_a_changed_threshold_reuses_the_copy(tiny_official, tmp_path, monkeypatch):
    monkeypatch.setenv("DERIS_CACHE", str(tmp_path / "cache"))
    load_official(tiny_official.pth, tiny_official.config(), infer_official_config)
    cfg = tiny_official.config()
    cfg.postprocess.score_threshold = 0.9
    _, used, from_cache = load_official(tiny_official.pth, cfg, infer_official_config)
    assert from_cache and used.postprocess.score_threshold == 0.9


def test_load_benchmark_pieces(tmp_path, monkeypatch):
    """``python -m deris_core.tools.bench load`` at toy size: the official-layout writer and one measured start per mode."""
    from deris_core.tools.bench_load import _child, write_random_official

    monkeypatch.setenv("DERIS_CACHE", str(tmp_path / "cache"))
    weights = write_random_official("deris-tiny", tmp_path / "bench")
    state = torch.load(weights, weights_only=True)["state_dict"]
    assert "understanding_branch.vis_enc.beit3.text_embed.weight" in state and "head.criterion.empty_weight" in state
    for mode in ("plain", "cached", "cached"):
        r = _child(mode, str(weights), "deris-tiny")
        assert r["load_s"] > 0 and r["load_and_first_predict_s"] >= r["load_s"] and r["peak_rss_mb"] > 0
    assert len(list((tmp_path / "cache" / "converted").glob("*.safetensors"))) == 1


def test_an_unwritable_cache_only_costs_speed(tiny_official, tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DERIS_CACHE", str(blocker))
    model, _, from_cache = load_official(tiny_official.pth, tiny_official.config(), infer_official_config)
    assert not from_cache and model is not None
