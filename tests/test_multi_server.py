"""Two studio servers (two ``launch.py`` processes on different ports) on one PostgreSQL database,
driven with gradio_client: a ref saved on one is at once in the other's lists, review queue, counts
and export; a stale edit across servers is refused as on one server; a server SIGKILLed in the
middle of saving loses nothing it acknowledged; PostgreSQL restarting under a running server costs
no acknowledged save, and the next action reconnects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app.store import Store  # noqa: E402
from tests.test_app import ROOT, start_server  # noqa: E402


@pytest.fixture(scope="module")
def team(studio_weights, pg_server, tmp_path_factory):
    """``(url_a, url_b, db_url, image paths, start)``: two servers on one fresh database with 4 images."""
    from deris_core.synthetic import generate

    root = tmp_path_factory.mktemp("team")
    generate(root / "syn", seed=4, images=4)
    images = sorted((root / "syn" / "images" / "train2014").glob("*.png"))
    db = pg_server.new_database("team")
    r = subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(root / "syn" / "images"), "--db", db],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    weights, tok = studio_weights
    # each server keeps its caches (thumbnails, exports) in its own folder, as on two machines
    procs = []

    def start(name: str):
        env = {"DERIS_CACHE": str(tmp_path_factory.mktemp(f"cache_{name}")), "TMPDIR": str(root)}
        proc, url = start_server(weights, tok, db, env_extra=env)
        procs.append(proc)
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the log pipe drained
        return proc, url

    (_, a), (_, b) = start("a"), start("b")
    yield a, b, db, images, start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=30)


def _save(c: Client, image: Path, sentence: str, who: str) -> int:
    out = c.predict(handle_file(str(image)), sentence, 0.7, 0.5, api_name="/segment")
    nothing = {**out[0], "edit": {"targets": [], "no_target": True, "ops": 1}}  # X on the canvas
    msg = c.predict(who, "train", "done", "", sentence, nothing, api_name="/save")[0]
    assert msg.startswith("Saved ref"), msg
    return int(msg.split()[2])


def test_a_ref_saved_on_one_server_is_at_once_everywhere_on_the_other(team) -> None:
    a, b, db, images, _ = team
    ca, cb = Client(a, verbose=False), Client(b, verbose=False)
    rid = _save(ca, images[0], "the thing saved on server a", "alice")
    progress, table, info, _ = cb.predict(1, "", "", "", api_name="/refresh")  # counts and the ref list
    assert any(row[0] == rid for row in table["data"]) and "alice" in progress
    shown = cb.predict("alice", "", None, False, api_name="/review_previous")[0]  # the review queue
    assert "the thing saved on server a" in shown or "by <b>alice</b>" in shown
    out = cb.predict(rid, api_name="/open_ref")  # its image opens on b: the pixels are in the database
    assert out[1] == "the thing saved on server a"
    zpath = cb.predict(api_name="/export")
    with zipfile.ZipFile(zpath) as zf:
        grefs = json.loads(zf.read("grefcoco/grefs(unc).json"))
        assert rid in {g["ref_id"] for g in grefs}
        assert sum(n.startswith("images/train2014/") for n in zf.namelist()) >= 1


def test_a_stale_edit_across_servers_is_refused(team) -> None:
    a, b, db, images, _ = team
    ca, cb = Client(a, verbose=False), Client(b, verbose=False)
    rid = _save(ca, images[1], "the ref two people open", "alice")
    ca.predict(rid, api_name="/open_ref")
    cb.predict(rid, api_name="/open_ref")
    msg = ca.predict("alice", "val", "done", "a second sentence", "the ref two people open", api_name="/save")[0]
    assert msg.startswith("Updated ref")
    with pytest.raises(AppError, match="changed by someone else meanwhile"):
        cb.predict("bob", "testA", "done", "", "the ref two people open", api_name="/save")
    rec = Store(db).ref(rid)
    assert rec.split == "val" and rec.version == 2


def test_a_server_killed_mid_save_loses_nothing_it_acknowledged(team) -> None:
    a, b, db, images, start = team
    proc, url = start("victim")
    c = Client(url, verbose=False)
    acked: list[int] = []
    stop = threading.Event()

    def annotate() -> None:
        k = 0
        while not stop.is_set():
            try:
                acked.append(_save(c, images[k % len(images)], f"saved before the kill {k}", "carol"))
            except Exception:  # noqa: BLE001 - the server died under this call: not acknowledged
                return
            k += 1

    t = threading.Thread(target=annotate)
    t.start()
    deadline = time.time() + 120
    while len(acked) < 6 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    stop.set()
    t.join(timeout=60)
    assert len(acked) >= 6
    s = Store(db)
    stored = {r.id: r for r in s.refs()}
    for rid in acked:
        assert rid in stored and stored[rid].sentences[0].startswith("saved before the kill")
    assert s.integrity_check() == "ok"
    # the other server goes on
    assert _save(Client(b, verbose=False), images[2], "after the kill", "dave") > max(acked)


def test_postgres_restarting_under_a_running_server_loses_nothing_and_it_reconnects(team, pg_server) -> None:
    a, b, db, images, _ = team
    c = Client(a, verbose=False)
    before = _save(c, images[3], "saved before the restart", "erin")
    pg_server.restart()
    progress, table, info, _ = c.predict(1, "", "", "", api_name="/refresh")  # the next action reconnects
    assert any(row[0] == before for row in table["data"])
    after = _save(c, images[3], "saved after the restart", "erin")
    assert {before, after} <= {r.id for r in Store(db).refs()}
