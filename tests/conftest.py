"""Shared test helpers: where the reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
