"""Curation jobs started from the app (the Jobs panel): pre-annotation, hard negatives and a
fine-tune, each run as the same command a terminal would run (``python -m app.curate ...``) in
its own process, so it uses the same code, the same idempotent writes and the same locks (the
store's fine-tune lock; a pre-annotation rerun skips what is stored). The studio keeps one job
of each kind at a time, a log file per job (``<database folder>/<name>_jobs/``), its progress
(from the command's progress bar), the log's tail, a cancel, and one plain sentence when it fails.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ..store import Store
from .errors import BadInput
from .permissions import Actor, require_studio

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
KINDS = {"preannotate": "Pre-annotation", "negatives": "Hard negatives", "finetune": "Fine-tune"}
_PROGRESS = re.compile(r"(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
_ERROR = re.compile(r"^error: (.+)$", re.M)
MAX_SENTENCES = 200


JOB_STATES = ("running", "finished", "failed", "cancelled")  # a job's life (not a ref's status)


@dataclass
class Job:
    id: int
    kind: str
    started_by: str
    started_at: float
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    state: str = "running"  # running, finished, failed, cancelled (JOB_STATES)
    finished_at: float | None = None
    result: dict | None = None
    problem: str = ""  # the plain sentence of a failure

    def tail(self, lines: int = 20) -> str:
        """The last lines of the job's log (progress bars' carriage returns folded)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        rows = [r.rsplit("\r", 1)[-1] for r in text.replace("\r\n", "\n").split("\n")]
        return "\n".join([r for r in rows if r.strip()][-lines:])

    def progress(self) -> tuple[int, int] | None:
        """``(done, total)`` from the command's last progress bar line, None before one."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return None
        found = _PROGRESS.findall(text)
        return (int(found[-1][1]), int(found[-1][2])) if found else None


def plain_problem(code: int, log_text: str) -> str:
    """One sentence a person can act on, from a failed command's exit status and log."""
    said = _ERROR.findall(log_text)
    if said:
        return said[-1].strip()
    if "ZeroDivisionError" in log_text:
        return "the held-out images have no targets: hold out more, or more varied, images"
    if "CUDA out of memory" in log_text or "OutOfMemoryError" in log_text:
        return "the machine ran out of GPU memory: use a smaller batch or the CPU"
    if code < 0:
        return f"the job was stopped by the system (signal {-code})"
    return f"the job stopped unexpectedly (exit status {code}); the end of its log is below"


class Jobs:
    """The studio's running and finished jobs (in memory: a restart forgets them, not their work)."""

    def __init__(self, store: Store, folder: Path | None = None) -> None:
        self.store = store
        self.folder = folder or store.exports_dir.with_name(store.exports_dir.name.replace("_exports", "") + "_jobs")
        self._jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def list(self) -> list[Job]:
        with self._lock:
            for job in self._jobs:
                self._poll(job)
            return list(reversed(self._jobs))

    def get(self, job_id: int) -> Job:
        for job in self.list():
            if job.id == int(job_id):
                return job
        raise BadInput(f"no job {job_id}")

    def command(self, kind: str, *, sentences: str = "", minutes: float = 5.0, promote: bool = False,
                name: str = "") -> list[str]:
        """The command line of a job (the same as a terminal's), after checking its inputs."""
        head = [sys.executable, "-m", "app.curate", kind]
        if kind == "preannotate":
            lines = [s.strip() for s in (sentences or "").splitlines() if s.strip()]
            if not lines:
                raise BadInput("type the sentences to pre-annotate, one a line")
            if len(lines) > MAX_SENTENCES:
                raise BadInput(f"at most {MAX_SENTENCES} sentences in one job")
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"sentences-{int(time.time() * 1000)}.txt"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            return [*head, "--sentences", str(path), "--json"]
        if kind == "negatives":
            return [*head, "--json"]
        if kind == "finetune":
            try:
                minutes = float(minutes)
            except (TypeError, ValueError):
                raise BadInput("the training time is a number of minutes") from None
            if not 0.1 <= minutes <= 600:
                raise BadInput("the training time is from 0.1 to 600 minutes")
            out = self.folder / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
            cmd = [*head, "--out", str(out), "--minutes", f"{minutes:g}", "--json"]
            if promote:
                cmd += ["--promote", *(["--name", name.strip()] if name and name.strip() else [])]
            return cmd
        raise BadInput(f"unknown job {kind!r}; jobs are {', '.join(KINDS)}")

    def start(self, actor: Actor, kind: str, **options) -> Job:
        """Start a job as ``actor`` (reviewers and operators); one of each kind at a time."""
        require_studio(actor, "run_jobs")
        cmd = self.command(kind, **options)
        env = settings.child_env({"PYTHONUNBUFFERED": "1"})
        loc = self.store.location
        if loc.is_postgres:  # the URL travels in the environment, never on a command line others can list
            env["DERIS_DB_URL"] = str(loc.url)
        else:
            cmd[4:4] = ["--db", str(loc.path)]
        with self._lock:
            for job in self._jobs:
                self._poll(job)
                if job.kind == kind and job.state == "running":
                    raise BadInput(f"a {KINDS[kind].lower()} job is running already (job {job.id}, started by "
                                   f"{job.started_by}): wait for it or cancel it")
            self.folder.mkdir(parents=True, exist_ok=True)
            job_id = next(self._ids)
            path = self.folder / f"job-{int(time.time())}-{job_id}-{kind}.log"
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(f"$ python -m app.curate {kind} (started by {actor.name or 'someone'})\n")
            out = open(path.with_suffix(".json"), "w", encoding="utf-8")
            err = open(path, "a", encoding="utf-8")
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            out.close()
            err.close()
            job = Job(job_id, kind, actor.name, time.time(), path, proc)
            self._jobs.append(job)
        log.info("job %d (%s) started by %s: pid %d", job_id, kind, actor.name, proc.pid)
        return job

    def cancel(self, actor: Actor, job_id: int) -> Job:
        """Stop a running job (what it committed stays; a rerun finishes the rest)."""
        require_studio(actor, "run_jobs")
        job = self.get(job_id)
        if job.state != "running" or job.proc is None:
            raise BadInput(f"job {job.id} is not running ({job.state})")
        try:
            os.killpg(job.proc.pid, signal.SIGTERM)  # its own session: the command and any worker it started
        except ProcessLookupError:
            pass
        try:
            job.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(job.proc.pid, signal.SIGKILL)
            job.proc.wait(timeout=10)
        with self._lock:
            job.state, job.finished_at = "cancelled", time.time()
            job.problem = f"cancelled by {actor.name or 'someone'}; what it committed is kept, a rerun finishes the rest"
        return job

    def _poll(self, job: Job) -> None:
        if job.state != "running" or job.proc is None:
            return
        code = job.proc.poll()
        if code is None:
            return
        job.finished_at = time.time()
        try:
            text = job.log_path.with_suffix(".json").read_text(encoding="utf-8").strip()
            job.result = json.loads(text.splitlines()[-1]) if text else None
        except (OSError, ValueError):
            job.result = None
        if code == 0:
            job.state = "finished"
        else:
            job.state = "failed"
            try:
                job.problem = plain_problem(code, job.log_path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                job.problem = plain_problem(code, "")
