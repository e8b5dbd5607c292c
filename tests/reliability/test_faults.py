"""Fault injection on a real sweep: workers, their cell server and cells killed at random points
(a seeded schedule), workers started again until the study is done; then every cell ran exactly
once to the end, in one MLflow run, with the same curves as without faults, and nothing is left
running. `SYMATTN_FAULT_SEED=N` replays another schedule; the seed in use is printed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from optuna.trial import TrialState

from symattn.sweep.queue import queue
from symattn.sweep.spec import load_spec
from symattn.sweep.status import status_rows

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("SYMATTN_FAULT_SEED", "20261130"))
STUDY = "faults"
STEPS = 300  # a cell trains for about 10 s on one thread
EVAL, CKPT, LOG = 10, 5, 5
GRACE, BEAT = 4.0, 0.5
# Every kind once, in a seeded order, then a few more drawn at random.
KINDS = ["worker-sigkill", "group-sigkill", "cell-sigkill", "worker-sigterm", "group-sigint"]
EXTRA = 2
GOOD_LR, NAN_LR = 1e-3, 1e6  # the second makes the loss NaN within a few steps


def _base(run_overrides) -> dict:
    from symattn.config import apply_overrides

    base = apply_overrides({}, run_overrides)
    base["optim"]["max_steps"] = STEPS
    base["eval"]["every_n_steps"] = EVAL
    base["tracking"]["log_every_n_steps"] = LOG
    base["checkpoint"] = {**base.get("checkpoint", {}), "every_n_steps": CKPT}
    base["speed"].pop("threads", None)
    return base


class Sweep:
    """The sweep under test: its stores, its workers (each in a session of its own), and every
    process they ever had."""

    def __init__(self, tmp_path: Path, log) -> None:
        self.tmp, self.log = tmp_path, log
        self.storage = str(tmp_path / "optuna.journal")
        self.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        self.workers: list[subprocess.Popen] = []
        self.seen: dict[int, psutil.Process] = {}  # every descendant of a worker, by pid
        self._client = None

    @property
    def client(self):
        if self._client is None:  # once a worker created the store (open_store takes turns with it)
            from symattn.tracking.store import open_store

            self._client = open_store(self.uri)
        return self._client

    def start_worker(self) -> subprocess.Popen:
        n = len(self.workers)
        out = open(self.tmp / f"worker-{n}.log", "w")
        cmd = [sys.executable, "-m", "symattn", "work", STUDY, "--devices", "cpu", "--storage", self.storage]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.workers.append(p)
        self.log(f"worker {n} started (pid {p.pid})")
        return p

    def descendants(self, p: subprocess.Popen) -> list[psutil.Process]:
        try:
            found = psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            return []
        for c in found:
            self.seen.setdefault(c.pid, c)
        return found

    def cells(self, p: subprocess.Popen) -> list[psutil.Process]:
        """The worker's cell processes: the children of its cell server."""
        out = []
        for c in self.descendants(p):
            try:
                parent = c.parent()
                if parent is not None and parent.pid != p.pid and "forkserver" in " ".join(parent.cmdline()):
                    out.append(c)
            except psutil.Error:
                pass
        return out

    def runs(self) -> list:
        exp = self.client.get_experiment_by_name(STUDY)
        if exp is None:
            return []
        return self.client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'")

    def steps_done(self) -> int:
        """Steps logged so far, over every run."""
        total = 0
        for r in self.runs():
            history = self.client.get_metric_history(r.info.run_id, "train/loss")
            total += max((m.step for m in history), default=0)
        return total

    def finished_snapshot(self) -> dict:
        """Each FINISHED run's end time, metrics and history lengths: none may change later."""
        snap = {}
        for r in self.runs():
            if r.info.status == "FINISHED":
                lengths = {k: len(self.client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics}
                snap[r.info.run_id] = (r.info.end_time, dict(r.data.metrics), lengths)
        return snap

    def gone(self, procs, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not any(_alive(p) for p in procs):
                return True
            time.sleep(0.2)
        return False

    def stop_all(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for proc in self.seen.values():
            if _alive(proc):
                proc.kill()


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.status()} ppid {proc.ppid()}: {' '.join(proc.cmdline())[:200]}"
    except psutil.Error as exc:
        return f"{proc.pid}: {exc}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def sweep(tmp_path, run_overrides):
    spec = {
        "name": STUDY,
        "base": _base(run_overrides),
        "axes": {"optim.lr": [GOOD_LR, NAN_LR], "model.attention.variant": ["vanilla", "pairwise"]},
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"per_device": 2, "heartbeat_seconds": BEAT, "grace_seconds": GRACE, "max_retries": 20},
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(spec))
    queue(load_spec(path))
    lines: list[str] = []

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        lines.append(line)
        print(line, flush=True)

    s = Sweep(tmp_path, log)
    s.lines = lines
    yield s
    s.stop_all()


def _wait_progress(sweep: Sweep, worker: subprocess.Popen, steps: int, timeout: float = 90) -> bool:
    """Until `steps` more steps are logged (or the worker ends)."""
    start, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        sweep.descendants(worker)
        try:
            done = sweep.steps_done()
        except Exception:  # noqa: BLE001  the store is being created
            done = None
        if done is not None:
            start = done if start is None else start
            if done - start >= steps:
                return True
        time.sleep(0.3)
    return False


def _inject(sweep: Sweep, worker: subprocess.Popen, kind: str, rng: random.Random) -> dict:
    """One fault; returns what happened. The worker (if it was killed) is gone on return."""
    procs = sweep.descendants(worker)
    cells = sweep.cells(worker)
    training = {r.info.run_id for r in sweep.runs() if r.info.status == "RUNNING"}
    event = {"kind": kind, "cells": len(cells)}
    if kind == "cell-sigkill":
        if not cells:
            event["skipped"] = "no cell running"
            return event
        victim = rng.choice(cells)
        victim.kill()
        event["victim"] = victim.pid
        return event
    if kind == "worker-sigkill":  # as the OOM killer does: the worker alone
        worker.send_signal(signal.SIGKILL)
    elif kind == "group-sigkill":
        os.killpg(worker.pid, signal.SIGKILL)
    elif kind == "worker-sigterm":  # `kill PID`
        worker.send_signal(signal.SIGTERM)
    elif kind == "group-sigint":  # Ctrl-C at a terminal
        os.killpg(worker.pid, signal.SIGINT)
    started = time.monotonic()
    worker.wait(timeout=120)
    event["worker_exit"] = worker.returncode
    # Whatever the signal, what the worker ran stops within seconds: cells, cell server, tracker.
    assert sweep.gone(procs, within=20), f"{kind}: processes left: {[p.pid for p in procs if _alive(p)]}"
    event["stopped_s"] = round(time.monotonic() - started, 1)
    if kind != "group-sigkill":  # a cell told to stop (or whose worker died) ends its run KILLED
        stopped = [r for r in sweep.runs() if r.info.run_id in training]
        event["clean"] = sum(r.info.status == "KILLED" and "stopped_at_step" in r.data.tags for r in stopped)
        event["left_running"] = [r.info.run_name for r in stopped if r.info.status == "RUNNING"]
    return event


def test_faults_at_random_points_leave_every_cell_run_once(sweep: Sweep, tmp_path):
    rng = random.Random(SEED)
    kinds = KINDS[:]
    rng.shuffle(kinds)
    kinds += [rng.choice(KINDS) for _ in range(EXTRA)]
    sweep.log(f"fault schedule (SYMATTN_FAULT_SEED={SEED}): {', '.join(kinds)}")
    started = time.monotonic()
    events, snapshots = [], []
    worker = None
    for kind in kinds:
        if worker is None or worker.poll() is not None:
            worker = sweep.start_worker()
        at = rng.randint(3, 60)  # steps from now, over every running cell
        if not _wait_progress(sweep, worker, at):
            sweep.log(f"{kind}: the worker ended before the fault (study done?)")
            break
        event = _inject(sweep, worker, kind, rng)
        event["after_steps"] = at
        events.append(event)
        sweep.log(f"fault {len(events)}: {event}")
        snapshots.append(sweep.finished_snapshot())
    # One worker started again finishes the study: it waits for the cells a killed worker left
    # RUNNING until their heartbeats are stale, then takes them over.
    if worker is None or worker.poll() is not None:
        worker = sweep.start_worker()
    while worker.poll() is None:
        sweep.descendants(worker)
        time.sleep(0.5)
    said = (tmp_path / f"worker-{len(sweep.workers) - 1}.log").read_text()
    assert worker.returncode == 0, said
    assert not [r["cell"] for r in status_rows(STUDY, sweep.storage) if r["state"] in ("WAITING", "RUNNING")]
    elapsed = time.monotonic() - started
    injected = [e for e in events if "skipped" not in e]

    # Nothing left running: every process any worker had is gone.
    left = list(sweep.seen.values())
    assert sweep.gone(left, within=10), [_describe(p) for p in left if _alive(p)]

    rows = {r["cell"]: r for r in status_rows(STUDY, sweep.storage)}
    from symattn.sweep.storage import load_study, open_storage

    study = load_study(STUDY, open_storage(sweep.storage), sweep.storage)
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    runs = sweep.runs()
    by_cell: dict[str, list] = {}
    for r in runs:
        by_cell.setdefault(r.data.tags["cell"], []).append(r)
    good = {
        t.user_attrs["cell"]: t.user_attrs["name"]
        for t in trials
        if t.user_attrs["config"]["optim"]["lr"] == GOOD_LR
    }
    bad = {
        t.user_attrs["cell"]: t.user_attrs["name"]
        for t in trials
        if t.user_attrs["config"]["optim"]["lr"] == NAN_LR
    }
    assert len(good) == 2 and len(bad) == 2

    # Every cell ran exactly once: one MLflow run each (a resume continues it), FINISHED, and one
    # COMPLETE trial, the newest of the cell's; the trial and the run name each other.
    for cell, name in good.items():
        [run] = by_cell[cell]
        assert run.info.status == "FINISHED", name
        complete = [t for t in trials if t.user_attrs["cell"] == cell and t.state == TrialState.COMPLETE]
        assert len(complete) == 1, name
        assert rows[name]["state"] == "COMPLETE" and rows[name]["run_id"] == run.info.run_id
        assert complete[0].value == pytest.approx(run.data.metrics["val/loss"])
    # A NaN cell fails for good, in both stores, with its reason; the sweep went on past it.
    for cell, name in bad.items():
        [run] = by_cell[cell]
        assert run.info.status == "FAILED" and "nan" in run.data.tags["failure_reason"].lower(), name
        assert rows[name]["state"] == "FAIL"
        [last] = [t for t in trials if t.user_attrs["cell"] == cell and t.state == TrialState.FAIL][-1:]
        assert "nan" in last.user_attrs["failure"].lower()
    shown = subprocess.run(
        [sys.executable, "-m", "symattn", "status", STUDY, "--storage", sweep.storage],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    for name in bad.values():
        assert any(name in line and " FAIL " in line for line in shown.stdout.splitlines()), shown.stdout
    for name in good.values():
        assert any(name in line and " COMPLETE " in line for line in shown.stdout.splitlines()), shown.stdout

    # A finished run is never touched again (later workers find it FINISHED and leave it).
    final = sweep.finished_snapshot()
    for snap in snapshots:
        for run_id, record in snap.items():
            assert final[run_id] == record, f"run {run_id} changed after it FINISHED"

    # Each cell's curves are those of the same cell run without a fault, step for step.
    from symattn.config import RunConfig
    from symattn.run.pretrain import pretrain

    threads = max(1, (os.cpu_count() or 1) // 2)  # as each of the worker's two slots
    exact = True
    for cell, name in good.items():
        [trial] = [t for t in trials if t.user_attrs["cell"] == cell][:1]
        cfg = RunConfig.model_validate(trial.user_attrs["config"])
        cfg = cfg.model_copy(
            update={
                "speed": cfg.speed.model_copy(update={"threads": threads}),
                "tracking": cfg.tracking.model_copy(update={"experiment": "reference", "run_name": name}),
            }
        )
        reference = pretrain(cfg)["run_id"]
        for key in ("train/loss", "val/loss"):
            got = [
                (m.step, m.value) for m in sweep.client.get_metric_history(by_cell[cell][0].info.run_id, key)
            ]
            want = [(m.step, m.value) for m in sweep.client.get_metric_history(reference, key)]
            got.sort(key=lambda x: x[0]), want.sort(key=lambda x: x[0])
            assert [s for s, _ in got] == [s for s, _ in want], f"{name} {key}: steps differ"
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), f"{name} {key}"
            exact &= got == want

    attempts = {name: rows[name]["attempts"] for name in good.values()}
    sweep.log(
        f"seed {SEED}: {len(injected)} faults injected ({', '.join(e['kind'] for e in injected)}), "
        f"{len(sweep.workers)} workers, cells lost 0, cells run twice 0, attempts {attempts}, "
        f"curves {'bit-identical' if exact else 'equal to 1e-6'}, {elapsed:.0f}s of faults and restarts"
    )
    assert len(injected) >= len(KINDS) - 1  # at most the cell kill found no cell at its moment
    # Cells whose worker was killed alone stopped as SIGTERM stops them: checkpoint, run KILLED.
    died = [e for e in injected if e["kind"] == "worker-sigkill"]
    assert died and all(e["clean"] >= 1 for e in died), died
