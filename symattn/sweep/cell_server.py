"""The process that a worker's sweep cells fork from (multiprocessing's forkserver).

It starts once per worker, as early as possible, and imports what every cell needs (torch,
Lightning, MLflow's SQL store, the data layer) while the worker sets itself up. Each cell then
forks from it with all of that loaded and starts training in about a second. Imported by the
worker, this module stays light, so that the server starts before the worker's own imports; the
server imports it too (its preload), and only there does it load the cells' imports.

The server keeps the environment it started with; each cell gets the worker's environment at its
launch (`cell_main`), except what the server's imports already read (OMP_*, TORCH_LOGS, ...).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
from multiprocessing import forkserver
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from symattn.config import FinetuneConfig, RunConfig

EXIT_NON_FINITE = 3  # a deterministic failure: retrying would fail the same way
EXIT_PRUNED = 4  # a search trial stopped by its pruner
EXIT_INVALID = 5  # a cell whose input is invalid: retrying would fail the same way
EXIT_BUSY = 6  # the cell's run is still written by another process (a cell of a dead worker)

_IN_SERVER = "SYMATTN_CELL_SERVER"  # set in the server's environment only


def context():
    """The forkserver context, its server started now (idempotent)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    os.environ[_IN_SERVER] = "1"  # the server inherits the environment it starts with
    try:
        forkserver.ensure_running()
    finally:
        del os.environ[_IN_SERVER]
    return ctx


def _preload() -> None:
    # The server's own signals: Ctrl-C is the worker's to handle (the server would otherwise die of
    # it while still importing), and a SIGTERM sent to the whole process group must not take the
    # server down before the cells have stopped cleanly (a cell stops when the server exits). Each cell
    # restores both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  MLflow's SQL store
        import sqlalchemy.orm

        import symattn.data.masking  # noqa: F401
        import symattn.data.pretraining  # noqa: F401
        import symattn.finetune.run  # noqa: F401
        import symattn.run.pretrain  # noqa: F401
        import symattn.sweep.progress  # noqa: F401  the cell's report to its trial
        import symattn.sweep.search  # noqa: F401

        # MLflow's ORM classes are mapped on first use; do it here, once, not in every cell.
        sqlalchemy.orm.configure_mappers()
    except Exception as exc:  # noqa: BLE001  the server must live: a cell then imports what it needs
        logging.getLogger("symattn.sweep").warning(
            "cell server: preloading failed (%s); cells import on their own", exc
        )


Watch = tuple  # (pid, create time) of the worker a cell dies with

WATCH_SECONDS = 0.5  # how often a cell checks that its worker lives
STOP_SECONDS = 30.0  # how long a cell whose worker died has to stop cleanly before it exits


def worker_identity() -> Watch:
    """This process as a cell's `watch`: its pid and start time (a pid alone may be reused)."""
    import psutil

    return os.getpid(), psutil.Process().create_time()


def _alive(watch: Watch) -> bool:
    import psutil

    pid, created = watch
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone (or no longer ours to see)
        return False


def _watch_worker(watch: Watch) -> None:
    """A cell's watchdog thread: once its worker is gone (killed by any means, its process group
    or not), stop as SIGTERM stops a cell (checkpoint, run KILLED); exit if that takes too long."""
    import time

    while _alive(watch):
        time.sleep(WATCH_SECONDS)
    print(f"cell {os.getpid()}: its worker {watch[0]} is gone; stopping", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_SECONDS)
    os._exit(143)


def _child(device: str, environ: Optional[dict], watch: Optional[Watch] = None) -> None:
    """A cell's process set-up: die with its worker (`watch`) and with the cell server, whatever
    kills them; the worker's environment; the device.

    The forkserver hands each child its end of the "alive" pipe, whose EOF tells the server that no
    client is left: a cell that kept it would keep the server (and, through its parent-death
    signal, itself) alive after its worker was killed. The cell closes it, so the server exits as
    soon as its worker does, and the parent-death signal (SIGTERM: a clean stop) reaches the cell;
    the watchdog thread covers the rest (a server that lingers, a worker that is not our parent)."""
    from multiprocessing import forkserver as fs

    alive = getattr(fs._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass
        fs._forkserver._forkserver_alive_fd = None
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server ignores it; Lightning handles it here
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the server died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)
    if watch is not None:
        import threading

        threading.Thread(target=_watch_worker, args=(watch,), name="worker-watchdog", daemon=True).start()
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # the worker reports each cell in a line
    if device != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = device


def cell_main(
    config: RunConfig,
    device: str,
    report=None,
    launched_at: Optional[float] = None,
    environ: Optional[dict] = None,
    watch: Optional[Watch] = None,
    extend_run: Optional[str] = None,
) -> None:
    """Body of a pre-training cell's child process: train (resuming the cell's run if any; with
    `extend_run`, continuing that run to the config's larger budget).
    `report`: the cell's `trial_report.TrialReport` (its progress, and a search trial's pruning).
    `launched_at`: when the worker started the cell, which the run's start-up cost counts from.
    `environ`: the worker's environment at launch (the cell server's own dates from its start).
    `watch`: the worker's `worker_identity()`; the cell stops when that process is gone."""
    _child(device, environ, watch)
    from optuna import TrialPruned

    from symattn.errors import NonFiniteLoss, RunStopped
    from symattn.run.identity import RunBusy
    from symattn.run.pretrain import pretrain

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; it sends SIGTERM to stop a cell
    try:
        pretrain(
            config,
            resume="auto",
            callbacks=[report.callback()] if report else None,
            started_at=launched_at,
            extend_run=extend_run,
        )
    except TrialPruned:
        sys.exit(EXIT_PRUNED)
    except NonFiniteLoss as exc:
        _failed(report, exc)
        print(f"cell failed: {exc}", file=sys.stderr)
        sys.exit(EXIT_NON_FINITE)
    except RunStopped:
        sys.exit(143)
    except RunBusy as exc:  # another process still writes the run: retried later, never run twice
        _failed(report, exc)
        print(f"cell not started: {exc}", file=sys.stderr)
        sys.exit(EXIT_BUSY)
    except Exception as exc:
        _failed(report, exc)
        raise


def _failed(report, exc: BaseException) -> None:
    """The cell's error on its trial (`trial_report.TrialReport.failed`), when it has one."""
    if report is not None:
        report.failed(exc)


def finetune_main(
    run_id: str,
    step: int,
    config: FinetuneConfig,
    tracking_uri: str,
    tags: dict,
    name: str,
    device: str,
    environ: Optional[dict] = None,
    watch: Optional[Watch] = None,
    report=None,
) -> None:
    """Body of a fine-tuning cell's child process: fine-tune run `run_id`'s weights at `step`.
    `report`: the cell's `trial_report.TrialReport`, which records its error if it fails."""
    _child(device, environ, watch)
    from symattn.finetune.run import finetune
    from symattn.finetune.source import run_sources
    from symattn.tracking.store import open_store

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        client = open_store(tracking_uri)
        finetune(
            client, run_sources(client, run_id, [step]), [config.task], [config.seed], config, tags, name
        )
    except ValueError as exc:  # e.g. its pre-training stopped early, before this step was kept
        _failed(report, exc)
        print(f"cell failed: {exc}", file=sys.stderr)
        sys.exit(EXIT_INVALID)
    except KeyboardInterrupt:  # SIGTERM from the worker: the run is marked KILLED
        sys.exit(143)
    except Exception as exc:
        _failed(report, exc)
        raise


if os.environ.get(_IN_SERVER):
    _preload()
