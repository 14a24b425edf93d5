"""The PostgreSQL backend's own cases: ``--db`` values (a URL is never a path, the password never
shown), a wrong or unreachable URL, a wrong password, a missing database, a newer schema, several
servers creating the schema at once, and a full disk on the database server: each one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.store import SCHEMA_VERSION, Store, StoreError
from app.store.location import DbLocation, parse_db, redact
from tests.builders import noise_image, rect_mask
from tests.pg_server import PASSWORD

ROOT = Path(__file__).resolve().parents[1]


def test_db_values_paths_and_urls() -> None:
    assert parse_db("studio.sqlite") == DbLocation("sqlite", Path("studio.sqlite"))
    assert parse_db("postgresql://u@h:5432/studio").is_postgres
    assert parse_db("postgres://u@h/studio").is_postgres
    assert parse_db(None, {"DERIS_DB_URL": "postgresql://u@h/x"}).is_postgres
    assert parse_db("sqlite:///tmp/a.sqlite").path == Path("/tmp/a.sqlite")
    for bad, why in (("postgresql:/h/x", "does not parse"), ("mysql://h/x", "unsupported"), ("postgresql://u:pw@h:5432/", "names no database"),
                     ("postgresql://u:pw@h:99999/x", "not a valid"), ("", "no database given")):
        with pytest.raises(StoreError, match=why) as err:
            parse_db(bad, {})
        assert "pw" not in str(err.value).replace("postgresql", "")
    loc = parse_db("postgresql://u:hunter2@h:5432/x")
    assert "hunter2" not in repr(loc) and "hunter2" not in loc.shown and redact(loc.url) == "postgresql://u:***@h:5432/x"
    # the password hides in a typo, a query parameter or an unencoded '@' / '/': never shown either
    for bad in ("postgresql:/deris:hunter2@db/studio", "postgresql:deris:hunter2@db/studio"):
        with pytest.raises(StoreError, match="does not parse") as err:
            parse_db(bad, {})
        assert "hunter2" not in str(err.value)
    assert parse_db("postgresql://u@h/x?password=hunter2&sslmode=require").shown == "postgresql://u@h/x?password=***&sslmode=require"
    assert redact("postgresql://u:hun@ter/2@h/x") == "postgresql://u:***@h/x"


def test_a_url_is_never_taken_for_a_path(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    r = subprocess.run([sys.executable, "-m", "app.dataset", "import-images", str(tmp_path / "pics"), "--db",
                        "postgresql://nobody:hunter2@127.0.0.1:1/studio"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot be reached" in r.stderr and "hunter2" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pics"]  # no 'postgresql:' folder, no SQLite file


TYPOS = ("postgresql//deris:hunter2@127.0.0.1:1/db", "postgres:/deris:hunter2@127.0.0.1:1/db",
         "postgresql:deris:hunter2@127.0.0.1/db", "deris:hunter2@127.0.0.1:5432/db", "Postgres//deris@h/db?password=hunter2")


def test_a_mistyped_url_is_refused_in_one_line_with_the_password_masked() -> None:
    for bad in TYPOS:
        with pytest.raises(StoreError, match="looks like a database URL but does not parse") as err:
            parse_db(bad, {})
        assert "hunter2" not in str(err.value) and "\n" not in str(err.value), bad
        assert "hunter2" not in redact(bad)
    for path in ("data/studio.sqlite", "/srv/team studio/db.sqlite", "postgresql_backup.sqlite"):
        assert parse_db(path, {}).kind == "sqlite"


@pytest.mark.parametrize("typo", TYPOS[:2])
def test_launch_and_the_clis_refuse_a_mistyped_url_without_a_folder_or_the_password(tmp_path: Path, typo: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cmd in ([str(ROOT / "launch.py"), "--db", typo, "--weights", "bundled"],
                ["-m", "app.dataset", "stats", "--db", typo],
                ["-m", "app.curate", "qa", "--db", typo]):
        r = subprocess.run([sys.executable, *cmd], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "looks like a database URL" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "hunter2" not in r.stdout + r.stderr
        assert list(tmp_path.iterdir()) == []  # no SQLite file, no folder named after the URL


def test_wrong_password_missing_database_and_unreachable_server_are_one_line(pg_server) -> None:
    url = pg_server.new_database()
    with pytest.raises(StoreError, match="password authentication failed for user 'deris'") as err:
        Store(url.replace(PASSWORD, "wrong-secret"))
    assert "wrong-secret" not in str(err.value) and PASSWORD not in str(err.value)
    with pytest.raises(StoreError, match="does not exist"):
        Store(pg_server.url("no_such_db"))
    with pytest.raises(StoreError, match="cannot be reached") as err:
        Store(f"postgresql://deris:{PASSWORD}@127.0.0.1:1/x")
    assert PASSWORD not in str(err.value) and "\n" not in str(err.value)
    r = subprocess.run([sys.executable, "launch.py", "--db", url.replace(PASSWORD, "wrong-secret"), "--weights", "bundled"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "password authentication failed" in r.stderr and "wrong-secret" not in r.stderr + r.stdout


def test_an_account_that_may_not_create_tables_and_a_missing_driver_are_one_line(pg_server, monkeypatch) -> None:
    import builtins

    import psycopg

    url = pg_server.new_database()
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:  # PostgreSQL 15: only the owner creates in public
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'r3ader-secret'")
    reader = url.replace(f"deris:{PASSWORD}@", "reader:r3ader-secret@")
    with pytest.raises(StoreError, match=r"cannot set up the studio's tables in postgresql://reader:\*\*\*@.*read-only for this account") as err:
        Store(reader)
    assert "r3ader-secret" not in str(err.value) and "\n" not in str(err.value)
    real_import = builtins.__import__

    def no_psycopg(name, *a, **kw):
        if name == "psycopg" or name.startswith("psycopg."):
            raise ImportError("No module named 'psycopg'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(StoreError, match=r"needs psycopg 3: pip install 'psycopg\[binary\]'"):
        Store(url)


def test_a_newer_schema_is_refused_and_the_schema_is_made_once(pg_server) -> None:
    url = pg_server.new_database()
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; from app.store import Store; "
                               "print(Store(sys.argv[1]).schema_version())", url], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:  # several servers starting at once on an empty database: one creates it
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == str(SCHEMA_VERSION), err
    s = Store(url)
    assert s.read("SELECT COUNT(*) FROM deris_schema")[0][0] == 1
    with s.transaction() as db:
        db.execute("UPDATE deris_schema SET version = 99")
    with pytest.raises(StoreError, match=rf"newer DeRIS Studio \(schema 99, this one knows {SCHEMA_VERSION}\)"):
        Store(url)


def test_a_server_waiting_on_the_lock_sees_the_schema_another_one_made(pg_server) -> None:
    """The interleaving CI once hit: server A finds no schema and waits on the writers' lock while
    server B is creating it; A must then see B's schema instead of recording a second version row."""
    import threading
    import time

    from app.store.location import parse_db
    from app.store.pg import WRITE_LOCK, PgConnection, build_pg_schema, ensure_pg_schema

    loc = parse_db(pg_server.new_database())
    b, a = PgConnection(loc), PgConnection(loc)
    b.execute("BEGIN")
    b.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
    build_pg_schema(b, 0)  # not committed yet: A sees no schema
    found: list = []
    waiter = threading.Thread(target=lambda: found.append(ensure_pg_schema(a)))
    waiter.start()
    time.sleep(1.0)  # A has seen version 0 and now waits on the lock
    b.execute("COMMIT")
    waiter.join(timeout=60)
    assert found == [0]
    assert a.execute("SELECT COUNT(*), MAX(version) FROM deris_schema").fetchone() == (1, SCHEMA_VERSION)
    a.close(), b.close()


def test_every_table_of_the_schema_exists_on_postgres_with_never_reused_ids(pg_server) -> None:
    from app.dataset.migrate import table_columns

    s = Store(pg_server.new_database())
    for table, cols in table_columns().items():
        got = [r[0] for r in s.read("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                    "ORDER BY ordinal_position", (table,))]
        assert got == cols, table
    img = s.add_image(noise_image())
    rid = s.save_ref(img, ["a"], masks=[rect_mask()])
    s.delete_ref(rid)
    assert s.save_ref(img, ["b"], no_target=True) == rid + 1
    assert s.read("SELECT data_type FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'at'") \
        == [("double precision",)]


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not permitted'})")


def test_a_full_disk_on_the_database_server_is_one_line_and_keeps_committed_refs(pg_server) -> None:
    import pwd
    import tempfile

    mnt = Path(tempfile.mkdtemp(prefix="deris_pgfull_"))
    os.chmod(mnt, 0o755)
    _mount_tmpfs(mnt / "disk", "4m")  # room for the schema and five refs (3 MB was too tight from schema 6 on)
    try:
        if pg_server.run_as:
            u = pwd.getpwnam(pg_server.run_as)
            os.chown(mnt / "disk", u.pw_uid, u.pw_gid)
        import psycopg

        name = f"full_{os.getpid()}"
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE {name} LOCATION '{mnt / 'disk'}'")
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 TABLESPACE {name}')
        s = Store(pg_server.url(name))
        img = s.add_image(noise_image())
        kept = [s.save_ref(img, [f"ref {k}"], no_target=True) for k in range(5)]
        rng = np.random.default_rng(0)
        with pytest.raises(StoreError, match="disk of the database server is full") as err:
            for _ in range(400):  # incompressible pixels until the tablespace is full
                s.add_image(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
        assert "\n" not in str(err.value) and PASSWORD not in str(err.value)
        assert [r.id for r in s.refs()] == kept
        s.close()
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')
            conn.execute(f"DROP TABLESPACE {name}")
    finally:
        subprocess.run(["umount", "-l", str(mnt / "disk")], capture_output=True)
