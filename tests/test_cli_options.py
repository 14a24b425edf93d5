"""The options every command line shares: --dtype (one definition, deris_core.hardware) and --log-level."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest

from deris_core.hardware import DTYPE_CHOICES, DTYPE_HELP
from deris_core.runtime import configure_logging


def _help(main, argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return "".join(capsys.readouterr().out.split())  # argparse wraps lines (even after a hyphen)


@pytest.fixture
def launch(monkeypatch):
    from app.settings import install

    monkeypatch.setitem(sys.modules, "spaces", None)
    sys.modules.pop("launch", None)
    yield importlib.import_module("launch")
    install(None)


def test_dtype_is_defined_once_and_states_the_auto_rule(capsys, launch):
    from app.curate.__main__ import _main as curate
    from deris_core.tools.predict import build_parser

    rule = "".join(DTYPE_HELP.split())
    texts = [_help(launch.main, ["--help"], capsys), _help(curate, ["preannotate", "--help"], capsys),
             "".join(build_parser().format_help().split())]
    for text in texts:
        assert rule in text and "{" + ",".join(DTYPE_CHOICES) + "}" in text
        assert "bf16onaGPUthatoffersit,elsefp32" not in text
    assert "int8 linears on an x86 CPU" in DTYPE_HELP  # choose_precision('auto') on a CPU without bf16


def test_log_level_flag_then_environment_then_default(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # basicConfig acts once per process: give it a fresh root
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("DERIS_LOG_LEVEL", "debug")
    assert configure_logging(None) == "DEBUG" and root.level == logging.DEBUG
    root.handlers = []
    assert configure_logging("ERROR") == "ERROR" and root.level == logging.ERROR
    root.handlers = []
    monkeypatch.setenv("DERIS_LOG_LEVEL", "chatty")
    assert configure_logging(None, default="WARNING") == "WARNING"


def dtype_option_violations(name: str, source: str) -> list[str]:
    """Where a command line's ``--dtype`` option does not take its choices from ``DTYPE_CHOICES``
    (``choices=DTYPE_CHOICES`` or ``choices=list(DTYPE_CHOICES)``): a list written out again drifts."""
    import ast

    def shared(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple") \
                and len(node.args) == 1:
            node = node.args[0]
        return isinstance(node, ast.Name) and node.id == "DTYPE_CHOICES" or \
            isinstance(node, ast.Attribute) and node.attr == "DTYPE_CHOICES"

    out = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument" \
                and any(isinstance(a, ast.Constant) and a.value == "--dtype" for a in n.args):
            choices = next((k.value for k in n.keywords if k.arg == "choices"), None)
            if not shared(choices):
                out.append(f"{name}:{n.lineno}")
    return out


def test_every_dtype_option_uses_the_shared_choices():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [root / "launch.py", *(root / "app").rglob("*.py"), *(root / "deris_core").rglob("*.py")]
    found = [v for p in files for v in dtype_option_violations(str(p.relative_to(root)), p.read_text(encoding="utf-8"))]
    assert found == []
    assert len([p for p in files if '"--dtype"' in p.read_text(encoding="utf-8")]) >= 7  # the walk sees the CLIs


def test_the_dtype_check_catches_a_written_out_list():
    bad = 'def main(p):\n    p.add_argument("--dtype", default="auto", choices=["auto", "fp32"])\n'
    assert dtype_option_violations("x.py", bad) == ["x.py:2"]
    assert dtype_option_violations("x.py", 'def main(p):\n    p.add_argument("--dtype", default="auto")\n') == ["x.py:2"]
    good = 'def main(p):\n    p.add_argument("--dtype", choices=list(DTYPE_CHOICES))\n    p.add_argument("--x", choices=[1])\n'
    assert dtype_option_violations("x.py", good) == []
