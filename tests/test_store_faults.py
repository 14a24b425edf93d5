"""The store under faults (app/store/store.py, pg.py, timeouts.py): a writer that holds the lock and
stops (SIGSTOP) is named within seconds and loses nobody's save; on PostgreSQL the server ends such a
session after the idle-in-transaction timeout; a connection cut after COMMIT was forwarded but before
its answer came back is looked up by the save's key and reported truthfully (a small TCP proxy on
127.0.0.1 cuts it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.services import Actor, RefService
from app.store import DatabaseBusy, OutcomeUnknown, Store, StoreError
from app.store.timeouts import DbTimeouts, application_name
from tests.builders import noise_image

ROOT = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from app.store import Store
s = Store(sys.argv[1])
with s.transaction() as db:
    db.execute("SELECT COUNT(*) FROM refs").fetchone()
    print("holding", flush=True)
    time.sleep(600)
"""


def _holder(at: str, **env: str) -> subprocess.Popen:
    """A process that takes the writers' lock, says so, and is then stopped (SIGSTOP) while holding it."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, at], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "DERIS_ROLE": "curate preannotate", **env})
    line = p.stdout.readline()
    assert line.strip() == "holding", p.stderr.read() if p.poll() is not None else line
    p.send_signal(signal.SIGSTOP)
    return p


def _end(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGCONT)
    p.kill()
    p.wait(timeout=30)


def test_a_stopped_writer_is_named_within_seconds_and_the_save_is_not_lost(db_at) -> None:
    at = db_at("a.sqlite")
    s = Store(at, timeouts=DbTimeouts(lock_wait_s=2))
    img = s.add_image(noise_image())
    p = _holder(at)
    try:
        t0 = time.monotonic()
        with pytest.raises(DatabaseBusy) as err:
            RefService(s).save(Actor("ann"), img, ["the cat"], no_target=True)
        took = time.monotonic() - t0
        msg = str(err.value)
        assert took < 6, took  # it used to wait ~121 s on SQLite and forever on PostgreSQL
        assert "\n" not in msg and "nothing was saved, your edit is still here" in msg and "(2 s)" in msg
        if s.location.is_postgres:  # the holder named: our application name, its pid and state
            assert f"deris-studio curate preannotate {socket.gethostname()}:{p.pid}" in msg, msg
            assert "idle in transaction" in msg
        assert s.refs() == []
    finally:
        _end(p)
    saved = RefService(s).save(Actor("ann"), img, ["the cat"], no_target=True)  # the same edit, once it is free
    assert [r.id for r in s.refs()] == [saved.ref_id]


def test_postgres_ends_a_stopped_session_after_the_idle_timeout(pg_server) -> None:
    """The stopped holder's transaction is ended by the server after DERIS_DB_IDLE_TX_TIMEOUT: the team can
    save again without anyone killing it."""
    url = pg_server.new_database()
    s = Store(url, timeouts=DbTimeouts(lock_wait_s=1))
    img = s.add_image(noise_image())
    p = _holder(url, DERIS_DB_IDLE_TX_TIMEOUT="2")
    try:
        with pytest.raises(DatabaseBusy):
            s.save_ref(img, ["first try"], no_target=True)
        deadline, rid = time.monotonic() + 20, None
        while rid is None and time.monotonic() < deadline:
            try:
                rid = s.save_ref(img, ["the cat"], no_target=True)
            except DatabaseBusy:
                time.sleep(0.5)
        assert rid is not None and [r.sentences for r in s.refs()] == [["the cat"]]
    finally:
        _end(p)


def test_application_name_and_timeouts_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DERIS_ROLE", "studio")
    assert application_name() == f"deris-studio studio {socket.gethostname()}:{os.getpid()}"[:63]
    t = DbTimeouts.from_env({"DERIS_DB_LOCK_WAIT": "3", "DERIS_DB_STATEMENT_TIMEOUT": "0", "DERIS_DB_IDLE_TX_TIMEOUT": "x"})
    assert (t.lock_wait_s, t.statement_s, t.idle_in_transaction_s) == (3.0, 0.0, 120.0)
    assert DbTimeouts.from_env({}, batch=True).lock_wait_s == 120.0 and DbTimeouts.from_env({}).lock_wait_s == 5.0


class CommitCutter:
    """A TCP proxy to the PostgreSQL server on 127.0.0.1 that, once armed, cuts the connection that sends
    COMMIT: after forwarding it (``after=True``: the server commits, the answer is lost) or instead of
    forwarding it (``after=False``: nothing is committed). ``down_after_cut``: from the cut on, the server
    cannot be reached through it (each new connection is closed at once) until ``down`` is set False."""

    def __init__(self, port: int) -> None:
        self.target, self.armed, self.after, self.cut = port, False, True, 0
        self.down_after_cut = self.down = False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target))
            dead = threading.Event()  # this connection is being cut: nothing more reaches the client
            threading.Thread(target=self._pipe, args=(client, server, True, dead), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False, dead), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool, dead: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if dead.is_set():
                    return
                if upstream and self.armed and b"COMMIT" in data:
                    self.armed = False
                    dead.set()
                    self.cut += 1
                    self.down = self.down_after_cut
                    if self.after:
                        dst.sendall(data)
                        time.sleep(0.5)  # the server commits; its answer never reaches the client
                    for s in (src, dst):
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("after", [True, False], ids=["commit-reached-the-server", "commit-never-arrived"])
def test_a_lost_commit_answer_is_reported_truthfully(pg_server, after: bool) -> None:
    url = pg_server.new_database()
    proxy = CommitCutter(pg_server.port)
    try:
        s = Store(url.replace(f":{pg_server.port}/", f":{proxy.port}/"))
        img = s.add_image(noise_image())
        service, ann = RefService(s), Actor("ann")
        first = service.save(ann, img, ["the first ref"], no_target=True)
        key = s.new_save_key()
        proxy.armed, proxy.after = True, after
        if after:  # it was committed: "saved (ref N)", not "nothing was saved, try again"
            saved = service.save(ann, img, ["the second ref"], no_target=True, save_key=key)
            assert proxy.cut == 1 and saved.ref_id == first.ref_id + 1 and saved.created
            again = service.save(ann, img, ["the second ref"], no_target=True, save_key=key)  # a retry of that attempt
            assert again.ref_id == saved.ref_id
            assert [r.sentences for r in s.refs()] == [["the first ref"], ["the second ref"]]
        else:
            with pytest.raises(StoreError, match="nothing was saved, try again") as err:
                service.save(ann, img, ["the second ref"], no_target=True, save_key=key)
            assert proxy.cut == 1 and "\n" not in str(err.value)
            assert [r.sentences for r in s.refs()] == [["the first ref"]]
            assert service.save(ann, img, ["the second ref"], no_target=True, save_key=key).ref_id > first.ref_id
        s.close()
    finally:
        proxy.close()


def test_a_lost_commit_answer_while_the_server_stays_unreachable_says_the_outcome_is_unknown(pg_server) -> None:
    """COMMIT reached the server, its answer was lost, and the server cannot be reached to look the save
    up: the person hears that it is not known whether it was stored and to reopen and check before
    saving again (never "nothing was saved, try again"); once it can be reached, the same attempt finds
    the save it made (no duplicate)."""
    url = pg_server.new_database()
    proxy = CommitCutter(pg_server.port)
    try:
        s = Store(url.replace(f":{pg_server.port}/", f":{proxy.port}/"))
        img = s.add_image(noise_image())
        service, ann = RefService(s), Actor("ann")
        first = service.save(ann, img, ["the first ref"], no_target=True)
        key = s.new_save_key()
        proxy.armed, proxy.after, proxy.down_after_cut = True, True, True
        t0 = time.monotonic()
        with pytest.raises(StoreError) as err:
            service.save(ann, img, ["the second ref"], no_target=True, save_key=key)
        msg = str(err.value)
        assert proxy.cut == 1 and time.monotonic() - t0 < 30
        assert "nothing was saved" not in msg and "try again" not in msg and "\n" not in msg, msg
        assert "cannot be reached to check whether the save was stored" in msg, msg
        assert "reopen it to check before saving again" in msg, msg
        assert isinstance(err.value, OutcomeUnknown)  # the Annotate view does not put "Not saved:" before it
        proxy.down = False  # the server is back
        assert [r.sentences for r in s.refs()] == [["the first ref"], ["the second ref"]]  # it was committed
        again = service.save(ann, img, ["the second ref"], no_target=True, save_key=key)  # the same attempt
        assert again.ref_id == first.ref_id + 1 and len(s.refs()) == 2
        s.close()
    finally:
        proxy.close()
