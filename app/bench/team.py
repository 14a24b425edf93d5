"""A team on several studio servers: N servers x M simulated annotators saving and reviewing.

    python -m app.bench team [--db postgresql://user@host:5432/bench | --db team.sqlite] [--servers 2]
                             [--clients 8] [--seconds 60] [--images 40] [--weights bundled] [--think 0]

Starts ``--servers`` studio servers (``launch.py``, one port each) on one database, with a
collection of synthetic scenes imported first, and ``--clients`` gradio_client sessions per server
on 127.0.0.1. Each annotator loops: *next image* (the queue's next picture, the model run on the
expression kept from the last one), *save* (a new ref), and every fifth round a *review* (accept
the oldest waiting ref of the next annotator, as another person, on whichever server). Reported: saves/s, p50/p95 of save, next image and
review, errors (anything but a review refused because another reviewer decided the same ref a
moment earlier, counted as ``review_conflicts``), and the check afterwards that every acknowledged
save is in the database exactly once. The clients do not download the pictures (``download_files=False``):
the figures are the servers' answers, as a browser sees them before the picture's download.
``--images`` must exceed the rounds one annotator makes: at the end of the queue the next image stays
the same, and a save there edits that annotator's last ref, which counts as a duplicated save.

``--think S`` makes each annotator pause before every action (uniformly 0.5-1.5 x S seconds: looking at
the proposal, typing): 0, the default, is a saturation test where every client fires its next call as
soon as the last one answers, so latency is the number of clients over the machine's throughput. Where
the CPU went is measured over the same window (``/proc``): the servers' CPU seconds, this process's (the
gradio_client sessions), and the whole machine's busy share, each per saved round.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(db: str, weights: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "launch.py", "--weights", weights, "--db", db, "--port", str(port),
                             "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 180
    tail: list[str] = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        tail = (tail + [line])[-20:]
        if "Running on local URL" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, f"http://127.0.0.1:{port}/"
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("a studio server did not start:\n" + "".join(tail))


@dataclass
class Tally:
    save_s: list[float] = field(default_factory=list)
    next_s: list[float] = field(default_factory=list)
    review_s: list[float] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _annotator(url: str, who: str, peer: str, until: float, tally: Tally, k0: int, think: float = 0.0) -> None:
    """One annotator's loop (see the module docstring); ``peer``: whose refs this person reviews;
    ``think``: the mean pause before each action, in seconds."""
    from gradio_client import Client

    from ..store import RefStatus

    rng = random.Random(k0)

    def pause() -> None:
        if think > 0:
            time.sleep(think * rng.uniform(0.5, 1.5))

    try:
        c = Client(url, verbose=False, download_files=False)  # the server's work only: pictures stay there
    except Exception as exc:  # noqa: BLE001 - gradio_client raises many types: counted in the report
        with tally.lock:
            tally.errors.append(f"{who}: connect: {type(exc).__name__}: {exc}")
        return
    k = k0
    while time.time() < until:
        k += 1
        try:
            pause()
            t0 = time.perf_counter()
            out = c.predict(True, "the red circle", 0.5, 0.5, "", "", "", "", api_name="/next_image")
            t1 = time.perf_counter()
            if "NO TARGET" not in str(out[2]) and "target instance" not in str(out[2]):
                c.predict(api_name="/toggle_no_target")
            pause()
            t2 = time.perf_counter()
            msg = c.predict(who, "train", RefStatus.DONE.value, f"round {k} of {who}", "the red circle", api_name="/save")[0]
            t3 = time.perf_counter()
            rid = int(str(msg).split()[2])
            with tally.lock:
                tally.next_s.append(t1 - t0)
                tally.save_s.append(t3 - t2)
                tally.acked.append(rid)
        except Exception as exc:  # noqa: BLE001 - counted, the annotator goes on
            with tally.lock:
                tally.errors.append(f"{who}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if k % 5 == 0 and time.time() < until:
            try:
                pause()
                t0 = time.perf_counter()
                c.predict(peer, "", None, False, api_name="/review_previous")
                c.predict(None, "", f"rev-{who}", "", "", None, False, api_name="/review_accept")
                with tally.lock:
                    tally.review_s.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - gradio_client raises many types: counted, the reviewer goes on
                with tally.lock:
                    if "meanwhile" in str(exc):
                        tally.conflicts += 1
                    else:
                        tally.errors.append(f"{who} review: {type(exc).__name__}: {str(exc)[:200]}")


def _pct(v: list[float], q: float) -> float | None:
    if not v:
        return None
    s = sorted(v)
    return round(1000 * s[min(len(s) - 1, int(q * len(s)))], 1)


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot (``/proc/stat``), or None. Busy is user,
    nice, system, irq and softirq; the total adds idle, iowait and steal (guest time is inside user)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            v = ([int(x) for x in f.readline().split()[1:9]] + [0] * 8)[:8]
    except (OSError, ValueError):
        return None
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, (busy + v[3] + v[4] + v[7]) / tick


def _cpu_split(before: dict, after: dict, rounds: int) -> dict:
    """Where the CPU went over the measured window, per saved round (milliseconds)."""
    out: dict = {}
    per = max(rounds, 1)
    if None not in before["servers"] and None not in after["servers"]:
        out["servers_cpu_ms_per_round"] = round(1000 * (sum(after["servers"]) - sum(before["servers"])) / per, 1)
    out["clients_cpu_ms_per_round"] = round(1000 * (after["self"] - before["self"]) / per, 1)
    if before["machine"] and after["machine"]:
        busy = after["machine"][0] - before["machine"][0]
        total = after["machine"][1] - before["machine"][1]
        out["machine_cpu_ms_per_round"] = round(1000 * busy / per, 1)
        out["machine_busy_share"] = round(busy / total, 3) if total else None
    return out


def _cpu_now(procs: list[subprocess.Popen]) -> dict:
    return {"servers": [_process_cpu_s(p.pid) for p in procs], "self": time.process_time(), "machine": _machine_busy()}


def bench_team(db: str | None, servers: int = 2, clients: int = 8, seconds: float = 60, images: int = 40,
               weights: str = "bundled", think: float = 0.0) -> dict:
    from deris_core.synthetic import generate

    from ..dataset.collection import import_images
    from ..store import RefFilter, Store
    from ..store.queue import ref_ids
    from ..store.location import parse_db

    tmp = tempfile.TemporaryDirectory(prefix="deris_team_")
    root = Path(tmp.name)
    db = db or str(root / "team.sqlite")
    loc = parse_db(db)
    store = Store(loc)
    if store.stats()["images"] < images:
        generate(root / "syn", seed=11, images=images)
        import_images(store, root / "syn" / "images" / "train2014", progress=False)
    refs_before = store.stats()["refs"]
    env = settings.child_env({"GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"})
    procs = []
    try:
        urls = []
        for n in range(servers):
            proc, url = _start(db, weights, {**env, "DERIS_CACHE": str(root / f"cache{n}")})
            procs.append(proc)
            urls.append(url)
        tally = Tally()
        until = time.time() + seconds
        people = servers * clients
        threads = [threading.Thread(target=_annotator, args=(urls[n % servers], f"ann{n}", f"ann{(n + 1) % people}", until,
                                                             tally, 100 * n, think)) for n in range(people)]
        cpu0 = _cpu_now(procs)
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = _cpu_split(cpu0, _cpu_now(procs), len(tally.acked))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    stored = set(ref_ids(store, RefFilter()))
    missing = [r for r in tally.acked if r not in stored]
    n_refs = store.stats()["refs"] - refs_before
    store.close()
    tmp.cleanup()
    return {
        "backend": loc.kind, "servers": servers, "clients": servers * clients, "think_s": think,
        "seconds": round(wall, 1),
        "saves": len(tally.acked), "saves_per_s": round(len(tally.acked) / wall, 2),
        "save_p50_ms": _pct(tally.save_s, 0.5), "save_p95_ms": _pct(tally.save_s, 0.95),
        "next_image_p50_ms": _pct(tally.next_s, 0.5), "next_image_p95_ms": _pct(tally.next_s, 0.95),
        "reviews": len(tally.review_s), "review_p50_ms": _pct(tally.review_s, 0.5),
        "review_p95_ms": _pct(tally.review_s, 0.95), "review_conflicts": tally.conflicts,
        "errors": len(tally.errors), "first_errors": tally.errors[:3],
        "acknowledged_saves_missing": len(missing), "acknowledged_saves_duplicated": len(tally.acked) - len(set(tally.acked)),
        "new_refs_in_database": n_refs, "weights": weights, **cpu,
    }
