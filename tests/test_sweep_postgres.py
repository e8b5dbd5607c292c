"""A sweep on a real PostgreSQL server: the storage URL for workers on many machines.

The module starts a throwaway server (tests/postgres.py) and stops it at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from symattn.sweep.queue import queue
from symattn.sweep.spec import load_spec
from symattn.sweep.status import status_rows
from tests.postgres import DATABASE, PASSWORD, USER, free_port

STUDY = "pg-sweep"

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
    port = free_port()  # nothing listens there: the connection is refused
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
