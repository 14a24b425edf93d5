"""The correct view: paint or erase one target instance at full resolution, add or delete
instances, mark the expression as no-target, undo/redo (handlers: module-level functions of
``(services, inputs...)``; :func:`wire` attaches them to :class:`CorrectUI`)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import gradio as gr
import numpy as np

from ..services import Services
from ..session import Session, Target
from .shell import Shell, bind, render


@dataclass
class CorrectUI:
    editor: gr.ImageEditor
    target_pick: gr.Dropdown
    edit_btn: gr.Button
    apply_btn: gr.Button
    new_btn: gr.Button
    del_btn: gr.Button
    nt_btn: gr.Button
    undo_btn: gr.Button
    redo_btn: gr.Button


def layout() -> CorrectUI:
    c = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=2):
            c.editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="Paint the selected instance",
                                      brush=gr.Brush(colors=["#ff2020"], color_mode="fixed", default_size=12),
                                      eraser=gr.Eraser(default_size=12), layers=False, transforms=(), sources=(),
                                      elem_id="editor", height=480)
        with gr.Column(scale=1):
            c.target_pick = gr.Dropdown(label="Instance", choices=[], elem_id="target-pick", interactive=True)
            with gr.Row():
                c.edit_btn = gr.Button("Load into editor", elem_id="edit-btn")
                c.apply_btn = gr.Button("Apply edit", variant="primary", elem_id="apply-btn")
            with gr.Row():
                c.new_btn = gr.Button("New instance", elem_id="new-btn")
                c.del_btn = gr.Button("Delete instance", elem_id="delete-btn")
            c.nt_btn = gr.Button("Mark as no target / undo mark", elem_id="nt-btn")
            with gr.Row():
                c.undo_btn = gr.Button("Undo (Ctrl+Z)", elem_id="undo-btn")
                c.redo_btn = gr.Button("Redo (Ctrl+Y)", elem_id="redo-btn")
            gr.Markdown("The corrected target set shows in the *Annotate* tab; save it there (Ctrl+Enter).")
    return CorrectUI(**vars(c))


def read_editor_mask(value: dict, size: tuple[int, int]) -> np.ndarray:
    """The painted mask of an ImageEditor value at the image's full resolution.

    The first layer's alpha channel is the mask. If the editor returned it at another size
    (Gradio has had canvas-resize bugs), it is brought back with nearest-neighbour resizing.
    """
    layer = np.asarray(value["layers"][0])
    alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else (layer.max(-1) if layer.ndim == 3 else layer)
    mask = (alpha > 127).astype(np.uint8)
    h, w = size
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return mask.astype(bool)


def editor_value(sess: Session, index: int | None):
    if sess.image is None:
        raise gr.Error("Segment an image first.")
    h, w = sess.image.shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    if index is not None and 0 <= index < len(sess.targets):
        layer[sess.targets[index].mask] = (255, 32, 32, 255)
    bg = np.dstack([sess.image, np.full((h, w), 255, np.uint8)])
    return {"background": bg, "layers": [layer], "composite": None}


def edit_open(svc: Services, index: int | None, sess: Session):
    sess.selected = int(index) if index is not None else -1
    return editor_value(sess, sess.selected), sess


def new_instance(svc: Services, sess: Session):
    sess.selected = -1
    return editor_value(sess, None), sess


def edit_apply(svc: Services, value: dict | None, index: int | None, sess: Session):
    if sess.image is None:
        raise gr.Error("Segment an image first.")
    if not value or not value.get("layers"):
        raise gr.Error("Nothing to apply: paint on the editor first.")
    mask = read_editor_mask(value, sess.image.shape[:2])
    if not mask.any():
        raise gr.Error("The painted mask is empty; use Delete instance to remove an instance.")
    sess.change()
    if sess.selected is not None and 0 <= sess.selected < len(sess.targets):
        t = sess.targets[sess.selected]
        sess.targets[sess.selected] = Target(mask, t.candidate, edited=True)
    else:
        sess.targets.append(Target(mask, None, edited=True))
        sess.selected = len(sess.targets) - 1
    sess.no_target = False
    return render(sess)


def delete_instance(svc: Services, index: int | None, sess: Session):
    if index is None or not (0 <= int(index) < len(sess.targets)):
        raise gr.Error("Pick an instance to delete.")
    sess.change()
    del sess.targets[int(index)]
    sess.selected = -1  # the editor may still show the deleted mask: applying it adds a new instance
    return render(sess)


def toggle_no_target(svc: Services, sess: Session):
    if sess.image is None:
        raise gr.Error("Segment an image first.")
    sess.change()
    sess.no_target = not sess.no_target
    if sess.no_target:
        sess.targets = []
    return render(sess)


def undo(svc: Services, sess: Session):
    if not sess.undo():
        gr.Info("Nothing to undo.")
    return render(sess)


def redo(svc: Services, sess: Session):
    if not sess.redo():
        gr.Info("Nothing to redo.")
    return render(sess)


def wire(svc: Services, ui: CorrectUI, shell: Shell) -> None:
    common, state = shell.session_outputs, shell.sess_state
    ui.edit_btn.click(bind(edit_open, svc), [ui.target_pick, state], [ui.editor, state], api_name="edit_open")
    ui.new_btn.click(bind(new_instance, svc), [state], [ui.editor, state], api_name="new_instance")
    ui.apply_btn.click(bind(edit_apply, svc), [ui.editor, ui.target_pick, state], common, api_name="edit_apply")
    ui.del_btn.click(bind(delete_instance, svc), [ui.target_pick, state], common, api_name="delete_instance")
    ui.nt_btn.click(bind(toggle_no_target, svc), [state], common, api_name="toggle_no_target")
    ui.undo_btn.click(bind(undo, svc), [state], common, api_name="undo")
    ui.redo_btn.click(bind(redo, svc), [state], common, api_name="redo")
