"""Shared test helpers: where the reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DEVICE = os.environ.get("DERIS_TEST_DEVICE", "cpu")  # "cuda": the GPU check (scripts/gpu_check.sh)
REFERENCE = Path(os.environ.get("DERIS_REFERENCE", ROOT.parent / "shared" / "reference"))


def _missing(message: str) -> None:
    """Skip on a user's clone without the reference data; in CI a missing check is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " -- CI must run every reference check")
    pytest.skip(message)


def require_reference(*parts: str) -> Path:
    """Path under the reference data, or skip the test with the reason (fresh clones lack it)."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        _missing(f"reference data not found: {path} (set DERIS_REFERENCE)")
    return path


def fixture_files() -> list[Path]:
    files = sorted((REFERENCE / "fixtures").glob("*.pt"))
    if not files:  # pragma: no cover - reference folder missing
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(f"no golden fixtures under {REFERENCE / 'fixtures'}: CI must run them")
        pytest.skip(f"no golden fixtures under {REFERENCE / 'fixtures'}", allow_module_level=True)
    return files


BUNDLED = ROOT / "assets" / "bundled"


@pytest.fixture(scope="session")
def studio_weights(tmp_path_factory) -> tuple[Path, Path]:
    """``(weights, tokenizer)`` for app tests: the bundled model, or (before it exists) a
    freshly built small model with random weights and a tokenizer trained in the test."""
    if (BUNDLED / "model.safetensors").is_file() and (BUNDLED / "tokenizer.spm").is_file():
        return BUNDLED / "model.safetensors", BUNDLED / "tokenizer.spm"
    import torch

    from deris_core.checkpoint import save_weights
    from deris_core.config import deris_small
    from deris_core.model import build_deris
    from deris_core.tokenizer import BEiT3Tokenizer, train_sentencepiece

    out = tmp_path_factory.mktemp("studio_model")
    words = ["the red circle", "all blue squares", "the two green triangles", "the star left of the big square",
             "the largest yellow shape", "the bottom orange star", "the purple circle above the triangle"]
    tok = train_sentencepiece(words * 3, out / "tokenizer", vocab_size=60)
    cfg = deris_small(vocab_size=BEiT3Tokenizer(tok, 24).vocab_size)
    torch.manual_seed(0)
    save_weights(build_deris(cfg), out / "model.safetensors", cfg)
    return out / "model.safetensors", tok
