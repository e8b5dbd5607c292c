"""A full disk and a read-only store, made real with small tmpfs mounts (root only; skipped with the
reason elsewhere). A checkpoint that does not fit, or an MLflow store whose disk fills up during the
run, ends the run with one line saying how to go on, the last checkpoint intact and readable and the
metrics already written kept, and the run continues with `--resume` to the curve of an
uninterrupted run. A store that cannot be written is refused before anything starts, unchanged."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, make_documents
from tests.processes import end_tree, until

pytestmark = pytest.mark.slow

RUN = [
    "data.vocab_size=200",
    "data.seq_len=32",
    "data.val_docs=8",
    "model.size=tiny",
    "optim.batch_size=8",
    "optim.max_steps=30",
    "eval.every_n_steps=10",
    "eval.batches=2",
    "checkpoint.every_n_steps=10",
    "speed.progress_bar=false",
    "tracking.system_metrics=false",
]
CHECKPOINT_MB = 6  # a tiny model's full checkpoint at this vocabulary: about 6.1 MB


def _mount(path: Path, megabytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); needs root and mount rights")


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture
def home(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a full disk and a read-only store are made with tmpfs mounts, which need root")
    home = tmp_path / "home"
    corpus = home / "corpus"
    corpus.mkdir(parents=True)
    for i, doc in enumerate(make_documents(60)):
        (corpus / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    mounts: list[Path] = []
    yield home, mounts
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _command(home: Path, *args: str) -> tuple[list[str], dict]:
    """`symattn train` of the test's run with `args` (a setting among them replaces the test's), and
    its environment."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**env, "SYMATTN_HOME": str(home), "SYMATTN_CACHE": str(home / "cache"), "PYTHONPATH": path}
    given = {arg.split("=", 1)[0] for arg in args if "=" in arg}
    config = [f"data.source=path:{home / 'corpus'}", *(r for r in RUN if r.split("=", 1)[0] not in given)]
    return [sys.executable, "-m", "symattn", "train", *config, *args], env


def _train(home: Path, *args: str) -> subprocess.CompletedProcess:
    command, env = _command(home, *args)
    return subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=600)


def _curve(client: MlflowClient, run_id: str, metric: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))


def test_a_full_disk_stops_the_run_resumably_and_corrupts_nothing(home):
    home, mounts = home
    checkpoints = home / "checkpoints"
    _mount(checkpoints, CHECKPOINT_MB + 2)  # the first checkpoint fits, a second beside it does not
    mounts.append(checkpoints)
    out = _train(home, f"checkpoint.dir={checkpoints}")
    assert out.returncode == 1, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("symattn train: cannot write the checkpoint") and "No space left on device" in line
    run_id = line.rsplit("--resume ", 1)[1]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "CheckpointNotWritten" in run.data.tags["failure_reason"]
    folder = checkpoints / "symattn" / run_id
    assert not (folder / "last.tmp").exists()  # no half-written file left behind
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)  # reads back whole
    assert saved["global_step"] == 10

    _remount(checkpoints, f"size={4 * CHECKPOINT_MB}m")  # space freed
    out = _train(home, f"checkpoint.dir={checkpoints}", "--resume", run_id)
    assert out.returncode == 0, out.stderr[-3000:]
    reference = _train(home, f"checkpoint.dir={home / 'reference'}", "tracking.experiment=reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_id = reference.stdout.split()[1]
    assert client.get_run(run_id).info.status == "FINISHED"
    for metric in ("val/loss", "train/loss"):
        assert _curve(client, run_id, metric) == _curve(client, reference_id, metric)


def test_a_read_only_store_is_refused_before_anything_starts(home):
    home, mounts = home
    first = _train(home, "optim.max_steps=10")  # a store with one run in it
    assert first.returncode == 0, first.stderr[-3000:]
    store = home / "readonly"
    _mount(store, 64)
    mounts.append(store)
    (store / "mlflow.db").write_bytes((home / "mlflow.db").read_bytes())
    _remount(store, "ro")
    before = (store / "mlflow.db").read_bytes()
    out = _train(home, f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"checkpoint.dir={home / 'ck'}")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr[-3000:]
    assert "cannot be written (read-only)" in out.stderr
    assert (store / "mlflow.db").read_bytes() == before and not (home / "ck").exists()


def _fill(path: Path) -> None:
    """Fill the file system of `path` to its last page, as another writer would."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12):
            try:
                while f.write(b"\0" * chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    assert os.statvfs(path).f_bavail == 0


def test_a_store_whose_disk_fills_up_stops_the_run_resumably_and_loses_nothing(home):
    home, mounts = home
    store, checkpoints = home / "store", home / "checkpoints"
    _mount(store, 32)  # the store, its artifacts beside it, and room for a resumed run's
    mounts.append(store)
    uri, steps = f"tracking.uri=sqlite:///{store / 'mlflow.db'}", "optim.max_steps=60"
    command, env = _command(home, uri, f"checkpoint.dir={checkpoints}", steps)
    run = subprocess.Popen(
        command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # the first checkpoint (step 10) is written
        until(lambda: list(checkpoints.rglob("last.ckpt")), "first checkpoint", proc=run, every=0.05)
        _fill(store / "filler")
        err = run.communicate(timeout=600)[1]
    finally:
        end_tree(run)
    assert run.returncode == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Warning" not in err, err[-3000:]
    [line] = [text for text in lines if text.startswith("symattn train:")]
    assert line == lines[-1]
    assert line.startswith(
        f"symattn train: the MLflow store {store / 'mlflow.db'} is full (database or disk is full)"
    )
    assert f": free space in {store}, then continue with --resume " in line
    step = int(re.search(r"its checkpoint up to step (\d+) stand", line)[1])
    run_id = line.rsplit("--resume ", 1)[1]
    saved = torch.load(checkpoints / "symattn" / run_id / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == step >= 10  # reads back whole, at the step the line names
    with sqlite3.connect(store / "mlflow.db") as db:  # the store is whole
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    written = {metric: _curve(client, run_id, metric) for metric in ("val/loss", "train/loss")}
    assert written["val/loss"][-1][0] >= step  # a checkpoint follows its metrics into the store

    (store / "filler").unlink()  # space freed
    out = _train(home, uri, f"checkpoint.dir={checkpoints}", steps, "--resume", run_id)
    assert out.returncode == 0, out.stderr[-3000:]
    reference = _train(home, f"checkpoint.dir={home / 'reference'}", steps, "tracking.experiment=reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    reference_id = reference.stdout.split()[1]
    assert client.get_run(run_id).info.status == "FINISHED"
    for metric, before in written.items():
        expected = _curve(reference_client, reference_id, metric)
        assert before == expected[: len(before)]  # what was written before the disk filled stayed
        assert _curve(client, run_id, metric) == expected
