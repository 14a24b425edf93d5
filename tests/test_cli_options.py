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
