"""A throwaway PostgreSQL server for tests: Debian's `postgresql` package (initdb + pg_ctl, run as an
unprivileged user when the tests run as root), listening on 127.0.0.1 on a free port only, with its
unix socket in its temporary folder and password authentication for loopback, stopped at the end.
Without the PostgreSQL binaries the tests that need a server are skipped; CI installs them with
`apt-get install -y postgresql`. Tests use it through the `postgres` fixture of tests/conftest.py.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "symattn"
PASSWORD = "s3cret-pg"
DATABASE = "optuna"


def _bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's /usr/lib/postgresql/N/bin, else the PATH."""
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    base: Path  # owned by the server's user: data/, the socket, the log
    port: int
    as_user: list[str]  # prefix that runs a command as the server's user ([] when not root)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, password: str = PASSWORD, database: str = DATABASE, driver: str = "") -> str:
        """The URL users type (postgresql://), or with an explicit SQLAlchemy driver (+psycopg2)."""
        return f"postgresql{driver}://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def pg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a PostgreSQL binary as the server's user, its output in a file (pg_ctl's server
        inherits no pipe that would keep us waiting)."""
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [*self.as_user, str(self.bindir / args[0]), *args[1:]],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                timeout=timeout,
            )
            out.seek(0)
            done.stdout = out.read()
        return done

    def tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def start(self) -> None:
        opts = " ".join(
            [
                f"-c port={self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
            ]
        )
        done = self.pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "90", "start"
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stdout}\n{self.tail()}")

    def create_database(self, name: str) -> str:
        """A new database on the server; its URL."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()
        return self.url(database=name)

    def stop(self) -> None:
        done = self.pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
        if done.returncode != 0:
            self.pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)


def _server_user() -> tuple[list[str], int | None, int | None]:
    """How to run the server: as ourselves, or, as root (which PostgreSQL refuses), as `postgres`."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], entry.pw_uid, entry.pw_gid
        if shutil.which("setpriv"):
            return (
                ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"],
                entry.pw_uid,
                entry.pw_gid,
            )
    pytest.skip("running as root, and there is no `postgres` user and runuser to start PostgreSQL as")


def running_postgres():
    """A PostgreSQL server on 127.0.0.1:<free port> with database `optuna`, until the generator ends."""
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
            "install Debian's package: apt-get install -y postgresql"
        )

    as_user, uid, gid = _server_user()
    base = Path(tempfile.mkdtemp(prefix="symattn-pg-"))  # under /tmp: reachable by the server's user
    if uid is not None:
        os.chown(base, uid, gid)
    pwfile = base / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        os.chown(pwfile, uid, gid)
    server = PostgresServer(bindir, base, free_port(), as_user)
    started = False
    try:
        done = server.pg(
            "initdb",
            "-D",
            str(server.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stdout}")
        for attempt in range(3):  # the free port may be taken between the probe and the start
            try:
                server.start()
                started = True
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = free_port()
        server.create_database(DATABASE)
        yield server
    finally:
        if started:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
