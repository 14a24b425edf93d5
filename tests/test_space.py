"""The Space: ZeroGPU conventions with a stand-in ``spaces`` module, the front matter, per-model defaults."""

from __future__ import annotations

import importlib
import re
import sys
import types

import pytest
import torch

import deris_core.weights
from app import zerogpu
from app.settings import Settings, install
from app.viewkit import model_info
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Each test imports launch, which installs the settings of its environment: none outlive the test."""
    yield
    install(None)


@pytest.fixture
def fake_spaces(monkeypatch):
    """A stand-in ``spaces`` package that records what ``spaces.GPU`` decorates and with which duration."""
    module = types.ModuleType("spaces")
    module.decorated = []

    def GPU(fn=None, *, duration=60):  # noqa: N802 - the real name
        def wrap(f):
            module.decorated.append((f.__name__, duration))
            return f

        return wrap(fn) if callable(fn) else wrap

    module.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    monkeypatch.setenv("SPACE_ID", "someone/deris-studio")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # what a ZeroGPU Space sets
    return module


@pytest.fixture
def devices(monkeypatch, studio_weights):
    """Records the device every load_predictor call asks for (and loads the small model on the CPU)."""
    asked = []
    real = deris_core.weights.load_predictor
    weights, tok = studio_weights

    def fake(name=None, tokenizer=None, *, device="auto", **kw):
        asked.append((name, device))
        return real(weights, tok, device="cpu")

    monkeypatch.setattr(deris_core.weights, "load_predictor", fake)
    return asked


def _import_launch():
    sys.modules.pop("launch", None)
    return importlib.import_module("launch")


def test_zerogpu_model_on_cuda_at_import_and_gpu_work_decorated(fake_spaces, devices, tmp_path, monkeypatch):
    monkeypatch.setenv("DERIS_WEIGHTS", "bundled")
    launch = _import_launch()
    assert devices == [("bundled", "cuda")]  # at import time, on cuda
    assert launch.MODEL is not None and launch.MODEL.predictor is not None
    assert zerogpu.model_device("auto") == "cuda"

    from app.store import Store
    from app.ui import build_app

    build_app(launch.MODEL, Store(str(tmp_path / "s.sqlite")), device="cuda")
    names = {name for name, _ in fake_spaces.decorated}
    assert {"segment", "open_ref"} <= names  # every function that runs the network
    assert "rethreshold" not in names and "save" not in names  # cached logits / the store need no GPU
    assert all(d == Settings.from_env().gpu_duration == 30 for _, d in fake_spaces.decorated)


def test_without_spaces_nothing_happens(monkeypatch, devices):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    monkeypatch.setenv("SPACE_ID", "someone/deris-studio")
    launch = _import_launch()
    assert launch.MODEL is None and devices == []
    assert not zerogpu.on_zerogpu() and zerogpu.model_device("cpu") == "cpu"

    def f():
        return 1

    assert zerogpu.gpu(f) is f


def test_other_space_hardware_keeps_the_requested_device(fake_spaces, devices, monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU")  # a CPU or dedicated-GPU Space: SPACE_ID, maybe spaces, no ZeroGPU
    launch = _import_launch()
    assert launch.MODEL is None and devices == []
    assert zerogpu.model_device("auto") == "auto"

    def f():
        return 1

    assert zerogpu.gpu(f) is f and fake_spaces.decorated == []


def test_front_matter_is_one_zerogpu_accepts():
    text = (ROOT / "README.md").read_text()
    front = text.split("---\n")[1]
    assert re.search(r'^python_version: "3\.(10|12)"$', front, re.M)
    assert re.search(r"^sdk: gradio$", front, re.M) and re.search(r"^sdk_version: \d+\.\d+\.\d+$", front, re.M)
    assert re.search(r"^suggested_hardware: zero-a10g$", front, re.M)
    assert re.search(r"^app_file: launch\.py$", front, re.M)
    preload = re.search(r"^preload_from_hub:\n((?:  - .+\n)+)", front, re.M)
    assert preload and "Dmmm997/DeRIS DeRIS-L-grefcoco.pth" in preload.group(1)
    from deris_core.weights import HF_FILES, HF_REPO

    assert f"{HF_REPO} {HF_FILES['deris-l-grefcoco']}" in preload.group(1)


class _P:
    def __init__(self, source, threshold, device="cpu", dtype=torch.float32):
        self.source, self.score_threshold, self.device, self.dtype = source, threshold, torch.device(device), dtype


def test_per_model_defaults_and_examples():
    from deris_core.config import get_config

    assert get_config("deris-b-grefcoco").postprocess.score_threshold == 0.7
    assert get_config("deris-l-grefcoco").postprocess.score_threshold == 0.9
    official = _P("deris-l-grefcoco", 0.9, dtype=torch.bfloat16)
    assert model_info.score_threshold(official) == 0.9
    line = model_info.model_line("official DERIS-L-grefcoco", official)
    assert "official DERIS-L-grefcoco (cpu, bf16, score threshold 0.9)" in line
    assert {p.name for p in model_info.example_images(official)} == {"astronaut.jpg", "chelsea.jpg", "coffee.jpg"}
    bundled = _P("bundled", 0.7)
    assert all(p.name.startswith("shapes_") for p in model_info.example_images(bundled))
    assert model_info.score_threshold(None) == 0.7 and "not loaded" in model_info.model_line("no model", None)


def test_bundled_model_gets_the_shapes_whatever_it_was_called():
    from deris_core.weights import BUNDLED_DIR, load_predictor

    if not (BUNDLED_DIR / "model.safetensors").is_file():
        pytest.skip("no bundled model in this checkout")
    assert model_info.is_bundled(load_predictor("bundled", device="cpu"))
    assert model_info.is_bundled(load_predictor(BUNDLED_DIR / "model.safetensors", device="cpu"))


def test_the_app_starts_at_the_models_threshold_and_names_it(studio_weights, tmp_path):
    from app.store import Store
    from app.services import ModelHolder
    from app.ui import build_app
    from deris_core.weights import load_predictor

    weights, tok = studio_weights
    p = load_predictor(weights, tok, device="cpu")
    p.score_threshold = 0.9  # as DeRIS-L on gRefCOCO
    demo = build_app(ModelHolder(p, "official DERIS-L-grefcoco"), Store(str(tmp_path / "s.sqlite")))
    comps = {c.get("props", {}).get("elem_id"): c["props"] for c in demo.config["components"]}
    assert comps["score-thr"]["value"] == 0.9
    note = next(c["props"]["value"] for c in demo.config["components"] if "model-note" in str(c["props"].get("value")))
    assert f"official DERIS-L-grefcoco (cpu, {p.precision.name}, score threshold 0.9) · kernels: {p.precision.kernels}" in note
    assert "asked auto" in note  # the tooltip says why this precision runs
