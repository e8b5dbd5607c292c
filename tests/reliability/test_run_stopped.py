"""`symattn run` stopped by SIGTERM part-way: it draws no figures of a study half done, says how
to continue, and the same command then finishes the study and draws them."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import yaml

from symattn.tracking.store import open_store
from tests.processes import end_tree, until

pytestmark = pytest.mark.slow


def test_a_stopped_run_draws_nothing_and_the_same_command_finishes_it(tmp_path, run_overrides, child_env):
    from tests.test_sweep import overrides_to_base

    base = overrides_to_base(run_overrides)
    base["optim"]["max_steps"] = 400  # long enough to be stopped part-way
    base["checkpoint"]["every_n_steps"] = 20
    spec = {
        "name": "stopped",
        "base": base,
        "axes": {"seed": [0], "model.attention.variant": ["vanilla", "symmetric"]},
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"per_device": 2, "heartbeat_seconds": 1, "grace_seconds": 10},
    }
    path = tmp_path / "stopped.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**child_env, "SYMATTN_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "symattn", "run", str(path), "--devices", "cpu"]
    figures = tmp_path / "home" / "analysis" / "figures" / "stopped"

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = open_store(base["tracking"]["uri"])

        def past_first_checkpoint() -> bool:
            exp = client.get_experiment_by_name("stopped")
            runs = client.search_runs([exp.experiment_id], "tags.kind = 'pretrain'") if exp else []
            return any(len(client.get_metric_history(r.info.run_id, "train/loss")) >= 8 for r in runs)

        until(past_first_checkpoint, "cell past its first checkpoint", proc=first)
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    finally:
        end_tree(first)
    assert first.returncode == 1, out
    assert "cells left; the same command continues the study where it stopped" in out
    assert not figures.exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (figures / "params.csv").exists()
    exp = client.get_experiment_by_name("stopped")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'pretrain'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]  # resumed, not run twice
