"""Optuna as the queue of a sweep: each cell is one enqueued trial, handed out exactly once; workers
pinned to devices pull cells until none are left; each cell trains in a child process of its own.

A cell whose MLflow run is FINISHED is never run again. A cell whose worker died stops sending
heartbeats; the next worker that looks fails it and enqueues a retry, which resumes the same MLflow
run from its last checkpoint. The Optuna trial and the MLflow run name each other.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from symattn.paths import project_root
from symattn.sweep_spec import SweepSpec, expand, spec_digest

log = logging.getLogger("symattn.sweep")

EXIT_NON_FINITE = 3  # a deterministic failure: retrying would fail the same way
EXIT_PRUNED = 4  # a search trial stopped by its pruner


def default_storage() -> str:
    return str(project_root() / "optuna.journal")


def open_storage(url: Optional[str] = None) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (sqlite:///, postgresql://, mysql://) or a journal file path."""
    url = url or default_storage()
    if "://" in url and not url.startswith("journal://"):
        if not url.startswith(("sqlite:", "postgresql", "mysql")):
            raise ValueError(f"Optuna storage {redact(url)!r} is not understood; use a journal file path, sqlite:///, or postgresql://")
        try:
            return optuna.storages.RDBStorage(_with_driver(url), skip_compatibility_check=False)
        except Exception as exc:  # unreachable server, bad credentials, missing driver
            why = " ".join(str(exc).split())
            if isinstance(exc, ImportError) and exc.__cause__ is not None:
                why += f" ({exc.__cause__})"
            raise ValueError(f"cannot open Optuna storage {redact(url)!r}: {why[:300]}") from None
    path = Path(url.removeprefix("journal://"))
    if not path.parent.is_dir():
        raise ValueError(f"folder of Optuna journal {str(path)!r} does not exist; create it or fix stores.optuna")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def redact(url: str) -> str:
    """A storage URL fit for logs: its password replaced by ***."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


def _with_driver(url: str) -> str:
    """A bare postgresql:// URL with a driver that is installed: SQLAlchemy 2.1 maps it to psycopg (3),
    2.0 to psycopg2; either one serves."""
    import importlib.util

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername != "postgresql":
        return url
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return u.set(drivername=driver).render_as_string(hide_password=False)
    raise ValueError("no PostgreSQL driver is installed: pip install 'psycopg[binary]' (or psycopg2-binary)")


# --- queue -----------------------------------------------------------------------------------------


@dataclass
class QueueResult:
    study: str
    added: int
    existing: int
    storage: str


def queue(spec: SweepSpec, storage_url: Optional[str] = None) -> QueueResult:
    """Create or migrate both stores once, create the study, enqueue every missing cell once."""
    from symattn.tracking import check_uri, experiment_id, open_store

    cells = expand(spec)  # validates every cell before anything is written
    mlflow_uri = check_uri(cells[0].config.tracking.uri)
    url = storage_url or spec.stores.optuna or default_storage()
    storage = open_storage(url)
    client = open_store(mlflow_uri)
    experiment_id(client, spec.name)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction="minimize", load_if_exists=True)
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    study.set_user_attr("spec_digest", spec_digest(spec))
    study.set_user_attr("mlflow_uri", client.tracking_uri)
    if spec.search is not None:
        return _queue_searches(spec, cells, study, storage, url)
    present = {t.user_attrs.get("cell") for t in study.get_trials(deepcopy=False)}
    added = 0
    for cell in cells:
        if cell.id in present:
            continue
        study.enqueue_trial(
            {},
            user_attrs={
                "cell": cell.id, "name": cell.name, "group": cell.group, "index": cell.index,
                "attempt": 1, "config": cell.config.model_dump(mode="json", exclude_unset=True),
            },
        )
        added += 1
    return QueueResult(spec.name, added, len(cells) - added, url)


def _cell_attrs(cell_config: dict, name: str, group: str, index: int) -> dict:
    from symattn.config import RunConfig

    cfg = RunConfig.model_validate(cell_config)
    return {"cell": cfg.config_hash(), "name": name, "group": group, "index": index, "attempt": 1, "config": cell_config}


# --- search: one Optuna study per cell, proposing values of one setting ---------------------------


def search_study_name(spec_name: str, cell) -> str:
    return f"{spec_name}.search.{cell.id}"


def _queue_searches(spec: SweepSpec, cells, study: optuna.Study, storage, url: str) -> QueueResult:
    searches = dict(study.user_attrs.get("searches", {}))
    added = 0
    for cell in cells:
        name = search_study_name(spec.name, cell)
        if name in searches:
            continue
        optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        searches[name] = {"name": cell.name, "group": cell.group, "index": cell.index,
                          "config": cell.config.model_dump(mode="json", exclude_unset=True)}
        added += 1
    study.set_user_attr("searches", searches)
    return QueueResult(spec.name, added, len(cells) - added, url)


def load_search(storage, name: str, search) -> optuna.Study:
    """A search study with its pruner (Optuna keeps none in the storage; the sampler is set per ask)."""
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0, n_min_trials=1)
        if search.pruner == "median" else optuna.pruners.NopPruner()
    )
    return optuna.load_study(study_name=name, storage=storage, pruner=pruner)


def _ask(study: optuna.Study, search, base: dict, index: int) -> FrozenTrial:
    """A new trial of a search study: its proposed value, written into the cell's config."""
    from symattn.config import RunConfig, apply_overrides

    # The sampler lives only in this process: seed it by the trials so far, so each proposal is new
    # and a search replays the same proposals.
    study.sampler = optuna.samplers.TPESampler(
        seed=search.seed * 100_003 + len(study.trials), n_startup_trials=min(4, search.trials)
    )
    trial = study.ask()
    value = trial.suggest_float(search.param, search.low, search.high, log=search.log)
    config = apply_overrides(json.loads(json.dumps(base)), [f"{search.param}={value!r}"])
    cfg = RunConfig.model_validate(config)
    label = f"{cfg.model.size}-{cfg.model.attention.label}-{search.param.rsplit('.', 1)[-1]}{value:.3g}-s{cfg.seed}"
    for key, v in _cell_attrs(config, label, cfg.group_id(), index).items():
        study._storage.set_trial_user_attr(trial._trial_id, key, v)
    study._storage.set_trial_system_attr(trial._trial_id, "heartbeat", time.time())
    return study._storage.get_trial(trial._trial_id)


def _search_counts(study: optuna.Study) -> int:
    """Trials that count towards the budget: all but failures that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.number not in retried)


class PruneOnValidation:
    """Lightning callback for a search trial: report validation loss, stop the run when pruned."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, search: dict) -> None:
        self.storage_url, self.study_name, self.trial_id, self.search = storage_url, study_name, trial_id, search

    def callback(self):
        import pytorch_lightning as pl

        from symattn.sweep_spec import SearchSpec

        outer, search = self, SearchSpec.model_validate(self.search)
        study = load_search(open_storage(self.storage_url), self.study_name, search)

        class _Prune(pl.Callback):
            evals = 0

            def on_validation_end(self, trainer, pl_module) -> None:
                if trainer.sanity_checking or "val/loss" not in pl_module.val_metrics:
                    return
                trial = optuna.trial.Trial(study, outer.trial_id)
                trial.report(pl_module.val_metrics["val/loss"], trainer.global_step)
                self.evals += 1
                if self.evals > search.warmup_evals and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {trainer.global_step}")

        return _Prune()


# --- work ------------------------------------------------------------------------------------------


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
    return parts


def _pop_waiting(study: optuna.Study) -> Optional[FrozenTrial]:
    """Take the first waiting cell; the storage hands each trial to exactly one worker."""
    storage = study._storage
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                storage.set_trial_system_attr(trial._trial_id, "heartbeat", time.time())
                return storage.get_trial(trial._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def _retry(study: optuna.Study, trial: FrozenTrial, max_retries: int, why: str) -> None:
    attempt = int(trial.user_attrs.get("attempt", 1))
    if attempt > max_retries:
        log.warning("cell %s failed %d times (%s); not retried", trial.user_attrs.get("name"), attempt, why)
        return
    # A finished trial takes no more attributes: the copy records what it retries and why.
    attrs = {**trial.user_attrs, "attempt": attempt + 1, "retry_of": trial.number, "retry_reason": why}
    attrs.pop("mlflow_run_id", None)
    study.enqueue_trial(trial.params, user_attrs=attrs)


def reclaim_stale(study: optuna.Study, grace_seconds: float, max_retries: int) -> int:
    """Fail running cells whose worker stopped sending heartbeats, and enqueue their retries."""
    storage, now, n = study._storage, time.time(), 0
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get("heartbeat") or trial.datetime_start.timestamp()
        if now - beat < grace_seconds:
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                _retry(study, trial, max_retries, "worker stopped sending heartbeats")
                n += 1
        except UpdateFinishedTrialError:
            pass
    return n


def _cell_main(config: dict, device: str, threads: int, prune: Optional[PruneOnValidation] = None,
               launched_at: Optional[float] = None, environ: Optional[dict] = None) -> None:
    """Body of a cell's child process: pin the device, train (resuming the cell's run if any).
    `launched_at`: when the worker started the cell, which the run's start-up cost counts from.
    `environ`: the worker's environment at launch (the cell server's own dates from its start)."""
    # Die with the cell server, which exits when its worker does: a killed worker leaves no run behind.
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server ignores it; Lightning handles it here
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # the worker reports each cell in a line
    if device != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    from symattn.config import RunConfig
    from symattn.errors import NonFiniteLoss, RunStopped
    from symattn.run import train

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; it sends SIGTERM to stop a cell
    cfg = RunConfig.model_validate(config)
    try:
        train(cfg, resume="auto", callbacks=[prune.callback()] if prune else None, started_at=launched_at)
    except optuna.TrialPruned:
        sys.exit(EXIT_PRUNED)
    except NonFiniteLoss as exc:
        print(f"cell failed: {exc}", file=sys.stderr)
        sys.exit(EXIT_NON_FINITE)
    except RunStopped:
        sys.exit(143)


def _say(message: str) -> None:
    """A line on the worker's output per cell event."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Worker:
    """Slots pinned to devices, each pulling cells until the queue is empty."""

    def __init__(self, study_name: str, storage_url: Optional[str], devices: list[str], per_device: Optional[int]) -> None:
        self.storage_url = storage_url or default_storage()
        self.storage = open_storage(self.storage_url)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self.study = optuna.load_study(study_name=study_name, storage=self.storage)
        except KeyError:
            raise ValueError(f"no study {study_name!r} in {redact(self.storage_url)}; queue it first with `symattn queue SPEC`") from None
        spec = SweepSpec.model_validate(self.study.user_attrs["spec"])
        self.workers, self.search = spec.workers, spec.search
        per_device = per_device or spec.workers.per_device
        self.slots = [(d, k) for d in devices for k in range(per_device)]
        cpu_slots = sum(1 for d, _ in self.slots if d == "cpu")
        self.cpu_threads = max(1, (os.cpu_count() or 1) // max(1, cpu_slots))
        self.mlflow_uri = self.study.user_attrs["mlflow_uri"]
        self.stopping = threading.Event()
        self.children: set = set()
        self.lock = threading.Lock()
        self.done: list[tuple[str, str]] = []  # (cell name, final state)

    def run(self) -> list[tuple[str, str]]:
        from symattn.cell_server import context

        ctx = context()  # cells fork from a server that has their imports loaded
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            threads = [threading.Thread(target=self._slot, args=(ctx, d), daemon=True) for d, _ in self.slots]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.5)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.done

    def _stop(self, signum, frame) -> None:
        self.stopping.set()
        with self.lock:
            for p in self.children:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)  # the run writes a checkpoint and ends KILLED

    def _slot(self, ctx, device: str) -> None:
        while not self.stopping.is_set():
            reclaim_stale(self.study, self.workers.grace_seconds, self.workers.max_retries)
            trial = _pop_waiting(self.study)
            if trial is not None:
                self._run_cell(ctx, self.study, trial, device)
                continue
            job = self._next_search_trial()
            if job is None:
                return
            study, trial = job
            prune = PruneOnValidation(self.storage_url, study.study_name, trial._trial_id,
                                      self.search.model_dump(mode="json"))
            self._run_cell(ctx, study, trial, device, prune)

    def _next_search_trial(self):
        """A retry or a new proposal from the first search study with budget left, else None."""
        if self.search is None:
            return None
        for name, attrs in self.study.user_attrs.get("searches", {}).items():
            study = load_search(self.storage, name, self.search)
            reclaim_stale(study, self.workers.grace_seconds, self.workers.max_retries)
            trial = _pop_waiting(study)
            if trial is not None:
                return study, trial
            with self.lock:  # slots of this worker do not overshoot the budget together
                if _search_counts(study) < self.search.trials:
                    return study, _ask(study, self.search, attrs["config"], attrs["index"])
        return None

    def _run_cell(self, ctx, study: optuna.Study, trial: FrozenTrial, device: str, prune=None) -> None:
        from symattn.tracking import open_store

        storage, tid, name = self.storage, trial._trial_id, trial.user_attrs["name"]
        config = _cell_config(trial, device, self.cpu_threads)
        client = open_store(self.mlflow_uri)
        finished = _finished_run(client, trial)
        started = time.monotonic()
        if finished is None:
            attempt = trial.user_attrs.get("attempt", 1)
            _say(f"{name}: started on {device}" + (f", attempt {attempt}" if attempt > 1 else ""))
            p = ctx.Process(target=_cell_main, name=name,
                            args=(config, device, self.cpu_threads, prune, time.time(), dict(os.environ)))
            with self.lock:
                p.start()
                self.children.add(p)
            while p.is_alive():
                p.join(timeout=self.workers.heartbeat_seconds)
                try:
                    storage.set_trial_system_attr(tid, "heartbeat", time.time())
                except UpdateFinishedTrialError:  # reclaimed: stop here, the retry resumes the run
                    os.kill(p.pid, signal.SIGTERM)
                    p.join()
            with self.lock:
                self.children.discard(p)
            code = p.exitcode
            finished = _finished_run(client, trial)
        else:
            code = 0
            _say(f"{name}: its MLflow run {finished.info.run_id} is already FINISHED")
        try:
            state = self._record(study, trial, client, finished, code)
        except UpdateFinishedTrialError:
            # Reclaimed meanwhile (heartbeats came too late): its retry finds the FINISHED run.
            log.warning("cell %s was reclaimed by another worker; its retry will pick up the run", name)
            return
        minutes = f"{(time.monotonic() - started) / 60:.1f} min"
        if state == "COMPLETE":
            loss = finished.data.metrics.get("val/loss", float("nan"))
            stopped = finished.data.tags.get("stopped_early_at")
            early = f", stopped early at step {int(stopped):,}" if stopped else ""
            _say(f"{name}: COMPLETE, val/loss {loss:.4f}{early}, {minutes}")
        else:
            _say(f"{name}: {state}" + ("" if state == "PRUNED" else f" (exit code {code})") + f", {minutes}")

    def _record(self, study: optuna.Study, trial: FrozenTrial, client, finished, code) -> str:
        """Sets the trial's state from the run and the child's exit code; returns the state."""
        storage, tid, name = self.storage, trial._trial_id, trial.user_attrs["name"]
        run = finished or _latest_run(client, trial)
        if run is not None:
            storage.set_trial_user_attr(tid, "mlflow_run_id", run.info.run_id)
            client.set_tag(run.info.run_id, "optuna_trial", str(trial.number))
        if finished is not None:
            value = finished.data.metrics.get("val/loss", float("nan"))
            storage.set_trial_state_values(tid, state=TrialState.COMPLETE, values=[value])
            self.done.append((name, "COMPLETE"))
            return "COMPLETE"
        if code == EXIT_PRUNED:
            storage.set_trial_state_values(tid, state=TrialState.PRUNED)
            self.done.append((name, "PRUNED"))
            return "PRUNED"
        storage.set_trial_user_attr(tid, "failure", f"exit code {code}")
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
        self.done.append((name, "FAIL"))
        if code != EXIT_NON_FINITE:
            _retry(study, trial, self.workers.max_retries, f"exit code {code}")
        return "FAIL"


def _cell_config(trial: FrozenTrial, device: str, cpu_threads: int) -> dict:
    """The cell's run config plus this slot's speed and tracking settings (neither changes results)."""
    config = dict(trial.user_attrs["config"])
    speed = dict(config.get("speed", {}))
    speed.update(progress_bar=False, devices=1, accelerator="cpu" if device == "cpu" else "gpu")
    if device == "cpu":
        speed["threads"] = cpu_threads
    config["speed"] = speed
    tracking = dict(config.get("tracking", {}))
    tracking.setdefault("run_name", trial.user_attrs["name"])  # the cell's readable name in the MLflow UI
    tracking["tags"] = {**tracking.get("tags", {}), "study": tracking["experiment"],
                        "cell": trial.user_attrs["cell"], "optuna_trial": str(trial.number)}
    config["tracking"] = tracking
    return config


def _runs_of(client, trial: FrozenTrial, status: Optional[str] = None):
    config = trial.user_attrs["config"]
    exp = client.get_experiment_by_name(config["tracking"]["experiment"])
    if exp is None:
        return []
    filt = f"tags.cell = '{trial.user_attrs['cell']}'"
    if status:
        filt += f" and attributes.status = '{status}'"
    return client.search_runs([exp.experiment_id], filter_string=filt, order_by=["attributes.start_time DESC"])


def _finished_run(client, trial: FrozenTrial):
    runs = _runs_of(client, trial, "FINISHED")
    return runs[0] if runs else None


def _latest_run(client, trial: FrozenTrial):
    runs = _runs_of(client, trial)
    return runs[0] if runs else None


def work(study_name: str, storage_url: Optional[str] = None, devices: str = "auto", per_device: Optional[int] = None):
    return Worker(study_name, storage_url, parse_devices(devices), per_device).run()


# --- status ----------------------------------------------------------------------------------------


def status_rows(study_name: str, storage_url: Optional[str] = None) -> list[dict]:
    """One row per cell: its latest trial's state, attempts, MLflow run, progress and final loss."""
    from symattn.config import RunConfig
    from symattn.tracking import open_store

    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise ValueError(f"no study {study_name!r} in {redact(storage_url or default_storage())}; queue it first") from None
    trials = list(study.get_trials(deepcopy=False))
    for name in study.user_attrs.get("searches", {}):
        trials += optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    latest: dict[str, FrozenTrial] = {}
    for t in trials:  # the newest attempt of each cell
        cell = t.user_attrs.get("cell")
        if cell and (cell not in latest or t.number > latest[cell].number):
            latest[cell] = t
    client = open_store(study.user_attrs["mlflow_uri"])
    rows = []
    for t in sorted(latest.values(), key=lambda t: t.user_attrs.get("index", 0)):
        run = _latest_run(client, t)
        max_steps = RunConfig.model_validate(t.user_attrs["config"]).optim.max_steps
        step = 0
        if run is not None:
            hist = client.get_metric_history(run.info.run_id, "train/tokens")
            step = max((m.step for m in hist), default=0)
        rows.append({
            "cell": t.user_attrs["name"],
            "group": t.user_attrs["group"],
            "state": t.state.name,
            "attempts": t.user_attrs.get("attempt", 1),
            "run_id": run.info.run_id if run else "",
            "run_status": run.info.status if run else "",
            "progress": f"{step}/{max_steps}",
            "val_loss": run.data.metrics.get("val/loss") if run else None,
        })
    return rows


def format_status(rows: list[dict]) -> str:
    head = f"{'cell':<34} {'group':<12} {'state':<9} {'try':>3} {'run':<32} {'status':<9} {'progress':>11} {'val/loss':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        loss = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
        lines.append(
            f"{r['cell']:<34} {r['group']:<12} {r['state']:<9} {r['attempts']:>3} {r['run_id']:<32} "
            f"{r['run_status']:<9} {r['progress']:>11} {loss:>9}"
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no cells")
    return "\n".join(lines)


# --- dry run ---------------------------------------------------------------------------------------


def dry_run(spec: SweepSpec, steps: int = 2, batch_size: int = 2) -> list[dict]:
    """Check a spec on the CPU without data or stores: every cell's config is validated, its model
    built, and `steps` optimizer steps run on random tokens at a tiny batch."""
    import torch

    from symattn.model import BertForMaskedLM, count_parameters

    rows = []
    for cell in expand(spec):
        cfg = cell.config
        model_cfg = cfg.model
        if "vocab_size" not in model_cfg.model_fields_set and cfg.data.resolved_vocab_size:
            model_cfg = model_cfg.model_copy(update={"vocab_size": cfg.data.resolved_vocab_size})
        model = BertForMaskedLM(model_cfg, seed=cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps)
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(steps):
            ids = torch.randint(5, model_cfg.vocab_size, (batch_size, cfg.data.seq_len), generator=g)
            labels = torch.where(torch.rand(ids.shape, generator=g) < cfg.data.mlm_probability, ids, -100)
            labels[:, 1] = ids[:, 1]  # at least one target per row
            loss = model(ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach().item())
        rows.append({"cell": cell.name, "group": cell.group, **count_parameters(model), "loss": losses[-1]})
    return rows
