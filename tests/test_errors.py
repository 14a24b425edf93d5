"""One error root per package: DerisError for the core, StudioError/UserError for the app; each
error keeps the built-in base callers catch; user errors apart from bugs."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from app.errors import StudioError, UserError
from deris_core.errors import DerisError

ROOT = Path(__file__).resolve().parents[1]


def exception_classes(sources: dict[str, str]) -> list[tuple[str, str]]:
    """``(module, class)`` of every class of ``sources`` (module name -> text) that derives from an
    exception, whatever its name: a built-in exception or, transitively, another such class of the
    sources (read from the code: base names, any nesting)."""
    import builtins

    defined: list[tuple[str, str, list[str]]] = []
    for module, text in sources.items():
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in n.bases]
                defined.append((module, n.name, bases))
    errors = {k for k, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    grown = True
    while grown:
        grown = False
        for _, name, bases in defined:
            if name not in errors and any(b in errors for b in bases):
                errors.add(name)
                grown = True
    return [(m, c) for m, c, _ in defined if c in errors]


def _sources(package: str) -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path.read_text(encoding="utf-8")
    return out


def _error_classes(package: str) -> list[type]:
    """Every exception class defined in ``package``'s modules, imported (a nested class by its path)."""
    out = []
    for module, name in exception_classes(_sources(package)):
        mod = importlib.import_module(module)
        found = getattr(mod, name, None) or next(
            (getattr(v, name) for v in vars(mod).values() if isinstance(v, type) and isinstance(getattr(v, name, None), type)),
            None)
        assert found is not None, f"{module}.{name} not found"
        out.append(found)
    return out


def test_every_core_error_has_the_one_root_and_keeps_its_base():
    classes = _error_classes("deris_core")
    assert len(classes) >= 10
    assert [c.__name__ for c in classes if not issubclass(c, DerisError)] == []
    bases = {c.__name__: c for c in classes}
    for name in ("TokenizerError", "ImageError", "MetricError", "CheckpointError", "DataError", "PrecisionError"):
        assert issubclass(bases[name], ValueError), name
    for name in ("HubError", "WeightsError", "TokenizerSourceError"):
        assert issubclass(bases[name], FileNotFoundError), name
    from deris_core.hub import HubError

    with pytest.raises(FileNotFoundError, match="could not get"):
        raise HubError("could not get x")


def test_every_app_error_is_a_studio_error():
    classes = _error_classes("app")  # every one, the views' and the internal ones (a cancelled prefetch) included
    assert len(classes) >= 15 and {"CanvasError", "SamUnavailable", "_Cancelled"} <= {c.__name__ for c in classes}
    assert [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, StudioError)] == []


def test_the_error_walk_finds_any_exception_whatever_its_name():
    src = {"m": "class Oops(RuntimeError):\n    pass\n\nclass Worse(Oops):\n    pass\n\nclass Plain:\n    pass\n",
           "n": "from m import Worse\n\ndef f():\n    class Inner(Worse):\n        pass\n"}
    assert exception_classes(src) == [("m", "Oops"), ("m", "Worse"), ("n", "Inner")]


def test_user_errors_apart_from_bugs():
    from app.auth import AuthError
    from app.services import BadInput, NoModel, Refused, StoreError

    assert issubclass(UserError, StudioError) and issubclass(StoreError, UserError) and issubclass(StoreError, ValueError)
    assert issubclass(NoModel, UserError) and not issubclass(NoModel, StoreError)  # the services' refusal
    assert all(issubclass(c, UserError) for c in (Refused, BadInput, AuthError))
    assert not any(issubclass(c, StoreError) for c in (Refused, BadInput))  # the services' word, not the store's
    assert all(issubclass(c, ValueError) for c in (Refused, BadInput))  # older ``except ValueError`` still catch them
    from app.refine.sam import SamUnavailable
    from app.views.canvas import CanvasError

    assert issubclass(SamUnavailable, UserError) and issubclass(SamUnavailable, RuntimeError)
    assert issubclass(CanvasError, UserError) and issubclass(CanvasError, ValueError)
    assert not issubclass(KeyError, StudioError)


def test_the_views_show_a_missing_model_as_a_message():
    import gradio as gr

    from app.services import ModelHolder
    from app.views.shell import bind

    holder = ModelHolder(None, "no model", "the bundled model could not be loaded")
    handler = bind(lambda h: h.get(), holder)
    with pytest.raises(gr.Error, match="No model is loaded: the bundled model could not be loaded"):
        handler()
    with pytest.raises(KeyError):  # a bug is not turned into a message
        bind(lambda: {}["x"])()
