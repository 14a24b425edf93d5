"""The Jobs panel (reviewers and operators): start pre-annotation, hard negatives or a fine-tune
as the terminal's ``python -m app.curate`` would (:mod:`app.services.jobs`), watch its progress and
the log's tail, cancel it, and read what went wrong in plain words. The studio's live timer
refreshes it while the tab is on screen."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from ..services import Refused, Services, StoreError
from ..services.jobs import KINDS, Job
from ..services.permissions import why_not_studio
from .records import Outputs, nested
from .shell import Shell, id_box, request_user, whole_number


@dataclass
class JobsUI:
    tab: gr.Tab
    kind: gr.Radio
    sentences: gr.Textbox
    minutes: gr.Number
    promote: gr.Checkbox
    name: gr.Textbox
    start_btn: gr.Button
    job_id: gr.Textbox  # id_box: empty looks empty
    cancel_btn: gr.Button
    msg: gr.Markdown
    board: gr.HTML
    log: gr.Textbox


@dataclass(frozen=True)
class JobBoard:
    """The jobs of this studio (a table, newest first) and the newest one's log tail."""
    board: str
    log: str


@dataclass(frozen=True)
class JobStarted:
    msg: str
    job_id: int
    jobs: JobBoard = nested(JobBoard)


@dataclass(frozen=True)
class JobCancelled:
    msg: str
    jobs: JobBoard = nested(JobBoard)


@dataclass(frozen=True)
class JobButtons:
    """The job form, start and cancel (updates: shown to reviewers and operators) and why not, for others
    (who read the board and the log only)."""
    start_btn: dict
    cancel_btn: dict
    msg: str
    kind: dict
    sentences: dict
    minutes: dict
    promote: dict
    name: dict
    job_id: dict


def layout(tab: gr.Tab) -> JobsUI:
    c = SimpleNamespace(tab=tab)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            c.kind = gr.Radio([(v, k) for k, v in KINDS.items()], value="preannotate", label="Job", elem_id="job-kind")
            c.sentences = gr.Textbox(label="Sentences to try on every image (pre-annotation; one a line)", lines=4,
                                     elem_id="job-sentences")
            c.minutes = gr.Number(label="Training minutes (fine-tune)", value=5, minimum=0.1, maximum=600,
                                  elem_id="job-minutes")
            c.promote = gr.Checkbox(label="Register the model if its held-out metrics allow (fine-tune)",
                                    elem_id="job-promote")
            c.name = gr.Textbox(label="Model name (fine-tune, with register)", elem_id="job-name")
            c.start_btn = gr.Button("Start", variant="primary", elem_id="job-start")
            with gr.Row():
                c.job_id = id_box("Job", "job-id", "the job's number on the board", scale=1)
                c.cancel_btn = gr.Button("Cancel this job", variant="stop", elem_id="job-cancel", scale=1)
            c.msg = gr.Markdown("", elem_id="job-msg")
        with gr.Column(scale=3):
            c.board = gr.HTML("<i>No job yet.</i>", elem_id="job-board")
            c.log = gr.Textbox(label="The log's last lines (newest job)", lines=12, interactive=False, elem_id="job-log")
    return JobsUI(**vars(c))


def _state(job: Job) -> str:
    if job.state == "running":
        done = job.progress()
        if done and done[1]:
            pct = 100 * done[0] / done[1]
            return (f"<span class='pbar'><div style='width:{pct:.0f}%'></div></span>"
                    f"<span class='pnum'>{done[0]:,} / {done[1]:,}</span>")
        return f"running for {int(time.time() - job.started_at)} s"
    if job.state == "finished":
        res = job.result or {}
        facts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in res.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool))[:300]
        return "✓ done" + (f": {html.escape(facts)}" if facts else "")
    return f"✗ {job.state}: {html.escape(job.problem)}"


def board(svc: Services) -> JobBoard:
    """The jobs of this studio, newest first, and the newest one's log tail."""
    jobs = svc.jobs.list()
    if not jobs:
        return JobBoard("<i>No job yet.</i>", "")
    rows = "".join(f"<tr><td>{j.id}</td><td>{html.escape(KINDS[j.kind])}</td><td>{html.escape(j.started_by or '')}</td>"
                   f"<td>{time.strftime('%H:%M', time.localtime(j.started_at))}</td><td class='job-state'>{_state(j)}</td></tr>"
                   for j in jobs[:20])
    table = (f"<table class='ptable' id='job-table'><tr><th>job</th><th>what</th><th>by</th><th>at</th><th>state</th></tr>"
             f"{rows}</table>")
    return JobBoard(table, jobs[0].tail())


def start(svc: Services, kind: str, sentences: str, minutes, promote: bool, name: str, typed: str = "",
          request: gr.Request = None) -> JobStarted:
    """Start the chosen job."""
    actor = svc.actor(request_user(request), typed)
    job = svc.jobs.start(actor, kind, sentences=sentences, minutes=minutes if minutes is not None else 5.0,
                         promote=bool(promote), name=name or "")
    return JobStarted(f"Started job {job.id}: {KINDS[kind].lower()}.", job.id, board(svc))


def cancel(svc: Services, job_id, typed: str = "", request: gr.Request = None) -> JobCancelled:
    """Cancel a running job."""
    number = whole_number(job_id, "a job number")
    if number is None:
        raise gr.Error("Type the number of the job to cancel (the board's first column).")
    job = svc.jobs.cancel(svc.actor(request_user(request), typed), number)
    return JobCancelled(f"Job {job.id} cancelled.", board(svc))


def live(svc: Services, tab: str = ""):
    """The timer's refresh while the Jobs tab is on screen (:func:`board`; else nothing changes)."""
    return board(svc) if tab == "Jobs" else gr.skip()


def for_user(svc: Services, typed: str = "", request: gr.Request = None) -> JobButtons:
    """The start and cancel buttons for reviewers and operators only; others read the board."""
    try:
        why = why_not_studio(svc.actor(request_user(request), typed), "run_jobs")
    except (StoreError, Refused) as exc:
        why = str(exc)
    shown = gr.update(visible=why is None)
    return JobButtons(shown, shown, why or "", shown, shown, shown, shown, shown, shown)


def wire(svc: Services, ui: JobsUI, shell: Shell) -> None:
    started, cancelled, jobs_board = Outputs.of(JobStarted, ui), Outputs.of(JobCancelled, ui), Outputs.of(JobBoard, ui)
    ui.start_btn.click(started.bind(start, svc, status="msg"),
                       [ui.kind, ui.sentences, ui.minutes, ui.promote, ui.name, shell.who],
                       started.outputs, api_name="start_job")
    ui.cancel_btn.click(cancelled.bind(cancel, svc, status="msg"), [ui.job_id, shell.who], cancelled.outputs,
                        api_name="cancel_job")
    ui.tab.select(jobs_board.bind(board, svc), None, jobs_board.outputs, api_name=False)
    buttons = Outputs.of(JobButtons, ui)
    shell.load_events.append((buttons.bind(for_user, svc), [shell.who], buttons.outputs))


def live_outputs(ui: JobsUI) -> Outputs:
    """What the live timer's :func:`live` shows (:mod:`app.ui` wires the timer)."""
    return Outputs.of(JobBoard, ui)
