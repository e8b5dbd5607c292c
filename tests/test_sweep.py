"""Sweeps on real Optuna storage and a real MLflow store: exactly-once queue, workers, retries."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from symattn.sweep.design import expand
from symattn.sweep.queue import queue
from symattn.sweep.spec import load_spec
from symattn.sweep.status import status_rows
from symattn.sweep.storage import open_storage
from symattn.sweep.worker import work
from symattn.tracking.store import open_store
from tests.processes import end_tree, heartbeats_stale, until


def overrides_to_base(overrides):
    from symattn.config import apply_overrides

    base = apply_overrides({}, overrides)
    base["optim"]["max_steps"] = 20
    base["eval"]["every_n_steps"] = 10
    base["checkpoint"] = {**base.get("checkpoint", {}), "every_n_steps": 5}
    base["speed"].pop("threads", None)
    return base


def work_command(tmp_path) -> list[str]:
    """`symattn work` of the mini sweep, as a user starts it."""
    return [
        sys.executable,
        "-m",
        "symattn",
        "work",
        "mini-sweep",
        "--devices",
        "cpu",
        "--storage",
        str(tmp_path / "optuna.journal"),
    ]


@pytest.fixture
def spec_path(tmp_path, run_overrides):
    spec = {
        "name": "mini-sweep",
        "base": overrides_to_base(run_overrides),
        "axes": {"seed": [0, 1], "model.attention.variant": ["vanilla", "symmetric"]},
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"heartbeat_seconds": 1, "grace_seconds": 10},
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cells_come_group_by_group(spec_path):
    cells = expand(load_spec(spec_path))
    assert [c.name for c in cells] == [
        "tiny-vanilla-lr0.001-s0",
        "tiny-symmetric-lr0.001-s0",
        "tiny-vanilla-lr0.001-s1",
        "tiny-symmetric-lr0.001-s1",
    ]
    assert cells[0].group == cells[1].group != cells[2].group == cells[3].group
    assert cells[2].config.data.seed == 1 and cells[2].config.seed == 1


def test_cells_of_a_grid_are_named_by_every_axis(spec_path):
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"] = {
        "model.init_std": [0.02, 0.049],
        "optim.eps": [1e-8],
        "model.attention.variant": ["vanilla"],
    }
    spec_path.write_text(yaml.safe_dump(raw))
    names = [c.name for c in expand(load_spec(spec_path))]
    assert names == [
        "tiny-vanilla-lr0.001-s0-init_std0.02-eps1e-08",
        "tiny-vanilla-lr0.001-s0-init_std0.049-eps1e-08",
    ]


def test_queue_is_idempotent_and_adds_only_missing_cells(spec_path, tmp_path):
    spec = load_spec(spec_path)
    first = queue(spec)
    again = queue(spec)
    assert (first.added, first.existing) == (4, 0) and (again.added, again.existing) == (0, 4)
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"]["seed"] = [0, 1, 2]
    spec_path.write_text(yaml.safe_dump(raw))
    grown = queue(load_spec(spec_path))
    assert (grown.added, grown.existing) == (2, 4)
    study = optuna.load_study(
        study_name="mini-sweep",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
        ),
    )
    assert len(study.trials) == 6 and all(t.state == optuna.trial.TrialState.WAITING for t in study.trials)


def finished_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mini-sweep")
    return client, client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'")


def test_queue_and_status_answer_without_importing_mlflow(spec_path, tmp_path):
    """Both read and write the Optuna store only; the worker opens the MLflow store."""
    script = (
        "import sys\n"
        "from symattn.cli import main\n"
        f"assert main(['queue', {str(spec_path)!r}]) == 0\n"
        f"assert main(['status', 'mini-sweep', '--storage', {str(tmp_path / 'optuna.journal')!r}]) == 0\n"
        "print(sorted(m for m in ('mlflow', 'torch', 'pytorch_lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]" and "4 waiting" in out.stdout
    assert not list(tmp_path.glob("*.db"))  # no MLflow store created yet


def test_two_workers_drain_the_queue_exactly_once(spec_path, tmp_path):
    queue(load_spec(spec_path))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = work_command(tmp_path)
    started = time.time()
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            end_tree(p)
    assert all(p.returncode == 0 for p in procs), outs
    client, runs = finished_runs(tmp_path)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["cell"] for r in runs}) == 4
    rows = status_rows("mini-sweep", str(tmp_path / "optuna.journal"))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 4 and all(r["attempts"] == 1 for r in rows)
    # the trial and the run name each other; the run carries the cell's readable name
    for row, run in ((r, client.get_run(r["run_id"])) for r in rows):
        assert run.data.tags["optuna_trial"].isdigit() and run.info.run_name == row["cell"]
        # status reads what the cell reported to its trial: the run's last step and loss
        assert row["progress"] == f"{run.data.params['optim.max_steps']}/{run.data.params['optim.max_steps']}"
        assert row["val_loss"] == pytest.approx(run.data.metrics["val/loss"])
        # the group `status` prints finds the run in MLflow (the vocabulary follows the tokenizer)
        assert run.data.tags["group"] == row["group"]
        # start-up counts from the cell's launch by the worker, which came after the worker started
        [startup] = client.get_metric_history(run.info.run_id, "time/startup_s")
        assert 0 < startup.value < time.time() - started
    # the workers say a line when each cell starts and ends; Lightning's banners stay out
    said = "".join(outs)
    for row in rows:
        assert f"{row['cell']}: started on cpu" in said and f"{row['cell']}: COMPLETE, val/loss" in said
    assert "GPU available" not in said
    # optuna-dashboard: the objective named, each cell's validation curve as its intermediate values
    study = optuna.load_study(study_name="mini-sweep", storage=open_storage(str(tmp_path / "optuna.journal")))
    assert study.metric_names == ["final val/loss"]
    for trial in study.get_trials():
        curve = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val/loss")
        assert trial.intermediate_values == {m.step: pytest.approx(m.value) for m in curve}
    # a finished cell is never run again
    assert work("mini-sweep", str(tmp_path / "optuna.journal"), "cpu") == []


def _trained(client, step: int) -> bool:
    """Whether the mini sweep's first cell has logged its training loss at `step`."""
    exp = client.get_experiment_by_name("mini-sweep")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'") if exp else []
    return bool(runs) and any(
        m.step >= step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")
    )


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_sweep_completes_once(spec_path, tmp_path):
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"] = {"model.attention.variant": ["vanilla", "pairwise"]}
    raw["base"]["optim"]["max_steps"] = 60
    spec_path.write_text(yaml.safe_dump(raw))
    queue(load_spec(spec_path))
    storage = str(tmp_path / "optuna.journal")
    cmd = work_command(tmp_path)
    worker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # A client creating the fresh store as the worker does would crash one of them: take turns.
        client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
        until(lambda: _trained(client, 20), "cell past its first checkpoint", proc=worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        study = optuna.load_study(study_name="mini-sweep", storage=open_storage(storage))
        until(lambda: heartbeats_stale(study, 10), "stale heartbeat", timeout=60)  # grace_seconds
    finally:
        end_tree(worker)
    done = work("mini-sweep", storage, "cpu")
    assert sorted(state for _, state in done) == ["COMPLETE", "COMPLETE"]
    runs = client.search_runs(
        [client.get_experiment_by_name("mini-sweep").experiment_id], filter_string="tags.kind = 'pretrain'"
    )
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert steps == list(range(5, 61, 5))  # continuous: no step missing or logged twice
    rows = status_rows("mini-sweep", storage)
    assert max(r["attempts"] for r in rows) == 2


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_stops_cells_cleanly(spec_path, tmp_path):
    """As `timeout` or a service manager stops a worker: every process of the group gets SIGTERM.
    The cell server must outlive its cells, so that each writes its checkpoint and ends KILLED."""
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"] = {"model.attention.variant": ["vanilla"]}
    raw["base"]["optim"]["max_steps"] = 400
    spec_path.write_text(yaml.safe_dump(raw))
    queue(load_spec(spec_path))
    cmd = work_command(tmp_path)
    worker = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        # A client creating the fresh store as the worker does would crash one of them: take turns.
        client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
        until(lambda: _trained(client, 20), "cell past its first checkpoint", proc=worker)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)
    finally:
        end_tree(worker)
    [run] = client.search_runs(
        [client.get_experiment_by_name("mini-sweep").experiment_id], filter_string="tags.kind = 'pretrain'"
    )
    assert run.info.status == "KILLED" and int(run.data.tags["stopped_at_step"]) >= 20
    assert (Path(run.data.tags["checkpoint"])).is_file()


@pytest.mark.parametrize(
    "change,words",
    [
        ({"axes": {"model.colour": ["red"]}}, "unknown axis 'model.colour'"),
        ({"axes": {"model.attention.variant": ["vanilla", "banded"]}}, "unknown attention 'banded'"),
        ({"axes": {"seed": []}}, "axis 'seed' is empty"),
        ({"stores": {"optuna": "redis://localhost/0"}}, "is not understood"),
        ({"stores": {"optuna": "/no/such/folder/optuna.journal"}}, "does not exist"),
        ({"stores": {"mlflow": "ftp://example/mlflow"}}, "is not one MLflow can use"),
    ],
)
def test_malformed_spec_is_refused_before_anything_is_written(spec_path, tmp_path, capsys, change, words):
    from symattn.cli import main

    raw = yaml.safe_load(spec_path.read_text())
    for key, value in change.items():
        raw[key] = {**raw.get(key, {}), **value} if key != "axes" else value
    spec_path.write_text(yaml.safe_dump(raw))
    code, err = main(["queue", str(spec_path)]), capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0, err
    assert words in err
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_search_proposes_learning_rates_per_variant_and_tracks_each_trial(spec_path, tmp_path):
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"] = {"model.attention.variant": ["vanilla", "symmetric"]}
    raw["search"] = {
        "param": "optim.lr",
        "low": 1e-4,
        "high": 1e-2,
        "trials": 2,
        "pruner": "median",
        "warmup_evals": 0,
    }
    spec_path.write_text(yaml.safe_dump(raw))
    storage = str(tmp_path / "optuna.journal")
    first = queue(load_spec(spec_path))
    assert (first.added, queue(load_spec(spec_path)).added) == (2, 0)  # one search per variant, once

    done = work("mini-sweep", storage, "cpu")
    assert len(done) == 4 and {state for _, state in done} <= {"COMPLETE", "PRUNED"}
    rows = status_rows("mini-sweep", storage)
    assert len(rows) == 4 and len({r["cell"] for r in rows}) == 4
    client, runs = finished_runs(tmp_path)
    lrs = {(r.data.tags["attention"], r.data.params["optim.lr"]) for r in runs}
    assert len(lrs) == 4 and {a for a, _ in lrs} == {"vanilla", "symmetric"}
    assert all(1e-4 <= float(lr) <= 1e-2 for _, lr in lrs)
    for r in runs:  # a pruned run is KILLED with the step it stopped at, never FAILED
        assert r.info.status in ("FINISHED", "KILLED")
        assert (r.info.status == "KILLED") == ("pruned_at_step" in r.data.tags)
    assert work("mini-sweep", storage, "cpu") == []  # the budget is spent


def test_search_param_that_is_also_an_axis_is_refused(spec_path):
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"]["optim.lr"] = [1e-3, 2e-3]
    raw["search"] = {"param": "optim.lr", "low": 1e-4, "high": 1e-2}
    spec_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="both an axis and the search param"):
        load_spec(spec_path)


def _preloaded(modules, out):
    import sys

    out.put([m in sys.modules for m in modules])


def test_cells_fork_from_a_server_with_their_imports_loaded():
    """The forkserver ignores a preload that fails to import: check what a forked cell really has."""
    from symattn.sweep.cell_server import context

    ctx = context()
    out = ctx.Queue()
    modules = [
        "torch",
        "pytorch_lightning",
        "mlflow.store.tracking.sqlalchemy_store",
        "symattn.run.pretrain",
        "symattn.data",
    ]
    p = ctx.Process(target=_preloaded, args=(modules, out))
    p.start()
    loaded = out.get(timeout=120)
    p.join()
    assert dict(zip(modules, loaded)) == dict.fromkeys(modules, True)


def test_cells_see_the_workers_environment_at_launch_not_the_servers(spec_path, tmp_path, monkeypatch):
    """The cell server keeps the environment it started with; a cell must get the worker's current one."""
    from symattn.sweep.cell_server import context

    context()
    late = tmp_path / "late-cache"
    monkeypatch.setenv("SYMATTN_CACHE", str(late))  # where the cell builds the corpus
    raw = yaml.safe_load(spec_path.read_text())
    raw["axes"] = {"model.attention.variant": ["vanilla"]}
    spec_path.write_text(yaml.safe_dump(raw))
    queue(load_spec(spec_path))
    assert work("mini-sweep", str(tmp_path / "optuna.journal"), "cpu") == [
        ("tiny-vanilla-lr0.001-s0", "COMPLETE")
    ]
    assert any(late.rglob("*")), "the cell built its corpus elsewhere"


def test_status_says_why_each_failed_cell_failed(spec_path, tmp_path):
    """A cell that fails in training (a NaN loss: its run says why) and one that fails before its run
    exists (its data refused): `symattn status` shows each one's error under its row."""
    from symattn.cli import main
    from symattn.sweep.status import format_status

    raw = yaml.safe_load(spec_path.read_text())
    raw["base"]["optim"].update(lr=1e12, grad_clip=None, warmup_steps=0)
    raw["axes"] = {"data.val_docs": [8, 1000]}  # 1000 leaves the 60-document corpus no training text
    raw["workers"]["max_retries"] = 0  # neither would succeed on a second try
    spec_path.write_text(yaml.safe_dump(raw))
    queue(load_spec(spec_path))
    storage = str(tmp_path / "optuna.journal")
    assert [state for _, state in work("mini-sweep", storage, "cpu")] == ["FAIL", "FAIL"]

    nan, data = status_rows("mini-sweep", storage)
    assert nan["failure"].startswith("NonFiniteLoss: training loss became")
    assert nan["failure"].endswith("lower optim.lr or enable grad_clip (exit code 3)")
    assert data["failure"].startswith("DataError: val_docs 1000 leaves no training documents")
    assert data["failure"].endswith("(exit code 1)")
    assert data["run_id"] == ""  # it failed before its run was created: only its trial knows why
    lines = format_status([nan, data]).splitlines()
    for row in (nan, data):
        at = next(i for i, line in enumerate(lines) if line.startswith(row["cell"]))
        assert " FAIL " in lines[at] and lines[at + 1].startswith("  failed: ")
        reason = [lines[at + 1]] + [line for line in lines[at + 2 : at + 4] if line.startswith(" " * 10)]
        assert all(len(line) <= 110 for line in reason)  # wrapped to a wide terminal
        assert " ".join(line.strip() for line in reason) == f"failed: {row['failure']}"
    assert main(["status", "mini-sweep", "--storage", storage]) == 0
