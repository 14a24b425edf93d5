"""Accounts: entries and files refused at start with their line, and the wrong-password limit
(unit level with a fake clock, and on a real Gradio server per account and per address)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.auth import AuthError, LoginThrottle, Users, gradio_auth_kwargs, parse_entry

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("entry", ["bob:pw:annotater", "bob:pw:Reviewer", "bob:pw:annotator,reviwer", "bob:pw:admin",
                                   "bob:pw:annotator,", "bob:pw: ", "bob:pw:", "bob:p:w"])
def test_unknown_or_missing_roles_are_refused_not_taken_as_password(entry: str) -> None:
    with pytest.raises(AuthError) as err:
        parse_entry(entry, "--auth-file line 3")
    msg = str(err.value)
    assert "--auth-file line 3" in msg and "pw" not in msg.replace("password", "")


def test_misspelt_role_hints_without_echoing() -> None:
    with pytest.raises(AuthError, match="did you mean annotator"):
        parse_entry("bob:secretpart:annotater", "e")


@pytest.mark.parametrize("entry", ["", "   ", "nocolon", ":pw", "  :pw", "user:", "user::reviewer", "bad name:pw",
                                   "tab\tname:pw", "ctl\x01:pw", "x" * 65 + ":pw", "u:pw\x00x"])
def test_malformed_entries_are_refused(entry: str) -> None:
    with pytest.raises(AuthError, match="entry 7"):
        parse_entry(entry, "--auth entry 7")


@pytest.mark.parametrize("name", ["consensus", "Consensusbob", "model", "modeller"])
def test_names_of_the_studios_own_authors_are_refused(name: str) -> None:
    """Refs by ``consensus(...)`` and ``model:...`` are free to take; a person must never look like one."""
    with pytest.raises(AuthError, match="entry 3: user names starting with 'consensus' or 'model' are kept"):
        parse_entry(f"{name}:pw", "--auth entry 3")


def test_valid_entries() -> None:
    assert parse_entry("rev:pa:ss:reviewer", "e").password == "pa:ss"
    assert parse_entry("a:b:annotator, reviewer", "e").roles == {"annotator", "reviewer"}
    assert parse_entry("\ufeffann:pw", "e").name == "ann"
    assert parse_entry("ann:pw  \r", "e").password == "pw"


@pytest.mark.parametrize("raw", [b"\xef\xbb\xbfann:pw1:annotator\r\nrev:pw2\r\n", b"ann:pw1:annotator\rrev:pw2\r",
                                 b"\xef\xbb\xbf# team\r\n\r\nann:pw1:annotator\nrev:pw2"])
def test_auth_file_with_bom_and_crlf(tmp_path: Path, raw: bytes) -> None:
    f = tmp_path / "users.txt"
    f.write_bytes(raw)
    users = Users.parse([], f)
    assert users.names() == ["ann", "rev"] and users.check("ann", "pw1") and users.check("rev", "pw2")
    assert users.get("ann").roles == {"annotator"}


@pytest.mark.parametrize("raw,line", [(b"ann:pw\nbob:pw:annotater\n", 2), (b"# c\n\nann:pw\nbroken\n", 4),
                                      (b"ann:pw\n\xff\xfe:x\n", 2), (b"ann:pw\r\nann:pw2\r\n", 2)])
def test_auth_file_problems_name_the_line(tmp_path: Path, raw: bytes, line: int) -> None:
    f = tmp_path / "users.txt"
    f.write_bytes(raw)
    with pytest.raises(AuthError, match=f"line {line}"):
        Users.parse([], f)


def test_auth_file_without_accounts_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "users.txt"
    f.write_text("# nobody yet\n\n")
    with pytest.raises(AuthError, match="no accounts"):
        Users.parse([], f)


def test_launch_refuses_a_misspelt_role_with_the_line(tmp_path: Path) -> None:
    f = tmp_path / "users.txt"
    f.write_bytes(b"\xef\xbb\xbfann:secret1\r\nbob:secret2:annotater\r\n")
    r = subprocess.run([sys.executable, "launch.py", "--auth-file", str(f)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--auth-file line 2" in r.stderr and "unknown role" in r.stderr
    assert "secret" not in r.stderr


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_throttle_locks_account_and_address_and_doubles() -> None:
    clock = Clock()
    t = LoginThrottle(max_failures=3, lock_s=10, max_lock_s=25, clock=clock)
    for _ in range(3):
        assert t.locked_for("ann", "1.2.3.4") == 0
        t.failed("ann", "1.2.3.4")
    assert t.locked_for("ann", "9.9.9.9") == 10  # the account, from anywhere
    assert t.locked_for("bob", "1.2.3.4") == 10  # the address, for any account
    assert t.locked_for("bob", "9.9.9.9") == 0
    clock.t += 10
    assert t.locked_for("ann", "1.2.3.4") == 0
    for _ in range(3):
        t.failed("ann", "5.5.5.5")
    assert t.locked_for("ann", "") == 20  # doubled
    clock.t += 20
    for _ in range(3):
        t.failed("ann", "5.5.5.5")
    assert t.locked_for("ann", "") == 25  # capped
    clock.t += 25
    t.succeeded("ann", "5.5.5.5")
    assert t.locked_for("ann", "5.5.5.5") == 0
    t.failed("ann", "5.5.5.5")
    assert t.locked_for("ann", "5.5.5.5") == 0  # a success cleared the count


def test_throttle_memory_is_bounded() -> None:
    clock = Clock()
    t = LoginThrottle(max_failures=2, max_keys=50, clock=clock)
    for i in range(1000):
        clock.t += 1
        t.failed(f"made-up-{i}", "")
    assert len(t._keys) <= 50


def test_concurrent_guessing_is_stopped_after_the_limit() -> None:
    from fastapi import HTTPException

    users = Users([parse_entry("ann:right", "e")])
    results: list[str] = []

    def guess(k: int) -> None:
        try:
            results.append("ok" if users.check("ann", "right" if k % 50 == 49 else f"wrong{k}") else "wrong")
        except HTTPException as exc:
            results.append(str(exc.status_code))

    threads = [threading.Thread(target=guess, args=(k,)) for k in range(200)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("ok") + results.count("wrong") <= users.throttle.max_failures + 1
    assert results.count("429") >= 190


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_gradio_login_is_limited_per_account_and_address() -> None:
    import gradio as gr
    import httpx

    users = Users([parse_entry("ann:pw-ann", "e"), parse_entry("bob:pw-bob", "e")])
    with gr.Blocks() as demo:
        gr.Markdown("hello")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **gradio_auth_kwargs(users))
    url = f"http://127.0.0.1:{port}/login"

    def login(user: str, pw: str, source: str) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=20) as c:
            return c.post(url, data={"username": user, "password": pw})

    try:
        assert login("ann", "pw-ann", "127.0.0.1").status_code == 200
        for k in range(5):
            assert login("ann", f"guess{k}", "127.0.0.2").status_code == 400
        r = login("ann", "pw-ann", "127.0.0.3")  # the right password, from elsewhere: the account is locked
        assert r.status_code == 429 and "try again in" in r.json()["detail"]
        for k in range(5):  # one address guessing many accounts
            login(f"user{k}", "x", "127.0.0.4")
        assert login("bob", "pw-bob", "127.0.0.4").status_code == 429
        assert login("bob", "pw-bob", "127.0.0.5").status_code == 200  # bob elsewhere is fine
        assert "wrong passwords" in (demo.auth_message or "")
    finally:
        demo.close()


def test_the_lock_out_holds_for_every_server_on_one_database(db_at) -> None:
    """Two studio servers (two Users on two store connections) on one database: alice locked on A is
    locked on B as well, right password included, and B's guesses count towards the same lock."""
    from fastapi import HTTPException

    from app.store import Store

    at = db_at("team.sqlite")
    a, b = Users([parse_entry("alice:right-pw", "e1")]), Users([parse_entry("alice:right-pw", "e1")])
    a.share_with(Store(at))
    b.share_with(Store(at))
    for _ in range(5):
        assert a.check("alice", "wrong") is False
    for server in (a, b):
        with pytest.raises(HTTPException) as err:
            server.check("alice", "right-pw")
        assert err.value.status_code == 429
    # a fresh account: failures on both servers add up to one lock (not 5 per server)
    for n in range(5):
        assert (a if n % 2 else b).check("bob", "guess") is False
    with pytest.raises(HTTPException):
        a.check("bob", "guess")
    # a right password outside a lock clears the record for the whole team
    c = Users([parse_entry("carol:pw", "e1")])
    c.share_with(Store(at))
    for _ in range(4):
        assert b.check("carol", "x") is False
    assert c.check("carol", "pw") is True
    for _ in range(4):
        assert b.check("carol", "x") is False
    assert c.check("carol", "pw") is True  # 4 + 4 failures, but cleared in between: never locked
