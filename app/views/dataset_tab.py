"""The dataset view: progress at a glance, the saved refs a page at a time, delete by id, and the
export (named ``dataset_tab`` so as not to be taken for the ``python -m app.dataset`` command line).
*Open* shows a ref in the Annotate tab: :mod:`app.ui` wires it to ``annotate.open_ref``."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from ..services import SPLITS, STATUSES, RefFilter, Services, StoreError, require
from . import display
from .records import Outputs, nested
from .shell import Shell, bind, from_browser, id_box, ref_id, request_user

PAGE_SIZE = 50
HEADERS = ["ref", "image", "sentences", "targets", "status", "split", "who", "updated"]


@dataclass
class DatasetUI:
    tab: gr.Tab
    progress: gr.HTML
    f_status: gr.Dropdown
    f_split: gr.Dropdown
    f_annotator: gr.Textbox
    page: gr.Number
    prev_btn: gr.Button
    next_page_btn: gr.Button
    page_info: gr.Markdown
    refs_table: gr.Dataframe
    ref_id: gr.Textbox  # id_box: empty looks empty
    open_btn: gr.Button
    delete_btn: gr.Button
    confirm_btn: gr.Button  # shown after Delete: the second, deliberate click
    cancel_btn: gr.Button
    pending: gr.State  # the ref id Delete asked about
    refresh_btn: gr.Button
    msg: gr.Markdown
    export_status: gr.Dropdown
    export_btn: gr.Button
    export_file: gr.File

    @property
    def page_inputs(self) -> list:
        return [self.page, self.f_status, self.f_split, self.f_annotator]


@dataclass(frozen=True)
class RefsPage:
    """One page of the saved refs: the table's rows, the line that says where it is, the page number."""
    refs_table: list
    page_info: str
    page: int


@dataclass(frozen=True)
class Refreshed:
    """The progress block and one page of refs."""
    progress: str
    refs: RefsPage = nested(RefsPage)


@dataclass(frozen=True)
class DeleteAsked:
    """The two-step delete: the message, the *Yes, delete it* and *Keep it* buttons (updates), and
    the ref id asked about (None once done or kept)."""
    msg: str
    confirm_btn: dict
    cancel_btn: dict
    pending: int | None

    @classmethod
    def closed(cls, msg: str) -> "DeleteAsked":
        """The question answered (or never asked): the buttons hidden, nothing pending."""
        return cls(msg, gr.update(visible=False), gr.update(visible=False), None)


def layout(tab: gr.Tab) -> DatasetUI:
    """Lay the tab out inside ``tab`` (the shell's ``gr.Tab``, whose selection refreshes it)."""
    c = SimpleNamespace(tab=tab)
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
        c.ref_id = id_box("Ref id", "ref-id", "a ref id from the table")
        c.open_btn = gr.Button("Open", elem_id="open-btn")
        c.delete_btn = gr.Button("Delete…", variant="stop", elem_id="delete-ref-btn")
        c.confirm_btn = gr.Button("Yes, delete it", variant="stop", elem_id="confirm-delete-btn", visible=False)
        c.cancel_btn = gr.Button("Keep it", elem_id="cancel-delete-btn", visible=False)
        c.pending = gr.State(None)
        c.refresh_btn = gr.Button("Refresh", elem_id="refresh-btn")
    c.msg = gr.Markdown("", elem_id="dataset-msg")
    with gr.Row():
        c.export_status = gr.Dropdown([("every ref", ""), *[(s, s) for s in STATUSES]], value="",
                                      label="Export refs with status", elem_id="export-status", scale=1)
        c.export_btn = gr.Button("Export gRefCOCO zip", variant="primary", elem_id="export-btn", scale=1)
        c.export_file = gr.File(label="Export", elem_id="export-file", scale=2, interactive=False, visible=False)
    return DatasetUI(**vars(c))


def refs_page(svc: Services, page_no: float | None, status_f: str, split_f: str, annotator_f: str) -> RefsPage:
    """One page of the saved refs (newest first) with the filters; never the whole table."""
    flt = RefFilter.of(status_f, split_f, (annotator_f or "").strip() or None)
    page = svc.dataset.page(flt, page_no, PAGE_SIZE)  # past the end: the last page
    return RefsPage(display.ref_rows(page.rows), f"{page.total} refs · page {page.page_no} of {page.pages}", page.page_no)


def refresh(svc: Services, page_no, status_f: str, split_f: str, annotator_f: str) -> Refreshed:
    """Progress and one page of refs."""
    return Refreshed(display.progress_html(svc.dataset.progress(), svc.dataset.person_stats()),
                     refs_page(svc, page_no, status_f, split_f, annotator_f))


def live_counters(svc: Services, tab: str = "", shown: str = ""):
    """The timer's look at the counters (only while the Dataset tab is on screen; the page of refs,
    its filters and the ref id typed stay). Outputs: the progress block, unchanged when equal."""
    if tab != "Dataset":
        return gr.skip()
    html = display.progress_html(svc.dataset.progress(), svc.dataset.person_stats())
    return gr.skip() if html == shown else html


def turn(svc: Services, delta: int, page_no, status_f: str, split_f: str, annotator_f: str) -> RefsPage:
    return refs_page(svc, max(1, int(page_no or 1) + delta), status_f, split_f, annotator_f)


def ask_delete(svc: Services, rid: float | None, typed: str, request: gr.Request = None) -> DeleteAsked:
    """The first click of *Delete…*: say what would be deleted and show *Yes, delete it* / *Keep it*
    (nothing is deleted yet). A refusal is said at once."""
    rid = ref_id(rid)
    rec = svc.refs.ref(rid)
    require(svc.actor(request_user(request), typed), "delete", rec)
    first = rec.sentences[0] if rec.sentences else ""
    what = "no target" if rec.no_target else f"{len(rec.instance_ids)} target{'s' if len(rec.instance_ids) != 1 else ''}"
    msg = (f"Delete ref {rid} — “{first}” ({what}, {rec.status}, by {rec.author or 'nobody recorded'})? "
           "Its drawn masks go with it; this cannot be undone.")
    return DeleteAsked(msg, gr.update(visible=True), gr.update(visible=True), rid)


def confirm_delete(svc: Services, rid, pending, typed: str, request: gr.Request = None) -> DeleteAsked:
    """The second click: delete the ref *Delete…* asked about (``pending``). An API call has no
    page state: it names the ref by ``rid``, a deliberate call."""
    target = pending if pending is not None else (rid if rid not in (None, "") and not from_browser(request) else None)
    if target is None:
        return DeleteAsked.closed("Nothing to delete: press Delete… first.")
    return DeleteAsked.closed(delete_ref(svc, target, typed, request))


def cancel_delete(pending) -> DeleteAsked:
    return DeleteAsked.closed(f"Kept ref {pending}." if pending else "")


def delete_ref(svc: Services, rid: float | None, typed: str, request: gr.Request = None) -> str:
    """Delete a ref by id, when the permission table allows it to the user who works now."""
    rid = ref_id(rid)
    svc.refs.delete(svc.actor(request_user(request), typed), rid)
    return f"Deleted ref {rid}."


def export(svc: Services, status_f: str | None = "") -> str:
    """The gRefCOCO zip of the refs (with this status), in the export folder."""
    try:
        done = svc.dataset.export(status_f or None)
    except StoreError as exc:
        raise gr.Error(str(exc)) from None
    s = done.summary
    gr.Info(f"Exported {s['refs']} refs, {s['annotations']} instances, {s['images']} images.")
    return str(done.path)


def wire(svc: Services, ui: DatasetUI, shell: Shell) -> None:
    """Attach the handlers (the *Open* button is wired by :mod:`app.ui`: it shows the Annotate tab)."""
    page = Outputs.of(RefsPage, ui)
    refreshed = Outputs.of(Refreshed, ui)
    ui.refresh_btn.click(refreshed.bind(refresh, svc), ui.page_inputs, refreshed.outputs, api_name="refresh")
    ui.tab.select(refreshed.bind(refresh, svc), ui.page_inputs, refreshed.outputs, api_name=False)
    for f in (ui.f_status, ui.f_split):
        f.input(page.bind(turn, svc, -10**9), ui.page_inputs, page.outputs, api_name=False)
    ui.f_annotator.submit(page.bind(turn, svc, -10**9), ui.page_inputs, page.outputs, api_name=False)
    ui.prev_btn.click(page.bind(turn, svc, -1), ui.page_inputs, page.outputs, api_name=False)
    ui.next_page_btn.click(page.bind(turn, svc, 1), ui.page_inputs, page.outputs, api_name=False)
    ui.page.submit(page.bind(refs_page, svc), ui.page_inputs, page.outputs, api_name="refs_page")
    asked = Outputs.of(DeleteAsked, ui)
    ui.delete_btn.click(asked.bind(ask_delete, svc, status="msg"), [ui.ref_id, shell.who], asked.outputs,
                        api_name=False)
    # the API's delete_ref (a deliberate call by id) is this second step
    ui.confirm_btn.click(asked.bind(confirm_delete, svc, status="msg"), [ui.ref_id, ui.pending, shell.who],
                         asked.outputs, api_name="delete_ref").then(
        refreshed.bind(refresh, svc), ui.page_inputs, refreshed.outputs, api_name=False)
    ui.cancel_btn.click(asked.handler(cancel_delete), [ui.pending], asked.outputs, api_name=False)
    ui.export_btn.click(bind(export, svc, soft=False), [ui.export_status], [ui.export_file], api_name="export").success(
        lambda: gr.update(visible=True), None, [ui.export_file], api_name=False)  # the file box appears with a file
