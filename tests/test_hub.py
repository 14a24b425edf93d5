"""Published names against a stand-in Hub on 127.0.0.1: download, cache, offline reuse, failures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from deris_core.config import PRESETS
from deris_core.weights import WeightsError, load_predictor
from tests.conftest import use_hub

REPO = "Dmmm997/DeRIS"


@pytest.fixture
def published(stand_in_hub, tiny_official, monkeypatch):
    """The tiny official checkpoint published as deris-b-grefcoco (its config stands in for the full one)."""
    monkeypatch.setitem(PRESETS, "deris-b-grefcoco", tiny_official.config)
    stand_in_hub.add(REPO, {"DeRIS-B-grefcoco.pth": tiny_official.pth_bytes, "beit3.spm": tiny_official.tokenizer_bytes})
    return stand_in_hub


def _gets(hub) -> list[str]:
    return [p for m, p in hub.requests if m == "GET"]


def test_published_name_downloads_caches_and_loads(published, tiny_official, monkeypatch, tmp_path):
    p = load_predictor("deris-b-grefcoco", device="cpu", dtype="fp32")  # fp32: the tensors exactly as published
    for k, v in tiny_official.state.items():
        assert torch.equal(p.model.state_dict()[k], v), k
    assert f"/{REPO}/resolve/main/DeRIS-B-grefcoco.pth" in _gets(published)
    assert f"/{REPO}/resolve/main/beit3.spm" in _gets(published)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    first = p.predict("the orange cat", image=p.set_image(image))

    # second start: no network at all (offline, and the server is not asked anything)
    published.requests.clear()
    use_hub(monkeypatch, published.url, tmp_path / "hf", offline=True)
    again = load_predictor("deris-b-grefcoco", device="cpu", dtype="fp32")
    assert published.requests == []
    second = again.predict("the orange cat", image=again.set_image(image))
    np.testing.assert_allclose(first.scores, second.scores, atol=1e-6)


def _one_line_failure(limit_s: float = 30.0) -> str:
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        load_predictor("deris-b-grefcoco", device="cpu")
    assert time.monotonic() - t0 < limit_s
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert "DeRIS-B-grefcoco.pth" in msg and REPO in msg and "--weights PATH" in msg
    return msg


def test_missing_file_is_one_line(stand_in_hub, tiny_official, monkeypatch):
    monkeypatch.setitem(PRESETS, "deris-b-grefcoco", tiny_official.config)
    stand_in_hub.add(REPO, {"README.md": b"# nothing here\n"})
    assert "no such file (HTTP 404)" in _one_line_failure()


def test_missing_repository_is_one_line(stand_in_hub):
    assert "does not exist or is private (HTTP 404)" in _one_line_failure()


def test_truncated_download_is_one_line(published):
    published.truncate.add("DeRIS-B-grefcoco.pth")
    assert "cut short" in _one_line_failure()


def test_server_that_never_answers_is_one_line(published, monkeypatch, tmp_path):
    use_hub(monkeypatch, published.url, tmp_path / "hf2", timeout=1)
    published.hang = True
    assert "did not answer in time" in _one_line_failure(limit_s=20)


def test_cached_files_are_used_when_the_hub_does_not_answer(published, monkeypatch, tmp_path):
    load_predictor("deris-b-grefcoco", device="cpu")
    use_hub(monkeypatch, published.url, tmp_path / "hf", timeout=1)  # same cache, online, 1 s timeouts
    published.hang = True
    t0 = time.monotonic()
    p = load_predictor("deris-b-grefcoco", device="cpu")
    assert time.monotonic() - t0 < 20 and p.cfg.name == "deris-tiny"
