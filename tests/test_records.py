"""app/views/records.py: a handler's named record becomes Gradio's outputs in one place, by name."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr
import pytest

from app.errors import UserError
from app.views.records import Outputs, is_skip, nested


@dataclass(frozen=True)
class Inner:
    info: str
    pos: int


@dataclass(frozen=True)
class Outer:
    msg: str
    inner: Inner = nested(Inner)


def test_widgets_are_picked_by_field_name_in_field_order_and_nested_records_flatten() -> None:
    ui = SimpleNamespace(x_pos="P", x_info="I", x_msg="M", info="not this one")
    out = Outputs.of(Outer, ui, prefix="x_")
    assert out.outputs == ["M", "I", "P"] and out.names == ("msg", "info", "pos")
    assert out.emit(Outer("said", Inner("shown", 3))) == ("said", "shown", 3)
    assert out.status("msg") == (0, 3) and out.status("pos") == (2, 3)
    assert is_skip(out.emit(gr.skip()))  # a handler may still leave every output as it is
    skipped = out.emit(Outer("said", gr.skip()))  # a nested record left as it is: each of its outputs
    assert skipped[0] == "said" and all(is_skip(v) for v in skipped[1:])
    one = Outputs.of(Inner, pos="P", info="I")
    assert one.outputs == ["I", "P"]


def test_a_field_without_a_widget_or_a_widget_without_a_field_fails_when_wired() -> None:
    with pytest.raises(TypeError, match="Inner.pos: no widget named"):
        Outputs.of(Inner, SimpleNamespace(info="I"))
    with pytest.raises(TypeError, match="has no field"):
        Outputs.of(Inner, SimpleNamespace(info="I", pos="P"), posn="P")


def test_the_bound_handler_returns_the_values_and_a_refusal_goes_to_the_named_line() -> None:
    def handler(svc, n: int) -> Outer:
        if n < 0:
            raise UserError("not below zero")
        return Outer(f"{svc} {n}", Inner("i", n))

    out = Outputs.of(Outer, msg="M", info="I", pos="P")
    bound = out.bind(handler, "svc", status="msg")
    assert bound(2) == ("svc 2", "i", 2)
    page = SimpleNamespace(headers={"x-gradio-user": "app"})
    said = bound(-1, page)
    assert said[0] == "⚠ not below zero" and all(is_skip(v) for v in said[1:])
    with pytest.raises(gr.Error, match="not below zero"):  # an API caller: the call fails with the message
        bound(-1, None)


def test_every_view_wires_its_records_to_widgets_that_exist(tmp_path) -> None:
    """Building the studio resolves every record's widgets (a renamed field or widget fails here)."""
    from app.services import ModelHolder
    from app.store import Store
    from app.ui import build_app

    demo = build_app(ModelHolder(None, "no model"), Store(tmp_path / "s.sqlite"), switchable={"w": "bundled"})
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert {"review_accept", "negative_refers", "load_weights", "start_job", "delete_ref"} <= names


def test_the_annotate_views_records_keep_the_outputs_of_its_former_tuples() -> None:
    """The Annotate view's handlers return records; each event's outputs list is what the tuples had, in
    the same order (the API's outputs unchanged; a run's answer only grew the message line at the end)."""
    import gradio as gr

    from app.views import annotate, annotate_layout
    from app.views.shell import CanvasFields, Rendered, shell_layout

    with gr.Blocks():
        shell = shell_layout("no model", signed_in=False)
        ui = annotate_layout.layout(None)

    def outputs(record):
        return annotate.rendered_outputs(ui, shell, record).outputs

    common = [ui.result, ui.verdict, ui.candidates, ui.gallery, ui.parts, shell.sess_state]
    boxes = [ui.extra, ui.split, ui.status, ui.ref_history]
    assert outputs(Rendered) == common
    assert outputs(CanvasFields) == [ui.verdict, ui.candidates, ui.parts, shell.sess_state]
    assert outputs(annotate.Segmented) == [*common, *boxes, ui.save_msg]
    assert outputs(annotate.NextExpression) == [ui.expression, ui.save_msg, *common, *boxes]
    assert outputs(annotate.Uploaded) == [*common, ui.queue_pos, ui.image_refs, *boxes]
    assert outputs(annotate.ImageOpened) == [ui.image_in, *common, ui.queue_pos, ui.image_refs, ui.expression,
                                             ui.save_msg, *boxes]
    assert annotate.open_ref_outputs(ui, shell).outputs == [ui.image_in, ui.expression, ui.extra, ui.split, ui.status,
                                                            shell.who, *common, ui.queue_pos, ui.image_refs,
                                                            ui.save_msg, ui.ref_history]
    assert outputs(annotate.Saved) == [ui.save_msg, ui.image_refs, shell.sess_state, ui.ref_history, ui.to_fix,
                                       ui.extra, ui.split, ui.status]
    assert annotate.refiltered_outputs(ui).outputs == [ui.thumbs, ui.thumb_page, ui.queue_pos]
