"""Everything started at the same moment on a fresh checkout: four workers of one queued study and
two standalone `symattn train`, before any MLflow store exists. All succeed: every cell exactly once
COMPLETE in Optuna and FINISHED in MLflow, both standalone runs FINISHED. With the defaults (a
sqlite MLflow store, a journal file) and with the study on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, make_documents
from tests.processes import end_tree

pytestmark = pytest.mark.slow

BASE = {
    "model": {"size": "tiny"},
    "data": {"vocab_size": 200, "seq_len": 32, "val_docs": 8},
    "optim": {"batch_size": 8, "max_steps": 20},
    "eval": {"every_n_steps": 10, "batches": 2},
    "checkpoint": {"every_n_steps": 10},
    "speed": {"progress_bar": False},
}
WORKERS, TRAINS = 4, 2


def _home(tmp_path: Path, storage: str | None) -> tuple[Path, dict]:
    home = tmp_path / "home"
    corpus = home / "corpus"
    corpus.mkdir(parents=True)
    for i, doc in enumerate(make_documents(60)):
        (corpus / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    base = {**BASE, "data": {**BASE["data"], "source": f"path:{corpus}"}}
    (home / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {
        "name": "starts",
        "base": "base.yaml",
        "axes": {"seed": [0, 1], "model.attention.variant": ["vanilla", "symmetric"]},
        "workers": {"per_device": 1, "heartbeat_seconds": 2, "grace_seconds": 60},
    }
    (home / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**env, "SYMATTN_HOME": str(home), "SYMATTN_CACHE": str(home / "cache"), "PYTHONPATH": path}
    return home, env


def _symattn(*args: str) -> list[str]:
    return [sys.executable, "-m", "symattn", *args]


def _start_everything_at_once(tmp_path: Path, storage: str | None) -> tuple[Path, optuna.Study]:
    home, env = _home(tmp_path, storage)
    given = ["--storage", storage] if storage else []
    queued = subprocess.run(
        _symattn("queue", "spec.yaml", *given), cwd=home, env=env, capture_output=True, text=True
    )
    assert queued.returncode == 0, queued.stderr
    assert not (home / "mlflow.db").exists()  # queuing writes the study alone
    commands = [_symattn("work", "starts", "--devices", "cpu", *given) for _ in range(WORKERS)]
    commands += [_symattn("train", "base.yaml", f"seed={seed}") for seed in range(TRAINS)]
    logs = [open(tmp_path / f"process{i}.log", "w+") for i in range(len(commands))]
    processes = [
        subprocess.Popen(c, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
        for c, log in zip(commands, logs)
    ]
    try:
        codes = [p.wait(timeout=900) for p in processes]
    finally:
        for p in processes:
            end_tree(p, first=signal.SIGTERM)
    for command, code, log in zip(commands, codes, logs):
        log.seek(0)
        out = log.read()
        assert code == 0, f"{' '.join(command[2:])} exited {code}:\n{out[-3000:]}"
        assert "Traceback" not in out, out[-3000:]
    storage_url = storage or str(home / "optuna.journal")
    from symattn.sweep.storage import open_storage

    return home, optuna.load_study(study_name="starts", storage=open_storage(storage_url))


def _check(home: Path, study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["name"] for t in trials) == sorted({t.user_attrs["name"] for t in trials})
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    cells = client.search_runs(
        [client.get_experiment_by_name("starts").experiment_id], "tags.kind = 'pretrain'"
    )
    assert sorted(r.data.tags["cell"] for r in cells) == sorted({t.user_attrs["cell"] for t in trials})
    assert all(r.info.status == "FINISHED" for r in cells)
    assert {r.info.run_id for r in cells} == {t.user_attrs["mlflow_run_id"] for t in trials}
    runs = client.search_runs([client.get_experiment_by_name("symattn").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_workers_and_runs_started_at_once_on_a_fresh_checkout_all_succeed(tmp_path):
    _check(*_start_everything_at_once(tmp_path, None))


def test_workers_started_at_once_on_a_postgresql_study_all_succeed(tmp_path, postgres):  # noqa: F811
    _check(*_start_everything_at_once(tmp_path, postgres.url()))
