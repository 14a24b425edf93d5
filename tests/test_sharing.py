"""save_pretrained / push_to_hub and loading any such repository by its id (stand-in Hub)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from deris_core.checkpoint import save_weights
from deris_core.sharing import model_card, push_to_hub, run_info, save_pretrained
from deris_core.weights import WeightsError, load_predictor
from tests.conftest import ROOT, use_hub


@pytest.fixture
def trained(tmp_path, studio_weights):
    """A run folder as training leaves it: weights, tokenizer, train_config.json and log.jsonl."""
    weights, tok = studio_weights
    run = tmp_path / "runs" / "shapes"
    run.mkdir(parents=True)
    p = load_predictor(weights, tok, device="cpu")
    save_weights(p.model, run / "model.safetensors", p.cfg)
    (run / "tokenizer.spm").write_bytes(tok.read_bytes())
    (run / "train_config.json").write_text(json.dumps({"data": "/srv/secret/data/shapes", "epochs": 3, "lr": 5e-4,
                                                       "eval_split": "val"}))
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1, "val_gIoU": 40.5}) + "\n"
                                   + json.dumps({"epoch": 2, "val_gIoU": 61.25, "val_N_acc": 90.0}) + "\n")
    return run


def test_run_info_and_model_card(trained):
    training, metrics = run_info(trained / "model.safetensors")
    assert training == {"data": "shapes", "epochs": 3, "lr": 5e-4, "eval_split": "val"}
    assert metrics == {"val_gIoU": 61.25, "val_N_acc": 90.0}
    p = load_predictor(trained / "model.safetensors", device="cpu")
    card = model_card(p.cfg, "me/shapes", training, metrics)
    assert card.startswith("---\nlibrary_name: deris-studio\n") and "| val_gIoU | 61.25 |" in card
    assert "/srv/secret" not in card and 'load_predictor("me/shapes")' in card
    assert "Not recorded" in model_card(p.cfg, None, {}, {})


def test_save_pretrained_folder_loads_back(trained, tmp_path):
    p = load_predictor(trained / "model.safetensors", device="cpu")
    out = save_pretrained(p, tmp_path / "saved")
    assert sorted(f.name for f in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.spm"]
    again = load_predictor(out, device="cpu")
    for k, v in p.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k


def test_push_then_load_by_repo_id(trained, stand_in_hub, monkeypatch, tmp_path):
    p = load_predictor(trained / "model.safetensors", device="cpu")
    training, metrics = run_info(trained / "model.safetensors")
    url = push_to_hub(p, "me/shapes", training=training, metrics=metrics)
    assert "/me/shapes/commit/" in url
    files = stand_in_hub.repos["me/shapes"].files
    assert set(files) == {"README.md", "config.json", "model.safetensors", "tokenizer.spm"}
    assert b"val_gIoU" in files["README.md"]
    methods = {(m, path.split("/")[-2] if "/api/models/" in path else path) for m, path in stand_in_hub.requests}
    assert ("POST", "/api/repos/create") in methods and ("POST", "preupload") in methods and ("POST", "commit") in methods

    loaded = load_predictor("me/shapes", device="cpu")
    assert loaded.description == "me/shapes (Hugging Face Hub)"
    for k, v in p.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a = p.predict("the red circle", image=p.set_image(image))
    b = loaded.predict("the red circle", image=loaded.set_image(image))
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)

    # offline, from the cache
    stand_in_hub.requests.clear()
    use_hub(monkeypatch, stand_in_hub.url, tmp_path / "hf", offline=True)
    assert load_predictor("me/shapes", device="cpu").cfg.name == p.cfg.name
    assert stand_in_hub.requests == []


def test_repo_that_is_not_ours_or_missing(stand_in_hub):
    stand_in_hub.add("someone/else", {"pytorch_model.bin": b"x"})
    with pytest.raises(WeightsError, match="has no model.safetensors: it is not a DeRIS Studio model"):
        load_predictor("someone/else", device="cpu")
    with pytest.raises(WeightsError, match="could not get the Hugging Face repository 'nobody/nothing': .*HTTP 404"):
        load_predictor("nobody/nothing", device="cpu")


def test_cli_save(trained, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "deris_core.tools.share", "save", str(trained / "model.safetensors"), str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "| val_gIoU | 61.25 |" in (out / "README.md").read_text()


def test_command_line_reads_the_hub_from_the_environment(trained, stand_in_hub, tmp_path):
    """A fresh process (huggingface_hub reads HF_ENDPOINT / HF_HOME at import) loads owner/name from the stand-in Hub."""
    import cv2

    p = load_predictor(trained / "model.safetensors", device="cpu")
    push_to_hub(p, "me/cli")
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 200, dtype=np.uint8))
    r = subprocess.run([sys.executable, "-m", "deris_core.tools.predict", str(image), "the red circle", "--weights", "me/cli",
                        "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["weights"] == "me/cli (Hugging Face Hub)" and len(out["predictions"][0]["candidates"]) == p.cfg.num_queries
    assert ("GET", "/me/cli/resolve/" + stand_in_hub.repos["me/cli"].commit + "/model.safetensors") in stand_in_hub.requests
