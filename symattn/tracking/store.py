"""MLflow: store set-up, experiments, run creation and lookup for resume, and what a run records.

Metrics are buffered and written in one batch when a checkpoint is written, so the store never holds
a step that a resumed run will compute again: a resumed curve has no duplicated or missing steps.
Each point keeps the time it was logged, not the time it was written, so MLflow's time axes are true.
A write the store has no room for (its disk is full) raises `StoreFull`, which says how to go on.
"""

from __future__ import annotations

import errno
import importlib.metadata
import json
import logging
import subprocess
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

from filelock import FileLock
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from symattn import keys
from symattn.errors import RunError
from symattn.paths import check_uri, check_writable, code_checkout, default_checkpoint_dir, sqlite_path

PACKAGES = ("symattn", "torch", "pytorch-lightning", "mlflow", "optuna", "tokenizers", "numpy")
_BATCH = 100  # MLflow's limit of params per log_batch call is 100


# How a full disk reads in an exception: sqlite's SQLITE_FULL, an OS error, a server's message.
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_WORDS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def no_space(exc: BaseException) -> Optional[str]:
    """What says that `exc` is a write refused for lack of space (`database or disk is full`, an OS
    error's text), looked for along its chain of causes (MLflow wraps SQLAlchemy's error, which wraps
    sqlite's); None if it is not one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
            return exc.strerror or errno.errorcode[exc.errno]
        text = str(exc).lower()
        word = next((w for w in _NO_SPACE_WORDS if w in text), None)
        if word is not None:
            return word
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)
    return None


class _FullStoreSaidOnce(logging.Filter):
    """MLflow's SQL store logs each database error with its traceback before it raises it; a full
    disk is said once, in the `StoreFull` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and no_space(record.exc_info[1]))


logging.getLogger("mlflow.store.db.utils").addFilter(_FullStoreSaidOnce())


class StoreFull(RunError):
    """The MLflow store had no room for a write (its disk is full). A refused write leaves the store
    as it was (sqlite rolls it back), the run keeps its last checkpoint (written only after its
    metrics are in the store), and `--resume` continues it once there is space. `run_id` and `step`
    (the last checkpoint's) are filled in by whoever knows them."""

    def __init__(self, where: str, reason: str, run_id: Optional[str] = None) -> None:
        super().__init__(where, reason)
        self.where, self.reason, self.run_id = where, reason, run_id
        self.step: Optional[int] = None

    def __str__(self) -> str:
        db = sqlite_path(self.where)
        space = f"free space in {db.resolve().parent}" if db else "free space on its server"
        if self.step is not None:
            kept = f"its metrics and its checkpoint up to step {self.step:,} stand"
        else:
            kept = "what it holds stands"
        then = f"then continue with --resume {self.run_id}" if self.run_id else "then start again"
        return f"the MLflow store {_shown(self.where)} is full ({self.reason}); {kept}: {space}, {then}"


def _shown(uri: str) -> str:
    """A store as a user knows it: a sqlite store's file, another store's URI without its password."""
    db = sqlite_path(uri)
    if db is not None:
        return str(db)
    from symattn.paths import redact

    return redact(uri)


@contextmanager
def full_store_refused(uri: str, run_id: Optional[str] = None):
    """Writes to the store `uri` inside: one refused for lack of space raises `StoreFull`."""
    try:
        yield
    except StoreFull:
        raise
    except Exception as exc:
        reason = no_space(exc)
        if reason is None:
            raise
        raise StoreFull(uri, reason, run_id) from exc


def open_store(uri: Optional[str] = None) -> MlflowClient:
    """A client on the store, created or migrated now, not mid-run. Two processes creating or
    migrating one sqlite file at once crash, so for a sqlite store they take turns."""
    uri = check_uri(uri)
    check_writable(uri)
    db = sqlite_path(uri)
    with FileLock(f"{db}.lock") if db else nullcontext(), full_store_refused(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates or migrates the schema
    return client


def experiment_id(client: MlflowClient, name: str, note: Optional[str] = None) -> str:
    """The experiment's id, created if needed. A sqlite store keeps its artifacts beside it, in
    mlartifacts/ next to the database file (the default store: at the project root). An experiment
    without a kind or a description gets them here: MLflow 3 opens one without a kind as GenAI, and
    `note` (default: a generic line) describes it; an existing description is left alone."""
    with full_store_refused(client.tracking_uri):
        return _experiment_id(client, name, note)


def _experiment_id(client: MlflowClient, name: str, note: Optional[str]) -> str:
    exp = client.get_experiment_by_name(name)
    tags = {keys.EXPERIMENT_KIND: keys.CUSTOM_MODEL_DEVELOPMENT, keys.NOTE: note or _default_note(name)}
    if exp is None:
        db = sqlite_path(client.tracking_uri)
        location = (db.resolve().parent / "mlartifacts" / name).as_uri() if db else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:  # another worker created it first
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted; restore it or pick another tracking.experiment"
        )
    for key, value in tags.items():
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _default_note(name: str) -> str:
    return f"Runs of symattn in the experiment `{name}`; what each run records: symattn/README.md."


SETTLE_SECONDS = 2.0  # longer than a run's creation takes to reach a remote store


def find_or_create_run(client: MlflowClient, exp_id: str, match: dict, run_name: str, tags: dict) -> str:
    """The oldest active run of the experiment tagged with all of `match`, created (with `tags`
    too) if there is none, so that processes starting at once end with one run. On a sqlite store
    they take turns through its lock file. On another store each creator waits for the others' runs
    to appear, keeps the oldest and deletes its own if that is not it."""
    db = sqlite_path(client.tracking_uri)
    with FileLock(f"{db}.lock") if db else nullcontext():
        found = _oldest_tagged(client, exp_id, match)
        if found is not None:
            return found
        mine = client.create_run(exp_id, run_name=run_name, tags={**tags, **match}).info.run_id
        if db is None:
            time.sleep(SETTLE_SECONDS)
        oldest = _oldest_tagged(client, exp_id, match)
        if oldest != mine:
            client.delete_run(mine)
        return oldest


def _oldest_tagged(client: MlflowClient, exp_id: str, match: dict) -> Optional[str]:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in match.items())
    runs = client.search_runs([exp_id], filter_string=query)
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if runs else None


NOT_A_CHECKOUT = "not a git checkout"


def git_commit() -> str:
    """The commit of the code's own checkout (wherever `SYMATTN_HOME` puts the stores), with
    "-dirty" where tracked files changed; NOT_A_CHECKOUT for an installed package, "unknown" where
    git cannot tell."""
    checkout = code_checkout()
    if checkout is None:
        return NOT_A_CHECKOUT
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return NOT_A_CHECKOUT if "not a git repository" in out.stderr else "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_tags(command: str) -> dict[str, str]:
    """Where a run comes from, as the suite's tag `git_commit` and as MLflow's source tags, which
    fill the source column of its UI. MLflow's commit tag holds a commit hash only: whether the tree
    was dirty is in `git_commit`."""
    commit = git_commit()
    tags = {keys.GIT_COMMIT: commit, keys.SOURCE_NAME: command, keys.SOURCE_TYPE: keys.LOCAL_SOURCE}
    if commit not in ("unknown", NOT_A_CHECKOUT):
        tags[keys.SOURCE_COMMIT] = commit.removesuffix("-dirty")
    return tags


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def kept_checkpoints(run, roots=()) -> dict[int, dict]:
    """The weights an MLflow run kept (`checkpoint.keep`), by step: {"path", "sha256"}. A tag's path
    is relative to the checkpoint folder (runs of earlier versions hold absolute ones); it is
    resolved against `roots`, then the folder the run wrote it in, its `checkpoint.dir`, and this
    machine's default folder (under `SYMATTN_HOME`): the first that holds the file."""
    prefix = keys.KEPT_CHECKPOINT_PREFIX
    recorded = run.data.params.get("checkpoint.dir")
    given = [Path(root) for root in roots]
    fallback = [*([Path(recorded)] if recorded not in (None, "None") else []), default_checkpoint_dir()]
    kept = {}
    for tag, value in run.data.tags.items():
        if tag.startswith(prefix):
            record = json.loads(value)
            candidates = [*given, *([Path(record.pop("root"))] if "root" in record else []), *fallback]
            paths = [root / record["path"] for root in candidates]  # an absolute path stays itself
            record["path"] = str(next((p for p in paths if p.is_file()), paths[-1]))
            kept[int(tag[len(prefix) :])] = record
    return kept


def reached(run) -> int:
    """The budget a run was given and ran to: its extension's (tagged once it finished), else its
    config's."""
    return int(run.data.tags.get(keys.EXTENDED_TO) or run.data.params.get("optim.max_steps", 0))


def find_resumable_run(client: MlflowClient, exp_id: str, config_hash: str) -> Optional[str]:
    """The newest unfinished run of this exact config in the experiment, if any."""
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.config_hash = '{config_hash}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


@contextmanager
def system_metrics(tracker: Optional["RunTracker"], on: bool):
    """MLflow's system metrics (CPU, memory, disk, network; GPU where one is used) logged to the
    run as `system/*` from a thread while the block runs, one sample every
    `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds (MLflow's default: 10); a resumed run's
    samples go on after its earlier ones. Nothing when `on` is false or there is no tracker."""
    if tracker is None or not on:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        tracker.run_id, resume_logging=True, tracking_uri=tracker.client.tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


class RunTracker:
    """One MLflow run: buffered metrics written in batches, final status, artifacts. `seconds` is
    the time spent in its calls so far, which is what tracking costs the training loop."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.pending: list[Metric] = []  # not yet in the store
        self.floor: dict[str, int] = {}  # per metric: steps up to here are already in the store
        self.seconds = 0.0

    @contextmanager
    def _timed(self):
        """A write, timed; one the store has no room for raises `StoreFull`."""
        start = time.perf_counter()
        try:
            with full_store_refused(self.client.tracking_uri, self.run_id):
                yield
        finally:
            self.seconds += time.perf_counter() - start

    @classmethod
    def create(
        cls, client: MlflowClient, exp_id: str, run_name: Optional[str], tags: dict, params: dict
    ) -> "RunTracker":
        with full_store_refused(client.tracking_uri):
            run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        tracker = cls(client, run.info.run_id)
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        with tracker._timed():
            for i in range(0, len(items), _BATCH):
                client.log_batch(tracker.run_id, params=items[i : i + _BATCH])
        return tracker

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Buffers the points (a few microseconds, counted in `seconds`); `flush` writes them."""
        start = time.perf_counter()
        now = int(time.time() * 1000)
        self.pending.extend(
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if step > self.floor.get(k, -1) or k.startswith(keys.TIME_PREFIX)
        )
        self.seconds += time.perf_counter() - start

    def flush(self) -> None:
        if not self.pending:
            return
        with self._timed():
            for i in range(0, len(self.pending), 1000):
                self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
            self.pending = []

    def set_resume_floor(self) -> None:
        """On resume: points at or before the last step the store holds for a metric are dropped.
        They are recomputed from the checkpoint (identically) and were logged before the stop."""
        run = self.client.get_run(self.run_id)
        self.floor = {
            key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
            for key in run.data.metrics
        }

    def set_tags(self, tags: dict[str, str]) -> None:
        with self._timed():
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_status(self, status: str) -> None:
        with self._timed():
            if status == "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.client.set_terminated(self.run_id, status=status)

    def log_dataset(self, name: str, digest: str, source: dict, profile: dict) -> None:
        """The run's training data as a dataset input (MLflow's dataset column), unless the run has
        one already (a resumed run). MLflow keeps at most 36 characters of a digest."""
        if self.client.get_run(self.run_id).inputs.dataset_inputs:
            return
        dataset = Dataset(name, digest[:36], "local", json.dumps(source), profile=json.dumps(profile))
        context = InputTag(keys.DATASET_CONTEXT, keys.TRAIN_CONTEXT)
        with self._timed():
            self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=[context])])

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        with self._timed():
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def _param_value(v) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."
