"""A real PostgreSQL server for tests and benches: ``initdb`` in a temporary folder, a free port on
127.0.0.1, password authentication, run as an unprivileged user when this process is root.

    server = PgServer.start(Path("/tmp/x"))   # or the ``pg_server`` fixture in tests/conftest.py
    url = server.new_database()                # postgresql://deris:<password>@127.0.0.1:<port>/t_<n>
    server.restart(); server.stop()

``python -m tests.pg_server DIR [--durable]`` starts one and prints its URL (for the benches and by
hand; ``--durable``: fsync on, as a real server, for figures).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "s3cret-pw"
USER = "deris"
_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    for d in _BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    root: Path
    port: int
    run_as: str | None  # the unprivileged user the server runs as (None: this process's user)
    durable: bool = False  # fsync on (benches); the tests run without it
    _names: "itertools.count[int]" = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        full = (["runuser", "-u", self.run_as, "--"] if self.run_as else []) + list(cmd)
        return subprocess.run(full, capture_output=True, text=True, check=check, timeout=120)

    @classmethod
    def start(cls, root: Path, durable: bool = False) -> "PgServer":
        """initdb + pg_ctl start; RuntimeError with the reason when it cannot."""
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) not found; install Debian's postgresql")
        run_as = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                    run_as = name
                    break
                except KeyError:
                    continue
            if run_as is None:
                raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        root.mkdir(parents=True, exist_ok=True)
        server = cls(root, _free_port(), run_as, durable)
        pw = root / "pw"
        pw.write_text(PASSWORD + "\n")
        (root / "sock").mkdir(exist_ok=True)
        if run_as:
            u = pwd.getpwnam(run_as)
            for p in (root, pw, root / "sock"):
                os.chown(p, u.pw_uid, u.pw_gid)
            root.chmod(0o700)
        try:
            server._run(initdb, "-D", str(server.data), "-U", USER, "--pwfile", str(pw), "--auth=scram-sha-256",
                        "-E", "UTF8", "--locale=C")
            server._start()
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"PostgreSQL did not start: {(exc.stderr or exc.stdout).strip().splitlines()[-1:]}") from None
        return server

    def _start(self) -> None:
        opts = (f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 -c max_connections=200"
                + ("" if self.durable else " -c fsync=off -c full_page_writes=off"))
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", opts,
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop (closing every client connection) and start again on the same port."""
        self.stop()
        self._start()

    def new_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


def main(argv: list[str]) -> int:
    server = PgServer.start(Path(argv[0]), durable="--durable" in argv)
    print(server.new_database("bench"), flush=True)
    print(f"stop with: runuser -u {server.run_as} -- {pg_bin('pg_ctl')} -D {server.data} stop" if server.run_as
          else f"stop with: {pg_bin('pg_ctl')} -D {server.data} stop", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
