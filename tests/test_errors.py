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


def _error_classes(package: str, skip: tuple[str, ...] = ()) -> list[type]:
    """Every class named ``*Error``/``*Refused`` defined at the top level of ``package``'s modules."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if name.startswith(skip):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith(("Error", "Refused", "NoModel"))]
        if found:
            module = importlib.import_module(name)
            out += [getattr(module, c) for c in found]
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
    # the views' own widget errors (app/views) are theirs; the rest of the app has one root
    classes = _error_classes("app", skip=("app.views",))
    assert [c.__name__ for c in classes if not issubclass(c, StudioError)] == []


def test_user_errors_apart_from_bugs():
    from app.auth import AuthError
    from app.services import BadInput, NoModel, Refused, StoreError

    assert issubclass(UserError, StudioError) and issubclass(StoreError, UserError) and issubclass(StoreError, ValueError)
    assert issubclass(NoModel, UserError) and not issubclass(NoModel, StoreError)  # the services' refusal
    assert all(issubclass(c, UserError) for c in (Refused, BadInput, AuthError))
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
