"""Handlers return named records; :class:`Outputs` turns them into Gradio's outputs in one place.

A handler with several outputs returns a small frozen dataclass (``ReviewShown(info, picture, ...)``),
so a test or another handler reads ``shown.ref``, never ``out[5]``. A view's ``wire`` makes one
:class:`Outputs` per record: it picks each field's widget *by name* (from the view's layout
dataclass, or given by keyword), so the outputs list is the record's fields in their order and
cannot drift from what the handler returns; a field missing a widget, or a widget named for no
field, fails when the studio is built. A field that is itself a record (``ReviewDecided.shown``)
stands for its own fields, in place. The API's outputs keep the fields' order.

A field may hold ``gr.skip()`` (that output keeps its value, as for a live timer that changes only
a counter); a handler may still return ``gr.skip()`` as a whole.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

from .shell import bind


def is_skip(value: Any) -> bool:
    """Whether ``value`` is Gradio's *leave it as it is* (``gr.skip()``, an update that changes nothing)."""
    return isinstance(value, dict) and value == {"__type__": "update"}


def _names(record: type) -> list[tuple[str, ...]]:
    """The flattened fields of a record, each as its path (a nested record's fields stand in its place)."""
    out: list[tuple[str, ...]] = []
    for f in dataclasses.fields(record):
        nested = f.metadata.get("record")
        if nested is not None:
            out += [(f.name, *path) for path in _names(nested)]
        else:
            out.append((f.name,))
    return out


def nested(record: type) -> Any:
    """A field that holds another record (its fields become outputs in its place):
    ``shown: ReviewShown = nested(ReviewShown)``."""
    return dataclasses.field(metadata={"record": record})


def values(record: Any) -> tuple:
    """A record's output values, flattened in field order."""
    out: list = []
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.metadata.get("record") is not None:
            out += values(value) if not is_skip(value) else [value] * len(_names(f.metadata["record"]))
        else:
            out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class Outputs:
    """The widgets showing a record's fields, in field order (Gradio's outputs list), and the wrapper
    that turns the record a handler returns into the values Gradio expects."""

    record: type
    widgets: tuple
    names: tuple[str, ...]  # the last part of each flattened field's name, in order

    @classmethod
    def of(cls, record: type, *owners: Any, prefix: str = "", **widgets: Any) -> "Outputs":
        """Each field's widget: ``widgets[name]`` if given, else the attribute ``prefix + name`` (or
        ``name``) of the first owner (a layout dataclass) that has one."""
        paths = _names(record)
        leaves = [p[-1] for p in paths]
        if len(set(leaves)) != len(leaves):
            raise TypeError(f"{record.__name__}: two fields share a name: {leaves}")
        unknown = set(widgets) - set(leaves)
        if unknown:
            raise TypeError(f"{record.__name__} has no field {sorted(unknown)} (its fields: {leaves})")
        chosen = []
        for name in leaves:
            if name in widgets:
                chosen.append(widgets[name])
                continue
            found = next((getattr(o, n) for o in owners for n in (prefix + name, name) if hasattr(o, n)), None)
            if found is None:
                raise TypeError(f"{record.__name__}.{name}: no widget named {prefix + name!r} or {name!r}")
            chosen.append(found)
        return cls(record, tuple(chosen), tuple(leaves))

    @property
    def outputs(self) -> list:
        """The outputs list of an event."""
        return list(self.widgets)

    def status(self, name: str = "msg") -> tuple[int, int]:
        """:func:`~app.views.shell.bind`'s ``status``: where the message line ``name`` is among the outputs."""
        return self.names.index(name), len(self.names)

    def emit(self, result: Any) -> Any:
        """Gradio's value(s) for what a handler returned: a record's fields in order (one output: its
        value); anything else (``gr.skip()``) as it is."""
        if not isinstance(result, self.record):
            return result
        out = values(result)
        return out[0] if len(out) == 1 else out

    def handler(self, fn: Callable) -> Callable:
        """``fn`` returning Gradio's values instead of the record (the signature stays ``fn``'s)."""
        @functools.wraps(fn)
        def run(*args, **kwargs):
            return self.emit(fn(*args, **kwargs))
        return run

    def bind(self, fn: Callable, *bound: Any, status: str | None = None, **kwargs: Any) -> Callable:
        """:func:`~app.views.shell.bind` of ``fn`` whose record becomes these outputs; ``status``: the
        field whose widget says a refusal (see ``bind``)."""
        return bind(self.handler(fn), *bound, status=self.status(status) if status else None, **kwargs)
