"""The dataset view: progress at a glance, the saved refs a page at a time, reopen or delete by
id, and the export."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..export import clean_stale_exports, export_zip, new_export_path
from ..store import SPLITS, STATUSES, StoreError
from ..store.collection import progress
from ..store.review import person_stats
from . import display
from .context import Studio

PAGE_SIZE = 50
HEADERS = ["ref", "image", "sentences", "targets", "status", "split", "who", "updated"]


def layout() -> SimpleNamespace:
    c = SimpleNamespace()
    c.progress = gr.HTML("", elem_id="progress")
    with gr.Row():
        c.f_status = gr.Dropdown(["", *STATUSES], value="", label="Status", elem_id="filter-status", scale=1)
        c.f_split = gr.Dropdown(["", *SPLITS], value="", label="Split", elem_id="filter-split", scale=1)
        c.f_annotator = gr.Textbox(label="Annotator", elem_id="filter-annotator", scale=1)
        c.page = gr.Number(label="Page", value=1, precision=0, minimum=1, elem_id="page", scale=1)
        c.prev_btn = gr.Button("◀ Newer", elem_id="prev-page", scale=1)
        c.next_page_btn = gr.Button("Older ▶", elem_id="next-page", scale=1)
    c.page_info = gr.Markdown("", elem_id="page-info")
    c.refs_table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="refs-table", wrap=True)
    with gr.Row():
        c.ref_id = gr.Number(label="Ref id", value=None, precision=0, elem_id="ref-id")
        c.open_btn = gr.Button("Open", elem_id="open-btn")
        c.delete_btn = gr.Button("Delete", variant="stop", elem_id="delete-ref-btn")
        c.refresh_btn = gr.Button("Refresh", elem_id="refresh-btn")
    with gr.Row():
        c.export_status = gr.Dropdown([("every ref", ""), *[(s, s) for s in STATUSES]], value="",
                                      label="Export refs with status", elem_id="export-status", scale=1)
        c.export_btn = gr.Button("Export gRefCOCO zip", variant="primary", elem_id="export-btn", scale=1)
        c.export_file = gr.File(label="Export", elem_id="export-file", scale=2, interactive=False, visible=False)
    return c


def wire(studio: Studio, c: SimpleNamespace) -> None:
    store = studio.store

    def refs_page(page_no: float | None, status_f: str, split_f: str, annotator_f: str):
        """One page of the saved refs (newest first) with the filters; never the whole table."""
        flt = dict(status=status_f or None, split=split_f or None, annotator=(annotator_f or "").strip() or None)
        page_no = max(1, int(page_no or 1))
        rows, total = store.refs_page((page_no - 1) * PAGE_SIZE, PAGE_SIZE, **flt)
        pages = max(1, -(-total // PAGE_SIZE))
        if page_no > pages:  # past the end: show the last page
            page_no = pages
            rows, total = store.refs_page((page_no - 1) * PAGE_SIZE, PAGE_SIZE, **flt)
        table = [[r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]] for r in display.ref_rows(rows)]
        return table, f"{total} refs · page {page_no} of {pages}", page_no

    def refresh(page_no, status_f, split_f, annotator_f):
        return (display.progress_html(progress(store), person_stats(store)), *refs_page(page_no, status_f, split_f, annotator_f))

    def turn(delta: int):
        def go(page_no, status_f, split_f, annotator_f):
            return refs_page(max(1, int(page_no or 1) + delta), status_f, split_f, annotator_f)
        return go

    def open_ref(rid: float | None, sess, request: gr.Request):
        if rid is None:
            raise gr.Error("Type a ref id.")
        return c.open_ref_by_id(int(rid), sess, request)

    def delete_ref(rid: float | None, typed: str, request: gr.Request):
        if rid is None:
            raise gr.Error("Type a ref id.")
        who = studio.who(request, typed)
        try:
            rec = store.ref(int(rid))
        except StoreError as exc:
            raise gr.Error(str(exc)) from None
        mine = rec.annotator == who or not rec.annotator or rec.annotator.startswith(("model:", "consensus"))
        if studio.users is not None and not (mine and rec.status != "reviewed") and not studio.is_reviewer(request):
            raise gr.Error(f"Only {rec.annotator or 'its author'} or a reviewer can delete ref {rec.id}.")
        try:
            store.delete_ref(int(rid), expected_version=rec.version, user=who)
        except StoreError as exc:
            raise gr.Error(str(exc)) from None
        return f"Deleted ref {int(rid)}."

    def export(status_f: str | None = ""):
        clean_stale_exports(studio.export_dir)
        out = new_export_path(studio.export_dir)  # unique: people exporting at the same second get their own file
        try:
            summary = export_zip(store, out, status=status_f or None)
        except StoreError as exc:
            raise gr.Error(str(exc).replace(str(studio.export_dir), "the export folder")) from None
        gr.Info(f"Exported {summary['refs']} refs, {summary['annotations']} instances, {summary['images']} images.")
        return str(out)

    page_inputs = [c.page, c.f_status, c.f_split, c.f_annotator]
    page_outputs = [c.refs_table, c.page_info, c.page]
    c.refresh_btn.click(refresh, page_inputs, [c.progress, *page_outputs], api_name="refresh")
    c.dataset_tab.select(refresh, page_inputs, [c.progress, *page_outputs], api_name=False)
    for f in (c.f_status, c.f_split):
        f.input(turn(-10**9), page_inputs, page_outputs, api_name=False)
    c.f_annotator.submit(turn(-10**9), page_inputs, page_outputs, api_name=False)
    c.prev_btn.click(turn(-1), page_inputs, page_outputs, api_name=False)
    c.next_page_btn.click(turn(1), page_inputs, page_outputs, api_name=False)
    c.page.submit(refs_page, page_inputs, page_outputs, api_name="refs_page")
    c.open_btn.click(open_ref, [c.ref_id, c.sess_state], c.open_ref_outputs, api_name="open_ref")
    c.delete_btn.click(delete_ref, [c.ref_id, c.annotator], [c.save_msg], api_name="delete_ref").then(
        refresh, page_inputs, [c.progress, *page_outputs], api_name=False)
    c.export_btn.click(export, [c.export_status], [c.export_file], api_name="export").success(
        lambda: gr.update(visible=True), None, [c.export_file], api_name=False)  # the file box appears with a file
