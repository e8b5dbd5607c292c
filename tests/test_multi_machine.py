"""A sweep across machines, for real: a real `mlflow server` (PostgreSQL backend store, a local
artifact root, artifacts served through it) and a real PostgreSQL for Optuna; two workers as if on two
nodes (separate homes, data caches and corpus copies, no shared file, both stores reached by URL);
one node dies in the middle of a cell; a third home reads everything through the servers alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from symattn import keys
from symattn.run.stored_checkpoints import stored_checkpoint
from tests.postgres import free_port
from tests.processes import end_tree, symattn_in, until

STUDY = "two-nodes"
STEPS, EVERY = 200, 20
WORKERS = {"heartbeat_seconds": 1, "grace_seconds": 8}


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """`mlflow server` as a team runs it on a head node: runs in PostgreSQL, artifacts in a folder
    of its own that only the server touches, served to the workers over HTTP."""
    postgres.create_database("mlflow_store")
    backend = postgres.url(database="mlflow_store", driver="+psycopg2")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            (tmp_path / "server-artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=open(tmp_path / "mlflow-server.log", "w"),  # noqa: SIM115  closed with the process
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        until(up, "mlflow server answering /health", timeout=180, proc=server, every=0.5)
        yield url
    finally:
        end_tree(server, signal.SIGTERM, timeout=30)


def _home(tmp_path: Path, name: str, corpus: Path) -> Path:
    """A node's own folder: its SYMATTN_HOME and working directory, with its own copy of the corpus."""
    home = tmp_path / name
    home.mkdir()
    shutil.copytree(corpus, home / "corpus")
    return home


def _env(home: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SYMATTN_HOME": str(home),
        "SYMATTN_CACHE": str(home / "cache"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the store comes from the study, as on a fresh node
    return env


def _symattn(home: Path, *args: str) -> subprocess.CompletedProcess:
    return symattn_in(home, _env(home), list(args))


def _worker(home: Path, storage: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "symattn", "work", STUDY, "--storage", storage, "--devices", "cpu"],
        cwd=home,
        env=_env(home),
        stdout=open(home / "worker.log", "w"),  # noqa: SIM115  closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the node dies whole
    )


def _spec(path: Path, run_overrides: list[str], mlflow_url: str) -> Path:
    from symattn.config import apply_overrides

    local = ("data.source=", "tracking.uri=", "checkpoint.dir=", "speed.threads=")
    base = apply_overrides({}, [o for o in run_overrides if not o.startswith(local)])
    base["data"]["source"] = "path:corpus"  # each node's own copy, at the same place in its home
    base["optim"]["max_steps"] = STEPS
    base["eval"]["every_n_steps"] = EVERY
    base["checkpoint"] = {"every_n_steps": EVERY, "keep": [0, STEPS]}
    spec = {
        "name": STUDY,
        "base": base,
        "axes": {"model.attention.variant": ["vanilla", "symmetric"]},
        "stores": {"mlflow": mlflow_url},
        "workers": WORKERS,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _log(home: Path) -> str:
    return (home / "worker.log").read_text() if (home / "worker.log").exists() else ""


@pytest.mark.slow
def test_a_sweep_across_two_nodes_survives_one_dying(
    postgres, mlflow_server, tmp_path, corpus_dir, run_overrides, monkeypatch
):
    storage = postgres.url()
    node_a, node_b = (_home(tmp_path, name, corpus_dir) for name in ("node-a", "node-b"))
    third = tmp_path / "laptop"
    third.mkdir()
    client = MlflowClient(mlflow_server)

    spec = _spec(node_a / "spec.yaml", run_overrides, mlflow_server)
    queued = _symattn(node_a, "queue", str(spec), "--storage", storage)
    assert queued.returncode == 0 and "2 cells added" in queued.stdout, queued.stdout + queued.stderr

    # Node A takes a cell; once its checkpoint is in the store, node B joins, then node A dies.
    a = _worker(node_a, storage)
    b = None
    try:
        exp = until(lambda: client.get_experiment_by_name(STUDY), "the study's experiment", proc=a)

        def runs():
            return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'")

        def stored():
            return [r for r in runs() if (stored_checkpoint(r) or {}).get("step", 0) >= EVERY]

        [first] = until(
            stored, f"node A's checkpoint of step {EVERY} in the store", timeout=400, proc=a, every=0.5
        )
        b = _worker(node_b, storage)
        until(lambda: len(runs()) == 2, "node B's run", timeout=300, proc=b, every=0.5)
        os.killpg(a.pid, signal.SIGKILL)  # the node is gone: its worker, its cell, its disk
        a.wait(timeout=30)
        died_at = stored_checkpoint(client.get_run(first.info.run_id))["step"]
        assert client.get_run(first.info.run_id).info.status == "RUNNING"  # left unfinished

        b.wait(timeout=600)
        assert b.returncode == 0, _log(node_b)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                end_tree(proc)
    log_b = _log(node_b)
    assert "its worker stopped beating; retried" in log_b, log_b

    # Optuna, read back from PostgreSQL: each cell COMPLETE once; the dead node's try FAILed.
    study = optuna.load_study(study_name=STUDY, storage=postgres.url(driver="+psycopg2"))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["cell"] for t in complete) == sorted({t.user_attrs["cell"] for t in trials})
    assert len(complete) == 2 and [t.state for t in trials].count(TrialState.FAIL) == 1

    # MLflow, through the server: one FINISHED run per cell; the dead node's run went on from its
    # stored checkpoint in the same run, with every step logged exactly once.
    finished = runs()
    assert len(finished) == 2 and all(r.info.status == "FINISHED" for r in finished)
    resumed = client.get_run(first.info.run_id)
    assert [m.step for m in client.get_metric_history(first.info.run_id, keys.STARTUP_S)] == [0, died_at]
    for run in finished:
        for key in ("val/loss", "train/loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == sorted(set(steps)) and steps[-1] == STEPS, (key, steps)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == list(
            range(EVERY, STEPS + 1, EVERY)
        )
    assert stored_checkpoint(resumed)["step"] == STEPS
    # Each node's disk holds the runs it ran: node B's the dead node's too, fetched from the store.
    assert [p.name for p in (node_a / "checkpoints" / STUDY).iterdir()] == [first.info.run_id]
    assert sorted(p.name for p in (node_b / "checkpoints" / STUDY).iterdir()) == sorted(
        r.info.run_id for r in finished
    )
    assert not list(tmp_path.glob("node-*/mlflow.db")) and not list(tmp_path.glob("node-*/optuna.journal"))

    # A third home, with nothing but the two URLs: status, figures, kept weights and the final model.
    # The nodes' disks are out of its reach (on one test machine: moved where no recorded path leads).
    for node in (node_a, node_b):
        node.rename(tmp_path / f"gone-{node.name}")
    status = _symattn(third, "status", STUDY, "--storage", storage)
    assert status.returncode == 0 and status.stdout.count("COMPLETE") >= 2, status.stdout + status.stderr
    figures = _symattn(third, "figures", STUDY, "--tracking-uri", mlflow_server)
    assert figures.returncode == 0, figures.stdout + figures.stderr
    [study_run] = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'study'")
    logged = [a.path for a in client.list_artifacts(study_run.info.run_id, "figures")]
    pngs = [p for p in logged if p.endswith(".png")]
    assert pngs, logged
    png = Path(client.download_artifacts(study_run.info.run_id, pngs[0], str(third)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from symattn.finetune.source import run_sources

    monkeypatch.setenv("SYMATTN_HOME", str(third))
    for run in finished:
        sources = run_sources(client, run.info.run_id, "all")  # fetched through the server, sha256 checked
        assert [s.step for s in sources] == [0, STEPS]
        assert all(s.weights.is_relative_to(third) and s.weights.is_file() for s in sources)
        model = client.download_artifacts(run.info.run_id, "model/model.pt", str(third))
        assert Path(model).stat().st_size > 0
    # Nothing of the runs is on the server's disk but under its artifact root.
    assert list((tmp_path / "server-artifacts").rglob("kept/step-*.pt"))
