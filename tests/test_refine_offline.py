"""A studio without internet: ``--refiner sam:facebook/sam-vit-base`` with the Hub unreachable and an
empty Hugging Face cache says so in one line (naming the repository and GrabCut), and the canvas's
refine call still answers with a mask (the offline GrabCut default); through ``launch.py`` too."""

from __future__ import annotations

import logging
import urllib.request

import numpy as np
import pytest

from app.services import ModelHolder, RefinerHolder, Services, image_digest
from app.viewkit.session import Session
from app.views import prompts
from app.views.canvas import decode_mask
from tests.builders import prediction
from tests.conftest import use_hub

REPO = "facebook/sam-vit-base"
NOWHERE = "http://127.0.0.1:9"  # nothing listens there: the Hub is unreachable


def test_offline_sam_spec_starts_with_grabcut_in_one_line_and_refines(monkeypatch, tmp_path, caplog) -> None:
    from app.store import Store

    use_hub(monkeypatch, NOWHERE, tmp_path / "hf", offline=True)  # HF_HUB_OFFLINE=1, an empty cache
    with caplog.at_level(logging.WARNING):
        holder = RefinerHolder.from_spec(f"sam:{REPO}", device="cpu")
    assert holder.name == "grabcut"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert REPO in lines[0] and "GrabCut" in lines[0]
    svc = Services(ModelHolder(None, "no model"), Store(tmp_path / "p.sqlite"), refiner=holder)
    try:
        image = np.full((96, 128, 3), 120, np.uint8)
        image[30:70, 40:90] = (30, 60, 210)
        sess = Session(image=image, digest=image_digest(image), expression="the blue box",
                       prediction=prediction([np.zeros((96, 128), bool)], [0.1]))
        svc.sessions.track("client-1", sess)
        answer = prompts.refine_on_canvas(svc, {"image": sess.digest, "w": 128, "h": 96,
                                                "prompts": [{"kind": "point", "x": 65, "y": 50, "label": 1}]})
        assert "error" not in answer, answer
        mask = decode_mask(answer["rle"], 96, 128)
        assert answer["refiner"] == "grabcut" and mask.any() and mask[50, 65]
    finally:
        svc.store.close()


def test_launch_offline_with_the_sam_refiner_says_so_and_serves(studio_weights, tmp_path) -> None:
    pytest.importorskip("gradio_client")
    from tests.test_app import start_server

    weights, tok = studio_weights
    home = tmp_path / "hf"
    env = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": NOWHERE, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc, url = start_server(weights, tok, tmp_path / "db.sqlite", ["--refiner", f"sam:{REPO}"], env_extra=env)
    try:
        said = [ln for ln in proc.startup_lines if "GrabCut" in ln]
        assert len(said) == 1 and REPO in said[0], "".join(proc.startup_lines[-20:])
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
