"""Shared test helpers: where the reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("DERIS_REFERENCE", ROOT.parent / "shared" / "reference"))


def fixture_files() -> list[Path]:
    files = sorted((REFERENCE / "fixtures").glob("*.pt"))
    if not files:  # pragma: no cover - reference folder missing
        pytest.skip(f"no golden fixtures under {REFERENCE / 'fixtures'}", allow_module_level=True)
    return files
