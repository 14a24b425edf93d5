"""The environment is read in two places (deris_core/env.py and app/settings.py), each variable is in
one of their tables, docs/environment.md is those tables, and the settings are read once per process."""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest

from app import settings as app_settings
from deris_core import env

ROOT = Path(__file__).resolve().parents[1]
READERS = {"deris_core/env.py", "app/settings.py"}
READS = re.compile(r"\bos\.environ\b|\bgetenv\b|\bputenv\b")
VARIABLE = re.compile(r"^(DERIS|HF_HUB|SPACES?|GRADIO_SERVER|ONEDNN|XDG|PYTORCH_ENABLE)_[A-Z0-9_]*$|^(RANK|WORLD_SIZE|LOCAL_RANK|SPACE_ID)$")


def _sources() -> dict[str, str]:
    files = [ROOT / "launch.py", *(ROOT / "app").rglob("*.py"), *(ROOT / "deris_core").rglob("*.py")]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}


def env_reads(rel: str, source: str) -> list[str]:
    """Lines of ``rel`` (outside the two readers) that touch the environment directly."""
    if rel in READERS:
        return []
    return [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(source.splitlines(), 1) if READS.search(line)]


def known(name: str) -> bool:
    """``name`` is in one of the two tables (a family prefix such as ``DERIS_HF_FILE_`` counts)."""
    try:
        env.variable(name)
        return True
    except KeyError:
        pass
    return name in {v.name for v in app_settings.VARIABLES} or any(
        v.name.startswith(name) and "<" in v.name for v in env.VARIABLES)


def test_only_the_two_readers_touch_the_environment():
    assert [line for rel, src in _sources().items() for line in env_reads(rel, src)] == []


def test_the_check_catches_a_direct_read():
    assert env_reads("deris_core/x.py", 'import os\nA = os.environ.get("DERIS_X")\n') != []
    assert env_reads("app/x.py", "from os import getenv\n") != []
    assert env_reads("deris_core/env.py", "os.environ.get('X')") == []


def test_every_variable_named_in_the_code_is_in_a_table():
    unknown = []
    for rel, src in _sources().items():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                if not known(node.value):
                    unknown.append(f"{rel}:{node.lineno}: {node.value}")
    assert unknown == []
    assert not known("DERIS_NOT_A_VARIABLE")


def test_docs_environment_is_the_two_tables():
    text = (ROOT / "docs" / "environment.md").read_text(encoding="utf-8")
    assert app_settings.environment_markdown() in text
    names = set(re.findall(r"^\| `([A-Z0-9_<>]+)` \|", text, re.M))
    assert names == {v.name for v in env.VARIABLES} | {v.name for v in app_settings.VARIABLES}


def test_table_defaults_are_the_ones_the_code_uses():
    from app.settings import Settings
    from deris_core import tokenizer_source
    from deris_core.weights import HF_REPO

    assert env.variable("DERIS_TOKENIZER_URL").default == tokenizer_source.BEIT3_TOKENIZER_URL
    assert env.variable("DERIS_HF_TOKENIZER_FILE").default == tokenizer_source.TOKENIZER_FILE
    assert float(env.variable("DERIS_TOKENIZER_DEADLINE").default) == tokenizer_source.DEADLINE_S
    assert int(env.variable("DERIS_TOKENIZER_MAX_BYTES").default) == tokenizer_source.MAX_BYTES
    assert env.variable("DERIS_HF_REPO").default == "Dmmm997/DeRIS" and HF_REPO  # (set at import)
    table = {v.name: v.default for v in app_settings.VARIABLES}
    s = Settings()
    assert (table["DERIS_DTYPE"], table["DERIS_DEFAULT_MODEL"], table["GRADIO_SERVER_NAME"]) == (s.dtype, s.default_model, s.host)
    assert int(table["GRADIO_SERVER_PORT"]) == s.port and int(table["DERIS_GPU_DURATION"]) == s.gpu_duration
    assert Settings.from_env({}) == s


def test_accessors_keep_each_modules_reading(monkeypatch):
    monkeypatch.setenv("DERIS_TOKENIZER_URL", "")
    assert env.get("DERIS_TOKENIZER_URL") == ""  # empty stays empty: no download
    monkeypatch.setenv("DERIS_TOKENIZER_DEADLINE", "")
    assert env.filled("DERIS_TOKENIZER_DEADLINE") == "120"  # empty counts as unset
    monkeypatch.delenv("DERIS_TOKENIZER_URL")
    assert env.get("DERIS_TOKENIZER_URL").startswith("https://")
    monkeypatch.setenv("DERIS_HF_FILE_DERIS_L_GREFCOCO", "x.pth")
    from deris_core.weights import hf_filename

    assert hf_filename("deris-l-grefcoco") == "x.pth" and hf_filename("deris-b-grefcoco") == "DeRIS-B-grefcoco.pth"
    monkeypatch.setenv("HF_HUB_OFFLINE", " Yes ")
    assert env.flag("HF_HUB_OFFLINE")
    with pytest.raises(KeyError):
        env.get("DERIS_UNLISTED")
    with pytest.raises(KeyError):
        app_settings.get("DERIS_UNLISTED")


def test_settings_are_read_once_by_the_entry_points():
    """``Settings.from_env()`` is called by the entry points only (launch.py, the curate CLI) and by
    ``current()``'s fallback; the rest is handed the settings."""
    calls = [f"{rel}:{n.lineno}" for rel, src in _sources().items() for n in ast.walk(ast.parse(src))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "from_env"
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "Settings"]
    allowed = {"launch.py", "app/curate/__main__.py", "app/settings.py"}
    assert {c.split(":")[0] for c in calls} <= allowed, calls
    assert len(calls) == 3, calls


def test_launch_installs_its_settings_and_zerogpu_reads_what_it_is_given(monkeypatch):
    import importlib

    from app import zerogpu
    from app.settings import Settings

    monkeypatch.setitem(sys.modules, "spaces", None)
    monkeypatch.setenv("DERIS_GPU_DURATION", "17")
    sys.modules.pop("launch", None)
    launch = importlib.import_module("launch")
    try:
        assert app_settings.current() is launch.SETTINGS and launch.SETTINGS.gpu_duration == 17
        monkeypatch.setenv("DERIS_GPU_DURATION", "99")  # read once: a later change is not seen
        assert app_settings.current().gpu_duration == 17
        module = types.ModuleType("spaces")
        module.GPU = lambda duration: (lambda f: (f, duration))
        monkeypatch.setitem(sys.modules, "spaces", module)
        on_space = Settings(space_id="a/b", zero_gpu=True, gpu_duration=5)
        assert zerogpu.on_zerogpu(on_space) and not zerogpu.on_zerogpu(Settings())
        assert zerogpu.gpu(len, on_space) == (len, 5) and zerogpu.gpu(len, Settings()) is len
        assert zerogpu.model_device("cpu", on_space) == "cuda"
    finally:
        app_settings.install(None)  # the next test reads its own environment
