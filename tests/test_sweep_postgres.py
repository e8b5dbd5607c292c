"""A sweep on a real PostgreSQL server: the storage URL for workers on many machines.

The module starts a throwaway server from Debian's `postgresql` package (initdb + pg_ctl, run as an
unprivileged user when the tests run as root), listening on 127.0.0.1 on a free port only, with its
unix socket in its temporary folder and password authentication for loopback, and stops it at the
end. Without the PostgreSQL binaries the tests that need a server are skipped; CI installs them with
`apt-get install -y postgresql`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from symattn.sweep.queue import queue
from symattn.sweep.spec import load_spec
from symattn.sweep.status import status_rows

STUDY = "pg-sweep"
USER = "symattn"
PASSWORD = "s3cret-pg"
DATABASE = "optuna"


# --- the server ------------------------------------------------------------------------------------


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


def _free_port() -> int:
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


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1:<free port> with database `optuna`, for this module."""
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
            "install Debian's package: apt-get install -y postgresql"
        )
    import psycopg2

    as_user, uid, gid = _server_user()
    base = Path(tempfile.mkdtemp(prefix="symattn-pg-"))  # under /tmp: reachable by the server's user
    if uid is not None:
        os.chown(base, uid, gid)
    pwfile = base / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        os.chown(pwfile, uid, gid)
    server = PostgresServer(bindir, base, _free_port(), as_user)
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
                server.port = _free_port()
        conn = psycopg2.connect(
            host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
        conn.close()
        yield server
    finally:
        if started:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- a tiny sweep ----------------------------------------------------------------------------------


def _spec(tmp_path: Path, run_overrides: list[str]) -> Path:
    """Two cells of one matched group (vanilla, symmetric), 20 steps each, MLflow in tmp_path."""
    from symattn.config import apply_overrides

    base = apply_overrides({}, run_overrides)
    base["optim"]["max_steps"] = 20
    base["eval"]["every_n_steps"] = 10
    base["checkpoint"] = {**base.get("checkpoint", {}), "every_n_steps": 10}
    base["speed"].pop("threads", None)
    spec = {
        "name": STUDY,
        "base": base,
        "axes": {"model.attention.variant": ["vanilla", "symmetric"]},
        # --storage must win over the spec's store: this journal file must never appear
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"heartbeat_seconds": 1, "grace_seconds": 30},
    }
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "symattn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_two_workers_drain_one_study_on_postgresql(postgres, tmp_path, run_overrides, capsys):
    from symattn.cli import main

    spec, url = _spec(tmp_path, run_overrides), postgres.url()
    # `symattn queue SPEC --storage URL`, in-process: each start of the CLI costs many seconds of imports here
    code = main(["queue", str(spec), "--storage", url])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "2 cells added, 0 already queued" in out.out, out.out + out.err
    assert PASSWORD not in out.out + out.err  # the URL is shown without its password
    again = queue(load_spec(spec), url)
    assert (again.added, again.existing) == (0, 2)

    cmd = [sys.executable, "-m", "symattn", "work", STUDY, "--storage", url, "--devices", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]  # both at once, on the same study
    try:
        outs = [p.communicate(timeout=540)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outs) + postgres.tail()
    completed = [
        int(line.split(": ")[1].split()[0])
        for out in outs
        for line in out.splitlines()
        if line.startswith(f"study {STUDY}: ") and "cells completed" in line
    ]
    assert len(completed) == 2 and sum(completed) == 2, outs  # between them, each cell once

    # Optuna, read back from PostgreSQL: every cell COMPLETE, exactly once, on the first attempt
    study = optuna.load_study(study_name=STUDY, storage=postgres.url(driver="+psycopg2"))  # not via symattn
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["cell"] for t in trials) == sorted({t.user_attrs["cell"] for t in trials})
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials), [
        (t.number, t.state) for t in trials
    ]
    assert all(t.user_attrs["attempt"] == 1 for t in trials)
    assert not (tmp_path / "optuna.journal").exists()  # the spec's store was not used

    # MLflow (sqlite in tmp_path): exactly one FINISHED run per cell, and it names its trial
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name(STUDY).experiment_id], filter_string="tags.kind = 'pretrain'"
    )
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    by_cell = {r.data.tags["cell"]: r for r in runs}
    assert set(by_cell) == {t.user_attrs["cell"] for t in trials}
    for t in trials:
        run = by_cell[t.user_attrs["cell"]]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["optuna_trial"] == str(t.number)
        assert t.values[0] == pytest.approx(run.data.metrics["val/loss"])

    rows = status_rows(STUDY, url)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"] and all(
        r["progress"] == "20/20" for r in rows
    )


def _check_refusal(tmp_path: Path, code: int, stdout: str, stderr: str, secret: str = PASSWORD) -> None:
    assert code == 2, stdout + stderr
    assert stderr.strip() and stderr.strip().count("\n") == 0, stderr  # one line
    assert stderr.startswith("symattn queue: error: cannot open Optuna storage"), stderr
    assert "Traceback" not in stderr
    assert "DB access module" not in stderr  # psycopg2-binary is installed: the server itself refused
    assert secret not in stdout + stderr  # the URL is shown without its password
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.journal").exists()


def test_queue_on_a_port_where_nothing_listens_is_refused_in_one_line(tmp_path, run_overrides):
    port = _free_port()  # nothing listens there: the connection is refused
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    started = time.time()
    out = _cli("queue", str(_spec(tmp_path, run_overrides)), "--storage", url, timeout=90)  # the real command
    _check_refusal(tmp_path, out.returncode, out.stdout, out.stderr)
    assert "refused" in out.stderr.lower() or "could not connect" in out.stderr.lower(), out.stderr
    assert time.time() - started < 60


@pytest.mark.parametrize("change", ["password", "database"])
def test_queue_with_wrong_credentials_or_database_is_refused_and_writes_nothing(
    postgres, tmp_path, run_overrides, change, capsys
):
    from symattn.cli import main

    secret = "not-the-password-42" if change == "password" else PASSWORD
    url = postgres.url(password=secret) if change == "password" else postgres.url(database="no_such_db")
    code = main(["queue", str(_spec(tmp_path, run_overrides)), "--storage", url])  # in-process: quicker
    out = capsys.readouterr()
    _check_refusal(tmp_path, code, out.out, out.err, secret)
    assert (
        "password authentication failed" if change == "password" else '"no_such_db" does not exist'
    ) in out.err
    # nothing was created on the server either: no new database
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=postgres.port, user=USER, password=PASSWORD, dbname="postgres"
    )
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")
        assert [r[0] for r in cur.fetchall()] == sorted(["postgres", DATABASE])
    conn.close()
