"""Ctrl-C (SIGINT) stops the long-running commands however they were started: also as a background
job of a script (`cmd &`, nohup), which starts them with SIGINT ignored. `symattn ui` is tested in
tests/test_ui.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from symattn.tracking.store import open_store
from tests.processes import end_tree, ignoring_sigint, until


def _background_job(args: list[str], env: dict) -> tuple[subprocess.Popen, list[str]]:
    """`symattn ARGS` started as a script's background job does (SIGINT ignored), and the lines it
    prints (stdout and stderr together), collected as they come."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "symattn", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
        preexec_fn=ignoring_sigint,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def test_status_watch_stops_on_sigint_when_started_with_it_ignored(tmp_path, run_overrides, child_env):
    from symattn.sweep.queue import queue
    from symattn.sweep.spec import load_spec
    from tests.test_browse import spec_file

    spec = load_spec(spec_file(tmp_path, run_overrides, {"model.attention.variant": ["vanilla"]}))
    queue(spec)  # one cell waiting: the watch would refresh for ever
    storage = str(tmp_path / "optuna.journal")
    proc, lines = _background_job(
        ["status", "browse", "--storage", storage, "--watch", "--interval", "0.2"], child_env
    )
    try:
        until(lambda: sum("browse" in line for line in lines) >= 2, "second refresh", proc=proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        end_tree(proc)


def test_train_stops_on_sigint_when_started_with_it_ignored(tmp_path, run_overrides, child_env):
    """The run ends KILLED at a checkpoint, resumable, with the Ctrl-C status."""
    long = ["optim.max_steps=100000", "checkpoint.every_n_steps=10"]
    overrides = [o for o in run_overrides if not o.startswith("optim.max_steps=")] + long
    proc, lines = _background_job(["train", *overrides], child_env)
    try:
        client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")

        def training() -> bool:
            exp = client.get_experiment_by_name("test")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            return any(client.get_metric_history(r.info.run_id, "train/loss") for r in runs)

        until(training, "training step", proc=proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, "".join(lines)
    finally:
        end_tree(proc)
    [run] = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "KILLED"
    assert "--resume" in "".join(lines)
