"""*Add images*: the first day without a terminal. Open by itself while the collection is empty;
several files at once for anyone, and a folder of the server for operators when the studio was
started with ``--import-root DIR``. Both go through :mod:`app.services.images` (the command
line's import, idempotent) with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..services import Services
from .records import Outputs
from .shell import Shell, bind, request_user


@dataclass
class AddImagesUI:
    box: gr.Accordion
    files: gr.File
    add_btn: gr.Button
    folder: gr.Textbox
    folder_btn: gr.Button
    msg: gr.Markdown


@dataclass(frozen=True)
class BoxOpened:
    """On a page's load: the box (an update: opened while the collection is empty) and what to do first."""
    box: dict
    msg: str | dict


@dataclass(frozen=True)
class Uploaded:
    """After *Add these images*: what was added, the file box (emptied, or kept as it was) and the box
    itself (closed after an add that skipped nothing, so that the picture is back above the fold)."""
    msg: str
    files: list | dict | None
    box: dict = field(default_factory=gr.update)


def layout(import_roots: list[Path] | None) -> AddImagesUI:
    with gr.Accordion("Add images", open=False, elem_id="add-images") as box:
        # no file_types: the browser's own filter refused a whole drop with one red Error badge when one file
        # was not an image; the server names and skips such files (app.services.images.add_uploads)
        files = gr.File(file_count="multiple", label="Images from this computer (several at once)", elem_id="add-files")
        add_btn = gr.Button("Add these images", variant="primary", elem_id="add-files-btn")
        roots = ", ".join(str(r) for r in import_roots or [])
        folder = gr.Textbox(label=f"A folder of the server, under {roots} (operators)", elem_id="add-folder",
                            visible=bool(import_roots), placeholder=str((import_roots or [""])[0]))
        folder_btn = gr.Button("Import this folder", elem_id="add-folder-btn", visible=bool(import_roots))
        msg = gr.Markdown("", elem_id="add-images-msg")
    return AddImagesUI(box, files, add_btn, folder, folder_btn, msg)


def on_load(svc: Services) -> BoxOpened:
    """An empty studio opens the box and says what to do first."""
    if svc.dataset.image_count():
        return BoxOpened(gr.update(), gr.update())
    return BoxOpened(gr.update(open=True), "The collection is empty: add images here (several files at once"
                     + (", or a folder of the server" if svc.import_roots else "") + ").")


def upload(svc: Services, paths, typed: str = "", request: gr.Request = None, progress=gr.Progress()) -> Uploaded:
    """Add the uploaded files (the file box is emptied). When nothing was skipped the box closes and
    the result is also said in a toast; a skipped file keeps it open, with the message naming it."""
    if not paths:
        return Uploaded("Choose one or more image files first.", gr.update())
    items = [(p, Path(str(p)).name) for p in (paths if isinstance(paths, list) else [paths])]
    actor = svc.actor(request_user(request), typed)
    res = svc.images.add_uploads(actor, items, on_progress=lambda k, n: progress((k, n), desc="adding images",
                                                                                unit="images"))
    line = res.line() + " PgDn (or D outside a text box) opens the next image of the queue."
    if res.skipped or not (res.added or res.known):
        return Uploaded(line, None)
    gr.Info(line)
    return Uploaded(line, None, gr.update(open=False))


def import_folder(svc: Services, folder: str, typed: str = "", request: gr.Request = None,
                  progress=gr.Progress(track_tqdm=True)):
    """Import a folder of the server (operators, under an ``--import-root``). Output: message."""
    actor = svc.actor(request_user(request), typed)
    res = svc.images.add_folder(actor, folder or "")
    return res.line()


def wire(svc: Services, ui: AddImagesUI, shell: Shell) -> list:
    """Attach the handlers; returns the two import events (app.ui refreshes the Annotate queue after them)."""
    uploaded = Outputs.of(Uploaded, ui)
    added = ui.add_btn.click(uploaded.bind(upload, svc, status="msg"), [ui.files, shell.who], uploaded.outputs,
                             api_name="add_images")
    imported = ui.folder_btn.click(bind(import_folder, svc, status=(0, 1)), [ui.folder, shell.who], [ui.msg],
                                   api_name="import_folder")
    opened = Outputs.of(BoxOpened, ui)
    shell.load_events.append((opened.bind(on_load, svc), [], opened.outputs))
    return [added, imported]
