"""A full disk and a read-only store, made real with small tmpfs mounts (root only; skipped with the
reason elsewhere). A checkpoint that does not fit ends the run with one line saying how to go on,
the previous checkpoint intact and readable, and the run continues with `--resume` to the curve of
an uninterrupted run. A store that cannot be written is refused before anything starts, unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, make_documents

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


def _train(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**env, "SYMATTN_HOME": str(home), "SYMATTN_CACHE": str(home / "cache"), "PYTHONPATH": path}
    config = [f"data.source=path:{home / 'corpus'}", *RUN]
    return subprocess.run(
        [sys.executable, "-m", "symattn", "train", *config, *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


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
