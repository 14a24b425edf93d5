"""What a non-editable install ships: every non-Python file the package reads at run time is named by
``[tool.setuptools.package-data]`` (a wheel built without it lacked the canvas's script and style)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {"deris_core/gpu_check.sh"}  # a developer's script that runs the tests on a GPU


def unshipped(files: list[str], package_data: dict[str, list[str]]) -> list[str]:
    """The files (paths relative to the repository) that no package-data glob covers."""
    globs = [f"{pkg.replace('.', '/')}/{g}" for pkg, gs in package_data.items() for g in gs]
    return [f for f in files if f not in NOT_SHIPPED and not any(fnmatch.fnmatch(f, g) for g in globs)]


def test_every_runtime_file_of_the_packages_is_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    files = sorted(str(p.relative_to(ROOT)) for pkg in ("app", "deris_core") for p in (ROOT / pkg).rglob("*")
                   if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)
    assert "app/views/static/canvas.js" in files
    assert unshipped(files, data) == []
    assert unshipped(["app/views/static/new.svg"], data) == ["app/views/static/new.svg"]
