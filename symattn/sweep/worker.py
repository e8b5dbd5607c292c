"""A worker: slots pinned to devices, each pulling cells until none is waiting or running. Each cell
trains in a child process forked from the cell server, and stops when its worker is gone; the slot
sends its heartbeats, reclaims cells whose worker died and retries what may succeed on a second
try (`retries`), and records the outcome on the trial; it says what it does
(`worker_output`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from symattn import keys
from symattn.sweep import optuna_internals as internals
from symattn.sweep.cell_server import (
    EXIT_BUSY,
    EXIT_INVALID,
    EXIT_NON_FINITE,
    EXIT_PRUNED,
    cell_main,
    context,
    finetune_main,
    worker_identity,
)
from symattn.sweep.finetune_cells import PRETRAIN_CELL, PretrainStages, finetune_config, is_finetune
from symattn.sweep.progress import (
    ERROR,
    RUN_ID,
    error_line,
)
from symattn.sweep.records import FAILURE, cell_config, finished_run, latest_run, runs_of
from symattn.sweep.retries import cell_value, reclaim_stale, retry
from symattn.sweep.search import ask, budget_used, load_search
from symattn.sweep.spec import SweepSpec
from symattn.sweep.storage import default_storage, load_study, open_existing_storage, redact
from symattn.sweep.study_run import end_study_run, open_study_run
from symattn.sweep.trial_report import TrialReport
from symattn.sweep.worker_output import SlotProgress, exit_text, say

log = logging.getLogger("symattn.sweep")


def parse_devices(devices: str) -> list[str]:
    """'cpu', 'auto', or GPU indices '0,1'."""
    if devices == "auto":
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    if devices == "cpu":
        return ["cpu"]
    parts = [d.strip() for d in devices.split(",") if d.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--devices {devices!r} must be cpu, auto, or GPU indices such as 0,1")
    import torch

    count = torch.cuda.device_count()
    missing = [p for p in parts if int(p) >= count]
    if missing:
        raise ValueError(
            f"--devices {devices!r}: no GPU {', '.join(missing)} on this machine ({count} GPUs); "
            "use --devices cpu or auto"
        )
    return parts


def running_cells(studies: list[optuna.Study]) -> int:
    """The cells RUNNING in these studies, on any worker (this one included)."""
    return sum(len(s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) for s in studies)


STOPPED = "STOPPED"  # what this worker did with a cell stopped with it: queued again, not failed
# A cell whose run another live process still writes: queued again, not counted as an attempt (it
# did not fail; each try waits for the run's lock first). Not an outcome, so not in `Worker.run`'s.
BUSY = "BUSY"


class Worker:
    """Slots pinned to devices, each pulling cells until the queue is empty."""

    def __init__(
        self,
        study_name: str,
        storage_url: Optional[str],
        devices: list[str],
        per_device: Optional[int],
        progress_every: float = 30.0,
    ) -> None:
        self.storage_url = storage_url or default_storage()
        self.storage = open_existing_storage(study_name, self.storage_url)
        self.study = load_study(study_name, self.storage, self.storage_url)
        spec = SweepSpec.model_validate(self.study.user_attrs["spec"])
        self.workers, self.search = spec.workers, spec.search
        per_device = per_device or spec.workers.per_device
        self.slots = [(d, k) for d in devices for k in range(per_device)]
        cpu_slots = sum(1 for d, _ in self.slots if d == "cpu")
        self.cpu_threads = max(1, (os.cpu_count() or 1) // max(1, cpu_slots))
        self.mlflow_uri = self.study.user_attrs["mlflow_uri"]
        self.progress = SlotProgress(progress_every)
        # read each running cell's progress this often (and beat at the heartbeat's rate)
        self.refresh_seconds = min(self.workers.heartbeat_seconds, 2.0)
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        counts = {s: states.count(s) for s in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)}
        say(
            f"study {study_name} ({redact(self.storage_url)}): {counts[TrialState.WAITING]} cells waiting, "
            f"{counts[TrialState.RUNNING]} running elsewhere, {counts[TrialState.COMPLETE]} complete"
            + (", and a search per cell" if self.search else "")
        )
        places = ", ".join(f"{per_device} on {d}" for d in devices)
        threads = f", {self.cpu_threads} CPU threads each" if cpu_slots else ""
        say(f"{len(self.slots)} slots ({places}{threads})")
        self.stopping = threading.Event()
        self.children: set = set()
        self.lock = threading.Lock()
        self.done: list[tuple[str, str]] = []  # (cell name, final state)
        self.watch = worker_identity()  # each cell stops once this process is gone
        self.waiting_said = False
        self.study_run_id: Optional[str] = None  # the MLflow parent run of the cells' runs
        self.client = None  # the MLflow store, for reclaiming (opened at the first look)

    def run(self) -> list[tuple[str, str]]:
        ctx = context()  # cells fork from a server that has their imports loaded
        # The MLflow store, the study's experiment and its run (the parent of the cells' runs),
        # opened once here rather than by each cell.
        say(f"opening the MLflow store {redact(self.mlflow_uri)} and the study's run")
        started = time.monotonic()
        client, self.study_run_id = open_study_run(self.mlflow_uri, self.study)
        say(f"MLflow store open in {time.monotonic() - started:.1f}s; study run {self.study_run_id}")
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            threads = [
                threading.Thread(target=self._slot, args=(ctx, d, i), daemon=True)
                for i, (d, _) in enumerate(self.slots)
            ]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.5)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        searches = [
            optuna.load_study(study_name=n, storage=self.storage)
            for n in self.study.user_attrs.get("searches", {})
        ]
        end_study_run(client, self.study_run_id, [self.study, *searches], self.stopping.is_set())
        return self.done

    def _stop(self, signum, frame) -> None:
        self.stopping.set()
        with self.lock:
            for p in self.children:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)  # the run writes a checkpoint and ends KILLED

    def _reclaim(self, study: optuna.Study) -> int:
        """Reclaim stale cells; the MLflow store is opened once, the first time a slot looks."""
        from symattn.tracking.store import open_store

        with self.lock:
            if self.client is None:
                self.client = open_store(self.mlflow_uri)
        search = self._search_of(study)
        return reclaim_stale(study, self.workers.grace_seconds, self.workers.max_retries, self.client, search)

    def _search_of(self, study: optuna.Study):
        """The `SearchSpec` of a search study of this study (None for the study itself)."""
        return None if study.study_name == self.study.study_name else self.search

    def _slot(self, ctx, device: str, slot: int) -> None:
        """Pull cells until none is waiting and none runs anywhere. While cells run (on this worker
        or another) and none waits, the slot waits at the heartbeat's rate: a running cell may fail
        and be retried, or its worker may be dead, and then its heartbeats go stale, and after
        `grace_seconds` it is reclaimed (`reclaim_stale`) and resumed here. So a worker started
        again after a crash finishes the study, and a worker beside live ones stays until they end."""
        while not self.stopping.is_set():
            self._reclaim(self.study)
            stages = PretrainStages(self.study.get_trials(deepcopy=False))
            trial = internals.pop_waiting(self.study, stages.ready)
            if trial is not None:
                if is_finetune(trial):
                    run_id = stages.run_ids[trial.user_attrs[PRETRAIN_CELL]]
                    self._run_finetune(ctx, trial, (device, slot), run_id)
                else:
                    self._run_cell(ctx, self.study, trial, (device, slot), self._report(self.study, trial))
                continue
            job = self._next_search_trial()
            if job is not None:
                study, trial = job
                self._run_cell(ctx, study, trial, (device, slot), self._report(study, trial, self.search))
            elif stages.awaited or (running := running_cells([self.study, *self._searches()])):
                # fine-tuning cells wait for pre-training; other cells may fail, or go stale
                if not stages.awaited:
                    self._say_waiting(running)
                self.stopping.wait(self.workers.heartbeat_seconds)
            else:
                return

    def _searches(self) -> list[optuna.Study]:
        if self.search is None:
            return []
        return [load_search(self.storage, n, self.search) for n in self.study.user_attrs.get("searches", {})]

    def _say_waiting(self, running: int) -> None:
        with self.lock:
            mine = len(self.children)
            if self.waiting_said or running <= mine:
                return
            self.waiting_said = True
        say(
            f"no cell waiting; {running - mine} running elsewhere: waiting until they end, or take "
            f"them over if their worker stops beating for {self.workers.grace_seconds:g}s"
        )

    def _report(self, study: optuna.Study, trial: FrozenTrial, search=None) -> TrialReport:
        search = search.model_dump(mode="json") if search is not None else None
        return TrialReport(self.storage_url, study.study_name, internals.trial_id(trial), search)

    def _next_search_trial(self):
        """A retry or a new proposal from the first search study with budget left, else None."""
        if self.search is None:
            return None
        for name, attrs in self.study.user_attrs.get("searches", {}).items():
            study = load_search(self.storage, name, self.search)
            self._reclaim(study)
            trial = internals.pop_waiting(study)
            if trial is not None:
                return study, trial
            with self.lock:  # slots of this worker do not overshoot the budget together
                if budget_used(study) < self.search.trials:
                    return study, ask(study, self.search, attrs["config"], attrs["index"])
        return None

    def _run_cell(
        self, ctx, study: optuna.Study, trial: FrozenTrial, place: tuple[str, int], report: TrialReport
    ) -> None:
        device = place[0]
        config = cell_config(trial, device, self.cpu_threads, self.study_run_id)
        extend_run = trial.user_attrs.get("extend_run")  # a cell extended to a larger budget
        args = (config, device, report, time.time(), dict(os.environ), self.watch, extend_run)
        self._launch(ctx, study, trial, place, cell_main, args, total=config.optim.max_steps)

    def _run_finetune(self, ctx, trial: FrozenTrial, place: tuple[str, int], run_id: str) -> None:
        device, attrs = place[0], trial.user_attrs
        tags = {
            keys.STUDY: attrs["experiment"],
            keys.CELL: attrs["cell"],
            keys.OPTUNA_TRIAL: str(trial.number),
        }
        config = finetune_config(trial, device, self.cpu_threads)
        args = (run_id, attrs[keys.CHECKPOINT_STEP], config, self.mlflow_uri, tags, attrs["name"], device)
        report = self._report(self.study, trial)  # records the cell's error if it fails
        # A fine-tuning is not resumed: its retry starts over.
        self._launch(
            ctx,
            self.study,
            trial,
            place,
            finetune_main,
            (*args, dict(os.environ), self.watch, report),
            restart=True,
        )

    def _launch(
        self,
        ctx,
        study: optuna.Study,
        trial: FrozenTrial,
        place: tuple[str, int],
        target,
        args: tuple,
        restart=False,
        total: Optional[int] = None,
    ) -> None:
        """Run the cell in a child process forked from the cell server on slot `place` (device,
        index), unless its MLflow run is already FINISHED; beat and show its progress while it runs;
        record its outcome. `restart`: the cell starts a new run, and the run a dead worker left
        RUNNING is marked KILLED (its trial was reclaimed, so nothing else runs it). `total`: its
        steps (None for a fine-tuning cell, which reports none)."""
        from symattn.tracking.store import open_store

        (device, slot), tid, name = place, internals.trial_id(trial), trial.user_attrs["name"]
        client = open_store(self.mlflow_uri)
        for run in runs_of(client, trial, "RUNNING") if restart else []:
            client.set_terminated(run.info.run_id, "KILLED")
        finished = finished_run(client, trial)
        started = time.monotonic()
        if finished is None:
            attempt = trial.user_attrs.get("attempt", 1)
            say(f"{name}: started on {device}" + (f", attempt {attempt}" if attempt > 1 else ""))
            p = ctx.Process(target=target, name=name, args=args)
            with self.lock:
                p.start()
                self.children.add(p)
            self.progress.start(slot, name, total)
            beaten = time.monotonic()
            while p.is_alive():
                p.join(timeout=self.refresh_seconds)
                try:
                    self.progress.update(slot, name, internals.reload(self.storage, tid).user_attrs, total)
                except Exception as exc:  # noqa: BLE001  showing progress must never stop the heartbeats
                    log.debug("cell %s: progress not read (%s)", name, exc)
                if time.monotonic() - beaten < self.workers.heartbeat_seconds:
                    continue
                beaten = time.monotonic()
                try:
                    internals.beat(self.storage, tid)
                except internals.UpdateFinishedTrialError:  # reclaimed: stop here, the retry resumes the run
                    os.kill(p.pid, signal.SIGTERM)
                    p.join()
            self.progress.end(slot)
            with self.lock:
                self.children.discard(p)
            code = p.exitcode
            finished = finished_run(client, trial)
        else:
            code = 0
            say(f"{name}: its MLflow run {finished.info.run_id} is already FINISHED")
        try:
            state = self._record(study, trial, client, finished, code)
        except internals.UpdateFinishedTrialError:
            # Reclaimed meanwhile (heartbeats came too late): its retry finds the FINISHED run.
            log.warning("cell %s was reclaimed by another worker; its retry will pick up the run", name)
            return
        minutes = f"{(time.monotonic() - started) / 60:.1f} min"
        if state == "COMPLETE":
            say(f"{name}: COMPLETE, {_outcome(finished)}, {minutes}")
        elif state == STOPPED:
            say(f"{name}: stopped, queued again to resume from its last checkpoint, {minutes}")
        elif state == BUSY:
            say(
                f"{name}: its run is still written by another process; queued again, not counted as an attempt"
            )
        else:
            say(f"{name}: {state}" + ("" if state == "PRUNED" else f" ({exit_text(code)})") + f", {minutes}")

    def _record(self, study: optuna.Study, trial: FrozenTrial, client, finished, code) -> str:
        """Sets the trial's state from the run and the child's exit code; returns the state."""
        storage, tid, name = self.storage, internals.trial_id(trial), trial.user_attrs["name"]
        run = finished or latest_run(client, trial)
        if run is not None:
            internals.set_user_attrs(storage, tid, {RUN_ID: run.info.run_id})
            try:
                client.set_tag(run.info.run_id, keys.OPTUNA_TRIAL, str(trial.number))
            except Exception as exc:  # noqa: BLE001  a store with no room left: the trial still names its run
                log.warning(
                    "cell %s: its run's tag %s not updated (%s)", name, keys.OPTUNA_TRIAL, error_line(exc)
                )
        value, why = None, None
        if finished is not None and not is_finetune(trial):
            # A pre-training cell's value is its final validation loss, or its search's objective; a
            # fine-tuning cell has none.
            try:
                value = cell_value(client, finished, self._search_of(study))
            except Exception as exc:  # noqa: BLE001  a run without what its value needs: the trial fails
                why = f"no value: {type(exc).__name__}: {exc}"
        if finished is not None and why is None:
            internals.finish(storage, tid, TrialState.COMPLETE, value)
            state = "COMPLETE"
        elif code == EXIT_PRUNED:
            internals.finish(storage, tid, TrialState.PRUNED)
            state = "PRUNED"
        elif why is not None:  # FINISHED, but its search's objective cannot be computed: not retried
            internals.set_user_attrs(storage, tid, {FAILURE: why})
            internals.finish(storage, tid, TrialState.FAIL)
            state = "FAIL"
        else:
            # Why, in a line: the error the cell reported, else its run's failure reason (a busy
            # cell's run is another process's), and how the process ended.
            busy = code == EXIT_BUSY
            reason = internals.reload(storage, tid).user_attrs.get(ERROR)
            if reason is None and run is not None and not busy:
                reason = run.data.tags.get(keys.FAILURE_REASON)
            failure = f"{reason} ({exit_text(code)})" if reason else exit_text(code)
            internals.set_user_attrs(storage, tid, {FAILURE: failure})
            internals.finish(storage, tid, TrialState.FAIL)
            state = "FAIL"
            # A cell stopped with its worker (Ctrl-C, SIGTERM), or one whose run another process
            # still writes, had not failed: its retry is not counted as an attempt.
            stopped = self.stopping.is_set() and code in (143, -signal.SIGTERM)
            if code not in (EXIT_NON_FINITE, EXIT_INVALID):
                why = "stopped with its worker" if stopped else failure
                retry(study, trial, self.workers.max_retries, why, count=not (stopped or busy))
                state = STOPPED if stopped else BUSY if busy else state
        if state != BUSY:
            self.done.append((name, state))
        return state


def _outcome(run) -> str:
    """A finished run's result in a few words: its final loss, or a fine-tuning's scores."""
    metrics = run.data.metrics
    if keys.VAL_LOSS in metrics:
        stopped = run.data.tags.get(keys.STOPPED_EARLY_AT)
        return f"val/loss {metrics[keys.VAL_LOSS]:.4f}" + (
            f", stopped early at step {int(stopped):,}" if stopped else ""
        )
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith(keys.EVAL_PREFIX))


def work(
    study_name: str,
    storage_url: Optional[str] = None,
    devices: str = "auto",
    per_device: Optional[int] = None,
    progress_every: float = 30.0,
) -> list[tuple[str, str]]:
    """Run the study's cells on these devices until none is left; `progress_every`: the least
    seconds between two plain progress lines of a slot (when the output is not a terminal)."""
    return Worker(study_name, storage_url, parse_devices(devices), per_device, progress_every).run()
